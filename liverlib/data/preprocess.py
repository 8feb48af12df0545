"""Preprocessing (docs/study.md §2, paper §II.B, Figs. 3–4) and the on-disk slice cache.

Per slice, in order: optional HU window → min-max to [0, 1] → 8-bit quantisation (k/255) → CLAHE
(OpenCV, clip 2.0, 8×8 tiles) → gamma I' = I^1.2 → resize to ``image_size`` (bilinear image, nearest
mask). Each step is switchable for the ablation (Table 4). Quantisation is its own step
(``quantize_8bit``, on by default in every arm): the paper's CLAHE works on the 8-bit image, so
without it the no-enhancement arm would stay float and Table 4 would mix quantisation with CLAHE +
gamma. With ``quantize_8bit: false``, CLAHE runs on a 16-bit image instead. The cache holds every slice of every selected volume, built
once per preprocessing configuration and shared by runs and ablation arms; training reads it through
memory maps and never re-reads NIfTI.

``normalization: ct_norm`` (beyond the paper; nnU-Net's CT normalisation, docs/architecture.md
"Preprocessing") replaces the per-slice min-max: every voxel is clipped to the 0.5 and 99.5 percentiles of
the training volumes' foreground (liver + tumor) HU and z-scored with their mean and standard deviation
(:class:`CTStats`, computed by :func:`build_cache` from the ``train`` rows only and stored beside the cache,
in ``preprocess.json`` and in every checkpoint). The cache holds the z-score under one fixed affine map to
[0, 1], ``u = (z − z_lo) / (z_hi − z_lo)`` with ``z_lo, z_hi`` the z-scores of the clip bounds, i.e.
``u = (clip(HU, lo, hi) − lo) / (hi − lo)``: the augmentation is defined on [0, 1] (it clips there and fills
with 0), and the network's first convolution is followed by BatchNorm, which removes any positive affine
map of the input (:meth:`CTStats.zscore` gives ``z`` back).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from liverlib.errors import RunError
from liverlib.files import atomic_write
from liverlib.data.nifti import load_case
from liverlib.params import PREPROCESS_KEYS, ParamError, digest
from liverlib.progress import ENV as PROGRESS_ENV
from liverlib.progress import RUNNER, write_console
from liverlib.progress import bar as tqdm

CACHE_VERSION = 1

NORMALIZATIONS: tuple[str, ...] = ("minmax", "ct_norm")
"""Values of ``normalization``: the paper's per-slice min-max, or nnU-Net's CT normalisation (module docstring)."""

CT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""Percentiles of the training foreground HU that ``ct_norm`` clips to (nnU-Net's CTNormalization)."""

STATS_FILE = "normalization.json"
"""The ``ct_norm`` statistics, written in the cache folder before any volume (the cache's metadata)."""

_HU_OFFSET = 32768
"""int16 HU + this offset = index into the 65,536-bin foreground histogram."""


