"""The whole study as a user runs it, on tiny phantom data: `make study`, then every stored notebook Run All.

The project (notebooks, params, pyproject.toml, and liverlib itself through a link) is copied to a temporary
folder with a tiny ``params/smoke.yaml`` (64² phantom, 32² images, 2 epochs: the smoke profile's keys, smaller
numbers), so that ``python -m liverlib study -f params/base.yaml -f params/smoke.yaml`` — what ``make study``
runs — and the stored notebooks, unmodified and with their own defaults, work on the copy's ``outputs/smoke``
exactly as they do on a checkout. The tests assert on the files every stage writes, the runner's console, the
executed notebooks, and Run All of every stored notebook afterwards (issue 18).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from liverlib.params import DEFAULTS, RUN_KEYS, STAGE_KEYS, load_profiles
from liverlib.pipeline.study import notebooks
from tests.tiny import ROOT, STUDY, copy_project, liverlib_cli

STUDY_TIMEOUT_S = 1500
FIGS = ["fig02_case_overview", "fig03_preprocessing_pipeline", "fig04_intensity_histograms", "fig06_loss_curves",
        "fig07_dice_iou_curves", "fig08_confusion_matrix", "fig09_case_comparison", "fig10_overlays", "fig11_error_maps",
        "fig_ablation"]  # fmt: skip
TABLES = ["table01_architecture", "table02_loss", "table03_split_summary", "table04_ablation", "table05_training_log",
          "table06_test_metrics", "table07_val_vs_test", "table08_comparison"]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def study_run(project: Path) -> subprocess.CompletedProcess:
    """`make study` in the copy: the smoke profile (tiny) into ``outputs/smoke``."""
    proc = liverlib_cli(project, *STUDY, timeout=STUDY_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.copytree(project / "outputs/smoke/notebooks", project / "first-run-notebooks")  # later tests rerun stages
    return proc


@pytest.fixture(scope="module")
def study(project: Path, study_run: subprocess.CompletedProcess) -> Path:
    return project / "outputs" / "smoke"


@pytest.fixture(scope="module")
def executed(project: Path, study_run: subprocess.CompletedProcess) -> Path:
    """The executed notebooks of the whole run (later tests rerun stages, which replace them in the run folder)."""
    return project / "first-run-notebooks"


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
    empty = (m.liver_px + m.tumor_px) == 0
    assert not empty[m.split != "train"].any()  # validation and test: the paper's curation
    fraction = json.loads((study / "params.json").read_text(encoding="utf-8"))["parameters"]["train_empty_fraction"]
    assert empty[m.split == "train"].any() == (fraction > 0)  # liver-free training slices only if the profile asks
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


def test_rerun_resumes_instead_of_retraining(project: Path, study: Path) -> None:
    before = (study / "models/hybrid/best.pt").stat().st_mtime_ns
    proc = liverlib_cli(project, *STUDY, "--start", "03", "--only", "03")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (study / "models/hybrid/best.pt").stat().st_mtime_ns == before


def test_nbval_runs_the_notebooks_as_users_open_them(study: Path, tmp_path: Path) -> None:
    """Copies of the notebooks with this run's parameters (papermill --prepare-only) pass nbval --nbval-lax."""
    import papermill as pm

    params = {**load_profiles(study.parents[1] / "params/base.yaml", study.parents[1] / "params/smoke.yaml"),
              "output_root": str(study.parent)}  # fmt: skip
    for nb in notebooks():
        pm.execute_notebook(
            str(nb), str(tmp_path / nb.name), parameters=params, prepare_only=True, kernel_name="python3"
        )
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                           "-o", "addopts=", str(tmp_path)], capture_output=True, text=True, cwd=study.parents[1] / "notebooks")  # fmt: skip
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


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o.get("output_type") == "stream")


def test_runner_console_shows_progress_without_kernel_noise(study_run: subprocess.CompletedProcess) -> None:
    console = study_run.stdout + study_run.stderr
    for i, nb in enumerate(notebooks(), 1):
        assert f"[{i}/6] {nb.name}" in console
    assert re.search(r"hybrid epoch 2/2: \d+ batch in [\d.]+ s, loss=", console), console[-3000:]  # one line an epoch
    assert "without encryption" not in console and "KeyboardInterrupt" not in console, console[-3000:]
    assert "IProgress" not in console and "TqdmWarning" not in console


def test_executed_notebooks_hold_one_progress_line_per_epoch(executed: Path) -> None:
    for nb_path in sorted(executed.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        text = _text(nb)
        assert "\r" not in text and "IProgress" not in text and "TqdmWarning" not in text, nb_path.name
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in _outputs(nb))
        assert "widgets" not in nb.metadata, nb_path.name  # nbclient's store_widget_state is off
    text = _text(nbformat.read(executed / "03_training.ipynb", as_version=4))
    epochs = re.findall(r"^(\w+) epoch (\d+)/\d+", text, flags=re.M)
    assert sorted(epochs) == [("hybrid", "1"), ("hybrid", "2"), ("unet_smp", "1")], text[-2000:]
    assert not re.search(r"\d+/\d+ \[|\d+ batch in |it/s|batch/s", text), text[-2000:]  # no per-batch bar


def test_later_notebooks_get_only_what_their_stage_needs(executed: Path) -> None:
    for nb in notebooks():
        ran = nbformat.read(executed / nb.name, as_version=4)
        cell = next(c for c in ran.cells if "injected-parameters" in c.metadata.get("tags", []))
        names = set(re.findall(r"^(\w+) = ", cell.source, flags=re.M))
        if nb.name.startswith("01"):
            assert {"data_dir", "epochs", "run_name"} <= names
        else:  # a stage key the profiles leave at its default keeps the cell's value (the schema's default)
            assert {"run_name", "output_root"} <= names <= set(RUN_KEYS) | set(STAGE_KEYS[nb.name[:2]]), (
                nb.name,
                names,
            )


def test_each_executed_notebook_is_rendered_to_html(study: Path) -> None:
    for nb in notebooks():
        html = study / "html" / f"{nb.stem}.html"
        text = html.read_text(encoding="utf-8")
        assert text.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64" in text, nb.name


def test_every_stored_notebook_runs_all_as_stored_after_the_study(project: Path, study: Path) -> None:
    """Issue 18: after `make study`, each stored notebook opened with its defaults and run top to bottom succeeds,
    reusing what the study made (curation, cache, trained models are not redone)."""
    from nbclient import NotebookClient

    kept = {name: (study / name).stat().st_mtime_ns for name in ("manifest.csv", "splits.json",
            "models/hybrid/best.pt", "models/hybrid/last.pt", "models/unet_smp/best.pt")}  # fmt: skip
    for nb_path in sorted((project / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert nb_path.read_bytes() == (ROOT / "notebooks" / nb_path.name).read_bytes()  # unmodified
        nb = nbformat.read(nb_path, as_version=4)
        client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(nb_path.parent)}})  # fmt: skip
        client.execute()  # a cell error raises CellExecutionError naming the cell
        errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
        assert not errors, (nb_path.name, errors)
        assert "IProgress" not in _text(nb) and "Traceback" not in _text(nb), nb_path.name
    assert {name: (study / name).stat().st_mtime_ns for name in kept} == kept
