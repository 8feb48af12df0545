"""Segmentation metrics (docs/study.md §7): per-slice paper metrics and LiTS-style per-volume metrics.

Two class rules:

* ``"paper"`` (per-slice tables, Tables 6–7): classes as labelled, liver = label 1, tumor = label 2.
* ``"lits"`` (per-volume metrics): liver = label ≥ 1 (tumor included), tumor = label 2.

Every score takes its empty-mask rule explicitly (``empty=``), one of :data:`EMPTY_RULES`; it decides
what a ratio with a zero denominator scores:

* ``"smoothed"``: (num + ε) / (den + ε), the loss's convention (docs/study.md §5): empty/empty = 1,
  prediction-only ≈ 0. Applied to every slice, defined or not.
* ``"one"``: 0/0 = 1 (smp's ``zero_division=1``, medpy ≥ 0.5).
* ``"zero"``: 0/0 = 0 (LiTS official scoring, medpy 0.2.2).
* ``"nan"``: 0/0 = NaN, left out by ``nanmean`` (nnU-Net).
* ``"both_empty_one"``: 0/0 = 1 when prediction and truth are both empty for the class, NaN when
  only one of them is. Kept for comparison only: it scores an empty/empty slice as a hit, so no
  table uses it (NOTES, "Empty slices flatter").

Per-slice tables (:data:`TABLE_RULES`) score Dice and IoU both ways: ε-smoothed over all slices (the
paper-comparable number) and over the slices whose ground truth holds the class ("GT-positive").
Precision, recall, specificity and F1 use ``"nan"``: a slice whose denominator is zero is left out
of the mean and counted (``undefined`` in :func:`summarize_slices`), never scored 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch

from liverlib.labels import FOREGROUND, LABELS, NUM_CLASSES

EPS: float = 1e-6
"""Smoothing ε of the ``"smoothed"`` rule, the Dice loss's ε (docs/study.md §5)."""

EMPTY_RULES: tuple[str, ...] = ("smoothed", "one", "zero", "nan", "both_empty_one")
"""Empty-mask rules of the count-based scores (module docstring)."""

DISTANCE_EMPTY_RULES: tuple[str, ...] = ("nan", "zero")
"""Surface-distance rules: ``"nan"`` = NaN if either mask is empty; ``"zero"`` = 0.0 if both are
empty, NaN if only one is (undefined: MONAI returns inf or NaN there)."""

TABLE_RULES: dict[str, str] = dict(dice_smoothed="smoothed", iou="smoothed", precision="nan", recall="nan",
                                   specificity="nan", f1="nan")  # fmt: skip
"""Empty rule of each score column of :func:`per_slice_table`. Precision with nothing predicted,
recall with nothing true and F1 with both empty are undefined (NaN, left out and counted);
``"smoothed"`` or ``"one"`` would score them 1 and hide a missed tumor, so the smoothed rule is used
for the paper-comparable Dice and IoU only, always beside the GT-positive value."""

RULE_TEXT: dict[str, str] = {
    "smoothed": "ε-smoothed (num+ε)/(den+ε), ε=1e-6, over all slices: a slice empty in truth and prediction scores 1",
    "nan": "slices whose denominator is 0 are left out of the mean and counted in 'undefined'",
    "gt_positive": "over the slices whose ground truth holds the class only (no empty rule needed)",
    "none needed": "defined on every slice",
}
"""Plain-language statement of each rule, recorded beside every summary number."""

Array = np.ndarray | torch.Tensor


