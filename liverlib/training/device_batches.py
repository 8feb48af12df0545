"""A device-resident feeder of training batches: the fast path's replacement for the CPU DataLoader.

The paper's 1,688 slices at 256² are ≈ 220 MB in float16: the whole training split fits on
any GPU. :class:`GpuBatches` copies a split's slices out of the run's cache once (float16 images, uint8
masks), keeps them on the device when they fit, and yields shuffled batches augmented there by
:func:`liverlib.training.gpu_augment.augment_batch`, so no CPU worker sits between the cache and the model.

Each epoch is seeded from ``seed * 1000 + epoch`` (as the training loop's DataLoader), for the shuffle and the
augmentation alike: the same seed and epoch give the same batches on the same device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from liverlib.data.cache import SliceCache
from liverlib.runtime import epoch_seed
from liverlib.training.augment import AugmentConfig
from liverlib.training.gpu_augment import augment_batch

GPU_MEMORY_SHARE = 0.5
"""The resident set may take at most this share of the device's free memory (the rest: model and activations)."""


def load_slices(cache: SliceCache, index: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """The slices of ``index`` (rows with ``volume_id``, ``slice_idx``) as (N, 1, S, S) float16 and (N, S, S) uint8.

    Reads each volume's memory map once, in index order.
    """
    index = index.reset_index(drop=True)
    images, masks = [], []
    for vid, rows in index.groupby("volume_id", sort=False):
        s = rows.slice_idx.to_numpy(dtype=np.int64)
        images.append(np.asarray(cache.image(int(vid))[s], dtype=np.float16))
        masks.append(np.asarray(cache.mask(int(vid))[s], dtype=np.uint8))
    order = np.concatenate([rows.index.to_numpy() for _, rows in index.groupby("volume_id", sort=False)])
    inverse = np.argsort(order, kind="stable")  # back to the index's row order
    image = torch.from_numpy(np.concatenate(images)[inverse])[:, None]
    return image, torch.from_numpy(np.concatenate(masks)[inverse])


def fits_on_device(nbytes: int, device: torch.device, share: float = GPU_MEMORY_SHARE) -> bool:
    """Whether ``nbytes`` fit in ``share`` of the device's free memory (always True on the CPU)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


class GpuBatches:
    """Shuffled, augmented training batches from a split held on the device (docs/study.md §3, §6).

    Args:
        cache: the run's preprocessed cache (:func:`liverlib.data.dataset.open_run_cache`).
        index: the split's rows (:func:`liverlib.data.dataset.split_index`).
        batch_size: slices per batch; the last batch of an epoch may be smaller (``drop_last=False``).
        device: where batches are made; the slices live there when they fit (:func:`fits_on_device`),
            else in (pinned) host memory and each batch is copied over.
        seed: the run's seed; epoch ``e`` uses ``seed * 1000 + e``.
        augment: apply the paper's transforms (:func:`liverlib.training.gpu_augment.augment_batch`).
        elastic_alpha, elastic_sigma: ElasticTransform parameters (the params' ``elastic_alpha``/``_sigma``); None
            keeps ``config``'s.
        config: the transforms' settings (default: :class:`~liverlib.training.augment.AugmentConfig`, the paper's).

    Batches are ``(image, mask)``: float32 (B, 1, S, S) in [0, 1] and int64 (B, S, S) in {0, 1, 2}, on ``device``.
    """

    def __init__(self, cache: SliceCache, index: pd.DataFrame, *, batch_size: int, device: torch.device | str,
                 seed: int, augment: bool = True, elastic_alpha: float | None = None,
                 elastic_sigma: float | None = None, config: AugmentConfig | None = None):  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(index) == 0:
            raise ValueError("GpuBatches: the index has no slices")
        self.device, self.batch_size, self.seed, self.augment = (
            torch.device(device),
            int(batch_size),
            int(seed),
            augment,
        )
        cfg = config or AugmentConfig()
        self.config = replace(cfg, elastic_alpha=cfg.elastic_alpha if elastic_alpha is None else elastic_alpha,
                              elastic_sigma=cfg.elastic_sigma if elastic_sigma is None else elastic_sigma)  # fmt: skip
        image, mask = load_slices(cache, index)
        self.nbytes = image.nbytes + mask.nbytes
        self.resident = fits_on_device(self.nbytes, self.device)
        if self.resident:
            image, mask = image.to(self.device), mask.to(self.device)
        elif self.device.type == "cuda":
            image, mask = image.pin_memory(), mask.pin_memory()
        self.images, self.masks = image, mask

    def __len__(self) -> int:
        """Batches per epoch (the last one may be short)."""
        return -(-len(self.images) // self.batch_size)

    @property
    def num_slices(self) -> int:
        """Training slices per epoch."""
        return len(self.images)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch: a seeded permutation of every slice, augmented on the device."""
        seed = epoch_seed(self.seed, epoch)
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for start in range(0, len(order), self.batch_size):
            pick = order[start : start + self.batch_size]
            if self.resident:
                pick = pick.to(self.device)
            x = self.images[pick].to(self.device, non_blocking=True).float()
            y = self.masks[pick].to(self.device, non_blocking=True).long()
            if self.augment:
                x, y = augment_batch(x, y, gen, self.config)
            yield x, y
