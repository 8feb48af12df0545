"""The paper's figures as pure plotting functions (docs/study.md §2, §6–8; paper Figs. 2–4, 6–11, Table 4).

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

from liverlib.files import atomic_write
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
    """Paper Fig. 3: one panel per preprocessing stage (docs/study.md §2) in the dict's order, titled by key.

    ``stages`` maps a name to an ``(H, W)`` image, e.g. original (HU), normalised, CLAHE, gamma ([0, 1]);
    ``hu`` as in :func:`to_grey` (None detects per image). A panel shown through :data:`HU_WINDOW` says so in
    its title: the model never sees that window (the paper min-max normalises the raw HU).
    """
    if not stages:
        raise ValueError("stages is empty")
    fig = Figure(figsize=(3.4 * len(stages), 4.3), layout="constrained")
    for ax, (name, img) in zip(np.atleast_1d(fig.subplots(1, len(stages))), stages.items(), strict=True):
        _show(ax, to_grey(img, hu), name + (f"\n(shown in HU window\n{_hu_text()})" if _is_hu(img, hu) else ""))
        ax.title.set_fontsize(10)
    fig.suptitle("Preprocessing pipeline on one slice (Fig. 3)")
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
    """Paper Fig. 6: (a) train/validation loss per epoch, (b) validation Dice per epoch, on one epoch axis.

    ``history`` has ``epoch, train_loss, val_loss`` and, for (b), ``val_liver_dice`` (ε-smoothed) and optionally
    ``val_tumor_dice_gtpos``. The best epoch (lowest validation loss, the first on ties; docs/study.md §6) is a green
    marker and a vertical line through both panels, so one sees whether it is a real optimum of the
    validation curves or a lone dip. Every epoch is a marker; the x-axis spans this run's epochs only. With
    ``paper`` (the paper's Table 5: epoch → (train loss, val loss, …)), its values at epochs inside that span
    are overlaid and the paper's own best epoch is named below (Table 5 lists the rest).
    """
    _require(history, ["epoch", "train_loss", "val_loss"])
    epoch, loss = best_epoch(history), float(history["val_loss"].min())
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, ax_d = fig.subplots(1, 2, sharex=True)
    ax.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="train loss")
    ax.plot(history["epoch"], history["val_loss"], "o-", ms=3, label="validation loss")
    ax.plot([epoch], [loss], "o", color="green", ms=10, mfc="none", mew=2, label=f"best epoch {epoch}", zorder=5)
    shown = _paper_epochs(paper, history)
    if shown:
        ax.plot(shown, [paper[e][0] for e in shown], "x", color="C0", ms=8, label="paper train loss (Table 5)")
        ax.plot(shown, [paper[e][1] for e in shown], "+", color="C1", ms=10, label="paper validation loss (Table 5)")
    ax.set(xlabel="epoch", ylabel="loss", title=f"(a) loss — best epoch {epoch}: validation loss {loss:.4f}")
    ax.legend(fontsize=8)
    if "val_liver_dice" in history:
        _dice_panel(ax_d, history, epoch)
    else:
        ax_d.set_axis_off()
    for a in (ax, ax_d):
        a.axvline(epoch, color="green", ls="--", lw=1, zorder=0)
    _epoch_axis(ax, history)
    if paper and max(paper) > int(history["epoch"].max()):
        fig.supxlabel(_paper_note(paper, history), fontsize=8)
    fig.suptitle("Training and validation loss (Fig. 6)")
    return fig


def _dice_panel(ax: Axes, history: pd.DataFrame, epoch: int) -> None:
    """Fig. 6 (b): validation liver Dice and GT-positive tumor Dice per epoch, the best epoch's values named."""
    liver = history["val_liver_dice"]
    ax.plot(history["epoch"], liver, "o-", ms=3, color=CLASS_COLOURS["liver"], label="liver, ε-smoothed")
    at = float(liver[history["epoch"] == epoch].iloc[0])
    ax.plot([epoch], [at], "o", color="green", ms=10, mfc="none", mew=2, zorder=5)
    top = history.loc[liver.idxmax()]
    title = f"(b) validation Dice — liver at epoch {epoch}: {at:.4f} (highest {float(top.val_liver_dice):.4f}, epoch {int(top.epoch)})"
    if _has(history, "val_tumor_dice_gtpos"):
        ax.plot(history["epoch"], history["val_tumor_dice_gtpos"], "s-", ms=4, color=_DARK_TUMOR, zorder=4,
                clip_on=False, label=f"tumor, GT-positive slices{_n_text(history)}")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="validation Dice", ylim=_UNIT_YLIM)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def fig07_metric_curves(history: pd.DataFrame, paper: dict[int, tuple[float, ...]] | None = None) -> Figure:
    """Paper Fig. 7: (a) validation Dice, (b) IoU per epoch on one shared epoch axis; ``history`` has
    ``epoch, val_{liver,tumor}_{dice,iou}``.

    ``val_*_dice`` / ``val_*_iou`` are ε-smoothed means over all validation slices: a slice without tumor in
    truth and prediction scores 1, so a model that never predicts tumor sits at the share of tumor-free slices.
    The tumor curves over GT-positive slices (``val_tumor_dice_gtpos``, ``val_tumor_iou_gtpos`` when logged) are
    therefore the main tumor lines (solid, markers, drawn above the axis so a curve at 0 stays visible); the
    ε-smoothed tumor curves are dotted and labelled as empty-slice credit. A note says so when the GT-positive
    tumor Dice is 0 at every epoch. The best epoch (lowest validation loss, when ``val_loss`` is logged) is a
    vertical line. With ``paper`` (Table 5: epoch → (…, liver Dice, tumor Dice)) the paper's Dice values at
    epochs inside this run's span are overlaid.
    """
    metrics = {"dice": "(a) Dice", "iou": "(b) IoU"}
    _require(history, ["epoch"] + [f"val_{c}_{m}" for m in metrics for c in FOREGROUND])
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    missed = _has(history, "val_tumor_dice_gtpos") and bool((history["val_tumor_dice_gtpos"].dropna() < 1e-3).all())
    notes: list[str] = []
    for ax, (metric, title) in zip(axes, metrics.items(), strict=True):
        ax.plot(history["epoch"], history[f"val_liver_{metric}"], "o-", ms=3, color=CLASS_COLOURS["liver"],
                label="liver, ε-smoothed, all slices")  # fmt: skip
        ax.plot(history["epoch"], history[f"val_tumor_{metric}"], ":", color=CLASS_COLOURS["tumor"], alpha=0.7,
                label="tumor, ε-smoothed: tumor-free slices score 1")  # fmt: skip
        gtpos = f"val_tumor_{metric}_gtpos"
        if _has(history, gtpos):
            ax.plot(history["epoch"], history[gtpos], "s-", ms=4, color=_DARK_TUMOR, zorder=4, clip_on=False,
                    label=f"tumor, GT-positive slices{_n_text(history)}")  # fmt: skip
        elif metric == "iou":
            notes.append("(b): the tumor IoU over GT-positive slices is not logged per epoch; read (a)'s GT-positive "
                         "tumor Dice instead.")  # fmt: skip
        if metric == "dice":
            shown = _paper_epochs(paper, history)
            for cls, i in (("liver", 3), ("tumor", 4)) if shown else ():
                ax.plot(shown, [paper[e][i] for e in shown], "D", color=CLASS_COLOURS[cls], mec="black", ms=6,
                        label=f"paper {cls} (Table 5)")  # fmt: skip
        if "val_loss" in history:
            best = best_epoch(history)
            ax.axvline(best, color="green", ls="--", lw=1, zorder=0, label=f"best epoch {best}")
        ax.set(xlabel="epoch", ylabel=f"validation {title[4:]}", title=title, ylim=_UNIT_YLIM)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2)
    axes[1].yaxis.set_tick_params(labelleft=True)
    _epoch_axis(axes[0], history)
    if missed:
        notes.insert(0, "The GT-positive tumor Dice is 0 at every epoch: the model found no tumor on any GT-positive "
                        "validation slice, so the ε-smoothed tumor curves are empty-slice credit only.")  # fmt: skip
    if paper and max(paper) > int(history["epoch"].max()):
        notes.append(_paper_note(paper, history))
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8)
    fig.suptitle("Validation Dice and IoU per epoch (Fig. 7)")
    return fig