def as_numpy(x: Array) -> np.ndarray:
    """Tensor or array → numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def binary_masks(labels: Array, cls: str, liver_includes_tumor: bool) -> np.ndarray:
    """Binary mask of one foreground class.

    Args:
        labels: integer label map of any shape, values in ``LABELS`` (0 background, 1 liver, 2 tumor).
        cls: ``"liver"`` or ``"tumor"``.
        liver_includes_tumor: True for the LiTS rule (liver = label ≥ 1), False for the paper rule
            (liver = label 1 only). Tumor is label 2 under both.

    Returns:
        bool array of the same shape.
    """
    lab = as_numpy(labels)
    if cls == "liver" and liver_includes_tumor:
        return lab >= LABELS["liver"]
    if cls not in FOREGROUND:
        raise ValueError(f"cls must be one of {FOREGROUND}, got {cls!r}")
    return lab == LABELS[cls]


def slice_stats(pred: Array, target: Array, *, liver_includes_tumor: bool = False) -> dict[str, np.ndarray]:
    """Per-slice confusion counts of the foreground classes via ``smp.metrics.get_stats``.

    Args:
        pred: predicted labels, shape (N, H, W), integers in 0..2 (numpy or torch).
        target: true labels, same shape.
        liver_includes_tumor: False = paper rule (classes as labelled, multiclass stats);
            True = LiTS rule (liver = label ≥ 1).

    Returns:
        ``{"tp", "fp", "fn", "tn"}``, each int64 of shape (N, 2), columns ordered as ``FOREGROUND``.
    """
    p, t = torch.as_tensor(as_numpy(pred)).long(), torch.as_tensor(as_numpy(target)).long()
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred and target must both be (N, H, W), got {tuple(p.shape)} and {tuple(t.shape)}")
    if liver_includes_tumor:
        pm = torch.stack([torch.as_tensor(binary_masks(p, c, True)) for c in FOREGROUND], 1).long()
        tm = torch.stack([torch.as_tensor(binary_masks(t, c, True)) for c in FOREGROUND], 1).long()
        stats = smp.metrics.get_stats(pm, tm, mode="multilabel")
    else:
        cols = [LABELS[c] for c in FOREGROUND]
        stats = [s[:, cols] for s in smp.metrics.get_stats(p, t, mode="multiclass", num_classes=NUM_CLASSES)]
    return {k: s.numpy().astype(np.int64) for k, s in zip(("tp", "fp", "fn", "tn"), stats, strict=True)}


def _ratio(num: Any, den: Any, other: Any, empty: str, eps: float) -> np.ndarray:
    """num/den under an empty rule; ``other`` = 0 marks 'the other mask is empty too'."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if empty == "smoothed":
        return (num + eps) / (den + eps)
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}")
    out = np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)
    fill = {"one": 1.0, "zero": 0.0, "nan": np.nan}.get(empty)
    if fill is None:  # both_empty_one
        if other is None:
            raise ValueError("the 'both_empty_one' rule needs the count of the other mask")
        fill = np.where(np.asarray(other) == 0, 1.0, np.nan)
    return np.where(den > 0, out, fill)[()]


def dice(tp: Any, fp: Any, fn: Any, *, empty: str, eps: float = EPS) -> np.ndarray:
    """Dice = 2tp / (2tp + fp + fn), elementwise over count arrays (float64)."""
    tp = np.asarray(tp)
    return _ratio(2 * tp, 2 * tp + np.asarray(fp) + fn, 0, empty, eps)


def iou(tp: Any, fp: Any, fn: Any, *, empty: str, eps: float = EPS) -> np.ndarray:
    """IoU (Jaccard) = tp / (tp + fp + fn), counted from the confusion counts (docs/study.md §7)."""
    return _ratio(tp, np.asarray(tp) + fp + fn, 0, empty, eps)


def iou_from_dice(d: Any) -> np.ndarray:
    """The paper's derived IoU = Dice / (2 − Dice) (Eq. 16): exact per slice, not for means of Dice."""
    d = np.asarray(d, np.float64)
    return (d / (2.0 - d))[()]


def precision(tp: Any, fp: Any, fn: Any = None, *, empty: str, eps: float = EPS) -> np.ndarray:
    """Precision = tp / (tp + fp); ``fn`` is needed by the ``"both_empty_one"`` rule only."""
    return _ratio(tp, np.asarray(tp) + fp, fn, empty, eps)


def recall(tp: Any, fn: Any, fp: Any = None, *, empty: str, eps: float = EPS) -> np.ndarray:
    """Recall (sensitivity) = tp / (tp + fn); ``fp`` is needed by ``"both_empty_one"`` only."""
    return _ratio(tp, np.asarray(tp) + fn, fp, empty, eps)