@dataclass(frozen=True)
class CTStats:
    """nnU-Net's CT normalisation statistics of the training volumes' foreground (label ≥ 1: liver + tumor) HU.

    Attributes:
        lo, hi: the 0.5 and 99.5 percentiles (``np.percentile``, linear) of every foreground voxel's HU.
        mean, sd: mean and standard deviation (ddof 0) of the same voxels, before clipping (as nnU-Net).
        voxels: how many foreground voxels they describe.
        train_ids: the training volumes they come from (never validation or test volumes).
    """

    lo: float
    hi: float
    mean: float
    sd: float
    voxels: int
    train_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        values = (self.lo, self.hi, self.mean, self.sd)
        if not all(math.isfinite(v) for v in values) or not self.hi > self.lo or not self.sd > 0:
            raise ValueError(f"ct_norm statistics need finite values, lo < hi and sd > 0, got {values}")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON / checkpoint form (also written as ``normalization`` in ``preprocess.json``)."""
        return {"method": "ct_norm", "percentiles": list(CT_PERCENTILES), "clip_hu": [self.lo, self.hi],
                "mean": self.mean, "sd": self.sd, "voxels": self.voxels, "train_ids": list(self.train_ids)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CTStats:
        """Back from :meth:`as_dict`.

        Raises:
            ValueError: a missing or malformed entry.
        """
        try:
            lo, hi = (float(v) for v in d["clip_hu"])
            return cls(lo, hi, float(d["mean"]), float(d["sd"]), int(d["voxels"]),
                       tuple(int(i) for i in d["train_ids"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not ct_norm statistics ({type(exc).__name__}: {exc}): {dict(d)!r:.200}") from exc

    def zscore(self, u: np.ndarray) -> np.ndarray:
        """The z-score ``(clip(HU, lo, hi) − mean) / sd`` of a [0, 1] ``ct_norm`` image (float64)."""
        return (np.asarray(u, np.float64) * (self.hi - self.lo) + self.lo - self.mean) / self.sd


@dataclass(frozen=True)
class PreprocessConfig:
    """The switchable steps of docs/study.md §2 (defaults = the paper)."""

    image_size: int = 256
    hu_window: tuple[float, float] | None = None
    quantize_8bit: bool = True
    use_clahe: bool = True
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    use_gamma: bool = True
    gamma: float = 1.2
    normalization: str = "minmax"
    ct_stats: CTStats | None = None
    """``ct_norm`` only: the training statistics (not a parameter: :func:`build_cache` derives them from the
    training split; :meth:`with_stats` attaches them, e.g. from ``preprocess.json`` or a checkpoint)."""

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ParamError(f"'normalization' must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.normalization == "ct_norm" and self.hu_window is not None:
            raise ParamError("'normalization: ct_norm' clips to the training foreground's percentiles; "
                             f"set hu_window: [] (got {list(self.hu_window)})")  # fmt: skip
        if self.ct_stats is not None and self.normalization != "ct_norm":
            raise ParamError(f"ct_norm statistics given for normalization {self.normalization!r}")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> PreprocessConfig:
        """Build from study parameters (``hu_window: []`` means no window); without ``ct_norm`` statistics."""
        hw = p.get("hu_window") or None
        return cls(image_size=int(p["image_size"]), hu_window=tuple(float(v) for v in hw) if hw else None,
                   quantize_8bit=bool(p.get("quantize_8bit", True)), use_clahe=bool(p["use_clahe"]),
                   clahe_clip=float(p["clahe_clip"]), clahe_tile=int(p["clahe_tile"]), use_gamma=bool(p["use_gamma"]),
                   gamma=float(p["gamma"]), normalization=str(p.get("normalization", "minmax")))  # fmt: skip

    def with_stats(self, stats: CTStats | Mapping[str, Any] | None) -> PreprocessConfig:
        """This configuration with its ``ct_norm`` statistics (a :class:`CTStats` or its dict); unchanged for
        ``minmax``, where ``stats`` is ignored.

        Raises:
            ValueError: ``ct_norm`` without statistics, or malformed ones.
        """
        if self.normalization != "ct_norm":
            return self
        if stats is None:
            raise ValueError("normalization ct_norm needs the training foreground statistics, and none are recorded")
        return dataclasses.replace(self, ct_stats=stats if isinstance(stats, CTStats) else CTStats.from_dict(stats))

    def as_params(self) -> dict[str, Any]:
        """Back to the flat parameter names (``hu_window`` as a list)."""
        d = {k: getattr(self, k) for k in PREPROCESS_KEYS}
        d["hu_window"] = list(self.hu_window) if self.hu_window else []
        return d

    @property
    def key(self) -> str:
        """Short hash identifying the configuration's parameters (not the ``ct_norm`` statistics, which depend on
        the data: :func:`cache_dir_for` names their cache folder by the training split instead).

        ``normalization`` came later: at ``minmax`` it is left out, so earlier caches and checkpoints keep their key.
        """
        values = self.as_params()
        if values["normalization"] == "minmax":
            del values["normalization"]
        return digest({"v": CACHE_VERSION, **values})


def normalize(image: np.ndarray, hu_window: tuple[float, float] | None = None) -> np.ndarray:
    """Min-max one slice to float32 [0, 1]; with an HU window, clip to it and scale by its bounds.

    A constant slice becomes all zeros.
    """
    x = image.astype(np.float32)
    if hu_window is not None:
        lo, hi = hu_window
        return (np.clip(x, lo, hi) - lo) / float(hi - lo)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def ct_normalize(image: np.ndarray, stats: CTStats) -> np.ndarray:
    """``ct_norm`` of one HU slice: clip to ``[stats.lo, stats.hi]``, z-score with ``stats.mean, stats.sd``, stored as
    float32 [0, 1] under the fixed affine map of the module docstring: ``(clip(HU, lo, hi) − lo) / (hi − lo)``."""
    x = np.clip(image.astype(np.float32), np.float32(stats.lo), np.float32(stats.hi))
    return ((x - np.float32(stats.lo)) / np.float32(stats.hi - stats.lo)).astype(np.float32)


def quantize(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Round a [0, 1] float slice to ``k / (2**bits − 1)``, float32 (the grey levels CLAHE sees)."""
    top = float(2**bits - 1)
    return (np.rint(x * top) / top).astype(np.float32)


