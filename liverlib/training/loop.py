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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from liverlib.data.dataset import SliceDataset, open_run_cache, seed_worker, split_index
from liverlib.data.preprocess import PreprocessConfig
from liverlib.errors import RunError
from liverlib.model.checkpoint import model_dir
from liverlib.model.hybrid import build_model
from liverlib.params import GUARD_KEYS, Params
from liverlib.run import RunDir
from liverlib.runtime import amp_settings, distributed_context, epoch_seed, resolve_device, seed_everything
from liverlib.training.losses import CombinedLoss
from liverlib.training.schedule import make_scheduler
from liverlib.training.state import (
    HISTORY_COLUMNS,
    TrainState,
    remove_checkpoint_temps,
    resume,
    resume_all_ranks,
    save_epoch,
)
from liverlib.training.step import StepConfig, train_epoch
from liverlib.training.tracking import training_tracker
from liverlib.training.validation import recompute_bn_stats, sync_buffers, validate

RANK_SEED_STRIDE = 7919

BN_SLICES = 96
"""Training slices (evenly spaced over the split) that BatchNorm's statistics are recomputed on before each validation
(:func:`liverlib.training.validation.recompute_bn_stats`). At 64² the whole split (≈ 200 slices) cost ≈ 5 s of a 23 s
epoch on one CPU thread; 96 slices of 64² hold 393 k pixels per first-layer channel, and the statistics of the deepest
(8 × 8) layer still average 6 k positions."""


def bn_slices(index: pd.DataFrame, n: int = BN_SLICES) -> pd.DataFrame:
    """At most ``n`` rows of ``index`` evenly spaced over it (every volume represented), in order."""
    if len(index) <= n:
        return index
    rows = sorted({round(i * (len(index) - 1) / (n - 1)) for i in range(n)})
    return index.iloc[rows].reset_index(drop=True)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (docs/study.md §5), fused into one kernel per step on CPU and CUDA.

    The same update rule as the default per-parameter loop, computed in one pass over all 20.8 M parameters: with
    the loop's ~300 small operations a 64² training step ran at 15.6 slices/s on 2 CPU threads, fused at 23.2
    (docs/training.md §5).
    """
    fused = device.type in ("cpu", "cuda") and all(t.is_floating_point() for t in model.parameters())
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def epoch_line(model_name: str, row: dict[str, Any], epochs: int) -> str:
    """The one line a notebook shows per epoch (a row of ``history.csv``)."""
    return (f"{model_name} epoch {int(row['epoch'])}/{epochs}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
            f"liver Dice {row['val_liver_dice']:.3f} tumor Dice {row['val_tumor_dice']:.3f} "
            f"(GT-positive {row['val_tumor_dice_gtpos']:.3f}, n={int(row['val_tumor_gtpos_n'])}) "
            f"({row['epoch_seconds']:.1f} s)")  # fmt: skip


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
    cfg = p.subset(GUARD_KEYS["03"])
    cfg["model"] = model_name
    cfg["preprocess_key"] = PreprocessConfig.from_params(p).key
    return cfg


@dataclass(frozen=True)
class LoaderConfig:
    """What :func:`make_loader` reads of a run's parameters (built once per training, :meth:`from_params`)."""

    batch_size: int
    num_workers: int
    seed: int

    @classmethod
    def from_params(cls, p: Params) -> LoaderConfig:
        return cls(int(p.batch_size), int(p.num_workers), int(p.seed))


