"""The whole study through papermill on tiny phantom data, then nbval over the notebooks as a user opens them.

Runs the smoke profile with smaller data (64² phantom, 32² images, 2 epochs) into a temporary folder
and asserts on the files every stage writes and on their contents.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from liverlib.params import DEFAULTS, RUN_KEYS, STAGE_KEYS, load_profiles
from liverlib.study import notebooks, run_study

ROOT = Path(__file__).resolve().parents[1]
TINY = {"phantom_size": 64, "phantom_slices": [16, 20], "image_size": 32, "epochs": 2, "baseline_epochs": 1,
        "bootstrap_resamples": 50, "eval_batch_size": 8}  # fmt: skip
FIGS = ["fig02_case_overview", "fig03_preprocessing_pipeline", "fig04_intensity_histograms", "fig06_loss_curves",
        "fig07_dice_iou_curves", "fig08_confusion_matrix", "fig09_case_comparison", "fig10_overlays", "fig11_error_maps",
        "fig_ablation"]  # fmt: skip
TABLES = ["table01_architecture", "table02_loss", "table03_split_summary", "table04_ablation", "table05_training_log",
          "table06_test_metrics", "table07_val_vs_test", "table08_comparison"]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs")
    return run_study([str(ROOT / "params/base.yaml"), str(ROOT / "params/smoke.yaml")],
                     overrides={**TINY, "output_root": str(out)})  # fmt: skip


def test_every_stage_writes_its_files(study: Path) -> None:
    for name in ("manifest.csv", "volumes.csv", "splits.json", "preprocess.json", "training.json", "summary.json",
                 "per_slice.csv", "per_volume.csv", "report.md", "study.json", "models/hybrid/best.pt",
                 "models/hybrid/last.pt", "models/unet_smp/summary.json"):  # fmt: skip
        assert (study / name).is_file(), name
    for nb in notebooks():
        assert (study / "notebooks" / nb.name).is_file()
    for f in FIGS:
        assert (study / "figures" / f"{f}.png").stat().st_size > 1000, f
    for t in TABLES:
        assert (study / "tables" / f"{t}.csv").is_file() and (study / "tables" / f"{t}.md").is_file(), t
    assert list((study / "predictions" / "hybrid").glob("prediction-*.nii.gz"))


def test_split_is_by_volume_and_manifest_is_consistent(study: Path) -> None:
    m = pd.read_csv(study / "manifest.csv")
    assert m.groupby("volume_id").split.nunique().max() == 1
    assert ((m.liver_px + m.tumor_px) > 0).all()  # keep_empty_slices: false
    splits = json.loads((study / "splits.json").read_text(encoding="utf-8"))["splits"]
    ids = [v for s in splits.values() for v in s]
    assert len(ids) == len(set(ids)) == 9


def test_metrics_are_sane_and_rules_are_named(study: Path) -> None:
    s = json.loads((study / "summary.json").read_text(encoding="utf-8"))
    for key in ("liver_dice_smoothed", "tumor_dice_smoothed", "liver_iou", "tumor_dice_gt_positive"):
        assert 0.0 <= s["per_slice"][key]["mean"] <= 1.0
        assert s["per_slice"][key]["rule"]
    assert s["counts"]["test_volumes"] == 2
    assert 0 <= s["per_volume"]["liver_dice_per_case"]["mean"] <= 1
    assert s["confidence_intervals"]["liver_dice_smoothed"]["low"] <= s["per_slice"]["liver_dice_smoothed"]["mean"]
    assert s["provenance"]["params"]["epochs"] == 2
    ps = pd.read_csv(study / "per_slice.csv")
    assert len(ps) == s["counts"]["test_slices"]
    assert ps.liver_iou.between(0, 1).all() and ps.liver_dice_smoothed.between(0, 1).all()


def test_tables_have_expected_rows(study: Path) -> None:
    t5 = pd.read_csv(study / "tables/table05_training_log.csv")
    assert {1, 2} <= set(t5.epoch) and "paper_val_loss" in t5
    t4 = pd.read_csv(study / "tables/table04_ablation.csv")
    arms = t4[t4.kind == "arm"]
    assert list(arms.arm) == ["paper", "no_enhancement"] and arms.liver_dice.between(0, 1).all()
    t8 = pd.read_csv(study / "tables/table08_comparison.csv")
    assert (t8.source == "as reported").sum() == 6 and (t8.source == "same data").sum() == 2
    t3 = pd.read_csv(study / "tables/table03_split_summary.csv")
    assert list(t3.split) == ["train", "val", "test", "total"]
    t1 = pd.read_csv(study / "tables/table01_architecture.csv")
    assert t1[t1.component != "Total"].parameters.sum() == 20_832_963


def test_report_mentions_every_figure(study: Path) -> None:
    text = (study / "report.md").read_text(encoding="utf-8")
    for f in FIGS:
        assert f"figures/{f}.png" in text
    assert "ε-smoothed" in text and "per volume" in text.lower()


def test_rerun_resumes_instead_of_retraining(study: Path) -> None:
    before = (study / "models/hybrid/best.pt").stat().st_mtime_ns
    run_study([str(ROOT / "params/base.yaml"), str(ROOT / "params/smoke.yaml")],
              overrides={**TINY, "output_root": str(study.parent)}, start="03", only=["03"])  # fmt: skip
    assert (study / "models/hybrid/best.pt").stat().st_mtime_ns == before


def test_nbval_runs_the_notebooks_as_users_open_them(study: Path, tmp_path: Path) -> None:
    """Copies of the notebooks with this run's parameters (papermill --prepare-only) pass nbval --nbval-lax."""
    import papermill as pm

    params = {
        **load_profiles(ROOT / "params/base.yaml", ROOT / "params/smoke.yaml"),
        **TINY,
        "output_root": str(study.parent),
    }
    for nb in notebooks():
        pm.execute_notebook(
            str(nb), str(tmp_path / nb.name), parameters=params, prepare_only=True, kernel_name="python3"
        )
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                           "-o", "addopts=", str(tmp_path)], capture_output=True, text=True, cwd=ROOT / "notebooks")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _parameters(nb: Path) -> set[str]:
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return set(re.findall(r"^(\w+)\s*:", cell.source, flags=re.M))


