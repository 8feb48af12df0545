"""The paper's tables, rebuilt from a run's files with the paper's values beside (STUDY §4–9)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper
from liverlib.params import Params


def table01_architecture(image_size: int = 256) -> pd.DataFrame:
    """Table 1 from the model itself (layer, output shape, parameters) at the paper's 256² input."""
    from liverlib.model import HybridTransUNet, layer_table

    return layer_table(HybridTransUNet(), image_size=image_size)


def table02_loss(p: Params) -> pd.DataFrame:
    """Table 2 (loss components) from the run's parameters, with the paper's settings beside."""
    return pd.DataFrame([
        {"loss": "Cross-entropy", "formula": "-sum_c y_c log p_c (no class weights)", "weight": p.ce_weight,
         "settings": "", "paper_weight": 1.0, "paper_settings": ""},
        {"loss": "Dice", "formula": "1 - (2|P∩G| + eps) / (|P| + |G| + eps), softmax, mean over classes",
         "weight": p.dice_weight, "settings": f"eps={p.dice_eps:g}", "paper_weight": 1.0, "paper_settings": "eps=1e-6"},
        {"loss": "Focal (softmax)", "formula": "-alpha (1 - p_t)^gamma log p_t", "weight": p.focal_weight,
         "settings": f"alpha={p.focal_alpha:g}, gamma={p.focal_gamma:g}", "paper_weight": 0.5,
         "paper_settings": "alpha=0.25, gamma=2.0"},
    ])  # fmt: skip


def table05_training(history: pd.DataFrame, best_epoch: int) -> pd.DataFrame:
    """Table 5: epochs 1, 10, 20, …, the last and the best, with the paper's values beside (same epoch)."""
    last = int(history.epoch.max())
    wanted = sorted({1, last, best_epoch, *range(10, last + 1, 10)})
    h = history[history.epoch.isin(wanted)].copy()
    h.insert(1, "note", ["best" if e == best_epoch else ("last" if e == last else "") for e in h.epoch])
    cols = ["paper_train_loss", "paper_val_loss", "paper_val_acc", "paper_liver_dice", "paper_tumor_dice"]
    for i, c in enumerate(cols):
        h[c] = [paper.TABLE5[e][i] if e in paper.TABLE5 else np.nan for e in h.epoch]
    keep = ["epoch", "note", "train_loss", "val_loss", "val_pixel_acc", "val_liver_dice", "val_tumor_dice",
            "val_liver_iou", "val_tumor_iou", "lr", *cols]  # fmt: skip
    return h[keep].reset_index(drop=True)


def table06_test(summary: dict[str, Any]) -> pd.DataFrame:
    """Table 6: test metrics per slice (mean ± std, the empty-mask rule named), the paper's beside."""
    s = summary["per_slice"]
    rows = []
    spec = [("Dice (ε-smoothed, all slices)", "dice_smoothed", "dice"), ("Dice (GT-positive slices only)", "dice_gt_positive", None),
            ("IoU (counted)", "iou", None), ("IoU derived from mean Dice (Eq. 16, as the paper)", "iou_from_mean_dice", "iou"),
            ("Precision", "precision", "precision"), ("Recall", "recall", "recall"), ("Specificity", "specificity", None),
            ("F1 (counted)", "f1", None), ("F1 from mean P and R (as the paper)", "f1_from_mean_pr", "f1")]  # fmt: skip
    for label, key, pkey in spec:
        row: dict[str, Any] = {"metric": label}
        for cls in ("liver", "tumor"):
            e = s.get(f"{cls}_{key}", {})
            row[f"{cls}_mean"], row[f"{cls}_std"], row[f"{cls}_n"] = e.get("mean"), e.get("std"), e.get("n")
            pv = paper.TEST.get(f"{cls}_{pkey}") if pkey else None
            row[f"paper_{cls}"] = pv[0] if pv else np.nan
            row[f"paper_{cls}_std"] = pv[1] if pv else np.nan
        row["rule"] = s.get(f"liver_{key}", {}).get("rule", "")
        rows.append(row)
    pa = s["pixel_accuracy"]
    rows.append({"metric": "Pixel accuracy (all classes)", "liver_mean": pa["mean"], "liver_std": pa["std"],
                 "liver_n": pa["n"], "paper_liver": paper.TEST["pixel_accuracy"][0], "rule": "per slice"})  # fmt: skip
    return pd.DataFrame(rows)


def table07_val_vs_test(val_best: dict[str, float], summary: dict[str, Any]) -> pd.DataFrame:
    """Table 7: best validation epoch vs test (per slice, ε-smoothed Dice/IoU), differences, the paper's beside."""
    s = summary["per_slice"]
    test = {"liver_dice": s["liver_dice_smoothed"]["mean"], "tumor_dice": s["tumor_dice_smoothed"]["mean"],
            "liver_iou": s["liver_iou"]["mean"], "tumor_iou": s["tumor_iou"]["mean"],
            "pixel_accuracy": s["pixel_accuracy"]["mean"]}  # fmt: skip
    paper_test = {k: paper.TEST[k][0] for k in test}
    rows = []
    for k in test:
        v = val_best.get(f"val_{k}" if k != "pixel_accuracy" else "val_pixel_acc")
        rows.append({"metric": k, "val_best": v, "test": test[k], "difference": (v - test[k]) if v is not None else np.nan,
                     "paper_val": paper.VAL_BEST[k], "paper_test": paper_test[k],
                     "paper_difference": paper.VAL_BEST[k] - paper_test[k]})  # fmt: skip
    return pd.DataFrame(rows)
