"""Preprocessing of one slice or volume (docs/study.md §2, paper §II.B, Figs. 3–4); the cache is :mod:`liverlib.data.cache`.

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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from liverlib.params import PREPROCESS_KEYS, ParamError, digest

CACHE_VERSION = 1

NORMALIZATIONS: tuple[str, ...] = ("minmax", "ct_norm")
"""Values of ``normalization``: the paper's per-slice min-max, or nnU-Net's CT normalisation (module docstring)."""

CT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""Percentiles of the training foreground HU that ``ct_norm`` clips to (nnU-Net's CTNormalization)."""

STATS_FILE = "normalization.json"
"""The ``ct_norm`` statistics, written in the cache folder before any volume (the cache's metadata)."""


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
