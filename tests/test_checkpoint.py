"""Checkpoints load without executing code, name the file when refused, and guard against test-set leakage."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from liverlib.errors import RunError
from liverlib.model.checkpoint import check_not_trained_on, load_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this runs ``os.system`` (creates a file): what a crafted checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.reliability("'refused: the file holds Python objects other than weights'", 1, "nothing ran")
def test_crafted_pickle_is_refused_without_running(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {"model": "hybrid"}, "x": _Payload(target)}, evil, pickle_module=pickle)
    with pytest.raises(RunError, match="evil.pt: refused"):
        load_checkpoint(evil)
    assert not target.exists()
    # the same object loaded the unsafe way would run: the test's payload is real
    torch.load(evil, weights_only=False)
    assert target.exists()


def test_own_checkpoint_round_trips(tmp_path: Path) -> None:
    state = {"model": {"w": torch.ones(2)}, "config": {"model": "hybrid", "split": {"train": [1]}}, "epoch": 3,
             "history": [{"epoch": 1, "val_loss": float("nan")}], "best": {"val_loss": float("inf"), "epoch": 0}}  # fmt: skip
    save_checkpoint(state, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.ones(2))


@pytest.mark.reliability("'is a folder, not a checkpoint file' / 'not a readable checkpoint'", 1, "nothing written")
def test_folder_and_truncated_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="is a folder"):
        load_checkpoint(tmp_path)
    save_checkpoint({"model": {"w": torch.ones(1000)}, "config": {}}, tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


@pytest.mark.reliability("'trained or validated on test volume(s) [...]: retrain'", 1, "no metrics written")
def test_leak_check(tmp_path: Path) -> None:
    ckpt = {"split": {"train": [1, 2], "val": [3], "test": [4]}}
    check_not_trained_on(ckpt, [4, 5], "c.pt")  # disjoint: fine
    with pytest.raises(RunError, match=r"c.pt: trained or validated on test volume\(s\) \[2, 3\]"):
        check_not_trained_on(ckpt, [2, 3, 4], "c.pt")
    with pytest.raises(RunError, match="records no training split"):
        check_not_trained_on({}, [4], "c.pt")
