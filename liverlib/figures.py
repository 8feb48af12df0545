"""The paper's figures as pure plotting functions (STUDY §2, §6–8; paper Figs. 2–4, 6–11, Table 4).

Callers pass arrays and DataFrames (nothing here reads files) and get a :class:`~matplotlib.figure.Figure`
built without pyplot (notebooks show it once, nothing leaks); :func:`save_figure` writes it under the
paper's numbering, e.g. ``fig08_confusion_matrix.png``. Images are ``(H, W)`` floats in Hounsfield units
(shown through :data:`HU_WINDOW`) or in [0, 1]; ``hu=None`` tells them apart by range. Masks are integer
labels (:data:`~liverlib.labels.LABELS`) of the same shape. Liver is green, tumor red; error maps show
false positives yellow and false negatives blue.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from liverlib.io import atomic_write
from liverlib.labels import CLASS_NAMES, FOREGROUND, LABELS

HU_WINDOW: tuple[float, float] = (-200.0, 250.0)
"""Grey window for images in Hounsfield units (abdominal soft tissue)."""
CLASS_COLOURS: dict[str, tuple[float, float, float]] = {"liver": (0.0, 1.0, 0.0), "tumor": (1.0, 0.0, 0.0)}
"""Overlay colour of each foreground class (paper Figs. 2, 10)."""
FP_COLOUR: tuple[float, float, float] = (1.0, 1.0, 0.0)
"""Error-map colour of false positives, yellow (paper Fig. 11)."""
FN_COLOUR: tuple[float, float, float] = (0.0, 0.0, 1.0)
"""Error-map colour of false negatives, blue (paper Fig. 11)."""
STRATA: tuple[str, ...] = ("small", "medium", "large")
"""Error-size strata of :func:`stratify_errors`, one per tertile."""
_NESTING: tuple[str, ...] = ("background", "liver", "tumor")  # LiTS regions nest: tumor lies inside the liver


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
    mask = _check_mask(mask, np.shape(image))
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
    _clean(ax)
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
    gt = _check_mask(gt)
    pred = _check_mask(pred, gt.shape)
    rgb = np.zeros((*gt.shape, 3))
    if image is not None:
        if np.shape(image) != gt.shape:
            raise ValueError(f"image shape {np.shape(image)} does not match mask shape {gt.shape}")
        rgb[:] = dim * to_grey(image)[..., None]
    rgb[_depth(pred) > _depth(gt)] = FP_COLOUR
    rgb[_depth(gt) > _depth(pred)] = FN_COLOUR
    return rgb


def fig02_case_overview(image: np.ndarray, mask: np.ndarray, title: str = "", hu: bool | None = None) -> Figure:
    """Paper Fig. 2 of an ``(H, W)`` slice and mask: CT, combined overlay, liver mask, tumor mask."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    _show(axes[0], to_grey(image, hu), "CT")
    overlay(image, mask, ax=axes[1], hu=hu).set_title("liver (green) + tumor (red)")
    for ax, name in zip(axes[2:], FOREGROUND, strict=True):
        _show(ax, _check_mask(mask) == LABELS[name], f"{name} mask")
    if title:
        fig.suptitle(title)
    return fig


def fig03_pipeline(stages: dict[str, np.ndarray], hu: bool | None = None) -> Figure:
    """Paper Fig. 3: one panel per preprocessing stage (STUDY §2) in the dict's order, titled by key.

    ``stages`` maps a name to an ``(H, W)`` image, e.g. original (HU), normalised, CLAHE, gamma ([0, 1]);
    ``hu`` as in :func:`to_grey` (None detects per image). A panel shown through :data:`HU_WINDOW` says so in
    its title: the model never sees that window (the paper min-max normalises the raw HU).
    """
    if not stages:
        raise ValueError("stages is empty")
    fig = Figure(figsize=(3.4 * len(stages), 3.8), layout="constrained")
    for ax, (name, img) in zip(np.atleast_1d(fig.subplots(1, len(stages))), stages.items(), strict=True):
        _show(ax, to_grey(img, hu), name + (f"\n(shown in HU window {_hu_text()})" if _is_hu(img, hu) else ""))
    return fig


