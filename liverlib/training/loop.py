"""Training (docs/study.md §6, paper §III.A, Table 5, Figs. 6–7; docs/training.md).

AdamW (1e-4, wd 1e-5), batch 8, ReduceLROnPlateau on validation loss (×0.5, patience 5), gradient
clipping at norm 1.0 (or, ``lr_schedule: onecycle``, a warm-up and cosine decay stepped per batch:
:class:`LrSchedule`); ``best.pt`` = lowest validation loss, ``last.pt`` every epoch (atomic), and
``history.csv`` per epoch. Each epoch reseeds from ``seed * 1000 + epoch``, so a run killed mid-training and
rerun resumes from ``last.pt`` to the same weights and history as an uninterrupted run (on CPU).

Before every validation the BatchNorm statistics are recomputed for the current weights on the clean training
slices (:func:`liverlib.training.validation.recompute_bn_stats`): the running averages training leaves describe older
weights and augmented images, and scored in ``eval()`` mode they collapsed validation (docs/training.md). The
saved checkpoints hold the recomputed statistics; training itself never reads them, so resume stays exact.

Every checkpoint records the volume ids of the split it was trained on (``split``); a run whose split
changed since (re-curation) is not resumed: it is refused, or retrained with ``overwrite: true``.
Under torchrun (DDP) each rank draws its own augmentation and dropout; the recomputed statistics are averaged
over the ranks' shards (SyncBatchNorm on CUDA computes them over all ranks) and rank 0's buffers are
broadcast before validation, so every validation slice is scored by the model that is saved.

Write order per epoch: ``last.pt`` (with the history and the best epoch), then ``best.pt``, then
``history.csv``. A kill between them is repaired on resume (``history.csv`` from ``last.pt``; ``best.pt``
from ``last.pt`` when the last epoch was the best), and stale temp files of a killed write are removed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from liverlib.data.dataset import SliceDataset, open_run_cache, seed_worker, split_index
from liverlib.data.preprocess import PreprocessConfig
from liverlib.errors import RunError
from liverlib.files import remove_stale_temps, write_table
from liverlib.model.checkpoint import load_checkpoint, model_dir, save_checkpoint
from liverlib.model.hybrid import build_model
from liverlib.params import TRAIN_KEYS, Params
from liverlib.progress import bar as tqdm
from liverlib.run import RunDir
from liverlib.runtime import amp_settings, distributed_context, resolve_device, seed_everything
from liverlib.training.losses import CombinedLoss
from liverlib.training.tracking import training_tracker
from liverlib.training.validation import recompute_bn_stats, sync_buffers, validate

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "val_pixel_acc", "val_liver_dice", "val_tumor_dice", "val_tumor_dice_gtpos",
    "val_tumor_gtpos_n", "val_liver_iou", "val_tumor_iou", "lr", "epoch_seconds", "train_slices_per_s",
]  # fmt: skip
"""``history.csv`` columns. ``val_*_dice``/``val_*_iou``: means over all validation slices, ε-smoothed (an
empty/empty slice scores 1, the paper's rule); ``val_tumor_dice_gtpos``: mean tumor Dice over the
``val_tumor_gtpos_n`` validation slices that hold ground-truth tumor (NaN if none)."""

RANK_SEED_STRIDE = 7919
"""Rank r of a DDP run seeds augmentation and dropout with ``seed * 1000 + epoch + r * RANK_SEED_STRIDE``."""


CPU_TRAIN_SLICES_PER_S_256 = 0.21
"""The paper model's fp32 training step at 256² on a 2-core CPU (docs/benchmarks.md)."""


def cpu_hours(image_size: int, slices: float, epochs: int) -> float:
    """Expected CPU hours to train ``epochs`` over ``slices`` training slices (the cost scales with the pixel count)."""
    rate = CPU_TRAIN_SLICES_PER_S_256 * (256 / image_size) ** 2
    return epochs * slices / rate / 3600


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which epoch and how to resume."""


def train_config(p: Params, model_name: str) -> dict[str, Any]:
    """What defines a training run (resume is refused if these differ); ``epochs`` may grow."""
    cfg = {k: p[k] for k in TRAIN_KEYS if k != "epochs"}
    cfg["model"] = model_name
    cfg["preprocess_key"] = PreprocessConfig.from_params(p).key
    return cfg


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two training configs (a key newer than ``before`` counts at its default)."""
    from liverlib.params import DEFAULTS

    return sorted(k for k in set(before) | set(now) if before.get(k, DEFAULTS.get(k)) != now.get(k, DEFAULTS.get(k)))


def _loader(ds: SliceDataset, p: Params, *, shuffle: bool, epoch: int, device: torch.device,
            rank: int = 0, world: int = 1) -> DataLoader:  # fmt: skip
    """Seeded loader; under DDP each rank gets its own shard (train: a DistributedSampler; val: every world-th slice).

    A shuffled (training) loader drops a last batch of a single slice: BatchNorm in training mode cannot normalise
    one sample whose deepest feature map is 1×1 (the smp encoder at 32²), and one slice's statistics are noise anyway.
    """
    g = torch.Generator().manual_seed(p.seed * 1000 + epoch)
    workers = p.num_workers  # seeded per worker (seed_worker), so runs stay reproducible
    sampler = None
    n = -(-len(ds) // world) if world > 1 and shuffle else len(ds)  # slices of this rank (the sampler pads)
    drop_last = shuffle and n > 1 and n % p.batch_size == 1
    if world > 1 and shuffle:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=p.seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    elif world > 1:
        ds = torch.utils.data.Subset(ds, range(rank, len(ds), world))
    return DataLoader(ds, batch_size=p.batch_size, shuffle=shuffle, sampler=sampler, generator=g, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last,
                      worker_init_fn=seed_worker if workers else None, persistent_workers=False)  # fmt: skip


class LrSchedule:
    """The learning-rate schedule (docs/training.md): ``plateau`` (the paper's ReduceLROnPlateau on validation loss,
    ×``plateau_factor`` after ``plateau_patience`` epochs without improvement, stepped once per epoch) or ``onecycle``
    (:class:`torch.optim.lr_scheduler.OneCycleLR`: a linear warm-up over ``warmup_epochs`` from lr/25 to ``lr``,
    then a cosine decay to ``lr``/2.5e5 by the last epoch, stepped after every batch).

    One object for both, so the loop calls :meth:`batch` after each optimiser step and :meth:`epoch` after each
    validation whatever the schedule; its state goes into ``last.pt``.
    """

    def __init__(self, opt: torch.optim.Optimizer, p: Params, *, epochs: int, steps_per_epoch: int):
        self.kind = p.lr_schedule
        if self.kind == "onecycle":
            total = max(1, epochs * steps_per_epoch)
            self.sched: Any = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=p.lr, total_steps=total, pct_start=min(0.99, max(1, p.warmup_epochs) / max(1, epochs)),
                anneal_strategy="cos", cycle_momentum=False, div_factor=25.0, final_div_factor=1.0e4)  # fmt: skip
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=p.plateau_factor,
                                                                    patience=p.plateau_patience)  # fmt: skip

    def batch(self) -> None:
        """After an optimiser step (``onecycle`` only; stops at its last step, so extra batches keep the final lr)."""
        if self.kind == "onecycle" and self.sched.last_epoch + 1 < self.sched.total_steps:
            self.sched.step()

    def epoch(self, val_loss: float) -> None:
        """After validation (``plateau`` only)."""
        if self.kind == "plateau":
            self.sched.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        total = getattr(self.sched, "total_steps", None)
        self.sched.load_state_dict(state)
        if total is not None:  # more epochs than the run first asked for: the decay ends at the new last step
            self.sched.total_steps = max(total, self.sched.total_steps)


