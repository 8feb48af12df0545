"""What every figure draws with (docs/study.md §7–8): the HU window, class and error colours, greyscale and
overlay pictures, error maps, grids of axes, legends, and saving a figure atomically.

Images are ``(H, W)`` floats in Hounsfield units (shown through :data:`HU_WINDOW`) or in [0, 1]; ``hu=None`` tells
them apart by range. Masks are integer labels (:data:`~liverlib.labels.LABELS`) of the same shape. Liver is green,
tumor red; error maps show false positives yellow and false negatives blue.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from liverlib.files import atomic_write
from liverlib.labels import FOREGROUND, LABELS

HU_WINDOW: tuple[float, float] = (-200.0, 250.0)
"""Grey window for images in Hounsfield units (abdominal soft tissue)."""


CLASS_COLOURS: dict[str, tuple[float, float, float]] = {"liver": (0.0, 1.0, 0.0), "tumor": (1.0, 0.0, 0.0)}
"""Overlay colour of each foreground class (paper Figs. 2, 10)."""


FP_COLOUR: tuple[float, float, float] = (1.0, 1.0, 0.0)
"""Error-map colour of false positives, yellow (paper Fig. 11)."""


FN_COLOUR: tuple[float, float, float] = (0.0, 0.0, 1.0)
"""Error-map colour of false negatives, blue (paper Fig. 11)."""


NESTING: tuple[str, ...] = ("background", "liver", "tumor")  # LiTS regions nest: tumor lies inside the liver


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file beside it, then ``os.replace``), close it, return ``path``.

    The suffix picks the format (PNG without one); parent folders are created; ``dpi`` applies to raster formats.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    finally:
        plt.close(fig)
    return path


def to_grey(image: np.ndarray, hu: bool | None = None) -> np.ndarray:
    """Map an ``(H, W)`` CT slice to display grey levels, ``(H, W)`` float64 in [0, 1].

    ``hu=True`` windows Hounsfield units to :data:`HU_WINDOW`; ``False`` clips [0, 1] values; ``None``
    treats the slice as HU when any value lies outside [-0.01, 1.01].
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {img.shape}")
    if hu is None:
        hu = bool(img.size) and bool(np.nanmin(img) < -0.01 or np.nanmax(img) > 1.01)
    if hu:
        img = (img - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    return np.clip(np.nan_to_num(img), 0.0, 1.0)


def overlay_rgb(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4, hu: bool | None = None) -> np.ndarray:
    """Blend liver green and tumor red with opacity ``alpha`` over the grey slice (paper Figs. 2, 10).

    Returns:
        ``(H, W, 3)`` float64 RGB in [0, 1]; background pixels keep their grey value.
    """
    mask = check_mask(mask, np.shape(image))
    rgb = np.repeat(to_grey(image, hu)[..., None], 3, axis=2)
    for name in FOREGROUND:
        sel = mask == LABELS[name]
        rgb[sel] = (1.0 - alpha) * rgb[sel] + alpha * np.asarray(CLASS_COLOURS[name])
    return rgb


def overlay(
    image: np.ndarray, mask: np.ndarray, ax: Axes | None = None, alpha: float = 0.4, hu: bool | None = None
) -> Axes:
    """Draw :func:`overlay_rgb` of an ``(H, W)`` slice and mask on ``ax`` (a new figure's if None); return ``ax``."""
    if ax is None:
        ax = Figure(figsize=(4, 4), layout="constrained").subplots()
    ax.imshow(overlay_rgb(image, mask, alpha, hu), interpolation="nearest")
    clean_axes(ax)
    return ax


def error_map_rgb(gt: np.ndarray, pred: np.ndarray, image: np.ndarray | None = None, dim: float = 0.4) -> np.ndarray:
    """Colour false positives yellow and false negatives blue (paper Fig. 11).

    Classes are nested regions as in LiTS (liver region = liver + tumor), so a pixel is a false positive
    when the prediction puts it in a region the ground truth does not (GT liver predicted tumor = tumor FP)
    and a false negative when it misses a ground-truth region (GT tumor predicted liver = missed tumor).
    No pixel is both. ``gt`` and ``pred`` are ``(H, W)`` labels; the optional ``(H, W)`` ``image`` (HU or
    [0, 1]) is shown at brightness ``dim`` under the errors (black without it).

    Returns:
        ``(H, W, 3)`` float64 RGB in [0, 1].
    """
    gt = check_mask(gt)
    pred = check_mask(pred, gt.shape)
    rgb = np.zeros((*gt.shape, 3))
    if image is not None:
        if np.shape(image) != gt.shape:
            raise ValueError(f"image shape {np.shape(image)} does not match mask shape {gt.shape}")
        rgb[:] = dim * to_grey(image)[..., None]
    rgb[depth(pred) > depth(gt)] = FP_COLOUR
    rgb[depth(gt) > depth(pred)] = FN_COLOUR
    return rgb


def depth(mask: np.ndarray) -> np.ndarray:
    """Nesting depth of each pixel's class (background 0, liver 1, tumor 2)."""
    lut = np.zeros(max(LABELS.values()) + 1, dtype=np.int8)
    lut[[LABELS[c] for c in NESTING]] = np.arange(len(NESTING))
    return lut[mask]


def is_hu(image: np.ndarray, hu: bool | None) -> bool:
    """Whether :func:`to_grey` shows this image through the HU window."""
    img = np.asarray(image, dtype=np.float64)
    return bool(hu) if hu is not None else bool(img.size) and bool(np.nanmin(img) < -0.01 or np.nanmax(img) > 1.01)


def hu_text() -> str:
    """The display window as text, e.g. "[-200, 250] HU"."""
    return f"[{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}] HU"


def check_mask(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return a 2D label mask as int64 after checking its shape and that its values are in LABELS."""
    mask = np.asarray(mask)
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {tuple(shape)}")
    if mask.ndim != 2 or not np.isin(mask, list(LABELS.values())).all():
        raise ValueError(f"expected a 2D mask with values in {sorted(LABELS.values())}")
    return mask.astype(np.int64)


def require_columns(df: pd.DataFrame, columns: list[str]) -> None:
    """Raise ValueError naming the columns ``df`` lacks."""
    if missing := [c for c in columns if c not in df.columns]:
        raise ValueError(f"missing columns: {missing}")


def resize_nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D mask to ``shape``."""
    return mask[np.ix_(*[(np.arange(s) * m / s).astype(int) for s, m in zip(shape, mask.shape, strict=True)])]


def axes_grid(n: int, per_case: int, size: float, transpose: bool = False) -> np.ndarray:
    """Axes on a new figure: one row per case (one column if ``transpose``), ``per_case`` panels each."""
    if n < 1:
        raise ValueError("cases is empty")
    rows, cols = (per_case, n) if transpose else (n, per_case)
    fig = Figure(figsize=(size * cols, size * rows + 0.6), layout="constrained")
    return fig.subplots(rows, cols, squeeze=False)


def clean_axes(ax: Axes) -> None:
    """Hide ticks and frame but keep the y label (used as a row title)."""
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)


def show_picture(ax: Axes, picture: np.ndarray, title: str) -> None:
    """Show a grey image in [0, 1], a binary mask (white on black) or an RGB image, titled."""
    ax.imshow(np.asarray(picture, dtype=np.float64), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    clean_axes(ax)


def legend_patches(colours: dict[str, tuple[float, float, float]] = CLASS_COLOURS) -> list[Patch]:
    """Legend entries for a name → colour mapping (class colours by default)."""
    return [Patch(color=c, label=name) for name, c in colours.items()]