def fig04_histograms(
    raw: np.ndarray,
    enhanced: np.ndarray,
    mask: np.ndarray | None = None,
    bins: int = 100,
    labels: tuple[str, str] = ("(a) min-max normalised", "(b) enhanced (CLAHE + gamma)"),
) -> Figure:
    """Paper Fig. 4: the input and the enhanced slice (top row) above their intensity histograms (bottom row).

    ``raw`` is the ``(H, W)`` slice before enhancement (the pipeline passes the min-max normalised image, hence
    the default label; HU or [0, 1], histogram of its own values), ``enhanced`` the ``(H', W')`` preprocessed
    one in [0, 1]; ``labels`` title the two columns. With ``mask`` (``(H, W)`` labels of ``raw``), liver and
    tumor pixel histograms are drawn over the all-pixel one (the mask is nearest-neighbour resized to
    ``enhanced``'s shape).
    """
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2, height_ratios=[3, 2])
    for col, (name, img) in enumerate(zip(labels, (raw, enhanced), strict=True)):
        img = np.asarray(img, dtype=np.float64)
        _show(axes[0, col], to_grey(img), name)
        ax = axes[1, col]
        ax.hist(img.ravel(), bins=bins, density=True, color="0.5", alpha=0.6, label="all pixels")
        if mask is not None:
            m = _resize_nearest(_check_mask(mask, np.shape(raw)), img.shape)
            for cls in (c for c in FOREGROUND if (m == LABELS[c]).any()):
                ax.hist(img[m == LABELS[cls]], bins, density=True, histtype="step", color=CLASS_COLOURS[cls], label=cls)
            ax.legend(fontsize=8)
        ax.set(xlabel="intensity", ylabel="density", title=f"{name} histogram")
    return fig


def fig06_loss_curves(history: pd.DataFrame, paper: dict[int, tuple[float, ...]] | None = None) -> Figure:
    """Paper Fig. 6: train/validation loss per epoch (columns ``epoch, train_loss, val_loss``).

    The best epoch (lowest validation loss, the first on ties; STUDY §6) gets a green marker and label. With
    ``paper`` (the paper's Table 5: epoch → (train loss, val loss, …)), its values are overlaid as markers.
    """
    _require(history, ["epoch", "train_loss", "val_loss"])
    best = history.loc[history["val_loss"].idxmin()]
    epoch, loss = int(best["epoch"]), float(best["val_loss"])
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(history["epoch"], history["train_loss"], label="train loss")
    ax.plot(history["epoch"], history["val_loss"], label="validation loss")
    ax.plot([epoch], [loss], "o", color="green", ms=9, label=f"best epoch {epoch}")
    if paper:
        ep = sorted(paper)
        ax.plot(ep, [paper[e][0] for e in ep], "x", color="C0", label="paper train loss (Table 5)")
        ax.plot(ep, [paper[e][1] for e in ep], "+", color="C1", ms=9, label="paper validation loss (Table 5)")
    ax.annotate(f"best epoch {epoch}\nval loss {loss:.4f}", xy=(epoch, loss), xytext=(-20, 30), ha="right",
                textcoords="offset points", color="green", arrowprops={"arrowstyle": "->", "color": "green"})  # fmt: skip
    ax.set(xlabel="epoch", ylabel="loss", title="Training and validation loss")
    ax.legend()
    return fig