def make_scheduler(opt: torch.optim.Optimizer, p: Params, *, epochs: int, steps_per_epoch: int) -> LrSchedule:
    """The run's :class:`LrSchedule` for ``epochs`` of ``steps_per_epoch`` optimiser steps."""
    return LrSchedule(opt, p, epochs=epochs, steps_per_epoch=steps_per_epoch)


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


def _remove_stale_temps(out: Path) -> None:
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
    changed = config_changes(ckpt["config"], state.config)
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


def train_epoch(model: torch.nn.Module, state: TrainState, loader: DataLoader, loss_fn: torch.nn.Module,
                p: Params, device: torch.device, *, amp_dtype: torch.dtype | None, desc: str,
                progress: bool) -> tuple[float, int]:  # fmt: skip
    """One pass over the training loader; returns (sum of loss × slices, slices) of this rank."""
    model.train()
    run_loss, seen = 0.0, 0
    sampled = _record_indices(loader)
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)
    for b, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = train_step(model, x, y, state.opt, loss_fn, state.scaler, grad_clip=p.grad_clip, amp_dtype=amp_dtype,
                          channels_last=p.channels_last, scheduler=state.sched.batch)  # fmt: skip
        value = loss.item()
        if not math.isfinite(value):
            raise RunError(_nonfinite_loss(value, desc, b, loader, sampled, p.batch_size))
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


