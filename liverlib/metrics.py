"""Segmentation metrics (STUDY §7): per-slice paper metrics and LiTS-style per-volume metrics.

Two class rules:

* ``"paper"`` (per-slice tables, Tables 6–7): classes as labelled, liver = label 1, tumor = label 2.
* ``"lits"`` (per-volume metrics): liver = label ≥ 1 (tumor included), tumor = label 2.

Every score takes its empty-mask rule explicitly (``empty=``), one of :data:`EMPTY_RULES`; it decides
what a ratio with a zero denominator scores:

* ``"smoothed"``: (num + ε) / (den + ε), the loss's convention (STUDY §5): empty/empty = 1,
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

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch
from scipy import ndimage
from scipy.spatial import KDTree

from liverlib.labels import FOREGROUND, LABELS, NUM_CLASSES

EPS: float = 1e-6
"""Smoothing ε of the ``"smoothed"`` rule, the Dice loss's ε (STUDY §5)."""

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


def _np(x: Array) -> np.ndarray:
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
    lab = _np(labels)
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
    p, t = torch.as_tensor(_np(pred)).long(), torch.as_tensor(_np(target)).long()
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
    """IoU (Jaccard) = tp / (tp + fp + fn), counted from the confusion counts (STUDY §7)."""
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
    p, t = _np(pred), _np(target)
    return (p == t).reshape(len(p), -1).mean(1)