def make_loader(ds: SliceDataset, cfg: LoaderConfig, *, shuffle: bool, epoch: int, device: torch.device,
            rank: int = 0, world: int = 1) -> DataLoader:  # fmt: skip
    """Seeded loader; under DDP each rank gets its own shard (train: a DistributedSampler; val: every world-th slice).

    A shuffled (training) loader drops a last batch of a single slice: BatchNorm in training mode cannot normalise
    one sample whose deepest feature map is 1×1 (the smp encoder at 32²), and one slice's statistics are noise anyway.
    """
    g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    workers = cfg.num_workers  # seeded per worker (seed_worker), so runs stay reproducible
    sampler = None
    n = -(-len(ds) // world) if world > 1 and shuffle else len(ds)  # slices of this rank (the sampler pads)
    drop_last = shuffle and n > 1 and n % cfg.batch_size == 1
    if world > 1 and shuffle:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    elif world > 1:
        ds = torch.utils.data.Subset(ds, range(rank, len(ds), world))
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=shuffle, sampler=sampler, generator=g, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last,
                      worker_init_fn=seed_worker if workers else None, persistent_workers=False)  # fmt: skip


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
    rank, world, device, amp_dtype, use_scaler = _placement(p)
    out = model_dir(run, model_name)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        remove_checkpoint_temps(out)
    state = _start(p, model_name, epochs, device, use_scaler, train_idx, split, rank=rank, world=world)
    state = resume(state, out, device, overwrite=p.overwrite) if rank == 0 or world == 1 else state
    if world > 1:  # every rank resumes from rank 0's decision (only rank 0 reads and repairs the files)
        state = resume_all_ranks(state, out, device, rank, p.overwrite)
    resumed_from = state.start - 1
    _note_cpu_hours(p, device, rank, len(train_idx), epochs - resumed_from)
    model, raw = _wrap(state.model, p, device, world)
    t = _Training(p, model_name, epochs, out, device, rank, world, amp_dtype, model, raw, state,
                  *_datasets(p, cache, train_idx, val_idx, device, rank, world), loss_fn=_loss(p),
                  tracker=training_tracker(p, run.root, model_name, history=state.history, resumed=resumed_from > 0,
                                           rank=rank), progress=progress)  # fmt: skip
    _epochs(t, stop_after)
    if not state.history:
        raise RunError(f"{out}: no epoch was trained (epochs={epochs})")
    return {"history": pd.DataFrame(state.history, columns=HISTORY_COLUMNS), "best_epoch": state.best["epoch"],
            "dir": out, "resumed_from": resumed_from, "device": str(device), "amp": str(amp_dtype) if amp_dtype else "off",
            "parameters": int(sum(t.numel() for t in raw.parameters() if t.requires_grad)), "split": split}  # fmt: skip


