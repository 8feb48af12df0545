"""Validation during training (docs/study.md §6, Figs. 6–7): the history's metrics, and DDP's shared BatchNorm buffers.

``history.csv`` columns are defined in :data:`liverlib.training.state.HISTORY_COLUMNS`. Under torchrun, rank 0's
buffers are broadcast before validation (:func:`sync_buffers`) and every rank's counts are gathered, so the
metrics are those of the saved model over the whole validation set.
"""

from __future__ import annotations

import copy
import hashlib
from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader

from liverlib.errors import RunError
from liverlib.evaluation.metrics import dice, iou, slice_stats
from liverlib.training.losses import CombinedLoss


def validation_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    """History metrics from per-slice counts (N, 2) of liver and tumor (see :data:`HISTORY_COLUMNS`)."""
    d, j = dice(tp, fp, fn, empty="smoothed"), iou(tp, fp, fn, empty="smoothed")
    gt_tumor = (tp[:, 1] + fn[:, 1]) > 0
    exact = 2 * tp[gt_tumor, 1] / (2 * tp[gt_tumor, 1] + fp[gt_tumor, 1] + fn[gt_tumor, 1])
    return {"val_liver_dice": float(d[:, 0].mean()), "val_tumor_dice": float(d[:, 1].mean()),
            "val_tumor_dice_gtpos": float(exact.mean()) if gt_tumor.any() else float("nan"),
            "val_tumor_gtpos_n": int(gt_tumor.sum()), "val_liver_iou": float(j[:, 0].mean()),
            "val_tumor_iou": float(j[:, 1].mean())}  # fmt: skip


@torch.inference_mode()
def validate(model: torch.nn.Module, loader: DataLoader, loss_fn: CombinedLoss, device: torch.device, *,
             channels_last: bool = False, autocast: bool = False, dtype: torch.dtype | None = None,
             world: int = 1) -> dict[str, float]:  # fmt: skip
    """Validation loss (slice-weighted mean), pixel accuracy over all pixels, per-slice Dice/IoU means.

    Under DDP (``world`` > 1) each rank scores its shard and the counts are gathered, so the metrics are
    over the whole validation set; the caller makes sure every rank holds the same weights and buffers.
    """
    model.eval()
    total, n, correct, pixels = 0.0, 0, 0, 0
    stats = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if autocast else nullcontext():
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
    return {"val_loss": total / n, "val_pixel_acc": correct / pixels, **validation_scores(tp, fp, fn)}


def batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (plain and SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class BatchStatistics(torch.nn.Module):
    """A copy of ``model`` scored as in ``eval()`` except its BatchNorm layers, which normalise with the statistics of
    each batch (what the weights do, whatever the running statistics say; docs/training.md §1). The copy's running
    statistics are left as they are (momentum 0); the model passed in is not touched."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)
        for m in batchnorms(self.model):
            m.momentum = 0.0

    def train(self, mode: bool = True) -> BatchStatistics:
        super().train(mode)
        for m in batchnorms(self.model):
            m.train()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@torch.no_grad()
def recompute_bn_stats(model: torch.nn.Module, loader: DataLoader, device: torch.device, *,
                       channels_last: bool = False, autocast: bool = False, dtype: torch.dtype | None = None,
                       world: int = 1) -> int:  # fmt: skip
    """Recompute every BatchNorm's running mean and variance on ``loader`` for the current weights (docs/training.md).

    The running statistics that BatchNorm keeps during training are an exponential average (momentum 0.1) over
    batches seen while the weights moved, of augmented images; scored on clean slices in ``eval()`` mode they can
    describe a model several steps old (measured: a model validated on a copy of its own training slices fell to
    liver Dice 0, while the same weights with batch statistics scored 0.64). This is
    :func:`torch.optim.swa_utils.update_bn` (detectron2's PreciseBN): reset the statistics, then one pass with
    ``momentum=None`` (a cumulative average over the loader's batches) — with one difference: only the BatchNorm
    layers run in training mode, so dropout stays off, as it is when the model is scored.

    Training is unchanged by this call (a BatchNorm in training mode normalises with batch statistics, never the
    running ones), so resumed runs stay identical. Under DDP each rank averages over its shard and the ranks'
    statistics are averaged (SyncBatchNorm already computes them over all ranks); every rank must call this with
    the same number of batches.

    Args:
        loader: batches ``(x, y)`` of training slices without augmentation; x is (B, 1, S, S) float in [0, 1].

    Returns:
        The number of slices this rank passed through the model (0 for a model without BatchNorm).
    """
    bns = batchnorms(model)
    if not bns:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average of the batches' statistics
        m.train()
    seen = 0
    try:
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype) if autocast else nullcontext():
                model(x)
            seen += len(x)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if world > 1 and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in bns):
        import torch.distributed as dist

        for m in bns:
            for b in (m.running_mean, m.running_var):
                dist.all_reduce(b)
                b /= world
    return seen


def buffer_digest(model: torch.nn.Module) -> str:
    """sha256 of every buffer (BatchNorm running stats, counters): equal digests = identical buffers."""
    h, params = hashlib.sha256(), {name for name, _ in model.named_parameters()}
    for name, b in sorted(model.state_dict().items()):
        if name in params:
            continue
        h.update(name.encode())
        h.update(b.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sync_buffers(model: torch.nn.Module, world: int) -> list[str]:
    """Broadcast rank 0's buffers to every rank (before validation); return every rank's :func:`buffer_digest`."""
    if world <= 1:
        return [buffer_digest(model)]
    import torch.distributed as dist

    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b, src=0)
    digests: list = [None] * world
    dist.all_gather_object(digests, buffer_digest(model))
    if len(set(digests)) != 1:
        raise RunError(f"DDP ranks hold different BatchNorm buffers after the broadcast: {digests}")
    return digests