def clahe(x: np.ndarray, clip: float = 2.0, tile: int = 8, bits: int = 8) -> np.ndarray:
    """CLAHE on the ``bits``-bit (8 or 16) version of a [0, 1] slice (OpenCV's fixed clip limit, not
    A.CLAHE's random one); float32 in [0, 1]."""
    dtype, top = (np.uint8, 255.0) if bits == 8 else (np.uint16, 65535.0)
    u = np.rint(x * top).astype(dtype)
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile)).apply(u).astype(np.float32) / np.float32(top)


def preprocess_slice(
    image: np.ndarray, cfg: PreprocessConfig, *, stages: bool = False
) -> np.ndarray | dict[str, np.ndarray]:
    """Preprocess one HU slice (H, W) to float32 (size, size) in [0, 1].

    With ``stages=True`` returns the intermediate images (original, normalised — 8-bit quantised when
    ``quantize_8bit`` —, CLAHE, gamma) at the original size, for Fig. 3.

    Raises:
        ValueError: ``ct_norm`` without statistics (:meth:`PreprocessConfig.with_stats`).
    """
    out = {"original": image.astype(np.float32)}
    if cfg.normalization == "ct_norm":
        if cfg.ct_stats is None:
            raise ValueError("normalization ct_norm needs the training statistics: build_cache computes them "
                             "(preprocess.json 'normalization'); attach them with PreprocessConfig.with_stats")  # fmt: skip
        x = ct_normalize(image, cfg.ct_stats)
    else:
        x = normalize(image, cfg.hu_window)
    if cfg.quantize_8bit:
        x = quantize(x, 8)
    out["normalised"] = x
    if cfg.use_clahe:
        x = clahe(x, cfg.clahe_clip, cfg.clahe_tile, bits=8 if cfg.quantize_8bit else 16)
        out["CLAHE"] = x
    if cfg.use_gamma:
        if cfg.quantize_8bit:  # the image is k/255: a 256-entry table gives exactly x**gamma, ~10x faster
            x = _gamma_table(cfg.gamma)[np.rint(x * 255.0).astype(np.uint8)]
        else:
            x = np.power(x, cfg.gamma, dtype=np.float32)
        out["gamma"] = x
    if stages:
        return out
    return resize_image(x, cfg.image_size)


@functools.lru_cache(maxsize=8)
def _gamma_table(gamma: float) -> np.ndarray:
    """``(k / 255) ** gamma`` for k = 0..255, float32 (the same arithmetic as ``np.power`` on the image)."""
    return np.power(np.arange(256, dtype=np.float32) / np.float32(255.0), gamma, dtype=np.float32)


