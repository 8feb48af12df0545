"""End-to-end training rates of the benchmark: cache → augmentation → training step, paper path vs fast path.

The **paper path** is the study's default loop: a CPU ``DataLoader`` over :class:`liverlib.data.dataset.SliceDataset`
with the albumentations pipeline, fp32, NCHW, explicit attention. The **fast path** holds the split on the
device (:class:`liverlib.training.device_batches.GpuBatches`), augments there (:mod:`liverlib.training.gpu_augment`) and trains with
fused SDPA, channels_last and autocast where it pays. Both call :func:`liverlib.training.step.train_step`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from liverlib import paper
from liverlib.bench.models import build_paths
from liverlib.bench.timing import Reps, sync_device
from liverlib.data.cache import SliceCache
from liverlib.training.losses import CombinedLoss
from liverlib.training.step import train_step

PAPER_EPOCH = {"train": paper.SPLITS["train"][1], "val": paper.SPLITS["val"][1], "epochs": paper.SETTINGS["epochs"]}
"""The paper's run: 1,350 training and 168 validation slices per epoch, 100 epochs (docs/study.md §6; 4.02 h on a T4)."""


def _batches(make_epoch: Callable[[int], Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches, epoch after epoch (a small benchmark cache runs out before the timed steps do)."""
    epoch = 1
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def _timed_steps(step: Callable[[torch.Tensor, torch.Tensor], None], batches: Iterator, n: int,
                 device: torch.device) -> float:  # fmt: skip
    """Slices/s of ``n`` steps fed by ``batches`` (after one untimed step), data waiting included."""
    x, y = next(batches)
    step(x, y)
    sync_device(device)
    seen, t0 = 0, time.perf_counter()
    for _ in range(n):
        x, y = next(batches)
        step(x, y)
        seen += len(x)
    sync_device(device)
    return seen / (time.perf_counter() - t0)


def paper_loader(cache: SliceCache, index: pd.DataFrame, *, batch_size: int, workers: int, seed: int,
                 device: torch.device) -> Callable[[int], DataLoader]:  # fmt: skip
    """Epoch → the paper path's seeded, shuffled DataLoader with albumentations: the training loop's own
    (:func:`liverlib.training.loop.make_loader`)."""
    from liverlib.data.dataset import SliceDataset
    from liverlib.training.augment import build_augmentation
    from liverlib.training.loop import LoaderConfig, make_loader

    ds = SliceDataset(index, cache, build_augmentation(seed=seed))
    cfg = LoaderConfig(batch_size=batch_size, num_workers=workers, seed=seed)
    return lambda epoch: make_loader(ds, cfg, shuffle=True, epoch=epoch, device=device)


def measure_end_to_end(name: str, cache: SliceCache, index: pd.DataFrame, *, size: int, batch_size: int,
                       device: torch.device, reps: Reps, workers: int, cpu_bf16: bool | None = None,
                       seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Training slices/s end to end of the paper path and the fast path of one model on a cached split.

    Args:
        name: "hybrid" or "unet_smp".
        cache, index: the cached slices and the rows to train on (``size``² each).
        batch_size: slices per step.
        device: where the model runs.
        reps: ``reps.e2e_steps`` timed steps per path.
        workers: DataLoader workers of the paper path.
        cpu_bf16: as :func:`liverlib.bench.models.measure_model`.

    Returns:
        a row per path: ``path``, ``precision``, ``train_slices_s``, ``steps``, ``workers`` and, for the fast
        path, ``load_s`` (copying the split to the device) and ``resident``.
    """
    from liverlib.training.device_batches import GpuBatches

    paths = build_paths(name, size, batch_size=batch_size, device=device, cpu_bf16=cpu_bf16, big_batch=None)
    loss_fn, rows = CombinedLoss(), []
    for key, fast in (("naive", False), ("fast", True)):
        p = paths[key]
        p.model.train()
        dtype = None if p.precision == "fp32" else getattr(torch, p.precision)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

        def step(
            x: torch.Tensor, y: torch.Tensor, p: Any = p, dtype: Any = dtype, scaler: Any = scaler, fast: bool = fast
        ) -> None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            train_step(p.model, x, y, p.opt, loss_fn, scaler, grad_clip=1.0, amp_dtype=dtype, channels_last=fast)

        row: dict[str, Any] = {"model": name, "size": size, "path": key, "precision": p.precision, "batch": batch_size}
        if fast:
            t = time.perf_counter()
            feed = GpuBatches(cache, index, batch_size=batch_size, device=device, seed=seed, augment=True)
            sync_device(device)
            row |= {"load_s": time.perf_counter() - t, "resident": feed.resident, "workers": 0}
            make = feed.epoch
        else:
            make = paper_loader(cache, index, batch_size=batch_size, workers=workers, seed=seed, device=device)
            row["workers"] = workers
        row["train_slices_s"] = _timed_steps(step, _batches(make), reps.e2e_steps, device)
        row["steps"] = reps.e2e_steps
        rows.append(row)
    return rows


def feeder_rate(cache: SliceCache, index: pd.DataFrame, *, batch_size: int, device: torch.device,
                batches: int) -> float:  # fmt: skip
    """Augmented slices/s that :class:`liverlib.training.device_batches.GpuBatches` delivers alone (no model)."""
    from liverlib.training.device_batches import GpuBatches

    feed = GpuBatches(cache, index, batch_size=batch_size, device=device, seed=0, augment=True)
    it = _batches(feed.epoch)
    next(it)
    sync_device(device)
    seen, t0 = 0, time.perf_counter()
    for _ in range(batches):
        seen += len(next(it)[0])
    sync_device(device)
    return seen / (time.perf_counter() - t0)


def projected_hours(train_slices_s: float, val_slices_s: float) -> float:
    """Hours of the paper's 100-epoch run (:data:`PAPER_EPOCH`) at these training and validation rates."""
    per_epoch = PAPER_EPOCH["train"] / train_slices_s + PAPER_EPOCH["val"] / val_slices_s
    return PAPER_EPOCH["epochs"] * per_epoch / 3600
