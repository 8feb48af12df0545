"""The paper's figures as pure plotting functions (docs/study.md §2, §6–8; paper Figs. 2–4, 6–11, Table 4).

Callers pass arrays and DataFrames (nothing here reads files) and get a :class:`~matplotlib.figure.Figure`
built without pyplot (notebooks show it once, nothing leaks); :func:`save_figure` writes it under the
paper's numbering, e.g. ``fig08_confusion_matrix.png``. Images are ``(H, W)`` floats in Hounsfield units
(shown through :data:`HU_WINDOW`) or in [0, 1]; ``hu=None`` tells them apart by range. Masks are integer
labels (:data:`~liverlib.labels.LABELS`) of the same shape. Liver is green, tumor red; error maps show
false positives yellow and false negatives blue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from liverlib.files import MISSING
from liverlib.labels import FOREGROUND, LABELS
from liverlib.report.drawing import (
    CLASS_COLOURS,
    check_mask,
    hu_text,
    is_hu,
    overlay,
    require_columns,
    resize_nearest,
    show_picture,
    to_grey,
)


def fig02_case_overview(image: np.ndarray, mask: np.ndarray, title: str = "", hu: bool | None = None) -> Figure:
    """Paper Fig. 2 of an ``(H, W)`` slice and mask: CT, combined overlay, liver mask, tumor mask."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    show_picture(axes[0], to_grey(image, hu), "CT")
    overlay(image, mask, ax=axes[1], hu=hu).set_title("liver (green) + tumor (red)")
    for ax, name in zip(axes[2:], FOREGROUND, strict=True):
        show_picture(ax, check_mask(mask) == LABELS[name], f"{name} mask")
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
        show_picture(ax, to_grey(img, hu), name + (f"\n(shown in HU window\n{hu_text()})" if is_hu(img, hu) else ""))
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
        show_picture(axes[0, col], to_grey(img), name)
        ax = axes[1, col]
        ax.hist(img.ravel(), bins=bins, density=True, color="0.5", alpha=0.6, label="all pixels")
        if mask is not None:
            m = resize_nearest(check_mask(mask, np.shape(raw)), img.shape)
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
    require_columns(history, ["epoch", "train_loss", "val_loss"])
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
    require_columns(history, ["epoch"] + [f"val_{c}_{m}" for m in metrics for c in FOREGROUND])
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
    require_columns(table, ["arm"] + [f"{c}_dice" for c in FOREGROUND])
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
        ax.bar_label(bars, labels=[MISSING if np.isnan(v) else f"{v:.2f}" for v in values], padding=2, fontsize=8)
        if paper_col and paper_col in table and pd.to_numeric(table[paper_col], errors="coerce").notna().any():
            ax.plot(pos, pd.to_numeric(table[paper_col], errors="coerce"), "D", color="black", ms=6,
                    label=None if paper_drawn else "paper, Table 4 (its own data)")  # fmt: skip
            paper_drawn = True
    names = [ARM_LABELS.get(str(a), f"ours: {str(a).replace('_', ' ')}") for a in table["arm"]]
    ax.set_xticks(x, names, rotation=20 if len(table) > 3 else 0, ha="right" if len(table) > 3 else "center")
    ax.set(ylabel="test Dice (per slice)", ylim=(-0.03, 1.18), title="Ablation: preprocessing (Table 4)")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return fig
