"""Training (STUDY §6, paper §III.A, Table 5, Figs. 6–7).

AdamW (1e-4, wd 1e-5), batch 8, ReduceLROnPlateau on validation loss (×0.5, patience 5), gradient
clipping at norm 1.0; ``best.pt`` = lowest validation loss, ``last.pt`` every epoch (atomic), and
``history.csv`` per epoch. Each epoch reseeds from ``seed + epoch``, so a run killed mid-training and
rerun resumes from ``last.pt`` to the same weights and history as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from liverlib.checkpoint import load_checkpoint, model_dir, save_checkpoint
from liverlib.dataset import SliceDataset, open_run_cache, split_index
from liverlib.losses import CombinedLoss
from liverlib.metrics import dice, iou, slice_stats
from liverlib.model import build_model
from liverlib.params import TRAIN_KEYS, Params
from liverlib.preprocess import PreprocessConfig
from liverlib.run import RunDir, RunError, seed_everything, write_table
from liverlib.runtime import amp_settings, distributed_context, resolve_device

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "val_pixel_acc", "val_liver_dice", "val_tumor_dice", "val_liver_iou",
    "val_tumor_iou", "lr", "epoch_seconds", "train_slices_per_s",
]  # fmt: skip
"""``history.csv`` columns; Dice/IoU are means over validation slices, ε-smoothed (empty/empty = 1)."""


def train_config(p: Params, model_name: str) -> dict[str, Any]:
    """What defines a training run (resume is refused if these differ); ``epochs`` may grow."""
    cfg = {k: p[k] for k in TRAIN_KEYS if k != "epochs"}
    cfg["model"] = model_name
    cfg["preprocess_key"] = PreprocessConfig.from_params(p).key
    return cfg


def _loader(ds: SliceDataset, p: Params, *, shuffle: bool, epoch: int, device: torch.device,
            rank: int = 0, world: int = 1) -> DataLoader:  # fmt: skip
    """Seeded loader; under DDP each rank gets its own shard (train: a DistributedSampler; val: every world-th slice)."""
    g = torch.Generator().manual_seed(p.seed * 1000 + epoch)
    workers = p.num_workers  # seeded per worker (_seed_worker), so runs stay reproducible
    sampler = None
    if world > 1 and shuffle:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=p.seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    elif world > 1:
        ds = torch.utils.data.Subset(ds, range(rank, len(ds), world))
    return DataLoader(ds, batch_size=p.batch_size, shuffle=shuffle, sampler=sampler, generator=g, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False,
                      worker_init_fn=_seed_worker if workers else None, persistent_workers=False)  # fmt: skip


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed)
    tf = getattr(info.dataset, "transform", None)
    if tf is not None and hasattr(tf, "set_random_seed"):
        tf.set_random_seed(seed)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, loss_fn: CombinedLoss, device: torch.device, *,
             channels_last: bool = False, autocast: bool = False, dtype: torch.dtype | None = None,
             world: int = 1) -> dict[str, float]:  # fmt: skip
    """Validation loss (slice-weighted mean), pixel accuracy over all pixels, mean per-slice Dice/IoU (ε-smoothed)."""
    model.eval()
    total, n, correct, pixels = 0.0, 0, 0, 0
    stats = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device.type, dtype=dtype) if autocast else nullcontext()
        with ctx:
            logits = model(x)
        total += float(loss_fn(logits.float(), y)) * len(x)
        n += len(x)
        pred = logits.argmax(1)
        correct += int((pred == y).sum())
        pixels += y.numel()
        stats.append(slice_stats(pred.cpu(), y.cpu()))
    tp, fp, fn = (
        np.concatenate([s[k] for s in stats]) if stats else np.zeros((0, 2), np.int64) for k in ("tp", "fp", "fn")
    )
    if world > 1:  # gather every rank's shard: metrics are over the whole validation set
        import torch.distributed as dist

        parts: list = [None] * world
        dist.all_gather_object(parts, (total, n, correct, pixels, tp, fp, fn))
        total, n, correct, pixels = (sum(q[i] for q in parts) for i in range(4))
        tp, fp, fn = (np.concatenate([q[i] for q in parts]) for i in (4, 5, 6))
    d, j = dice(tp, fp, fn, empty="smoothed"), iou(tp, fp, fn, empty="smoothed")
    return {"val_loss": total / n, "val_pixel_acc": correct / pixels, "val_liver_dice": float(d[:, 0].mean()),
            "val_tumor_dice": float(d[:, 1].mean()), "val_liver_iou": float(j[:, 0].mean()),
            "val_tumor_iou": float(j[:, 1].mean())}  # fmt: skip


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
        dict with ``history`` (DataFrame), ``best_epoch``, ``dir`` (models/<name>/), ``resumed_from``.

    Raises:
        RunError: missing or mismatched cache, empty split, or an earlier run here with other parameters.
    """
    model_name = model_name or p.model
    epochs = int(epochs or p.epochs)
    run = RunDir.from_params(p)
    cfg_pre = PreprocessConfig.from_params(p)
    cache = open_run_cache(run, cfg_pre)
    train_idx, val_idx = split_index(run, "train"), split_index(run, "val")
    rank, world, local_rank = distributed_context()
    device = resolve_device(p.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    use_amp, amp_dtype, use_scaler = amp_settings(device, p.amp)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = model_dir(run, model_name)
    last_p, best_p, hist_p = out / "last.pt", out / "best.pt", out / "history.csv"
    config = train_config(p, model_name)

    seed_everything(p.seed)
    model = build_model(model_name, image_size=p.image_size, encoder=p.encoder, encoder_weights=p.encoder_weights,
                        fused_attention=p.fused_attention).to(device)  # fmt: skip
    if p.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=p.plateau_factor, patience=p.plateau_patience
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = CombinedLoss(p.ce_weight, p.dice_weight, p.focal_weight, p.focal_alpha, p.focal_gamma, p.dice_eps)
    history: list[dict[str, Any]] = []
    best = {"val_loss": float("inf"), "epoch": 0}
    start = 1
    if last_p.is_file():
        ckpt = load_checkpoint(last_p, map_location=device)
        if ckpt["config"] != config:
            changed = sorted(k for k in set(config) | set(ckpt["config"]) if config.get(k) != ckpt["config"].get(k))
            if not p.overwrite:
                raise RunError(f"{last_p}: an earlier training here used other parameters ({', '.join(changed)}); "
                               "use another run_name or set overwrite: true")  # fmt: skip
        else:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            history, best, start = ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
    resumed_from = start - 1
    raw = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if p.compile:
        model = torch.compile(model)
    import liverlib.augment as aug

    transform = (
        aug.build_augmentation(elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma, seed=p.seed)
        if p.augment
        else None
    )
    train_ds = SliceDataset(train_idx, cache, transform)
    val_ds = SliceDataset(val_idx, cache, None)
    done_now = 0
    for epoch in range(start, epochs + 1):
        seed_everything(p.seed * 1000 + epoch)
        if transform is not None:
            transform.set_random_seed(p.seed * 1000 + epoch)
        model.train()
        t0 = time.perf_counter()
        run_loss, seen = 0.0, 0
        bar = tqdm(_loader(train_ds, p, shuffle=True, epoch=epoch, device=device, rank=rank, world=world),
                   desc=f"{model_name} epoch {epoch}/{epochs}", unit="batch", disable=not progress or rank > 0, leave=False)  # fmt: skip
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if p.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
            scaler.step(opt)
            scaler.update()
            run_loss += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{run_loss / seen:.4f}")
        if world > 1:  # the epoch's training loss and slice count over all ranks
            import torch.distributed as dist

            sums = torch.tensor([run_loss, float(seen)], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            run_loss, seen = float(sums[0]), int(sums[1])
        train_s = time.perf_counter() - t0
        val = validate(raw if world > 1 else model, _loader(val_ds, p, shuffle=False, epoch=epoch, device=device, rank=rank, world=world),
                       loss_fn, device, channels_last=p.channels_last, autocast=use_amp, dtype=amp_dtype, world=world)  # fmt: skip
        lr = opt.param_groups[0]["lr"]
        sched.step(val["val_loss"])
        row = {"epoch": epoch, "train_loss": run_loss / seen, **val, "lr": lr,
               "epoch_seconds": time.perf_counter() - t0, "train_slices_per_s": seen / train_s}  # fmt: skip
        history.append(row)
        improved = val["val_loss"] < best["val_loss"]
        if improved:
            best = {"val_loss": val["val_loss"], "epoch": epoch}
        if rank == 0:  # only rank 0 writes files
            if improved:
                save_checkpoint({"model": raw.state_dict(), "config": config, "epoch": epoch, "metrics": row}, best_p)
            save_checkpoint({"model": raw.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "scaler": scaler.state_dict(), "config": config, "epoch": epoch, "history": history,
                             "best": best, "world_size": world}, last_p)  # fmt: skip
            write_table(pd.DataFrame(history, columns=HISTORY_COLUMNS), hist_p, markdown=False)
        if world > 1:
            torch.distributed.barrier()
        if progress and rank == 0:
            print(f"{model_name} epoch {epoch}/{epochs}: train {row['train_loss']:.4f} val {val['val_loss']:.4f} "
                  f"liver Dice {val['val_liver_dice']:.3f} tumor Dice {val['val_tumor_dice']:.3f} "
                  f"({row['epoch_seconds']:.1f} s)", flush=True)  # fmt: skip
        done_now += 1
        if stop_after is not None and done_now >= stop_after:
            break
    if not history:
        raise RunError(f"{out}: no epoch was trained (epochs={epochs})")
    return {"history": pd.DataFrame(history, columns=HISTORY_COLUMNS), "best_epoch": best["epoch"], "dir": out,
            "resumed_from": resumed_from, "device": str(device), "amp": str(amp_dtype) if use_amp else "off"}  # fmt: skip