def fig07_metric_curves(history: pd.DataFrame, paper: dict[int, tuple[float, ...]] | None = None) -> Figure:
    """Paper Fig. 7: (a) validation Dice, (b) IoU per epoch; ``history`` has ``epoch, val_{liver,tumor}_{dice,iou}``.

    These are ε-smoothed means over all validation slices (a slice without tumor in truth and prediction
    scores 1, so a model that never predicts tumor sits at the share of tumor-free slices). When ``history``
    has ``val_tumor_dice_gtpos`` (tumor Dice over the slices with ground-truth tumor) it is drawn dashed in
    (a). With ``paper`` (Table 5: epoch → (…, liver Dice, tumor Dice)) the paper's Dice values are overlaid.
    """
    metrics = {"dice": "(a) Dice", "iou": "(b) IoU"}
    _require(history, ["epoch"] + [f"val_{c}_{m}" for m in metrics for c in FOREGROUND])
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, (metric, title) in zip(fig.subplots(1, 2), metrics.items(), strict=True):
        for cls in FOREGROUND:
            ax.plot(history["epoch"], history[f"val_{cls}_{metric}"], color=CLASS_COLOURS[cls],
                    label=f"{cls}, ε-smoothed, all slices")  # fmt: skip
        if metric == "dice" and "val_tumor_dice_gtpos" in history and history["val_tumor_dice_gtpos"].notna().any():
            n = history["val_tumor_gtpos_n"].dropna() if "val_tumor_gtpos_n" in history else pd.Series(dtype=float)
            n_txt = f", n={int(n.iloc[-1])}" if len(n) else ""
            ax.plot(history["epoch"], history["val_tumor_dice_gtpos"], "--", color=CLASS_COLOURS["tumor"],
                    label=f"tumor, GT-positive slices{n_txt}")  # fmt: skip
        if metric == "dice" and paper:
            ep = sorted(paper)
            for cls, i in (("liver", 3), ("tumor", 4)):
                ax.plot(ep, [paper[e][i] for e in ep], "D", color=CLASS_COLOURS[cls], mec="black", ms=5,
                        label=f"paper {cls} (Table 5)")  # fmt: skip
        ax.set(xlabel="epoch", ylabel=f"validation {title[4:]}", title=title, ylim=(0, 1.02))
        ax.legend(fontsize=8)
    return fig


def fig08_confusion_matrix(cm: np.ndarray) -> Figure:
    """Paper Fig. 8: ``(3, 3)`` pixel confusion matrix (rows truth, columns prediction, :data:`CLASS_NAMES`
    order) as counts and row-normalised (recall) heatmaps side by side."""
    cm = np.asarray(cm)
    if cm.shape != (len(CLASS_NAMES),) * 2:
        raise ValueError(f"expected a {len(CLASS_NAMES)}x{len(CLASS_NAMES)} matrix, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = Figure(figsize=(13, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    fmt = ",d" if np.issubdtype(cm.dtype, np.integer) else ",.0f"
    for ax, data, kw, title in [
        (axes[0], cm, {"fmt": fmt}, "pixel counts"),
        (axes[1], norm, {"fmt": ".3f", "vmin": 0, "vmax": 1}, "row-normalised (recall)"),
    ]:
        sns.heatmap(
            data, ax=ax, annot=True, cmap="Blues", square=True, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, **kw
        )
        ax.set(xlabel="prediction", ylabel="ground truth", title=title)
    return fig


def fig09_cases(cases: list[dict], hu: bool | None = None) -> Figure:
    """Paper Fig. 9: one row per case: CT, GT liver, GT tumor, predicted liver, predicted tumor.

    ``cases`` are dicts with ``(H, W)`` arrays ``image, gt, pred`` and optional ``title`` (row label),
    ``liver_dice`` and ``tumor_dice`` (in the prediction panels' titles).
    """
    axes = _grid(len(cases), 5, 3.0)
    for row, case in zip(axes, cases, strict=True):
        gt, pred = _check_mask(case["gt"], np.shape(case["image"])), _check_mask(case["pred"], np.shape(case["image"]))
        _show(row[0], to_grey(case["image"], hu), "CT")
        row[0].set_ylabel(case.get("title", ""))
        for i, cls in enumerate(FOREGROUND):
            _show(row[1 + i], gt == LABELS[cls], f"GT {cls}")
            dice = case.get(f"{cls}_dice")
            _show(row[3 + i], pred == LABELS[cls], f"pred {cls}" + ("" if dice is None else f" (Dice {dice:.3f})"))
    return axes[0, 0].figure


def fig10_overlays(cases: list[dict], hu: bool | None = None) -> Figure:
    """Paper Fig. 10: cases as columns (six in the paper), GT overlay above the prediction overlay.

    ``cases`` are dicts with ``(H, W)`` arrays ``image, gt, pred`` and an optional ``title``.
    """
    axes = _grid(len(cases), 2, 3.0, transpose=True)
    for j, case in enumerate(cases):
        overlay(case["image"], case["gt"], ax=axes[0, j], hu=hu).set_title(case.get("title", f"({chr(97 + j)})"))
        overlay(case["image"], case["pred"], ax=axes[1, j], hu=hu)
    axes[0, 0].set_ylabel("ground truth")
    axes[1, 0].set_ylabel("prediction")
    fig = axes[0, 0].figure
    fig.legend(handles=_patches(), loc="outside lower center", ncol=2)
    return fig


def fig11_error_maps(cases: list[dict], hu: bool | None = None) -> Figure:
    """Paper Fig. 11: one row per case: CT, GT overlay, prediction overlay, :func:`error_map_rgb`.

    ``cases`` are dicts with ``(H, W)`` arrays ``image, gt, pred`` and an optional ``title`` (e.g. the stratum).
    """
    axes = _grid(len(cases), 4, 3.0)
    for row, case in zip(axes, cases, strict=True):
        _show(row[0], to_grey(case["image"], hu), "CT")
        row[0].set_ylabel(case.get("title", ""))
        overlay(case["image"], case["gt"], ax=row[1], hu=hu).set_title("ground truth")
        overlay(case["image"], case["pred"], ax=row[2], hu=hu).set_title("prediction")
        _show(row[3], error_map_rgb(case["gt"], case["pred"], image=to_grey(case["image"], hu)), "error map")
    fig = axes[0, 0].figure
    errors = {"false positive": FP_COLOUR, "false negative": FN_COLOUR}
    fig.legend(handles=_patches() + _patches(errors), loc="outside lower center", ncol=4)
    return fig


def select_cases(
    per_slice: pd.DataFrame, n: int, *, by: str = "tumor_gt_px", strategy: str = "largest"
) -> pd.DataFrame:
    """Choose slices for Figs. 9–10 deterministically (stable sort: ties keep row order).

    ``per_slice`` has one row per test slice and a numeric column ``by`` (e.g. ground-truth tumor pixels).
    ``strategy="largest"`` returns the ``n`` largest rows, largest first; ``"spread"`` returns ``n`` rows evenly
    spaced over the ascending ranking, smallest to largest. All rows if there are fewer than ``n``; index kept.
    """
    _require(per_slice, [by])
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if strategy == "largest":
        return per_slice.sort_values(by, ascending=False, kind="stable").head(n)
    if strategy == "spread":
        ranked = per_slice.sort_values(by, kind="stable")
        return ranked.iloc[np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int)]
    raise ValueError(f"unknown strategy {strategy!r}; use 'largest' or 'spread'")


