"""What a training run carries from epoch to epoch and how it is saved and resumed (docs/study.md §6).

Write order per epoch (:func:`save_epoch`): ``last.pt`` (with the history and the best epoch), then ``best.pt``, then
``history.csv``. :func:`resume` loads ``last.pt`` when it was written with the same config and repairs a kill between
the writes (``history.csv`` from ``last.pt``; ``best.pt`` from ``last.pt`` when the last epoch was the best); stale
temp files of a killed write are removed first (:func:`remove_checkpoint_temps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from liverlib.errors import RunError
from liverlib.files import remove_stale_temps, write_table
from liverlib.model.checkpoint import load_checkpoint, save_checkpoint
from liverlib.params import changed_keys
from liverlib.training.schedule import LrSchedule

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "val_pixel_acc", "val_liver_dice", "val_tumor_dice", "val_tumor_dice_gtpos",
    "val_tumor_gtpos_n", "val_liver_iou", "val_tumor_iou", "lr", "epoch_seconds", "train_slices_per_s",
]  # fmt: skip
"""``history.csv`` columns. ``val_*_dice``/``val_*_iou``: means over all validation slices, ε-smoothed (an
empty/empty slice scores 1, the paper's rule); ``val_tumor_dice_gtpos``: mean tumor Dice over the
``val_tumor_gtpos_n`` validation slices that hold ground-truth tumor (NaN if none)."""


@dataclass
class TrainState:
    """Everything a training run carries from epoch to epoch (and what ``last.pt`` stores)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: LrSchedule
    scaler: torch.amp.GradScaler
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_loss": float("inf"), "epoch": 0})
    start: int = 1


def remove_checkpoint_temps(out: Path) -> None:
    """Remove temp files a killed checkpoint or history write left (``.last.*.pt``, ``.best.*.pt``, ``.history.*.csv``)."""
    for name in ("last.pt", "best.pt", "history.csv"):
        remove_stale_temps(out, name)


def resume(state: TrainState, out: Path, device: torch.device, *, overwrite: bool, repair: bool = True) -> TrainState:
    """Load ``last.pt`` into ``state`` when it was written with the same config; repair a kill between writes.

    ``repair`` (rank 0 only): rewrite ``best.pt`` and ``history.csv`` when a kill left them behind ``last.pt``.

    Raises:
        RunError: ``last.pt`` was written with another config (e.g. another split) and ``overwrite`` is False.
    """
    last_p, best_p = out / "last.pt", out / "best.pt"
    if not last_p.is_file():
        return state
    ckpt = load_checkpoint(last_p, map_location=device)
    changed = changed_keys(ckpt["config"], state.config)  # the stage guard's rule (params.GUARD_KEYS["03"])
    if changed:
        if not overwrite:
            what = "another split of the volumes" if "split" in changed else "other parameters"
            raise RunError(f"{last_p}: an earlier training here used {what} ({', '.join(changed)}); "
                           "use another run_name or set overwrite: true to retrain")  # fmt: skip
        return state  # retrain from scratch; the files are replaced epoch by epoch
    weights = ckpt["model"]
    bad = [k for k, t in weights.items() if torch.is_tensor(t) and t.is_floating_point() and not t.isfinite().all()]
    if bad:  # a diverged run (or one fed a damaged cache) saved NaN/inf: resuming would only repeat them
        if overwrite:
            return state  # retrain from scratch, as above
        raise RunError(f"{last_p}: holds non-finite weights ({len(bad)} of {len(weights)} tensors, e.g. {bad[0]}); "
                       "delete it or set overwrite: true to retrain from scratch")  # fmt: skip
    state.model.load_state_dict(ckpt["model"])
    state.opt.load_state_dict(ckpt["optimizer"])
    state.sched.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    state.history, state.best, state.start = ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
    if not repair:
        return state
    if state.best["epoch"] == ckpt["epoch"]:  # killed after last.pt but before best.pt was replaced
        best_epoch = load_checkpoint(best_p)["epoch"] if best_p.is_file() else None
        if best_epoch != ckpt["epoch"]:
            save_checkpoint({"model": ckpt["model"], "config": ckpt["config"], "epoch": ckpt["epoch"],
                             "metrics": ckpt["history"][-1], "split": ckpt["config"].get("split")}, best_p)  # fmt: skip
    write_table(pd.DataFrame(state.history, columns=HISTORY_COLUMNS), out / "history.csv", markdown=False)
    return state


def save_epoch(state: TrainState, raw: torch.nn.Module, out: Path, row: dict[str, Any], *, improved: bool,
               world: int, buffers: list[str]) -> None:  # fmt: skip
    """Write ``last.pt``, then ``best.pt`` (if improved), then ``history.csv`` (rank 0 only; module docstring)."""
    epoch, split = row["epoch"], state.config.get("split")
    save_checkpoint({"model": raw.state_dict(), "optimizer": state.opt.state_dict(), "scheduler": state.sched.state_dict(),
                     "scaler": state.scaler.state_dict(), "config": state.config, "epoch": epoch, "history": state.history,
                     "best": state.best, "world_size": world, "rank_buffer_digests": buffers, "split": split},
                    out / "last.pt")  # fmt: skip
    if improved:
        save_checkpoint({"model": raw.state_dict(), "config": state.config, "epoch": epoch, "metrics": row,
                         "split": split}, out / "best.pt")  # fmt: skip
    write_table(pd.DataFrame(state.history, columns=HISTORY_COLUMNS), out / "history.csv", markdown=False)


def resume_all_ranks(state: TrainState, out: Path, device: torch.device, rank: int, overwrite: bool) -> TrainState:
    """DDP: rank 0 resumed (or refused); the other ranks load the same ``last.pt`` if rank 0 resumed from it."""
    import torch.distributed as dist

    decision = [state.start]
    dist.broadcast_object_list(decision, src=0)
    if rank > 0 and decision[0] > 1:
        state = resume(state, out, device, overwrite=overwrite, repair=False)
    return state
