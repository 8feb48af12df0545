"""Variants are run folders made by the runner: a 3-fold cross-validation on a small phantom tests every
selected volume exactly once and pools per-volume metrics (issue 11 item 1; the full_lits path)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from liverlib.pipeline.study import run_study

ROOT = Path(__file__).resolve().parents[1]
CV = {"phantom_cases": 9, "phantom_size": 64, "phantom_slices": [16, 18], "n_volumes": 6, "folds": 3, "image_size": 32,
      "epochs": 1, "train_baseline": False, "bootstrap_resamples": 20, "eval_batch_size": 8, "ablation_arms": ["paper"]}  # fmt: skip

pytestmark = pytest.mark.slow


def test_three_fold_cross_validation_through_the_runner(tmp_path: Path) -> None:
    root = run_study([str(ROOT / "params/base.yaml"), str(ROOT / "params/smoke.yaml")],
                     overrides={**CV, "output_root": str(tmp_path), "run_name": "cv"}, only=["01", "02", "03", "04"])  # fmt: skip
    assert root == tmp_path / "cv"
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