def stratify_errors(per_slice: pd.DataFrame, n_per_stratum: int = 1, column: str = "error_px") -> pd.DataFrame:
    """Choose slices with small, medium and large error for Fig. 11, by tertile of ``column``.

    Rows are ranked by ``column`` (ties keep row order) and cut into three equal-count tertiles; from each,
    the ``n_per_stratum`` rows around its median are taken (all of them if the tertile is smaller).
    ``per_slice`` needs at least three rows; ``column`` is an error size, e.g. FP + FN pixels.

    Returns:
        The chosen rows, small then medium then large, with a ``stratum`` column (:data:`STRATA`).
    """
    _require(per_slice, [column])
    if len(per_slice) < len(STRATA) or n_per_stratum < 1:
        raise ValueError(f"need at least {len(STRATA)} rows and n_per_stratum >= 1")
    ranked = per_slice.sort_values(column, kind="stable")
    parts = []
    for name, block in zip(STRATA, np.array_split(np.arange(len(ranked)), len(STRATA)), strict=True):
        start = max((len(block) - n_per_stratum) // 2, 0)
        parts.append(ranked.iloc[block[start : start + n_per_stratum]].assign(stratum=name))
    return pd.concat(parts)


def fig_ablation(table: pd.DataFrame) -> Figure:
    """Table 4 as bars per ablation arm (STUDY §8): liver and tumor Dice (ε-smoothed, all slices) and, when
    ``table`` has ``tumor_dice_gt_positive``, the tumor Dice over GT-positive slices; paper values as black
    diamonds.

    ``table`` has one row per arm: ``arm, liver_dice, tumor_dice``, optional ``tumor_dice_gt_positive``,
    ``paper_liver_dice, paper_tumor_dice``; rows whose ``kind`` is not ``"arm"`` (the improvement row) are
    left out.
    """
    _require(table, ["arm"] + [f"{c}_dice" for c in FOREGROUND])
    if "kind" in table:
        table = table[table["kind"] == "arm"]
    bars_spec = [("liver_dice", "liver Dice, ε-smoothed", CLASS_COLOURS["liver"], "paper_liver_dice", None),
                 ("tumor_dice", "tumor Dice, ε-smoothed", CLASS_COLOURS["tumor"], "paper_tumor_dice", None)]  # fmt: skip
    if "tumor_dice_gt_positive" in table:
        bars_spec.append(("tumor_dice_gt_positive", "tumor Dice, GT-positive slices", (0.6, 0.0, 0.0), None, "//"))
    x, width = np.arange(len(table)), 0.8 / len(bars_spec)
    fig = Figure(figsize=(max(5.0, 2.2 * len(table) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (col, label, colour, paper_col, hatch) in enumerate(bars_spec):
        pos = x + (i - (len(bars_spec) - 1) / 2) * width
        values = pd.to_numeric(table[col], errors="coerce").fillna(0.0)
        bars = ax.bar(pos, values, width, color=colour, alpha=0.8, label=label, hatch=hatch)
        ax.bar_label(bars, fmt="%.3f", label_type="center", fontsize=8)
        if paper_col and paper_col in table:
            ax.plot(pos, table[paper_col], "D", color="black", ms=6, label="paper" if i == 0 else None)
    ax.set_xticks(x, table["arm"].astype(str))
    ax.set(ylabel="test Dice (per slice)", ylim=(0, 1.15), title="Ablation: preprocessing (Table 4)")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return fig


def _depth(mask: np.ndarray) -> np.ndarray:
    """Nesting depth of each pixel's class (background 0, liver 1, tumor 2)."""
    lut = np.zeros(max(LABELS.values()) + 1, dtype=np.int8)
    lut[[LABELS[c] for c in _NESTING]] = np.arange(len(_NESTING))
    return lut[mask]


def _is_hu(image: np.ndarray, hu: bool | None) -> bool:
    """Whether :func:`to_grey` shows this image through the HU window."""
    img = np.asarray(image, dtype=np.float64)
    return bool(hu) if hu is not None else bool(img.size) and bool(np.nanmin(img) < -0.01 or np.nanmax(img) > 1.01)


def _hu_text() -> str:
    """The display window as text, e.g. "[-200, 250] HU"."""
    return f"[{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}] HU"


def _check_mask(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return a 2D label mask as int64 after checking its shape and that its values are in LABELS."""
    mask = np.asarray(mask)
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {tuple(shape)}")
    if mask.ndim != 2 or not np.isin(mask, list(LABELS.values())).all():
        raise ValueError(f"expected a 2D mask with values in {sorted(LABELS.values())}")
    return mask.astype(np.int64)


def _require(df: pd.DataFrame, columns: list[str]) -> None:
    """Raise ValueError naming the columns ``df`` lacks."""
    if missing := [c for c in columns if c not in df.columns]:
        raise ValueError(f"missing columns: {missing}")


def _resize_nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D mask to ``shape``."""
    return mask[np.ix_(*[(np.arange(s) * m / s).astype(int) for s, m in zip(shape, mask.shape, strict=True)])]


def _grid(n: int, per_case: int, size: float, transpose: bool = False) -> np.ndarray:
    """Axes on a new figure: one row per case (one column if ``transpose``), ``per_case`` panels each."""
    if n < 1:
        raise ValueError("cases is empty")
    rows, cols = (per_case, n) if transpose else (n, per_case)
    fig = Figure(figsize=(size * cols, size * rows + 0.6), layout="constrained")
    return fig.subplots(rows, cols, squeeze=False)


def _clean(ax: Axes) -> None:
    """Hide ticks and frame but keep the y label (used as a row title)."""
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)


def _show(ax: Axes, picture: np.ndarray, title: str) -> None:
    """Show a grey image in [0, 1], a binary mask (white on black) or an RGB image, titled."""
    ax.imshow(np.asarray(picture, dtype=np.float64), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    _clean(ax)


def _patches(colours: dict[str, tuple[float, float, float]] = CLASS_COLOURS) -> list[Patch]:
    """Legend entries for a name → colour mapping (class colours by default)."""
    return [Patch(color=c, label=name) for name, c in colours.items()]