def best_epoch(history: pd.DataFrame) -> int:
    """The epoch with the lowest ``val_loss`` (the first on ties; docs/study.md §6)."""
    return int(history.loc[history["val_loss"].idxmin(), "epoch"])


_UNIT_YLIM = (-0.04, 1.04)  # a score of 0 sits above the frame, not on it
_DARK_TUMOR = (0.6, 0.0, 0.0)


def _has(history: pd.DataFrame, column: str) -> bool:
    """Whether ``history`` logs ``column`` with at least one value."""
    return column in history and bool(history[column].notna().any())


def _n_text(history: pd.DataFrame) -> str:
    """The text ", n=<slices>" of the GT-positive tumor curves (the last logged count), or ""."""
    n = history["val_tumor_gtpos_n"].dropna() if "val_tumor_gtpos_n" in history else pd.Series(dtype=float)
    return f", n={int(n.iloc[-1])}" if len(n) else ""


def _paper_epochs(paper: dict[int, tuple[float, ...]] | None, history: pd.DataFrame) -> list[int]:
    """The paper's Table 5 epochs that fall inside this run's epochs."""
    return sorted(e for e in (paper or {}) if e <= int(history["epoch"].max()))


def _paper_note(paper: dict[int, tuple[float, ...]], history: pd.DataFrame) -> str:
    """A footnote naming the paper's run beyond this axis (its best epoch = its lowest validation loss)."""
    best = min(paper, key=lambda e: paper[e][1])
    return (f"This run: {int(history['epoch'].max())} epochs. The paper trained {max(paper)} epochs (best epoch {best}, "
            f"validation loss {paper[best][1]:.4f}); its epochs beyond this axis are in Table 5.")  # fmt: skip


