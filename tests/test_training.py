"""Training loop: resume equals an uninterrupted run, guards against mismatched caches/checkpoints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from liverlib import stages
from liverlib.checkpoint import load_checkpoint, model_from_checkpoint
from liverlib.params import resolve
from liverlib.run import RunError
from liverlib.training import train

TINY = dict(data_dir="phantom", phantom_cases=12, phantom_size=64, phantom_slices=[16, 20], n_volumes=9, test_fraction=0.2,
            image_size=32, epochs=3, batch_size=8, lr=1e-3, num_workers=0, train_baseline=False, device="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    p = resolve(**TINY, output_root=str(root), run_name="base")
    stages.run_curation(p, progress=False)
    stages.run_preprocessing(p, progress=False, figures_too=False)
    return root


def _params(root: Path, name: str, **kw: object):
    p = resolve(**TINY, output_root=str(root), run_name="base")
    run = root / name
    if name != "base":  # a second run folder sharing the curation and the cache
        import shutil

        for f in ("manifest.csv", "volumes.csv", "splits.json", "preprocess.json"):
            if not (run / f).exists():
                run.mkdir(exist_ok=True)
                shutil.copy2(root / "base" / f, run / f)
    return resolve(**{**dict(p), **kw, "run_name": name})


def test_resume_matches_uninterrupted_run(prepared: Path) -> None:
    full = train(_params(prepared, "full"), progress=False)
    p = _params(prepared, "killed")
    first = train(p, progress=False, stop_after=1)
    assert len(first["history"]) == 1
    resumed = train(p, progress=False)
    assert resumed["resumed_from"] == 1
    cols = ["epoch", "train_loss", "val_loss", "val_liver_dice", "lr"]
    pd.testing.assert_frame_equal(full["history"][cols], resumed["history"][cols])
    a = load_checkpoint(prepared / "full/models/hybrid/last.pt")["model"]
    b = load_checkpoint(prepared / "killed/models/hybrid/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_learning_on_the_phantom(prepared: Path) -> None:
    h = pd.read_csv(prepared / "full/models/hybrid/history.csv")
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]


def test_finished_run_is_not_retrained_and_other_params_are_refused(prepared: Path) -> None:
    p = _params(prepared, "full")
    best = prepared / "full/models/hybrid/best.pt"
    before = best.stat().st_mtime_ns
    again = train(p, progress=False)
    assert again["resumed_from"] == 3 and best.stat().st_mtime_ns == before
    with pytest.raises(RunError, match="other parameters"):
        train(_params(prepared, "full", lr=5e-4), progress=False)
    assert best.stat().st_mtime_ns == before


def test_cache_made_with_other_preprocessing_is_refused(prepared: Path) -> None:
    with pytest.raises(RunError, match="other preprocessing"):
        train(_params(prepared, "full", use_clahe=False), progress=False)


def test_missing_cache_and_empty_split_are_clear_errors(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="notebook 01|notebook 02|missing"):
        train(resolve(**TINY, output_root=str(tmp_path), run_name="empty"), progress=False)
    p = _params(prepared, "nosplit")
    m = pd.read_csv(prepared / "nosplit/manifest.csv")
    m[m.split != "val"].to_csv(prepared / "nosplit/manifest.csv", index=False)
    with pytest.raises(RunError, match="'val' split has no slices"):
        train(p, progress=False)


def test_checkpoint_from_another_model_is_refused(prepared: Path) -> None:
    ckpt = load_checkpoint(prepared / "full/models/hybrid/best.pt")
    ckpt["config"] = {**ckpt["config"], "model": "unet_smp"}
    with pytest.raises(RunError, match="do not fit"):
        model_from_checkpoint(ckpt)
    bad = prepared / "not_a_checkpoint.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(RunError, match="not a liverlib checkpoint"):
        load_checkpoint(bad)
