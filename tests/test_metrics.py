"""Metrics on hand-computed tiny masks, and surface distances against MONAI as an oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from liverlib.evaluation import metrics as M
from liverlib.evaluation import per_volume as V
from liverlib.labels import LABELS

BG, LIVER, TUMOR = LABELS["background"], LABELS["liver"], LABELS["tumor"]
SPACING = (2.5, 0.7, 0.7)


def _two_slices() -> tuple[np.ndarray, np.ndarray]:
    """Slice 0 has tumor in truth and prediction; slice 1 has no tumor in truth, one tumor FP."""
    target = np.array(
        [
            [[BG, LIVER, LIVER], [LIVER, TUMOR, TUMOR], [BG, BG, BG]],
            [[BG, LIVER, LIVER], [LIVER, LIVER, BG], [BG, BG, BG]],
        ]
    )
    pred = np.array(
        [
            [[BG, LIVER, BG], [LIVER, TUMOR, LIVER], [BG, BG, LIVER]],
            [[BG, LIVER, LIVER], [LIVER, TUMOR, BG], [BG, BG, BG]],
        ]
    )
    return pred, target


def test_binary_masks_paper_and_lits_rules() -> None:
    lab = np.array([BG, LIVER, TUMOR])
    assert M.binary_masks(lab, "liver", liver_includes_tumor=False).tolist() == [False, True, False]
    assert M.binary_masks(lab, "liver", liver_includes_tumor=True).tolist() == [False, True, True]
    assert M.binary_masks(lab, "tumor", liver_includes_tumor=True).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        M.binary_masks(lab, "background", liver_includes_tumor=False)


def test_slice_stats_hand_counts() -> None:
    pred, target = _two_slices()
    s = M.slice_stats(pred, torch.as_tensor(target))
    # liver (label 1): slice 0 truth {01,02,10}, pred {01,10,12,22}; slice 1 truth {01,02,10,11}, pred {01,02,10}
    np.testing.assert_array_equal(s["tp"], [[2, 1], [3, 0]])
    np.testing.assert_array_equal(s["fp"], [[2, 0], [0, 1]])
    np.testing.assert_array_equal(s["fn"], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(s["tn"], [[4, 7], [5, 8]])
    assert s["tp"].dtype == np.int64 and s["tp"].shape == (2, 2)
    lits = M.slice_stats(pred, target, liver_includes_tumor=True)
    np.testing.assert_array_equal(lits["tp"][:, 0], [4, 4])  # liver = label >= 1
    np.testing.assert_array_equal(lits["tp"][:, 1], s["tp"][:, 1])


@pytest.mark.parametrize(
    ("rule", "both_empty", "fp_only"),
    [
        ("smoothed", 1.0, 0.0),
        ("one", 1.0, 0.0),
        ("zero", 0.0, 0.0),
        ("nan", math.nan, 0.0),
        ("both_empty_one", 1.0, 0.0),
    ],
)
def test_dice_iou_empty_rules(rule: str, both_empty: float, fp_only: float) -> None:
    for score in (M.dice, M.iou, M.f1):
        np.testing.assert_allclose(score(0, 0, 0, empty=rule), both_empty)
        np.testing.assert_allclose(score(0, 3, 0, empty=rule), fp_only, atol=1e-6)  # FP on an empty slice
    np.testing.assert_allclose(M.dice(2, 1, 1, empty=rule), 4 / 6, rtol=1e-6)
    np.testing.assert_allclose(M.iou(2, 1, 1, empty=rule), 2 / 4, rtol=1e-6)


def test_smoothed_is_the_loss_formula() -> None:
    eps = 1e-6
    assert M.dice(0, 3, 0, empty="smoothed") == pytest.approx(eps / (3 + eps))
    assert M.dice(2, 1, 1, empty="smoothed") == (4 + eps) / (6 + eps)
    with pytest.raises(ValueError):
        M.dice(0, 0, 0, empty="ignore")


def test_precision_recall_specificity_rules() -> None:
    # nothing predicted, tumor present: precision undefined (smoothed would hide the miss as 1)
    assert math.isnan(M.precision(0, 0, 2, empty="both_empty_one"))
    assert M.precision(0, 0, 2, empty="smoothed") == pytest.approx(1.0)
    assert M.precision(0, 0, 0, empty="both_empty_one") == 1.0
    assert M.precision(0, 0, 2, empty="zero") == 0.0
    # nothing true, a false positive: recall undefined, precision 0
    assert math.isnan(M.recall(0, 0, 3, empty="both_empty_one"))
    assert M.recall(0, 0, 0, empty="both_empty_one") == 1.0
    assert M.precision(0, 3, 0, empty="both_empty_one") == 0.0
    np.testing.assert_allclose(M.precision([2, 1], [1, 0], [0, 5], empty="nan"), [2 / 3, 1.0])
    np.testing.assert_allclose(M.recall([2, 1], [1, 0], empty="nan"), [2 / 3, 1.0])
    assert M.specificity(6, 2, empty="nan") == 0.75
    assert M.specificity(0, 0, 0, empty="both_empty_one") == 1.0
    assert math.isnan(M.specificity(0, 0, 4, empty="both_empty_one"))
    with pytest.raises(ValueError):
        M.precision(0, 0, empty="both_empty_one")


def test_counted_iou_differs_from_iou_of_mean_dice() -> None:
    tp, fp, fn = np.array([5, 1]), np.array([0, 1]), np.array([0, 0])  # a perfect slice, then 2/3 Dice
    d = M.dice(tp, fp, fn, empty="nan")
    j = M.iou(tp, fp, fn, empty="nan")
    np.testing.assert_allclose(d, [1.0, 2 / 3])
    np.testing.assert_allclose(j, [1.0, 1 / 2])
    np.testing.assert_allclose(M.iou_from_dice(d), j)  # exact per slice
    assert j.mean() == pytest.approx(0.75)
    assert M.iou_from_dice(d.mean()) == pytest.approx(5 / 7)  # not for means


def test_pixel_accuracy_and_confusion_matrix() -> None:
    pred, target = _two_slices()
    np.testing.assert_allclose(M.pixel_accuracy(pred, target), [6 / 9, 8 / 9])
    cm = M.confusion_matrix(pred, target)
    assert cm.shape == (3, 3) and cm.dtype == np.int64 and cm.sum() == pred.size
    np.testing.assert_array_equal(cm.sum(1), np.bincount(target.ravel(), minlength=3))  # rows = truth
    np.testing.assert_array_equal(cm.sum(0), np.bincount(pred.ravel(), minlength=3))  # columns = prediction
    np.testing.assert_array_equal(cm, [[8, 1, 0], [1, 5, 1], [0, 1, 1]])
    assert np.trace(cm) / cm.sum() == pytest.approx(M.pixel_accuracy(pred, target).mean())


def test_per_slice_table_and_summary() -> None:
    pred, target = _two_slices()
    df = M.per_slice_table(pred, target, ids={"volume_id": [7, 7], "slice_idx": [3, 4]})
    assert list(df.columns[:2]) == ["volume_id", "slice_idx"] and len(df) == 2
    np.testing.assert_array_equal(df["tumor_gt_px"], [2, 0])
    np.testing.assert_array_equal(df["tumor_pred_px"], [1, 1])
    np.testing.assert_allclose(df["liver_dice_smoothed"], [4 / 7, 6 / 7], rtol=1e-6)
    np.testing.assert_allclose(df["tumor_dice_smoothed"], [2 / 3, 0.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(df["liver_iou"], [2 / 5, 3 / 4], rtol=1e-6)
    assert math.isnan(df["tumor_recall"][1]) and df["tumor_precision"][1] == 0.0
    assert {"liver_specificity", "tumor_f1", "pixel_accuracy", "tumor_fn"} <= set(df.columns)

    s = M.summarize_slices(df)
    assert s["tumor_dice_smoothed"]["mean"] == pytest.approx(1 / 3, rel=1e-5)
    assert s["tumor_dice_smoothed"]["n"] == 2 and s["tumor_dice_smoothed"]["rule"] == "smoothed"
    assert s["tumor_dice_gt_positive"]["mean"] == pytest.approx(2 / 3) and s["tumor_dice_gt_positive"]["n"] == 1
    assert s["tumor_recall"]["n"] == 1 and s["tumor_recall"]["rule"] == "nan" and s["tumor_recall"]["undefined"] == 1
    assert s["tumor_iou_gt_positive"]["mean"] == pytest.approx(1 / 2) and s["tumor_iou_gt_positive"]["n"] == 1
    assert s["liver_iou_from_mean_dice"]["rule"].startswith("derived")
    assert s["liver_iou_from_mean_dice"]["mean"] != pytest.approx(s["liver_iou"]["mean"])
    assert s["tumor_dice_zero"]["mean"] == pytest.approx(1 / 3)
    assert s["liver_dice_smoothed"]["std"] == pytest.approx(np.std([4 / 7, 6 / 7], ddof=1), rel=1e-5)
    p, r = s["liver_precision"]["mean"], s["liver_recall"]["mean"]
    assert s["liver_f1_from_mean_pr"]["mean"] == pytest.approx(2 * p * r / (p + r))
    assert all({"mean", "std", "n", "undefined", "rule", "rule_text", "slices"} <= set(v) for v in s.values())


def test_summary_dice_rules_on_empty_slice() -> None:
    empty = np.zeros((1, 2, 2), int)
    df = M.per_slice_table(empty, empty)
    s = M.summarize_slices(df)
    assert s["tumor_dice_smoothed"]["mean"] == pytest.approx(1.0)
    assert s["tumor_dice_one"]["mean"] == 1.0 and s["tumor_dice_zero"]["mean"] == 0.0
    assert s["tumor_dice_nan"]["n"] == 0 and s["tumor_dice_gt_positive"]["n"] == 0
    for k in ("precision", "recall", "f1"):  # 0/0: left out and counted, never scored 1
        assert math.isnan(df[f"tumor_{k}"][0])
        assert s[f"tumor_{k}"]["n"] == 0 and s[f"tumor_{k}"]["undefined"] == 1 and math.isnan(s[f"tumor_{k}"]["mean"])


def test_all_background_predictor_scores_zero_not_one() -> None:
    """A model that never predicts tumor: recall 0 over GT-tumor slices, precision undefined everywhere.

    Three slices: tumor 2 px, tumor 1 px, no tumor; liver everywhere else in the middle row.
    """
    target = np.zeros((3, 3, 3), int)
    target[:, 1, :] = LIVER
    target[0, 1, :2] = TUMOR
    target[1, 1, 0] = TUMOR
    pred = np.zeros_like(target)
    s = M.summarize_slices(M.per_slice_table(pred, target))
    assert s["tumor_recall"]["mean"] == 0.0 and s["tumor_recall"]["n"] == 2 and s["tumor_recall"]["undefined"] == 1
    assert s["tumor_precision"]["n"] == 0 and s["tumor_precision"]["undefined"] == 3
    assert math.isnan(s["tumor_precision"]["mean"])
    assert s["tumor_dice_gt_positive"]["mean"] == 0.0 and s["tumor_dice_gt_positive"]["n"] == 2
    assert s["tumor_dice_smoothed"]["mean"] == pytest.approx(1 / 3, abs=1e-5)  # the flattering number, labelled as such
    assert s["liver_recall"]["mean"] == 0.0 and s["liver_recall"]["n"] == 3
    # specificity: tn / (tn + fp) = 1 on every slice (nothing predicted); formula by hand
    assert s["tumor_specificity"]["mean"] == 1.0 and s["tumor_specificity"]["n"] == 3


def test_table_rules_match_the_formula_by_hand() -> None:
    """Each per-slice score against its formula on a 2×2 case with 1 TP, 1 FP, 1 FN, 1 TN."""
    target = np.array([[[TUMOR, TUMOR], [BG, BG]]])
    pred = np.array([[[TUMOR, BG], [TUMOR, BG]]])
    df = M.per_slice_table(pred, target)
    assert df.tumor_precision[0] == 1 / 2 and df.tumor_recall[0] == 1 / 2
    assert df.tumor_specificity[0] == 1 / 2 and df.tumor_f1[0] == 2 / 4
    assert df.tumor_iou[0] == pytest.approx(1 / 3) and df.tumor_dice_smoothed[0] == pytest.approx(1 / 2)


# ---------------------------------------------------------------- volume metrics


def test_volume_and_global_dice() -> None:
    a = np.zeros((2, 2, 2), bool)
    b = a.copy()
    a[0, 0, :] = True  # 2 voxels
    b[0, 0, 0] = True  # 1 voxel, overlapping
    assert V.volume_dice(a, b, empty="nan") == pytest.approx(2 / 3)
    assert math.isnan(V.volume_dice(b & False, b & False, empty="nan"))
    assert V.volume_dice(b & False, b & False, empty="zero") == 0.0
    c = np.zeros_like(a)
    c[1] = True  # 4 voxels, no overlap with its pair's empty prediction
    assert V.global_dice([(a, b), (np.zeros_like(c), c)], empty="nan") == pytest.approx(2 / (3 + 4))


def test_largest_connected_component_is_26_connected() -> None:
    m = np.zeros((3, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True  # corner-touching chain: one 26-component
    m[0, 3, 3] = True
    lcc = V.largest_connected_component(m)
    assert lcc.sum() == 3 and not lcc[0, 3, 3]
    assert not V.largest_connected_component(np.zeros((2, 2, 2), bool)).any()


def test_surface_distance_hand_case() -> None:
    a = np.zeros((1, 1, 4), bool)
    b = a.copy()
    a[0, 0, 0], b[0, 0, 2] = True, True  # two columns apart at 0.7 mm
    d_ab, d_ba = V.surface_distances(a, b, SPACING)
    np.testing.assert_allclose(d_ab, [1.4])
    np.testing.assert_allclose(d_ba, [1.4])
    assert V.assd(a, b, SPACING, empty="nan") == pytest.approx(1.4)
    assert V.hd95(a, b, SPACING, empty="nan") == pytest.approx(1.4)


def test_surface_distance_empty_rules() -> None:
    a = np.zeros((3, 3, 3), bool)
    b = a.copy()
    b[1, 1, 1] = True
    for f in (V.assd, V.hd95):
        assert math.isnan(f(a, a, SPACING, empty="nan"))
        assert f(a, a, SPACING, empty="zero") == 0.0
        assert math.isnan(f(a, b, SPACING, empty="zero")) and math.isnan(f(b, a, SPACING, empty="zero"))
        assert f(b, b, SPACING, empty="nan") == 0.0
    d_ab, d_ba = V.surface_distances(b, a, SPACING)
    assert np.isinf(d_ab).all() and d_ba.size == 0


def _blob(rng: np.random.Generator, shape: tuple[int, ...] = (20, 24, 24)) -> np.ndarray:
    """Random smooth blob: thresholded Gaussian-smoothed noise."""
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.5) > 0.05


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI 1.6 deprecation inside its own code
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_surface_metrics_match_monai(seed: int) -> None:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    pred, gt = _blob(rng), _blob(rng)
    assert pred.any() and gt.any()
    spacing = (2.5, 0.7, 0.7) if seed % 2 else (1.0, 0.8, 0.6)
    y_pred, y = torch.as_tensor(pred[None, None]).float(), torch.as_tensor(gt[None, None]).float()
    ref_assd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing)
    ref_hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
    assert V.assd(pred, gt, spacing, empty="nan") == pytest.approx(ref_assd.item(), rel=1e-4)
    assert V.hd95(pred, gt, spacing, empty="nan") == pytest.approx(ref_hd95.item(), rel=1e-4)
    d_kd = V.surface_distances(pred, gt, spacing)
    d_edt = V.surface_distances(pred, gt, spacing, method="edt")
    for k, e in zip(d_kd, d_edt, strict=True):
        np.testing.assert_allclose(k, e, rtol=1e-9)


def test_volume_metrics_lits_rule_and_lcc() -> None:
    gt = np.zeros((6, 10, 10), np.uint8)
    gt[1:5, 2:8, 2:8] = LIVER
    gt[2:4, 4:6, 4:6] = TUMOR
    pred = gt.copy()
    pred[0, 0, 0] = LIVER  # a far-away false-positive island
    out = V.volume_metrics(pred, gt, SPACING)
    assert out["liver_gt_voxels"] == 4 * 6 * 6 and out["tumor_gt_voxels"] == 2 * 2 * 2  # liver includes tumor
    assert out["liver_dice"] < 1.0 and out["liver_hd95_mm"] >= 0.0
    assert out["tumor_dice"] == 1.0 and out["tumor_assd_mm"] == 0.0
    assert out["class_rule"] == "lits" and out["dice_empty_rule"] == "nan"
    clean = V.volume_metrics(pred, gt, SPACING, liver_lcc=True)
    assert clean["liver_dice"] == 1.0 and clean["liver_assd_mm"] == 0.0 and clean["liver_lcc"] is True
    no_tumor = V.volume_metrics(np.where(gt == TUMOR, LIVER, gt), np.where(gt == TUMOR, LIVER, gt), SPACING)
    assert math.isnan(no_tumor["tumor_dice"]) and math.isnan(no_tumor["tumor_hd95_mm"])
    assert no_tumor["tumor_pred_voxels"] == no_tumor["tumor_gt_voxels"] == 0


def test_pooled_dice_from_counts():
    """Global Dice pools voxels over volumes: 2·Σtp / (Σpred + Σgt); undefined (None) when nothing is there."""
    assert V.pooled_dice(3 + 1, 4 + 2, 5 + 1) == pytest.approx(2 * 4 / 12)
    assert V.pooled_dice(0, 0, 0) is None and V.pooled_dice(0, 3, 0) == 0.0