def _epoch_axis(ax: Axes, history: pd.DataFrame) -> None:
    """x-axis over this run's epochs only, integer ticks."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = int(history["epoch"].min()), int(history["epoch"].max())
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


ARM_LABELS: dict[str, str] = {"paper": "ours: CLAHE + gamma", "no_enhancement": "ours: no enhancement"}
"""x-axis label of an ablation arm in :func:`fig_ablation` (other arms: "ours: " and the arm's name)."""


def fig_ablation(table: pd.DataFrame) -> Figure:
    """Table 4 as bars per ablation arm (docs/study.md §8), any number of arms: liver and tumor Dice (ε-smoothed, all
    slices) and, when ``table`` has ``tumor_dice_gt_positive``, the tumor Dice over GT-positive slices; the
    paper's values as black diamonds ("paper, Table 4"), our arms labelled "ours: …" (:data:`ARM_LABELS`).

    ``table`` has one row per arm: ``arm, liver_dice, tumor_dice``, optional ``tumor_dice_gt_positive``,
    ``paper_liver_dice, paper_tumor_dice``; rows whose ``kind`` is not ``"arm"`` (the improvement row) are
    left out. Every bar is labelled with its value (a zero bar is an outlined line labelled "0.00"); an
    undefined value draws no bar and is labelled "–".
    """
    _require(table, ["arm"] + [f"{c}_dice" for c in FOREGROUND])
    if "kind" in table:
        table = table[table["kind"] == "arm"]
    bars_spec = [("liver_dice", "liver Dice, ε-smoothed", CLASS_COLOURS["liver"], "paper_liver_dice", None),
                 ("tumor_dice", "tumor Dice, ε-smoothed", CLASS_COLOURS["tumor"], "paper_tumor_dice", None)]  # fmt: skip
    if "tumor_dice_gt_positive" in table:
        bars_spec.append(("tumor_dice_gt_positive", "tumor Dice, GT-positive slices", _DARK_TUMOR, None, "//"))
    x, width = np.arange(len(table)), 0.8 / len(bars_spec)
    fig = Figure(figsize=(min(14.0, max(6.0, 0.8 * len(bars_spec) * len(table) + 2)), 4.8), layout="constrained")
    ax = fig.subplots()
    paper_drawn = False
    for i, (col, label, colour, paper_col, hatch) in enumerate(bars_spec):
        pos = x + (i - (len(bars_spec) - 1) / 2) * width
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        bars = ax.bar(pos, np.nan_to_num(values), width, color=colour, alpha=0.8, label=label, hatch=hatch,
                      edgecolor="black", linewidth=0.6)  # fmt: skip
        for bar in (b for b, v in zip(bars, values, strict=True) if np.isnan(v)):
            bar.set_linewidth(0)  # undefined: no bar, only the "–" label
        ax.bar_label(bars, labels=[MISSING_TEXT if np.isnan(v) else f"{v:.2f}" for v in values], padding=2, fontsize=8)
        if paper_col and paper_col in table and pd.to_numeric(table[paper_col], errors="coerce").notna().any():
            ax.plot(pos, pd.to_numeric(table[paper_col], errors="coerce"), "D", color="black", ms=6,
                    label=None if paper_drawn else "paper, Table 4 (its own data)")  # fmt: skip
            paper_drawn = True
    names = [ARM_LABELS.get(str(a), f"ours: {str(a).replace('_', ' ')}") for a in table["arm"]]
    ax.set_xticks(x, names, rotation=20 if len(table) > 3 else 0, ha="right" if len(table) > 3 else "center")
    ax.set(ylabel="test Dice (per slice)", ylim=(-0.03, 1.18), title="Ablation: preprocessing (Table 4)")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return fig


MISSING_TEXT = "–"
"""Label of an undefined value in a figure (as in the tables)."""


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
