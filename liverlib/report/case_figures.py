"""The test split's figures (paper Figs. 8–11; docs/study.md §8): the confusion matrix, and the cases chosen by
tumor size and error (:func:`select_cases`, :func:`stratify_errors`) as images, overlays and error maps.

Pure plotting functions like :mod:`liverlib.report.figures`; drawing helpers in :mod:`liverlib.report.drawing`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from liverlib.labels import CLASS_NAMES, FOREGROUND, LABELS
from liverlib.report.drawing import (
    FN_COLOUR,
    FP_COLOUR,
    axes_grid,
    check_mask,
    error_map_rgb,
    legend_patches,
    overlay,
    require_columns,
    show_picture,
    to_grey,
)

STRATA: tuple[str, ...] = ("small", "medium", "large")
"""Error-size strata of :func:`stratify_errors`, one per tertile."""


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
    axes = axes_grid(len(cases), 5, 3.0)
    for row, case in zip(axes, cases, strict=True):
        gt, pred = check_mask(case["gt"], np.shape(case["image"])), check_mask(case["pred"], np.shape(case["image"]))
        show_picture(row[0], to_grey(case["image"], hu), "CT")
        row[0].set_ylabel(case.get("title", ""))
        for i, cls in enumerate(FOREGROUND):
            show_picture(row[1 + i], gt == LABELS[cls], f"GT {cls}")
            dice = case.get(f"{cls}_dice")
            show_picture(
                row[3 + i], pred == LABELS[cls], f"pred {cls}" + ("" if dice is None else f" (Dice {dice:.3f})")
            )
    return axes[0, 0].figure


def fig10_overlays(cases: list[dict], hu: bool | None = None) -> Figure:
    """Paper Fig. 10: cases as columns (six in the paper), GT overlay above the prediction overlay.

    ``cases`` are dicts with ``(H, W)`` arrays ``image, gt, pred`` and an optional ``title``.
    """
    axes = axes_grid(len(cases), 2, 3.0, transpose=True)
    for j, case in enumerate(cases):
        overlay(case["image"], case["gt"], ax=axes[0, j], hu=hu).set_title(case.get("title", f"({chr(97 + j)})"))
        overlay(case["image"], case["pred"], ax=axes[1, j], hu=hu)
    axes[0, 0].set_ylabel("ground truth")
    axes[1, 0].set_ylabel("prediction")
    fig = axes[0, 0].figure
    fig.legend(handles=legend_patches(), loc="outside lower center", ncol=2)
    return fig


def fig11_error_maps(cases: list[dict], hu: bool | None = None) -> Figure:
    """Paper Fig. 11: one row per case: CT, GT overlay, prediction overlay, :func:`error_map_rgb`.

    ``cases`` are dicts with ``(H, W)`` arrays ``image, gt, pred`` and an optional ``title`` (e.g. the stratum).
    """
    axes = axes_grid(len(cases), 4, 3.0)
    for row, case in zip(axes, cases, strict=True):
        show_picture(row[0], to_grey(case["image"], hu), "CT")
        row[0].set_ylabel(case.get("title", ""))
        overlay(case["image"], case["gt"], ax=row[1], hu=hu).set_title("ground truth")
        overlay(case["image"], case["pred"], ax=row[2], hu=hu).set_title("prediction")
        show_picture(row[3], error_map_rgb(case["gt"], case["pred"], image=to_grey(case["image"], hu)), "error map")
    fig = axes[0, 0].figure
    errors = {"false positive": FP_COLOUR, "false negative": FN_COLOUR}
    fig.legend(handles=legend_patches() + legend_patches(errors), loc="outside lower center", ncol=4)
    return fig


def select_cases(
    per_slice: pd.DataFrame, n: int, *, by: str = "tumor_gt_px", strategy: str = "largest"
) -> pd.DataFrame:
    """Choose slices for Figs. 9–10 deterministically (stable sort: ties keep row order).

    ``per_slice`` has one row per test slice and a numeric column ``by`` (e.g. ground-truth tumor pixels).
    ``strategy="largest"`` returns the ``n`` largest rows, largest first; ``"spread"`` returns ``n`` rows evenly
    spaced over the ascending ranking, smallest to largest. All rows if there are fewer than ``n``; index kept.
    """
    require_columns(per_slice, [by])
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
    require_columns(per_slice, [column])
    if len(per_slice) < len(STRATA) or n_per_stratum < 1:
        raise ValueError(f"need at least {len(STRATA)} rows and n_per_stratum >= 1")
    ranked = per_slice.sort_values(column, kind="stable")
    parts = []
    for name, block in zip(STRATA, np.array_split(np.arange(len(ranked)), len(STRATA)), strict=True):
        start = max((len(block) - n_per_stratum) // 2, 0)
        parts.append(ranked.iloc[block[start : start + n_per_stratum]].assign(stratum=name))
    return pd.concat(parts)