def _placement(p: Params) -> tuple[int, int, torch.device, torch.dtype | None, bool]:
    """(rank, world, device, autocast dtype or None, GradScaler on) of this process; CPU runs deterministic."""
    rank, world, local_rank = distributed_context()
    device = resolve_device(p.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    use_amp, amp_dtype, use_scaler = amp_settings(device, p.amp, cpu_bf16=p.cpu_bf16)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return rank, world, device, amp_dtype if use_amp else None, use_scaler


def _start(p: Params, model_name: str, epochs: int, device: torch.device, use_scaler: bool, train_idx: pd.DataFrame,
           split: dict[str, list[int]], *, rank: int, world: int) -> TrainState:  # fmt: skip
    """A fresh, seeded model with its optimizer, schedule and scaler (what :func:`resume` may then load into)."""
    seed_everything(p.seed)
    model = build_model(model_name, image_size=p.image_size, encoder=p.encoder, encoder_weights=p.encoder_weights,
                        fused_attention=p.fused_attention).to(device)  # fmt: skip
    if p.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, p.lr, p.weight_decay, device)
    shard = len(train_idx.iloc[rank::world]) if p.feeder == "gpu" else -(-len(train_idx) // world)
    steps = -(-shard // p.batch_size) - (p.feeder != "gpu" and shard > 1 and shard % p.batch_size == 1)  # make_loader
    sched = make_scheduler(opt, p, epochs=epochs, steps_per_epoch=steps)
    return TrainState(model, opt, sched, torch.amp.GradScaler("cuda", enabled=use_scaler),
                      {**train_config(p, model_name), "split": split})  # fmt: skip


def _note_cpu_hours(p: Params, device: torch.device, rank: int, slices: int, epochs: int) -> None:
    """Print how long the remaining epochs take on a CPU when that is over an hour."""
    hours = cpu_hours(p.image_size, slices, epochs)
    if device.type == "cpu" and rank == 0 and hours > 1:
        print(f"note: no CUDA device: {epochs} epochs of {slices} slices at {p.image_size}² on "
              f"the CPU take about {hours:,.0f} h (derived from docs/benchmarks.md); a GPU takes minutes", flush=True)  # fmt: skip


def _wrap(
    model: torch.nn.Module, p: Params, device: torch.device, world: int
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model trained: DDP and compiled as asked, the raw module whose weights are saved)."""
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
    return model, raw


def _datasets(p: Params, cache: Any, train_idx: pd.DataFrame, val_idx: pd.DataFrame, device: torch.device,
              rank: int, world: int) -> tuple[Any, SliceDataset, SliceDataset, SliceDataset, Any]:  # fmt: skip
    """(augmentation, training, validation and BatchNorm datasets, the GPU feeder or None)."""
    import liverlib.training.augment as aug

    transform = aug.build_augmentation(elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma,
                                       seed=p.seed) if p.augment else None  # fmt: skip
    train_ds, val_ds = SliceDataset(train_idx, cache, transform), SliceDataset(val_idx, cache, None)
    # training slices as validation sees them (no augmentation), an evenly spaced subset (BN_SLICES)
    bn_ds = SliceDataset(bn_slices(train_idx), cache, None)
    feed = None
    if p.feeder == "gpu":  # the split resident on the device, augmented there (each rank its shard and seed)
        from liverlib.training.device_batches import GpuBatches

        feed = GpuBatches(cache, train_idx.iloc[rank::world].reset_index(drop=True), batch_size=p.batch_size,
                          device=device, seed=p.seed + rank * RANK_SEED_STRIDE, augment=p.augment,
                          elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma)  # fmt: skip
    return transform, train_ds, val_ds, bn_ds, feed


def _loss(p: Params) -> CombinedLoss:
    return CombinedLoss(p.ce_weight, p.dice_weight, p.focal_weight, p.focal_alpha, p.focal_gamma, p.dice_eps)


@dataclass
class _Training:
    """One call of :func:`train`, set up: what every epoch uses."""

    p: Params
    model_name: str
    epochs: int
    out: Path
    device: torch.device
    rank: int
    world: int
    amp_dtype: torch.dtype | None
    model: torch.nn.Module
    raw: torch.nn.Module
    state: TrainState
    transform: Any
    train_ds: SliceDataset
    val_ds: SliceDataset
    bn_ds: SliceDataset
    feed: Any
    loss_fn: torch.nn.Module
    tracker: Any
    progress: bool


def _epochs(t: _Training, stop_after: int | None) -> None:
    """The epochs from ``state.start``; the tracker is closed KILLED on Ctrl-C, FAILED on an error."""
    done_now, epoch = 0, t.state.start
    try:
        for epoch in range(t.state.start, t.epochs + 1):
            _epoch(t, epoch)
            done_now += 1
            if stop_after is not None and done_now >= stop_after:
                break
    except KeyboardInterrupt:
        t.tracker.close("KILLED")
        raise TrainingInterrupted(f"{t.model_name}: interrupted at epoch {epoch} of {t.epochs} ({epoch - 1} complete in "
                                  f"{t.out / 'last.pt'}); rerun the same command to resume") from None  # fmt: skip
    except Exception:
        t.tracker.close("FAILED")
        raise
    t.tracker.close()


def _epoch(t: _Training, epoch: int) -> None:
    """Train one epoch, recompute BatchNorm statistics, validate, save (rank 0) and print its line."""
    p, state, rank, world, device = t.p, t.state, t.rank, t.world, t.device
    seed = epoch_seed(p.seed, epoch) + rank * RANK_SEED_STRIDE  # each rank its own augmentation and dropout
    seed_everything(seed)
    if t.transform is not None:
        t.transform.set_random_seed(seed)
    t0 = time.perf_counter()
    lc = LoaderConfig.from_params(p)  # what the loaders read of the parameters
    loader = (t.feed.epoch(epoch) if t.feed is not None else
              make_loader(t.train_ds, lc, shuffle=True, epoch=epoch, device=device, rank=rank, world=world))  # fmt: skip
    step = StepConfig.from_params(p)  # what a step reads of the parameters
    run_loss, seen = train_epoch(t.model, state, loader, t.loss_fn, step, device, amp_dtype=t.amp_dtype,
                                 desc=f"{t.model_name} epoch {epoch}/{t.epochs}", progress=t.progress and rank == 0)  # fmt: skip
    if world > 1:  # the epoch's training loss and slice count over all ranks
        sums = torch.tensor([run_loss, float(seen)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        run_loss, seen = float(sums[0]), int(sums[1])
    train_s = time.perf_counter() - t0
    precision = {"channels_last": p.channels_last, "autocast": t.amp_dtype is not None, "dtype": t.amp_dtype,
                 "world": world}  # fmt: skip
    # BatchNorm statistics of these weights, on the clean training slices (docs/training.md), then rank 0's
    # on every rank: what is validated is what is saved
    recompute_bn_stats(t.raw, make_loader(t.bn_ds, lc, shuffle=True, epoch=epoch, device=device, rank=rank, world=world),
                       device, **precision)  # fmt: skip
    buffers = sync_buffers(t.raw, world)
    val = validate(t.raw, make_loader(t.val_ds, lc, shuffle=False, epoch=epoch, device=device, rank=rank, world=world),
                   t.loss_fn, device, **precision)  # fmt: skip
    lr = state.opt.param_groups[0]["lr"]
    state.sched.epoch(val["val_loss"])
    row = {"epoch": epoch, "train_loss": run_loss / seen, **val, "lr": lr,
           "epoch_seconds": time.perf_counter() - t0, "train_slices_per_s": seen / train_s}  # fmt: skip
    state.history.append(row)
    improved = val["val_loss"] < state.best["val_loss"]
    if improved:
        state.best = {"val_loss": val["val_loss"], "epoch": epoch}
    if rank == 0:  # only rank 0 writes files
        save_epoch(state, t.raw, t.out, row, improved=improved, world=world, buffers=buffers)
        t.tracker.log_epoch(row)
    if world > 1:
        torch.distributed.barrier()
    if t.progress and rank == 0:
        print(epoch_line(t.model_name, row, t.epochs), flush=True)
