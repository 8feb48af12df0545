"""The paper's tables, rebuilt from a run's files with the paper's values beside (docs/study.md §4–9).

Every per-slice score names its rule and n (slices used); tumor scores show the GT-positive value
(slices whose ground truth holds tumor) beside the ε-smoothed, paper-comparable one. An undefined
value (n = 0) is NaN here and "–" in the Markdown (:func:`liverlib.files.to_markdown`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper


def table01_architecture(image_size: int = 256, trained_size: int | None = None) -> pd.DataFrame:
    """Table 1 from the model itself (layer, output shape, parameters) at the paper's 256² input.

    Adds a total row (and the total without the learnable positional embedding, the paper's 20.3M) with the
    paper's count beside it; with ``trained_size`` (the input side the run trained at, e.g. 64 in the smoke run)
    a column gives each layer's output shape at that size (a 64² input has an 8 × 8 = 64-token bottleneck).
    """
    from liverlib.model.hybrid import HybridTransUNet, count_parameters, layer_table

    model = HybridTransUNet()
    t = layer_table(model, image_size=image_size)
    if trained_size and trained_size != image_size:
        t[f"output_shape_{trained_size}px"] = layer_table(model, image_size=trained_size)["output_shape"].to_numpy()
    t["paper_parameters"] = np.nan
    counts = count_parameters(model)
    extra = [
        {"component": "Total", "layer": "all layers", "parameters": counts["total"], "paper_parameters": paper.PARAMETERS},
        {"component": "Total", "layer": "without the positional embedding", "paper_parameters": paper.PARAMETERS,
         "parameters": counts["without_positional_embedding"]},
    ]  # fmt: skip
    t = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
    return t.fillna({c: "" for c in t.columns if c.startswith("output_shape")})


def table02_loss(p: Mapping[str, Any]) -> pd.DataFrame:
    """Table 2 (loss components) from the run's settings (``report.run_settings``), the paper's beside."""
    ref = paper.LOSS
    return pd.DataFrame([
        {"loss": "Cross-entropy", "formula": "-sum_c y_c log p_c (no class weights)", "weight": p["ce_weight"],
         "settings": "", "paper_weight": ref["ce_weight"], "paper_settings": ""},
        {"loss": "Dice", "formula": "1 - (2|P∩G| + eps) / (|P| + |G| + eps), softmax, mean over classes",
         "weight": p["dice_weight"], "settings": f"eps={p['dice_eps']:g}", "paper_weight": ref["dice_weight"],
         "paper_settings": f"eps={ref['dice_eps']:g}"},
        {"loss": "Focal (softmax)", "formula": "-alpha (1 - p_t)^gamma log p_t", "weight": p["focal_weight"],
         "settings": f"alpha={p['focal_alpha']:g}, gamma={p['focal_gamma']:g}", "paper_weight": ref["focal_weight"],
         "paper_settings": f"alpha={ref['focal_alpha']:g}, gamma={ref['focal_gamma']:g}"},
    ])  # fmt: skip


_T5 = {"val_liver_dice": "val_liver_dice_smoothed", "val_tumor_dice": "val_tumor_dice_smoothed",
       "val_tumor_dice_gtpos": "val_tumor_dice_gt_positive", "val_tumor_gtpos_n": "val_tumor_gt_positive_n"}  # fmt: skip


def table05_training(history: pd.DataFrame, best_epoch: int) -> pd.DataFrame:
    """Table 5: every epoch of this run, and every epoch the paper's Table 5 lists (1, 10, 20, …, 100 and its
    best, 98), one row per epoch, the paper's values beside ours at the same epoch ("–" where one side has no
    such epoch). ``note`` names this run's best (lowest validation loss) and last epoch and the paper's best.
    Validation Dice is ε-smoothed over all validation slices; the GT-positive tumor Dice and its n are shown
    when ``history.csv`` logs them."""
    last = int(history.epoch.max())
    h = history.copy()
    h["epoch"] = h["epoch"].astype(int)
    cols = ["paper_train_loss", "paper_val_loss", "paper_val_acc", "paper_liver_dice", "paper_tumor_dice"]
    ref = pd.DataFrame([{"epoch": e, **dict(zip(cols, v, strict=True))} for e, v in paper.TABLE5.items()])
    h = h.merge(ref, on="epoch", how="outer").sort_values("epoch", kind="stable").reset_index(drop=True)

    def note(e: int) -> str:
        flags = (("best", e == best_epoch), ("last", e == last), ("paper only", e not in set(history.epoch)),
                 ("paper's best", e == paper.BEST_EPOCH))  # fmt: skip
        return "; ".join(word for word, hit in flags if hit)

    h.insert(1, "note", [note(int(e)) for e in h.epoch])
    h = h.rename(columns=_T5)
    keep = ["epoch", "note", "train_loss", "val_loss", "val_pixel_acc", "val_liver_dice_smoothed",
            "val_tumor_dice_smoothed", "val_tumor_dice_gt_positive", "val_tumor_gt_positive_n", "val_liver_iou",
            "val_tumor_iou", "lr", *cols]  # fmt: skip
    return h[[c for c in keep if c in h.columns]].reset_index(drop=True)


_T6 = [  # label, summary key, paper key (paper.TEST / TEST_MEAN)
    ("Dice, ε-smoothed, all slices (paper-comparable)", "dice_smoothed", "dice"),
    ("Dice, GT-positive slices", "dice_gt_positive", None),
    ("IoU, counted, ε-smoothed, all slices", "iou", None),
    ("IoU, counted, GT-positive slices", "iou_gt_positive", None),
    ("IoU derived from mean Dice (Eq. 16, as the paper)", "iou_from_mean_dice", "iou"),
    ("Precision (slices with a prediction)", "precision", "precision"),
    ("Recall (slices with ground truth)", "recall", "recall"),
    ("Specificity", "specificity", None),
    ("F1, counted (slices with either)", "f1", None),
    ("F1 from mean P and R (as the paper)", "f1_from_mean_pr", "f1"),
]


def table06_test(summary: dict[str, Any]) -> pd.DataFrame:
    """Table 6: test metrics per slice (mean ± std, n slices used, slices left out, the rule), the mean of liver
    and tumor as the paper's "Mean" column, the paper's values beside; two rows scored at native resolution."""
    s = summary["per_slice"]
    rows = []
    for label, key, pkey in _T6:
        rows.append(_t6_row(label, key, pkey, s))
    native = summary.get("per_slice_native") or {}
    if native:
        for label, key in (("Dice, ε-smoothed, all slices, native resolution", "dice_smoothed"),
                           ("Dice, GT-positive slices, native resolution", "dice_gt_positive")):  # fmt: skip
            rows.append(_t6_row(label, key, None, native))
    pa = s["pixel_accuracy"]
    rows.append({"metric": "Pixel accuracy (all classes)", "liver_mean": pa["mean"], "liver_std": pa["std"],
                 "liver_n": pa["n"], "paper_liver": paper.TEST["pixel_accuracy"][0], "rule": "per slice, all classes"})  # fmt: skip
    return pd.DataFrame(rows)


def _t6_row(label: str, key: str, pkey: str | None, s: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"metric": label}
    for cls in ("liver", "tumor"):
        e = s.get(f"{cls}_{key}", {})
        row[f"{cls}_mean"], row[f"{cls}_std"] = e.get("mean", np.nan), e.get("std", np.nan)
        row[f"{cls}_n"], row[f"{cls}_undefined"] = e.get("n"), e.get("undefined")
    means = [row["liver_mean"], row["tumor_mean"]]
    row["mean"] = float(np.mean(means)) if all(m is not None and np.isfinite(m) for m in means) else np.nan
    for cls in ("liver", "tumor"):
        pv = paper.TEST.get(f"{cls}_{pkey}") if pkey else None
        row[f"paper_{cls}"] = pv[0] if pv else np.nan
        row[f"paper_{cls}_std"] = pv[1] if pv else np.nan
    row["paper_mean"] = paper.TEST_MEAN.get(pkey, np.nan) if pkey else np.nan
    row["rule"] = s.get(f"liver_{key}", {}).get("rule_text") or s.get(f"liver_{key}", {}).get("rule", "")
    return row


def table07_val_vs_test(val_best: dict[str, float], summary: dict[str, Any]) -> pd.DataFrame:
    """Table 7: best validation epoch vs test per slice, difference = test − validation (the paper's sign),
    the average-Dice row, the tumor GT-positive Dice beside the ε-smoothed one, the paper's values beside."""
    s = summary["per_slice"]

    def m(k: str) -> float:
        return s.get(k, {}).get("mean", np.nan)

    def val(k: str) -> float:
        return np.nan if val_best.get(k) is None else float(val_best[k])

    spec = [  # metric, validation, test, rule
        ("liver_dice", val("val_liver_dice"), m("liver_dice_smoothed"), "ε-smoothed, all slices"),
        ("tumor_dice", val("val_tumor_dice"), m("tumor_dice_smoothed"), "ε-smoothed, all slices"),
        ("tumor_dice_gt_positive", val("val_tumor_dice_gtpos"), m("tumor_dice_gt_positive"), "GT-positive slices"),
        ("liver_iou", val("val_liver_iou"), m("liver_iou"), "counted, ε-smoothed, all slices"),
        ("tumor_iou", val("val_tumor_iou"), m("tumor_iou"), "counted, ε-smoothed, all slices"),
        ("average_dice", (val("val_liver_dice") + val("val_tumor_dice")) / 2,
         (m("liver_dice_smoothed") + m("tumor_dice_smoothed")) / 2, "(liver + tumor) / 2, ε-smoothed"),
        ("pixel_accuracy", val("val_pixel_acc"), m("pixel_accuracy"), "all classes"),
    ]  # fmt: skip
    rows = []
    for k, v, t, rule in spec:
        pv, pt, pd_ = paper.TABLE7.get(k, (paper.VAL_BEST.get(k, np.nan), paper.TEST.get(k, (np.nan,))[0], np.nan))
        if k == "pixel_accuracy":
            pd_ = pt - pv
        rows.append({"metric": k, "val_best": v, "test": t, "difference": t - v, "paper_val": pv, "paper_test": pt,
                     "paper_difference": pd_, "rule": rule})  # fmt: skip
    return pd.DataFrame(rows)


def table05_caption(settings: Mapping[str, Any]) -> str:
    """One line naming the run's training settings, from its recorded files (never a notebook's cell)."""
    g = settings.get
    return (f"{g('model', 'n/a')}, {g('epochs', 'n/a')} epochs at {g('image_size', 'n/a')}², batch {g('batch_size', 'n/a')}, "
            f"lr {g('lr', float('nan')):g}, seed {g('seed', 'n/a')} (from {g('_source', 'the run files')}); "
            f"paper: {paper.SETTINGS['epochs']} epochs at {paper.SETTINGS['image_size']}², batch "
            f"{paper.SETTINGS['batch_size']}, lr {paper.SETTINGS['lr']:g}")  # fmt: skip
