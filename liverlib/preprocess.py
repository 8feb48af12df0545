"""Preprocessing (STUDY §2, paper §II.B, Figs. 3–4) and the on-disk slice cache.

Per slice, in order: optional HU window → min-max to [0, 1] → 8-bit quantisation (k/255) → CLAHE
(OpenCV, clip 2.0, 8×8 tiles) → gamma I' = I^1.2 → resize to ``image_size`` (bilinear image, nearest
mask). Each step is switchable for the ablation (Table 4). Quantisation is its own step
(``quantize_8bit``, on by default in every arm): the paper's CLAHE works on the 8-bit image, so
without it the no-enhancement arm would stay float and Table 4 would mix quantisation with CLAHE +
gamma. With ``quantize_8bit: false``, CLAHE runs on a 16-bit image instead. The cache holds every slice of every selected volume, built
once per preprocessing configuration and shared by runs and ablation arms; training reads it through
memory maps and never re-reads NIfTI.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from liverlib.io import atomic_write, load_case
from liverlib.params import PREPROCESS_KEYS, digest

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """The switchable steps of STUDY §2 (defaults = the paper)."""

    image_size: int = 256
    hu_window: tuple[float, float] | None = None
    quantize_8bit: bool = True
    use_clahe: bool = True
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    use_gamma: bool = True
    gamma: float = 1.2

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> PreprocessConfig:
        """Build from study parameters (``hu_window: []`` means no window)."""
        hw = p.get("hu_window") or None
        return cls(int(p["image_size"]), tuple(float(v) for v in hw) if hw else None, bool(p.get("quantize_8bit", True)),
                   bool(p["use_clahe"]), float(p["clahe_clip"]), int(p["clahe_tile"]), bool(p["use_gamma"]),
                   float(p["gamma"]))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        """Back to the flat parameter names (``hu_window`` as a list)."""
        d = {k: getattr(self, k) for k in PREPROCESS_KEYS}
        d["hu_window"] = list(self.hu_window) if self.hu_window else []
        return d

    @property
    def key(self) -> str:
        """Short hash identifying the configuration."""
        return digest({"v": CACHE_VERSION, **self.as_params()})


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
    """
    out = {"original": image.astype(np.float32)}
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


class SliceCache:
    """A preprocessed cache folder: ``<id>_image.npy`` float16 and ``<id>_mask.npy`` uint8 per volume.

    Arrays have shape (slices, size, size) in the display convention and are opened memory-mapped.
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


def cache_dir_for(cache_root: Path, cfg: PreprocessConfig, volumes: pd.DataFrame) -> Path:
    """The cache folder of a configuration and its source files: ``<cache_root>/<config key>/<source key>``.

    Cache files are named by volume id, and ids repeat across data folders (volume 3 of the phantom and
    of LiTS): the source key hashes each volume's and mask's path, size and mtime, so runs on other data
    never read these arrays. Runs and ablation arms on the same curated volumes share the folder.
    """
    sources = sorted([int(r.volume_id), _source_id(r.volume_path), _source_id(r.mask_path)] for r in volumes.itertuples())  # fmt: skip
    return Path(cache_root) / cfg.key / digest({"sources": sources}, n=10)


def build_cache(
    volumes: pd.DataFrame, cfg: PreprocessConfig, cache_root: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Preprocess every slice of the given volumes once; reuse volumes already cached.

    Args:
        volumes: rows with ``volume_id, volume_path, mask_path`` (``volumes.csv`` of the run).
        cfg: preprocessing configuration; its key names the cache folder.
        cache_root: folder holding one sub-folder per configuration.

    Returns:
        Cache statistics (folder, key, volumes built/reused, slices, seconds, slices/s, bytes).
    """
    root = cache_dir_for(cache_root, cfg, volumes)
    root.mkdir(parents=True, exist_ok=True)
    built = reused = n_slices = 0
    t0 = time.perf_counter()
    read_s = 0.0
    for r in tqdm(list(volumes.itertuples()), desc=f"cache {cfg.key}", unit="vol", disable=not progress):
        img_p, mask_p = root / f"{int(r.volume_id)}_image.npy", root / f"{int(r.volume_id)}_mask.npy"
        if img_p.is_file() and mask_p.is_file():
            reused += 1
            n_slices += int(np.load(mask_p, mmap_mode="r").shape[0])
            continue
        t_read = time.perf_counter()
        case = load_case(r.volume_path, r.mask_path)
        read_s += time.perf_counter() - t_read
        image = preprocess_volume(case.image, cfg)
        mask = np.stack([resize_mask(m, cfg.image_size) for m in case.mask])
        _save_npy(mask_p, mask)
        _save_npy(img_p, image)  # written last: its presence marks the volume complete
        built += 1
        n_slices += image.shape[0]
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.glob("*.npy"))
    return {"cache_dir": str(root), "key": cfg.key, "config": cfg.as_params(), "volumes_built": built,
            "volumes_reused": reused, "slices": n_slices, "seconds": round(seconds, 3), "read_seconds": round(read_s, 3),
            "slices_per_s": round(n_slices / seconds, 1) if built and seconds > 0 else None, "bytes": size}  # fmt: skip