def specificity(tn: Any, fp: Any, fn: Any = None, *, empty: str, eps: float = EPS) -> np.ndarray:
    """Specificity = tn / (tn + fp); the "other mask" of ``"both_empty_one"`` is the predicted
    negatives, empty when tn + fn = 0, so ``fn`` is needed by that rule only."""
    other = None if fn is None else np.asarray(tn) + fn
    return _ratio(tn, np.asarray(tn) + fp, other, empty, eps)


def f1(tp: Any, fp: Any, fn: Any, *, empty: str, eps: float = EPS) -> np.ndarray:
    """F1 from counts = 2tp / (2tp + fp + fn): the same number as Dice. The paper's F1 (Table 6:
    0.915 / 0.800) equals the harmonic mean of its *mean* precision and recall (0.92, 0.91 → 0.915;
    0.78, 0.82 → 0.800); :func:`summarize_slices` reports that derived value beside this one."""
    return dice(tp, fp, fn, empty=empty, eps=eps)


def pixel_accuracy(pred: Array, target: Array) -> np.ndarray:
    """Fraction of pixels whose label is right, over all classes; (N, H, W) → float64 (N,)."""
    p, t = as_numpy(pred), as_numpy(target)
    return (p == t).reshape(len(p), -1).mean(1)


def confusion_matrix(pred: Array, target: Array, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Pixel confusion matrix (Fig. 8): int64 (C, C), rows = truth, columns = prediction."""
    p, t = as_numpy(pred).ravel().astype(np.int64), as_numpy(target).ravel().astype(np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_slice_table(
    pred: Array, target: Array, *, ids: Mapping[str, Any] | None = None, eps: float = EPS
) -> pd.DataFrame:
    """One row per slice: paper-rule counts and scores (docs/study.md §7, Table 6).

    Args:
        pred: predicted labels (N, H, W), ints 0..2.
        target: true labels (N, H, W).
        ids: optional id columns of length N (e.g. ``volume_id``, ``slice_idx``), placed first.
        eps: ε of the smoothed rule.

    Returns:
        DataFrame with, per class ``c`` in ``FOREGROUND``: ``c_tp``, ``c_fp``, ``c_fn``, ``c_tn``,
        ``c_gt_px``, ``c_pred_px``, ``c_dice_smoothed``, ``c_iou``, ``c_precision``, ``c_recall``,
        ``c_specificity``, ``c_f1`` (rules in :data:`TABLE_RULES`), and ``pixel_accuracy``.
    """
    s = slice_stats(pred, target, liver_includes_tumor=False)
    df = pd.DataFrame({k: np.asarray(v) for k, v in (ids or {}).items()})
    for j, c in enumerate(FOREGROUND):
        tp, fp, fn, tn = (s[k][:, j] for k in ("tp", "fp", "fn", "tn"))
        df[f"{c}_tp"], df[f"{c}_fp"], df[f"{c}_fn"], df[f"{c}_tn"] = tp, fp, fn, tn
        df[f"{c}_gt_px"], df[f"{c}_pred_px"] = tp + fn, tp + fp
        df[f"{c}_dice_smoothed"] = dice(tp, fp, fn, empty=TABLE_RULES["dice_smoothed"], eps=eps)
        df[f"{c}_iou"] = iou(tp, fp, fn, empty=TABLE_RULES["iou"], eps=eps)
        df[f"{c}_precision"] = precision(tp, fp, fn, empty=TABLE_RULES["precision"], eps=eps)
        df[f"{c}_recall"] = recall(tp, fn, fp, empty=TABLE_RULES["recall"], eps=eps)
        df[f"{c}_specificity"] = specificity(tn, fp, fn, empty=TABLE_RULES["specificity"], eps=eps)
        df[f"{c}_f1"] = f1(tp, fp, fn, empty=TABLE_RULES["f1"], eps=eps)
    df["pixel_accuracy"] = pixel_accuracy(pred, target)
    return df


def _entry(values: Any, rule: str, slices: str) -> dict[str, Any]:
    """mean, sample std (ddof=1), count of the non-NaN values and of the NaN (undefined) ones."""
    v = np.asarray(values, np.float64)
    undefined = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    mean = float(v.mean()) if v.size else float("nan")
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    text = RULE_TEXT["gt_positive"] if slices == "gt_positive" else RULE_TEXT.get(rule, rule)
    return {"mean": mean, "std": std, "n": int(v.size), "undefined": undefined, "rule": rule, "rule_text": text,
            "slices": slices}  # fmt: skip


def _derived(mean: Any, n: int, how: str, slices: str) -> dict[str, Any]:
    """Summary entry of a value derived from other means the way the paper did (no std)."""
    return {"mean": float(mean), "std": float("nan"), "n": n, "undefined": 0, "rule": f"derived (paper): {how}",
            "rule_text": f"derived (paper): {how}", "slices": slices}  # fmt: skip


def summarize_slices(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Mean ± std of the per-slice metrics of :func:`per_slice_table`, each with its rule.

    Per class ``c``: ``c_dice_smoothed`` (all slices, docs/study.md §7 (a)); ``c_dice_one|zero|nan`` (the
    other conventions, recomputed from the counts); ``c_dice_gt_positive`` and ``c_iou_gt_positive``
    (slices whose truth holds ``c``, §7 (b); no empty rule is needed there); ``c_iou`` (counted,
    smoothed); ``c_iou_from_mean_dice`` (the paper's Eq. 16 applied to the mean smoothed Dice:
    derived, std NaN); ``c_precision``, ``c_recall``, ``c_specificity``, ``c_f1`` (zero-denominator
    slices left out and counted, :data:`TABLE_RULES`); ``c_f1_from_mean_pr`` (the paper's apparent
    F1: harmonic mean of mean precision and recall); and ``pixel_accuracy``.

    Returns:
        ``{name: {"mean", "std" (ddof=1), "n" (slices used), "undefined" (slices left out), "rule",
        "rule_text", "slices"}}``; mean is NaN when n = 0.
    """
    out: dict[str, dict[str, Any]] = {}
    for c in FOREGROUND:
        tp, fp, fn = (df[f"{c}_{k}"].to_numpy() for k in ("tp", "fp", "fn"))
        out[f"{c}_dice_smoothed"] = _entry(df[f"{c}_dice_smoothed"], "smoothed", "all")
        for rule in ("one", "zero", "nan"):
            out[f"{c}_dice_{rule}"] = _entry(dice(tp, fp, fn, empty=rule), rule, "all")
        pos = (tp + fn) > 0
        out[f"{c}_dice_gt_positive"] = _entry(
            dice(tp[pos], fp[pos], fn[pos], empty="nan"), "gt_positive", "gt_positive"
        )
        out[f"{c}_iou_gt_positive"] = _entry(iou(tp[pos], fp[pos], fn[pos], empty="nan"), "gt_positive", "gt_positive")
        out[f"{c}_iou"] = _entry(df[f"{c}_iou"], TABLE_RULES["iou"], "all")
        d = out[f"{c}_dice_smoothed"]
        out[f"{c}_iou_from_mean_dice"] = _derived(
            iou_from_dice(d["mean"]), d["n"], "Eq. 16 on mean smoothed Dice", "all"
        )
        for k in ("precision", "recall", "specificity", "f1"):
            out[f"{c}_{k}"] = _entry(df[f"{c}_{k}"], TABLE_RULES[k], "defined")
        p, r = out[f"{c}_precision"], out[f"{c}_recall"]
        f = (
            2 * p["mean"] * r["mean"] / (p["mean"] + r["mean"]) if p["mean"] + r["mean"] > 0 else float("nan")
        )  # NaN stays NaN
        out[f"{c}_f1_from_mean_pr"] = _derived(f, min(p["n"], r["n"]), "harmonic mean of mean P and R", "defined")
    out["pixel_accuracy"] = _entry(df["pixel_accuracy"], "none needed", "all")
    return out


# ---------------------------------------------------------------- volume (LiTS-style) metrics
