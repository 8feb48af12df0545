"""PyTorch dataset over the preprocessed slice cache (never NIfTI; docs/study.md §2, §6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from liverlib.data.cache import SliceCache
from liverlib.data.preprocess import PreprocessConfig
from liverlib.errors import RunError
from liverlib.files import read_json

MAX_LABEL = 2
"""The largest label a cached mask may hold (tumor)."""


class SliceDataset(Dataset):
    """Slices of the manifest, read from memory-mapped cache arrays.

    Args:
        index: rows with ``volume_id`` and ``slice_idx`` (a split of ``manifest.csv``).
        cache: the preprocessed cache.
        transform: an albumentations pipeline applied to ``image`` (float32 [0, 1]) and ``mask``.

    Items are ``(image, mask)``: float32 (1, S, S) in [0, 1] and int64 (S, S) labels.
    """

    def __init__(self, index: pd.DataFrame, cache: SliceCache, transform: Callable | None = None):
        self.volume_ids = index.volume_id.to_numpy(dtype=np.int64)
        self.slice_idx = index.slice_idx.to_numpy(dtype=np.int64)
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.volume_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v, s = int(self.volume_ids[i]), int(self.slice_idx[i])
        image = np.asarray(self.cache.image(v)[s], dtype=np.float32)
        mask = np.asarray(self.cache.mask(v)[s])
        if mask.max(initial=0) > MAX_LABEL:  # ~3 µs a slice; the loss would fail: 'Target 7 is out of bounds'
            raise RunError(f"{self.cache.root / f'{v}_mask.npy'}: slice {s} holds label {int(mask.max())} (expected "
                           "0, 1, 2): a damaged cache; rerun notebook 02, which rebuilds it")  # fmt: skip
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(mask.astype(np.int64))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and the dataset's augmentation from the worker's torch seed, so each
    worker draws its own stream and a seeded loader stays reproducible (training and the benchmark)."""
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed)
    tf = getattr(info.dataset, "transform", None)
    if tf is not None and hasattr(tf, "set_random_seed"):
        tf.set_random_seed(seed)


def open_run_cache(root: Path, cfg: PreprocessConfig) -> SliceCache:
    """The cache notebook 02 built for the run folder ``root``, checked against the preprocessing parameters.

    Raises:
        RunError: no cache yet, or the cache was made with other preprocessing than ``cfg``.
    """
    path = Path(root) / "preprocess.json"
    if not path.is_file():
        raise RunError(f"{path}: missing; run notebook 02 (preprocessing) for this run first")
    info = read_json(path)
    if info.get("key") != cfg.key:
        changed = {k: (info["config"].get(k), v) for k, v in cfg.as_params().items() if info["config"].get(k) != v}
        raise RunError(
            f"{path}: the cache was made with other preprocessing than these parameters ({changed}, as cache vs now); "
            "rerun notebook 02 with the same parameters"
        )
    root = Path(info["cache_dir"])
    if not root.is_dir():
        raise RunError(f"{root}: cache folder is gone; rerun notebook 02")
    return SliceCache(root)


def split_index(manifest: Path, split: str) -> pd.DataFrame:
    """Rows of a run's ``manifest.csv`` in ``split``; a missing manifest or an empty split is an error naming it."""
    if not Path(manifest).exists():
        raise RunError(f"{manifest}: missing; run the earlier notebook of this run first")
    m = pd.read_csv(manifest)
    part = m[m.split == split].reset_index(drop=True)
    if part.empty:
        raise RunError(f"{manifest}: the '{split}' split has no slices; check curation (notebook 01)")
    return part