def confusion_matrix(pred: Array, target: Array, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Pixel confusion matrix (Fig. 8): int64 (C, C), rows = truth, columns = prediction."""
    p, t = _np(pred).ravel().astype(np.int64), _np(target).ravel().astype(np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_slice_table(
    pred: Array, target: Array, *, ids: Mapping[str, Any] | None = None, eps: float = EPS
) -> pd.DataFrame:
    """One row per slice: paper-rule counts and scores (STUDY §7, Table 6).

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

    Per class ``c``: ``c_dice_smoothed`` (all slices, STUDY §7 (a)); ``c_dice_one|zero|nan`` (the
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


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask plus ``margin`` voxels, clipped to the array."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax))) for ax in range(mask.ndim)]
    return tuple(slice(max(i[0] - margin, 0), min(i[-1] + margin + 1, n)) for i, n in zip(idx, mask.shape, strict=True))


def largest_connected_component(mask: Array) -> np.ndarray:
    """Largest 26-connected (full connectivity) component of a 3D binary mask; bool, same shape."""
    m = _np(mask).astype(bool)
    out = np.zeros_like(m)
    if not m.any():
        return out
    sl = _bbox(m, 0)
    lab, n = ndimage.label(m[sl], structure=np.ones((3,) * m.ndim, bool))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    out[sl] = lab == sizes.argmax()
    return out


def volume_dice(pred: Array, gt: Array, *, empty: str, eps: float = EPS) -> float:
    """Dice of two binary masks of any shape (e.g. 3D (slices, rows, cols)); float."""
    p, g = _np(pred).astype(bool), _np(gt).astype(bool)
    tp = np.count_nonzero(p & g)
    return float(dice(tp, np.count_nonzero(p) - tp, np.count_nonzero(g) - tp, empty=empty, eps=eps))


def global_dice(pairs: Iterable[tuple[Array, Array]], *, empty: str, eps: float = EPS) -> float:
    """LiTS "Dice global": 2Σ|P∩G| / (Σ|P| + Σ|G|) pooled over (pred, gt) binary mask pairs."""
    tp = fp = fn = 0
    for pred, gt in pairs:
        p, g = _np(pred).astype(bool), _np(gt).astype(bool)
        t = np.count_nonzero(p & g)
        tp, fp, fn = tp + t, fp + np.count_nonzero(p) - t, fn + np.count_nonzero(g) - t
    return float(dice(tp, fp, fn, empty=empty, eps=eps))


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Voxels of the mask with a background neighbour (outside the array counts as background)."""
    return mask ^ ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, connectivity))


def surface_distances(
    pred: Array, gt: Array, spacing: Iterable[float], *, connectivity: int = 1, method: str = "kdtree"
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two binary masks (MONAI/medpy surface definition).

    The surface is ``mask XOR binary_erosion(mask)`` with scipy's default face-connected element
    (``connectivity=1``), as in MONAI's ``get_mask_edges`` (``use_subvoxels=False``) and medpy;
    ``connectivity=mask.ndim`` gives the thicker full-connectivity surface. Distances are exact
    Euclidean, in the bounding box of pred ∪ gt plus one voxel: ``"kdtree"`` queries a KD-tree of the
    other surface's voxel centres in mm (MONAI's CPU path; ≈ 0.3 s for a 512×512×100 liver);
    ``"edt"`` reads ``distance_transform_edt(~surface, sampling=spacing)`` (same numbers, ≈ 10× slower).

    Args:
        pred: bool mask, e.g. (slices, rows, cols).
        gt: bool mask, same shape.
        spacing: voxel size in mm per axis, e.g. (slice, row, col).
        connectivity: connectivity of the erosion element (1 = faces).
        method: ``"kdtree"`` or ``"edt"``.

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``: float64 arrays, one distance per surface voxel of ``pred``
        (resp. ``gt``); inf where the other mask is empty (as MONAI), empty arrays for an empty mask.
    """
    p, g = _np(pred).astype(bool), _np(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    sp = np.broadcast_to(np.asarray(tuple(spacing), np.float64), (p.ndim,))
    if not (p | g).any():
        return np.empty(0), np.empty(0)
    sl = _bbox(p | g, 1)
    s_p, s_g = _surface(p[sl], connectivity), _surface(g[sl], connectivity)

    def to(target: np.ndarray, query: np.ndarray) -> np.ndarray:
        if not target.any() or not query.any():
            return np.full(np.count_nonzero(query), np.inf)
        if method == "edt":
            return ndimage.distance_transform_edt(~target, sampling=sp)[query]
        if method != "kdtree":
            raise ValueError(f"method must be 'kdtree' or 'edt', got {method!r}")
        return KDTree(np.argwhere(target) * sp, leafsize=32).query(np.argwhere(query) * sp, k=1)[0]

    return to(s_g, s_p), to(s_p, s_g)


def _undefined(d_pg: np.ndarray, d_gp: np.ndarray, empty: str) -> float | None:
    """Value of a distance metric when a mask is empty, else None."""
    if empty not in DISTANCE_EMPTY_RULES:
        raise ValueError(f"empty must be one of {DISTANCE_EMPTY_RULES}, got {empty!r}")
    if d_pg.size == 0 and d_gp.size == 0:
        return 0.0 if empty == "zero" else float("nan")
    if d_pg.size == 0 or d_gp.size == 0:  # exactly one mask empty (the other set is then all inf)
        return float("nan")
    return None


def assd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, *, empty: str) -> float:
    """ASSD = mean over the union of both directed distance sets (MONAI ``symmetric=True``, LiTS)."""
    u = _undefined(d_pg, d_gp, empty)
    return u if u is not None else float(np.concatenate([d_pg, d_gp]).mean())


def hd95_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, *, empty: str, percentile: float = 95.0) -> float:
    """HD95 as MONAI ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed
    95th percentiles (linear interpolation). medpy's hd95 takes the percentile of the pooled set."""
    u = _undefined(d_pg, d_gp, empty)
    return u if u is not None else float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def assd(pred: Array, gt: Array, spacing: Iterable[float], *, empty: str) -> float:
    """Average symmetric surface distance in mm of two binary masks (see :func:`surface_distances`)."""
    return assd_from_distances(*surface_distances(pred, gt, spacing), empty=empty)


def hd95(pred: Array, gt: Array, spacing: Iterable[float], *, empty: str) -> float:
    """95th-percentile Hausdorff distance in mm of two binary masks (MONAI's definition)."""
    return hd95_from_distances(*surface_distances(pred, gt, spacing), empty=empty)


def volume_metrics(
    pred_labels: Array,
    gt_labels: Array,
    spacing: Iterable[float],
    *,
    liver_lcc: bool = False,
    dice_empty: str = "nan",
    distance_empty: str = "nan",
) -> dict[str, Any]:
    """LiTS-style metrics of one volume (STUDY §7, beyond the paper): liver = label ≥ 1, tumor = 2.

    Args:
        pred_labels: predicted labels, (slices, rows, cols), ints 0..2.
        gt_labels: true labels, same shape.
        spacing: voxel size in mm (slice, row, col).
        liver_lcc: keep only the largest 26-connected component of the predicted liver (label ≥ 1);
            predicted tumor outside it is dropped too.
        dice_empty: empty rule of Dice (:data:`EMPTY_RULES`); default NaN as nnU-Net.
        distance_empty: empty rule of ASSD/HD95 (:data:`DISTANCE_EMPTY_RULES`).

    Returns:
        Flat dict: per class ``c``: ``c_dice``, ``c_assd_mm``, ``c_hd95_mm``, ``c_tp_voxels``,
        ``c_pred_voxels``, ``c_gt_voxels`` (the voxel counts let a caller pool global Dice and tell
        both-empty from one-empty NaNs); plus ``dice_empty_rule``, ``distance_empty_rule``,
        ``class_rule`` and ``liver_lcc``.
    """
    pl, gl = _np(pred_labels), _np(gt_labels)
    if liver_lcc:
        pl = np.where(largest_connected_component(binary_masks(pl, "liver", True)), pl, LABELS["background"])
    out: dict[str, Any] = {}
    for c in FOREGROUND:
        p, g = binary_masks(pl, c, True), binary_masks(gl, c, True)
        d_pg, d_gp = surface_distances(p, g, spacing)
        out[f"{c}_dice"] = volume_dice(p, g, empty=dice_empty)
        out[f"{c}_assd_mm"] = assd_from_distances(d_pg, d_gp, empty=distance_empty)
        out[f"{c}_hd95_mm"] = hd95_from_distances(d_pg, d_gp, empty=distance_empty)
        out[f"{c}_tp_voxels"] = int(np.count_nonzero(p & g))
        out[f"{c}_pred_voxels"], out[f"{c}_gt_voxels"] = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    out.update(dice_empty_rule=dice_empty, distance_empty_rule=distance_empty, class_rule="lits", liver_lcc=liver_lcc)
    return out