def resize_image(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float slice to (size, size)."""
    if x.shape == (size, size):
        return x.astype(np.float32, copy=False)
    return cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_mask(m: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label slice; ``size`` is an int or (rows, cols)."""
    rows, cols = (size, size) if isinstance(size, int) else size
    if m.shape == (rows, cols):
        return m
    return cv2.resize(m, (cols, rows), interpolation=cv2.INTER_NEAREST)


def preprocess_volume(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess a (slices, H, W) int16 HU volume to float16 (slices, size, size) in [0, 1]."""
    out = np.empty((image.shape[0], cfg.image_size, cfg.image_size), np.float16)
    for i in range(image.shape[0]):
        out[i] = preprocess_slice(image[i], cfg)
    return out


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


CACHE_DTYPES: dict[str, np.dtype] = {"image": np.dtype(np.float16), "mask": np.dtype(np.uint8)}
"""The dtype of each kind of cache file."""

MASK_VALUES = (0, 1, 2)
"""The labels a cached mask may hold (background, liver, tumor)."""


def npy_problem(path: Path, dtype: np.dtype | None = None) -> str | None:
    """What is wrong with a ``.npy`` file's header and size (reads the header only), or None.

    Catches a truncated or extended file (its size is not header + shape × itemsize: ``np.load(mmap_mode='r')`` fails
    with "mmap length is greater than file size"), an unreadable header and another dtype than ``dtype``.
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, found = read(fh)
            offset = fh.tell()
        size = Path(path).stat().st_size
    except (OSError, ValueError) as exc:
        return f"not a readable .npy file ({type(exc).__name__}: {exc})"
    if dtype is not None and found != dtype:
        return f"holds {found}, expected {dtype}"
    expected = offset + int(np.prod(shape, dtype=np.int64)) * found.itemsize
    if size != expected:
        return f"{size} bytes where its header {tuple(shape)} {found} needs {expected} ({'truncated' if size < expected else 'extended'})"  # fmt: skip
    return None


def value_problem(kind: str, arr: np.ndarray) -> str | None:
    """What is wrong with a cache array's values (non-finite image voxels, mask labels outside 0/1/2), or None."""
    if kind == "image":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        return f"{bad} non-finite (NaN/inf) voxel(s)" if bad else None
    labels = np.unique(arr)
    extra = sorted(int(v) for v in labels if int(v) not in MASK_VALUES)
    return f"mask values {extra} outside {{0, 1, 2}}" if extra else None


def _checksum(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).data, digest_size=16).hexdigest()


def _file_record(path: Path, arr: np.ndarray) -> dict[str, Any]:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "dtype": str(arr.dtype), "shape": list(arr.shape),
            "blake2b": _checksum(arr)}  # fmt: skip


def _record_path(root: Path, volume_id: int) -> Path:
    return Path(root) / f"{int(volume_id)}_record.json"


MISSING = "missing"
""":func:`verify_volume`'s answer for a volume that is not (or only half) in the cache: built, not a damage."""


def verify_volume(root: Path, volume_id: int, image_size: int) -> str | None:
    """Check a cached volume before reuse; None when it is whole, :data:`MISSING`, or the problem naming the file.

    Always (cheap: headers and ``stat``): both files there, dtype, shape ``(slices, size, size)`` alike, file size =
    header + data. When a file's size or mtime differs from its record ``<id>_record.json`` (written by
    :func:`build_cache` after both arrays), or there is no record (a cache built before records existed), the values
    too: its checksum against the record, finite image voxels, mask labels in {0, 1, 2}; a file that passes gets its
    record (re)written.
    """
    paths = {kind: Path(root) / f"{int(volume_id)}_{kind}.npy" for kind in CACHE_DTYPES}
    if not all(p.is_file() for p in paths.values()):
        return MISSING
    shapes = {}
    for kind, path in paths.items():
        problem = npy_problem(path, CACHE_DTYPES[kind])
        if problem:
            return f"{path}: {problem}"
        shapes[kind] = np.load(path, mmap_mode="r").shape
    for kind, shape in shapes.items():
        if len(shape) != 3 or shape[1:] != (image_size, image_size):
            return f"{paths[kind]}: shape {shape}, expected (slices, {image_size}, {image_size})"
    if shapes["image"] != shapes["mask"]:
        return f"{paths['image']}: shape {shapes['image']} but the mask has {shapes['mask']}"
    rec_path = _record_path(root, volume_id)
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    stale = False
    for kind, path in paths.items():
        st, rec = path.stat(), record.get(kind) or {}
        if rec.get("bytes") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and rec.get("shape") == list(shapes[kind]):  # fmt: skip
            continue
        stale = True
        arr = np.load(path, mmap_mode="r")
        problem = value_problem(kind, arr)
        if problem:
            return f"{path}: {problem}"
        if rec.get("blake2b") not in (None, _checksum(arr)):
            return f"{path}: its content changed since the cache was built (checksum differs)"
    if stale:
        try:
            _write_record(root, volume_id, {k: np.load(p, mmap_mode="r") for k, p in paths.items()})
        except OSError:  # a read-only cache: verified now, verified again next time
            pass
    return None


