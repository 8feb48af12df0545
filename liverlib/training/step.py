"""One training step and one pass over the training loader (docs/study.md §6): autocast, gradient scaling and
clipping, channels_last; a non-finite loss stops the run naming the batch's volumes and the cache it read.

:func:`train_step` is shared with the benchmark (:mod:`liverlib.bench`), so what is timed is what trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from liverlib.errors import RunError
from liverlib.params import Params
from liverlib.progress import bar as tqdm
from liverlib.training.state import TrainState


@dataclass(frozen=True)
class StepConfig:
    """The few parameters a training step and epoch read (issue 19: not the whole ``Params``)."""

    grad_clip: float
    channels_last: bool
    batch_size: int

    @classmethod
    def from_params(cls, p: Params) -> StepConfig:
        """``grad_clip``, ``channels_last`` and ``batch_size`` of a run's parameters."""
        return cls(grad_clip=p.grad_clip, channels_last=p.channels_last, batch_size=p.batch_size)


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               loss_fn: torch.nn.Module, scaler: torch.amp.GradScaler, *, grad_clip: float,
               amp_dtype: torch.dtype | None = None, channels_last: bool = False,
               scheduler: Callable[[], None] | None = None) -> torch.Tensor:  # fmt: skip
    """One optimisation step (docs/study.md §6): forward (autocast when ``amp_dtype``), loss in fp32, backward,
    unscale, clip the gradient norm, step, then ``scheduler()`` (a per-batch learning-rate step, if any).
    Shared by :func:`train` and the benchmark.

    Args:
        x: (B, 1, S, S) float images in [0, 1]; y: (B, S, S) int64 labels in {0, 1, 2}; both on the model's device.

    Returns:
        The loss (a 0-d tensor, not synchronised: call ``.item()`` when needed).
    """
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    if scheduler is not None:
        scheduler()
    return loss.detach()


def train_epoch(model: torch.nn.Module, state: TrainState, loader: DataLoader, loss_fn: torch.nn.Module,
                cfg: StepConfig, device: torch.device, *, amp_dtype: torch.dtype | None, desc: str,
                progress: bool) -> tuple[float, int]:  # fmt: skip
    """One pass over the training loader; returns (sum of loss × slices, slices) of this rank."""
    model.train()
    run_loss, seen = 0.0, 0
    sampled = _record_indices(loader)
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)
    for b, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = train_step(model, x, y, state.opt, loss_fn, state.scaler, grad_clip=cfg.grad_clip, amp_dtype=amp_dtype,
                          channels_last=cfg.channels_last, scheduler=state.sched.batch)  # fmt: skip
        value = loss.item()
        if not math.isfinite(value):
            raise RunError(_nonfinite_loss(value, desc, b, loader, sampled, cfg.batch_size))
        run_loss += value * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{run_loss / seen:.4f}")
    return run_loss, seen


class _RecordingSampler:
    """A loader's sampler that keeps the indices it gave (in order), so a failed batch can name its slices."""

    def __init__(self, sampler: Any):
        self.sampler, self.seen = sampler, []

    def __iter__(self) -> Any:
        for i in self.sampler:
            self.seen.append(int(i))
            yield i

    def __len__(self) -> int:
        return len(self.sampler)


def _record_indices(loader: Any) -> list[int] | None:
    """Wrap a DataLoader's sampler in a :class:`_RecordingSampler` (same order, so runs and resume are unchanged);
    returns its list of indices, or None for another feeder (the GPU feeder)."""
    batch_sampler = getattr(loader, "batch_sampler", None) if isinstance(loader, DataLoader) else None
    if batch_sampler is None or not hasattr(batch_sampler, "sampler"):
        return None
    batch_sampler.sampler = _RecordingSampler(batch_sampler.sampler)
    return batch_sampler.sampler.seen


def _nonfinite_loss(value: float, desc: str, batch: int, loader: Any, sampled: list[int] | None, size: int) -> str:
    """One line for a non-finite training loss: the epoch, the batch's volume ids and the cache it read."""
    ds = getattr(loader, "dataset", None)
    picked = sampled[batch * size : (batch + 1) * size] if sampled is not None else []
    if isinstance(ds, torch.utils.data.Subset):
        picked, ds = [ds.indices[i] for i in picked], ds.dataset
    ids = sorted({int(ds.volume_ids[i]) for i in picked}) if picked and hasattr(ds, "volume_ids") else None
    cache = getattr(getattr(ds, "cache", None), "root", None) or "named by the run's preprocess.json"
    return (f"{desc}, batch {batch + 1}: the training loss is {value} (non-finite), on slices of volume(s) "
            f"{ids if ids is not None else '(unknown with this feeder)'}; stopped, nothing saved for this epoch; "
            f"check the cache {cache} (rerun notebook 02: it rebuilds damaged volumes) or lower lr")  # fmt: skip