@pytest.mark.parametrize("profile", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_key_is_a_parameter(profile: Path) -> None:
    keys = set(yaml.safe_load(profile.read_text(encoding="utf-8")) or {})
    assert keys <= set(DEFAULTS), keys - set(DEFAULTS)


def test_later_notebooks_hold_only_what_their_stage_may_change() -> None:
    """02–06 read the run's settings from params.json; their cells name the run and the stage's own keys only."""
    for nb in notebooks()[1:]:
        allowed = set(STAGE_KEYS[nb.name[:2]]) | set(RUN_KEYS)
        assert _parameters(nb) <= allowed, (nb.name, _parameters(nb) - allowed)
        assert 'liverlib.stage_params("' + nb.name[:2] in nb.read_text(encoding="utf-8").replace('\\"', '"')


def test_notebook_defaults_equal_the_schema() -> None:
    """Cell defaults are the schema's, except notebook 01's profiles and the run they name (the smoke run)."""
    run_names = set()
    for nb in notebooks():
        cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        ns: dict = {}
        exec(cell.source, {}, ns)  # literals only
        run_names.add(ns.get("run_name"))
        for k, v in ((k, v) for k, v in ns.items() if not k.startswith("_") and k not in ("profiles", "run_name")):
            assert k in DEFAULTS, f"{nb.name}: {k} is not a parameter"
            assert v == DEFAULTS[k], f"{nb.name}: {k} = {v!r}, schema default {DEFAULTS[k]!r}"
    assert run_names == {"smoke"}


def test_first_cell_says_what_the_defaults_do_and_how_long() -> None:
    for nb in notebooks():
        first = nbformat.read(nb, as_version=4).cells[0]
        assert first.cell_type == "markdown" and "**Defaults:**" in first.source and "**Time:**" in first.source, (
            nb.name
        )
        assert "CPU" in first.source, nb.name