def _write_record(root: Path, volume_id: int, arrays: Mapping[str, np.ndarray]) -> None:
    rec = {kind: _file_record(Path(root) / f"{int(volume_id)}_{kind}.npy", arr) for kind, arr in arrays.items()}
    with atomic_write(_record_path(root, volume_id)) as tmp:
        Path(tmp).write_text(json.dumps(rec), encoding="utf-8")


class SliceCache:
    """A preprocessed cache folder: ``<id>_image.npy`` float16 and ``<id>_mask.npy`` uint8 per volume, and
    ``<id>_record.json`` (their size, mtime, dtype, shape and checksum, written last: :func:`verify_volume`).

    Arrays have shape (slices, size, size) in the display convention and are opened memory-mapped, after a check of
    the file's header and size (a truncated file is a one-line error naming it, not numpy's "mmap length is greater
    than file size"). Measured on a 500-slice 256² volume (98 MB): the header check and record comparison take
    1.5 ms; the value checks and checksum 0.8 s, so stage 02 reads the values only of files whose size or mtime
    differ from their record (or that have none), and training never.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._open: dict[tuple[int, str], np.ndarray] = {}

    def image(self, volume_id: int) -> np.ndarray:
        """Memory-mapped float16 (slices, size, size) image of a volume."""
        return self._map(volume_id, "image")

    def mask(self, volume_id: int) -> np.ndarray:
        """Memory-mapped uint8 (slices, size, size) labels of a volume."""
        return self._map(volume_id, "mask")

    def _map(self, volume_id: int, kind: str) -> np.ndarray:
        key = (int(volume_id), kind)
        if key not in self._open:
            path = self.root / f"{int(volume_id)}_{kind}.npy"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: volume {volume_id} is not in the cache {self.root}; rebuild it (notebook 02)"
                )
            problem = npy_problem(path, CACHE_DTYPES[kind])
            if problem:
                raise RunError(f"{path}: damaged cache file: {problem}; rerun notebook 02 to rebuild it")
            self._open[key] = np.load(path, mmap_mode="r")
        return self._open[key]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own memory maps
        return {"root": self.root, "_open": {}}


def _source_id(path: Any) -> list[Any]:
    """Resolved path, size and mtime of a source file (missing files are left to load_case to report)."""
    p = Path(str(path)).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        return [str(p), -1, -1]
    return [str(p), st.st_size, st.st_mtime_ns]


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


def cache_dir_for(cache_root: Path, cfg: PreprocessConfig, volumes: pd.DataFrame) -> Path:
    """The cache folder of a configuration and its source files: ``<cache_root>/<config key>/<source key>``.

    Cache files are named by volume id, and ids repeat across data folders (volume 3 of the phantom and
    of LiTS): the source key hashes each volume's and mask's path, size and mtime, so runs on other data
    never read these arrays. Runs and ablation arms on the same curated volumes share the folder. With
    ``ct_norm`` the source key also hashes the training volume ids: the images depend on the training
    split's statistics, so two splits (folds, a re-curation) never share a folder.
    """
    sources = sorted([int(r.volume_id), _source_id(r.volume_path), _source_id(r.mask_path)] for r in volumes.itertuples())  # fmt: skip
    what: dict[str, Any] = {"sources": sources}
    if cfg.normalization == "ct_norm":
        what["train_ids"] = sorted(int(i) for i in train_rows(volumes).volume_id)
    return Path(cache_root) / cfg.key / digest(what, n=10)


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


def build_cache(
    volumes: pd.DataFrame, cfg: PreprocessConfig, cache_root: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Preprocess every slice of the given volumes once; reuse volumes already cached.

    Args:
        volumes: rows with ``volume_id, volume_path, mask_path`` (``volumes.csv`` of the run); with
            ``ct_norm`` also ``split``: the statistics come from the ``train`` rows only.
        cfg: preprocessing configuration; its key names the cache folder.
        cache_root: folder holding one sub-folder per configuration.

    Returns:
        Cache statistics (folder, key, volumes built/reused, slices, seconds, slices/s, bytes); with ``ct_norm``
        also ``normalization`` (:meth:`CTStats.as_dict`), which ``preprocess.json`` and checkpoints carry.

    Raises:
        ValueError: ``ct_norm`` without a training split or foreground, or with other statistics than the
            training split's in ``cfg``.
    """
    root = cache_dir_for(cache_root, cfg, volumes)
    root.mkdir(parents=True, exist_ok=True)
    built = reused = n_slices = 0
    t0 = time.perf_counter()
    read_s = 0.0
    extra: dict[str, Any] = {}
    if cfg.normalization == "ct_norm":  # before any volume: every image depends on them
        stats, computed = cache_stats(root, volumes, progress=progress)
        if cfg.ct_stats is not None and cfg.ct_stats != stats:
            raise ValueError(f"ct_norm: the given statistics {cfg.ct_stats} are not the training split's {stats}")
        cfg = cfg.with_stats(stats)
        extra["normalization"] = stats.as_dict()
        if computed:  # the training volumes were read once more for them
            read_s += time.perf_counter() - t0
    repaired: list[str] = []
    for r in tqdm(list(volumes.itertuples()), desc=f"cache {cfg.key}", unit="vol", disable=not progress):
        img_p, mask_p = root / f"{int(r.volume_id)}_image.npy", root / f"{int(r.volume_id)}_mask.npy"
        problem = verify_volume(root, int(r.volume_id), cfg.image_size)
        if problem is None:
            reused += 1
            n_slices += int(np.load(mask_p, mmap_mode="r").shape[0])
            continue
        if problem != MISSING:
            line = f"cache: {problem}; rebuilding volume {int(r.volume_id)}"
            print(line, flush=True)
            if os.environ.get(PROGRESS_ENV) == RUNNER:  # the study runner's console, not only the executed notebook
                write_console(line)
            repaired.append(problem)
        _record_path(root, int(r.volume_id)).unlink(missing_ok=True)
        t_read = time.perf_counter()
        case = load_case(r.volume_path, r.mask_path)
        read_s += time.perf_counter() - t_read
        image = preprocess_volume(case.image, cfg)
        mask = np.stack([resize_mask(m, cfg.image_size) for m in case.mask])
        for kind, arr in (("image", image), ("mask", mask)):
            problem = value_problem(kind, arr)
            if problem:
                raise ValueError(f"volume {int(r.volume_id)} ({r.volume_path}, {r.mask_path}): preprocessed {kind} has {problem}")  # fmt: skip
        _save_npy(mask_p, mask)
        _save_npy(img_p, image)
        _write_record(root, int(r.volume_id), {"image": image, "mask": mask})  # written last: marks the volume complete
        built += 1
        n_slices += image.shape[0]
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.glob("*.npy"))
    return {"cache_dir": str(root), "key": cfg.key, "config": cfg.as_params(), "volumes_built": built,
            "volumes_reused": reused, "volumes_repaired": len(repaired), "slices": n_slices, "seconds": round(seconds, 3), "read_seconds": round(read_s, 3),
            "slices_per_s": round(n_slices / seconds, 1) if built and seconds > 0 else None, "bytes": size, **extra}  # fmt: skip
