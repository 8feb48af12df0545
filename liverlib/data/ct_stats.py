"""The ``ct_norm`` statistics of the training volumes (docs/architecture.md "Preprocessing"): every training
foreground voxel (liver + tumor) counted in one histogram of the integer HU, whose percentiles equal NumPy's of all
of them; read from or written to the cache folder's :data:`~liverlib.data.preprocess.STATS_FILE`.

Only the ``train`` rows of ``volumes.csv`` are read (:func:`train_rows`): validation and test volumes never change
the statistics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from liverlib.data.nifti import load_case
from liverlib.data.preprocess import CT_PERCENTILES, STATS_FILE, CTStats
from liverlib.files import atomic_write
from liverlib.progress import bar as tqdm

_HU_OFFSET = 32768
"""int16 HU + this offset = index into the 65,536-bin foreground histogram."""


def foreground_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Counts (65,536 bins, int64) of the int16 HU of the foreground voxels (label ≥ 1: liver + tumor); bin
    ``k`` holds HU ``k − 32768``. Exact for any number of volumes in 512 kB (HU are integers in the cache's source)."""
    hu = np.asarray(image)[np.asarray(mask) > 0]
    if hu.size and not np.issubdtype(hu.dtype, np.integer):
        raise ValueError(f"foreground histogram needs integer HU (int16), got {hu.dtype}")
    return np.bincount(hu.astype(np.int32).ravel() + _HU_OFFSET, minlength=2 * _HU_OFFSET).astype(np.int64)


def stats_from_histogram(counts: np.ndarray, train_ids: list[int] | tuple[int, ...]) -> CTStats:
    """:class:`CTStats` of a foreground histogram: the percentiles exactly as ``np.percentile`` (linear) of the
    voxels, their mean and standard deviation (ddof 0).

    Raises:
        ValueError: no foreground voxel, or a constant foreground (no spread to z-score with).
    """
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    if n == 0:
        raise ValueError(f"ct_norm: the training volumes {list(train_ids)} hold no foreground (liver or tumor) voxel")
    values = np.arange(counts.size, dtype=np.float64) - _HU_OFFSET
    cum = np.cumsum(counts)

    def ranked(k: int) -> float:  # the k-th smallest voxel value (0-based)
        return float(values[np.searchsorted(cum, k, side="right")])

    bounds = []
    for q in CT_PERCENTILES:
        virtual = (n - 1) * (q / 100.0)  # numpy's linear method, its lerp included
        i = int(math.floor(virtual))
        g = virtual - i
        a, b = ranked(i), ranked(min(i + 1, n - 1))
        bounds.append(b - (b - a) * (1 - g) if g >= 0.5 else a + (b - a) * g)
    mean = float((values * counts).sum() / n)
    sd = float(math.sqrt(((values - mean) ** 2 * counts).sum() / n))
    return CTStats(bounds[0], bounds[1], mean, sd, n, tuple(sorted(int(i) for i in train_ids)))


def train_rows(volumes: pd.DataFrame) -> pd.DataFrame:
    """The ``train`` rows of a ``volumes.csv`` table (the only volumes ``ct_norm`` statistics may come from).

    Raises:
        ValueError: no ``split`` column or no training volume.
    """
    if "split" not in volumes:
        raise ValueError("ct_norm: the volumes have no 'split' column (volumes.csv of a curated run), so the training "
                         "volumes its statistics come from are unknown")  # fmt: skip
    train = volumes[volumes["split"].astype(str) == "train"]
    if train.empty:
        raise ValueError("ct_norm: no training volume to take the normalisation statistics from")
    return train


def training_ct_stats(volumes: pd.DataFrame, *, progress: bool = False) -> CTStats:
    """:class:`CTStats` of the foreground of the ``train`` rows of ``volumes`` (validation and test rows are not read)."""
    train = train_rows(volumes)
    counts = np.zeros(2 * _HU_OFFSET, np.int64)
    for r in tqdm(list(train.itertuples()), desc="ct_norm statistics", unit="vol", disable=not progress):
        case = load_case(r.volume_path, r.mask_path)
        counts += foreground_histogram(case.image, case.mask)
    return stats_from_histogram(counts, [int(i) for i in train.volume_id])


def cache_stats(root: Path, volumes: pd.DataFrame, *, progress: bool = False) -> tuple[CTStats, bool]:
    """The ``ct_norm`` statistics of a cache folder: read from its :data:`STATS_FILE`, else computed from the
    training volumes and written there. Returns (statistics, True if computed now)."""
    path = Path(root) / STATS_FILE
    train_ids = sorted(int(i) for i in train_rows(volumes).volume_id)
    if path.is_file():
        try:
            stats = CTStats.from_dict(json.loads(path.read_text(encoding="utf-8")))
            if list(stats.train_ids) == train_ids:
                return stats, False
        except (ValueError, json.JSONDecodeError):
            pass  # unreadable or another split's: recomputed below
    stats = training_ct_stats(volumes, progress=progress)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(stats.as_dict(), indent=1), encoding="utf-8")
    return stats, True