def train(p: Params, *, model_name: str | None = None, epochs: int | None = None, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one model on the run's cache; resume from ``last.pt`` when it exists.

    Args:
        p: resolved parameters of the run.
        model_name: "hybrid" or "unet_smp" (default ``p.model``).
        epochs: number of epochs (default ``p.epochs``).
        progress: show tqdm bars per epoch.
        stop_after: stop after this many epochs of this call (to test resume; the run stays resumable).

    Returns:
        dict with ``history`` (DataFrame), ``best_epoch``, ``dir`` (models/<name>/), ``resumed_from``,
        ``device``, ``amp``, ``parameters`` (trainable parameters of the model trained) and ``split``.

    Raises:
        RunError: missing or mismatched cache, empty split, or an earlier run here with other parameters
            or another split (without ``overwrite``).
        TrainingInterrupted: Ctrl-C; the run stays resumable from the last complete epoch.
    """
    model_name = model_name or p.model
    epochs = int(epochs or p.epochs)
    run = RunDir.from_params(p)
    cache = open_run_cache(run.root, PreprocessConfig.from_params(p))
    train_idx, val_idx = split_index(run.manifest, "train"), split_index(run.manifest, "val")
    split = run.split_ids()
    rank, world, local_rank = distributed_context()
    device = resolve_device(p.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    use_amp, amp_dtype, use_scaler = amp_settings(device, p.amp, cpu_bf16=p.cpu_bf16)
    amp_dtype = amp_dtype if use_amp else None
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = model_dir(run, model_name)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _remove_stale_temps(out)

    seed_everything(p.seed)
    model = build_model(model_name, image_size=p.image_size, encoder=p.encoder, encoder_weights=p.encoder_weights,
                        fused_attention=p.fused_attention).to(device)  # fmt: skip
    if p.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    shard = len(train_idx.iloc[rank::world]) if p.feeder == "gpu" else -(-len(train_idx) // world)
    steps = -(-shard // p.batch_size) - (p.feeder != "gpu" and shard > 1 and shard % p.batch_size == 1)  # _loader
    sched = make_scheduler(opt, p, epochs=epochs, steps_per_epoch=steps)
    state = TrainState(model, opt, sched, torch.amp.GradScaler("cuda", enabled=use_scaler),
                       {**train_config(p, model_name), "split": split})  # fmt: skip
    state = resume(state, out, device, overwrite=p.overwrite) if rank == 0 or world == 1 else state
    if world > 1:  # every rank resumes from rank 0's decision (only rank 0 reads and repairs the files)
        state = _resume_all_ranks(state, out, device, rank, p.overwrite)
    resumed_from = state.start - 1
    hours = cpu_hours(p.image_size, len(train_idx), epochs - resumed_from)
    if device.type == "cpu" and rank == 0 and hours > 1:
        print(f"note: no CUDA device: {epochs - resumed_from} epochs of {len(train_idx)} slices at {p.image_size}² on "
              f"the CPU take about {hours:,.0f} h (derived from docs/benchmarks.md); a GPU takes minutes", flush=True)  # fmt: skip
    raw = model
    if world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw = model
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if p.compile:
        model = torch.compile(model)
    import liverlib.training.augment as aug

    transform = aug.build_augmentation(elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma,
                                       seed=p.seed) if p.augment else None  # fmt: skip
    train_ds, val_ds = SliceDataset(train_idx, cache, transform), SliceDataset(val_idx, cache, None)
    bn_ds = SliceDataset(train_idx, cache, None)  # the training slices as validation sees them (no augmentation)
    feed = None
    if p.feeder == "gpu":  # the split resident on the device, augmented there (each rank its shard and seed)
        from liverlib.training.device_batches import GpuBatches

        feed = GpuBatches(cache, train_idx.iloc[rank::world].reset_index(drop=True), batch_size=p.batch_size,
                          device=device, seed=p.seed + rank * RANK_SEED_STRIDE, augment=p.augment,
                          elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma)  # fmt: skip
    loss_fn = CombinedLoss(p.ce_weight, p.dice_weight, p.focal_weight, p.focal_alpha, p.focal_gamma, p.dice_eps)
    tracker = training_tracker(p, run.root, model_name, history=state.history, resumed=resumed_from > 0, rank=rank)
    done_now, epoch = 0, state.start
    try:
        for epoch in range(state.start, epochs + 1):
            seed = p.seed * 1000 + epoch + rank * RANK_SEED_STRIDE  # each rank its own augmentation and dropout
            seed_everything(seed)
            if transform is not None:
                transform.set_random_seed(seed)
            t0 = time.perf_counter()
            loader = (feed.epoch(epoch) if feed is not None else
                      _loader(train_ds, p, shuffle=True, epoch=epoch, device=device, rank=rank, world=world))  # fmt: skip
            run_loss, seen = train_epoch(model, state, loader, loss_fn, p, device, amp_dtype=amp_dtype,
                                         desc=f"{model_name} epoch {epoch}/{epochs}", progress=progress and rank == 0)  # fmt: skip
            if world > 1:  # the epoch's training loss and slice count over all ranks
                sums = torch.tensor([run_loss, float(seen)], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(sums)
                run_loss, seen = float(sums[0]), int(sums[1])
            train_s = time.perf_counter() - t0
            precision = {"channels_last": p.channels_last, "autocast": amp_dtype is not None, "dtype": amp_dtype,
                         "world": world}  # fmt: skip
            # BatchNorm statistics of these weights, on the clean training slices (docs/training.md), then rank 0's
            # on every rank: what is validated is what is saved
            recompute_bn_stats(raw, _loader(bn_ds, p, shuffle=True, epoch=epoch, device=device, rank=rank, world=world),
                               device, **precision)  # fmt: skip
            buffers = sync_buffers(raw, world)
            val = validate(raw, _loader(val_ds, p, shuffle=False, epoch=epoch, device=device, rank=rank, world=world),
                           loss_fn, device, **precision)  # fmt: skip
            lr = opt.param_groups[0]["lr"]
            sched.epoch(val["val_loss"])
            row = {"epoch": epoch, "train_loss": run_loss / seen, **val, "lr": lr,
                   "epoch_seconds": time.perf_counter() - t0, "train_slices_per_s": seen / train_s}  # fmt: skip
            state.history.append(row)
            improved = val["val_loss"] < state.best["val_loss"]
            if improved:
                state.best = {"val_loss": val["val_loss"], "epoch": epoch}
            if rank == 0:  # only rank 0 writes files
                save_epoch(state, raw, out, row, improved=improved, world=world, buffers=buffers)
                tracker.log_epoch(row)
            if world > 1:
                torch.distributed.barrier()
            if progress and rank == 0:
                print(f"{model_name} epoch {epoch}/{epochs}: train {row['train_loss']:.4f} val {val['val_loss']:.4f} "
                      f"liver Dice {val['val_liver_dice']:.3f} tumor Dice {val['val_tumor_dice']:.3f} "
                      f"(GT-positive {val['val_tumor_dice_gtpos']:.3f}, n={val['val_tumor_gtpos_n']}) "
                      f"({row['epoch_seconds']:.1f} s)", flush=True)  # fmt: skip
            done_now += 1
            if stop_after is not None and done_now >= stop_after:
                break
    except KeyboardInterrupt:
        tracker.close("KILLED")
        raise TrainingInterrupted(f"{model_name}: interrupted at epoch {epoch} of {epochs} ({epoch - 1} complete in "
                                  f"{out / 'last.pt'}); rerun the same command to resume") from None  # fmt: skip
    except Exception:
        tracker.close("FAILED")
        raise
    tracker.close()
    if not state.history:
        raise RunError(f"{out}: no epoch was trained (epochs={epochs})")
    return {"history": pd.DataFrame(state.history, columns=HISTORY_COLUMNS), "best_epoch": state.best["epoch"],
            "dir": out, "resumed_from": resumed_from, "device": str(device), "amp": str(amp_dtype) if amp_dtype else "off",
            "parameters": int(sum(t.numel() for t in raw.parameters() if t.requires_grad)), "split": split}  # fmt: skip


def _resume_all_ranks(state: TrainState, out: Path, device: torch.device, rank: int, overwrite: bool) -> TrainState:
    """DDP: rank 0 resumed (or refused); the other ranks load the same ``last.pt`` if rank 0 resumed from it."""
    import torch.distributed as dist

    decision = [state.start]
    dist.broadcast_object_list(decision, src=0)
    if rank > 0 and decision[0] > 1:
        state = resume(state, out, device, overwrite=overwrite, repair=False)
    return state
