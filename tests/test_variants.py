"""Variants are run folders made by the runner: a 3-fold cross-validation on a small phantom tests every
selected volume exactly once and pools per-volume metrics (issue 11 item 1; the full_lits path); its folds run as
separate processes, two at once, and pooled give the same files (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from liverlib.pipeline.study import run_study
from liverlib.progress import ENV as PROGRESS_ENV

ROOT = Path(__file__).resolve().parents[1]
CV = {"phantom_cases": 9, "phantom_size": 64, "phantom_slices": [16, 18], "n_volumes": 6, "folds": 3, "image_size": 32,
      "epochs": 1, "train_baseline": False, "bootstrap_resamples": 20, "eval_batch_size": 8, "ablation_arms": ["ct_norm"]}  # fmt: skip
"""A tiny 3-fold study over the smoke profile; its one arm is the smoke main run's recipe (ct_norm), so the pooled
Table 4 needs no arm training."""

pytestmark = pytest.mark.slow


PROFILES = [str(ROOT / "params/base.yaml"), str(ROOT / "params/smoke.yaml")]
STAGES = ["01", "02", "03", "04"]
POOLED = ("cv_per_volume.csv", "cv_summary.json", "tables/table04_ablation_cv.csv", "tables/table04_ablation_cv.md")
"""What pooling the folds writes in the run folder."""


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-fold study in one command (the runner runs the folds one after another, then pools)."""
    tmp = tmp_path_factory.mktemp("sequential")
    root = run_study(PROFILES, overrides={**CV, "output_root": str(tmp), "run_name": "cv"}, only=STAGES)
    assert root == tmp / "cv"
    return root


def test_three_fold_cross_validation_through_the_runner(sequential: Path) -> None:
    root = sequential
    folds = [root / "folds" / str(k) for k in range(3)]
    for f in folds:  # each fold is a complete run folder made by the same stages
        for name in ("splits.json", "params.json", "models/hybrid/best.pt", "summary.json", "per_volume.csv"):
            assert (f / name).is_file(), f / name
    tests = [json.loads((f / "splits.json").read_text(encoding="utf-8"))["splits"]["test"] for f in folds]
    selected = {
        v for ids in json.loads((folds[0] / "splits.json").read_text(encoding="utf-8"))["splits"].values() for v in ids
    }
    assert sorted(v for t in tests for v in t) == sorted(selected)  # every volume tested exactly once
    cv = pd.read_csv(root / "cv_per_volume.csv")
    assert sorted(cv.volume_id) == sorted(selected) and set(cv.fold) == {0, 1, 2}
    s = json.loads((root / "cv_summary.json").read_text(encoding="utf-8"))
    assert s["volumes"] == len(selected) and s["folds"] == 3
    assert s["liver_dice_per_case"] == pytest.approx(cv.liver_dice.mean())
    tp, pred, gt = (cv[f"liver_{k}_voxels"].sum() for k in ("tp", "pred", "gt"))
    assert s["liver_dice_global"] == pytest.approx(2 * tp / (pred + gt))


def _cli(*args: str) -> subprocess.Popen:
    """``python -m liverlib ...`` as a separate process, as a user (or a cluster job) starts it."""
    env = {k: v for k, v in os.environ.items() if k != PROGRESS_ENV and not k.startswith("PYTEST_")}
    return subprocess.Popen([sys.executable, "-m", "liverlib", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_folds_run_in_parallel_then_pooled_equal_the_sequential_run(sequential: Path, tmp_path: Path) -> None:
    """Folds 0 and 1 as two concurrent processes (sharing the phantom and the cache they build), then fold 2, then
    `liverlib pool`: the pooled files are byte for byte those of the run that made every fold in one command."""
    sets = [f"{k}={json.dumps(v)}" for k, v in {**CV, "output_root": str(tmp_path), "run_name": "cv"}.items()]
    study = ["study", "-f", *PROFILES[:1], "-f", PROFILES[1], "--only", *STAGES, "--set", *sets]
    first = [_cli(*study, "--fold", str(k)) for k in (0, 1)]
    for proc in first:
        _finish(proc)
    root = tmp_path / "cv"
    third = _cli(*study, "--fold", "2")
    partial = _finish(_cli("pool", str(root)))  # while fold 2 runs: pooled what is finished, named what is not
    assert "over 2 of 3 folds" in partial and "missing: 2 (" in partial, partial
    assert json.loads((root / "cv_summary.json").read_text(encoding="utf-8"))["folds_missing"] == [2]
    _finish(third)
    _finish(_cli("pool", str(root)))
    for name in POOLED:
        assert (root / name).read_bytes() == (sequential / name).read_bytes(), name
    assert not list(root.rglob("run.lock")) and not list(root.rglob(".*.lock"))  # every lock released
