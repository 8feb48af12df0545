"""Pooling folds made anywhere (issue 21, liverlib.pipeline.pool), on fold folders written by hand: what is finished is pooled
and what is missing named; folds made with other parameters or on another split are refused; where and how a fold
ran (folders, device) may differ. The end-to-end run (folds as concurrent processes) is in tests/test_variants.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from liverlib.params import resolve
from liverlib.pipeline.cli import main
from liverlib.pipeline.pool import pool_folds
from liverlib.run import RunError

SPLITS = {0: [1, 2], 1: [3, 4], 2: [5, 6]}
"""Test volumes of each fold; the others are train or val."""


def make_fold(run: Path, k: int, *, finished: bool = True, test: list[int] | None = None, **changes) -> Path:
    """``<run>/folds/<k>/`` as a finished (or started) fold of a 3-fold run: params, split, per-volume scores."""
    root = run / "folds" / str(k)
    (root / "stages").mkdir(parents=True, exist_ok=True)
    p = resolve(data_dir="phantom", folds=3, fold=k, run_name=str(k), output_root=str(run / "folds"),
                ablation_arms=["paper"], **changes)  # fmt: skip
    (root / "params.json").write_text(json.dumps({"parameters": dict(p)}), encoding="utf-8")
    test = SPLITS[k] if test is None else test
    others = sorted({v for t in SPLITS.values() for v in t} - set(test))
    splits = {"train": others[:-1], "val": others[-1:], "test": test}
    (root / "splits.json").write_text(
        json.dumps({"seed": 42, "folds": 3, "fold": k, "splits": splits}), encoding="utf-8"
    )
    if finished:
        rows = [{"volume_id": v, "slices": 10, "liver_dice": 0.9 - 0.01 * v, "tumor_dice": 0.5,
                 "liver_tp_voxels": 90, "liver_pred_voxels": 100, "liver_gt_voxels": 100,
                 "tumor_tp_voxels": 5, "tumor_pred_voxels": 10, "tumor_gt_voxels": 10} for v in test]  # fmt: skip
        pd.DataFrame(rows).to_csv(root / "per_volume.csv", index=False)
        (root / "stages" / "04_evaluation.json").write_text("{}", encoding="utf-8")
    return root


def test_pool_names_the_missing_folds_then_pools_all(tmp_path: Path, capsys) -> None:
    run = tmp_path / "cv"
    make_fold(run, 0)
    make_fold(run, 1, finished=False, device="cuda", num_workers=8)  # how it runs may differ
    s = pool_folds(run)
    assert s is not None and s["folds_pooled"] == [0] and s["folds_missing"] == [1, 2] and s["volumes"] == 2
    assert "missing: 1 (unfinished), 2 (not started)" in capsys.readouterr().out
    make_fold(run, 1, device="cuda", num_workers=8)
    make_fold(run, 2)
    assert main(["pool", str(run)]) == 0
    cv = pd.read_csv(run / "cv_per_volume.csv")
    assert sorted(cv.volume_id) == [1, 2, 3, 4, 5, 6] and sorted(set(cv.fold)) == [0, 1, 2]
    s = json.loads((run / "cv_summary.json").read_text(encoding="utf-8"))
    assert s["folds_missing"] == [] and s["liver_dice_global"] == pytest.approx(0.9)
    t4 = pd.read_csv(run / "tables" / "table04_ablation_cv.csv")
    assert list(t4.arm) == ["paper"] and t4.volumes[0] == 6 and t4.folds[0] == "0 1 2"
    assert not (run / "run.lock").exists()


@pytest.mark.reliability("'<run>/folds/1: made with other parameters than fold 0 (epochs: 100 vs 3)'", 1,
                         "the folds; nothing pooled")  # fmt: skip
def test_pool_refuses_a_fold_made_with_other_parameters(tmp_path: Path, capsys) -> None:
    run = tmp_path / "cv"
    make_fold(run, 0)
    make_fold(run, 1, epochs=3)
    assert main(["pool", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and f"{run / 'folds' / '1'}: made with other parameters" in err and "epochs" in err
    )
    assert not (run / "cv_summary.json").exists()


@pytest.mark.reliability("'<run>: volume 3 is in the test set of fold 0 and of fold 1: the folds overlap'", None,
                         "the folds; nothing pooled")  # fmt: skip
def test_pool_refuses_overlapping_folds(tmp_path: Path) -> None:
    run = tmp_path / "cv"
    make_fold(run, 0, test=[1, 3])
    make_fold(run, 1)
    with pytest.raises(RunError, match="volume 3 is in the test set of fold 0 and of fold 1"):
        pool_folds(run)


def test_pool_refuses_another_split(tmp_path: Path) -> None:
    run = tmp_path / "cv"
    make_fold(run, 0)
    other = make_fold(run, 1)
    splits = json.loads((other / "splits.json").read_text(encoding="utf-8"))
    splits["splits"]["train"].append(99)
    (other / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    with pytest.raises(RunError, match=r"on another split than fold 0 \(volumes only here \[99\]"):
        pool_folds(run)
