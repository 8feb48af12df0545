"""Table builders on hand-made summaries: the paper's rows and columns (Tables 4, 6, 7)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from liverlib import paper, tables
from liverlib.ablation import table04
from liverlib.params import resolve


def _summary(liver: float, tumor: float, gtpos: float, *, precision_n: int = 3) -> dict:
    e = lambda m, n=10, u=0: {"mean": m, "std": 0.1, "n": n, "undefined": u, "rule": "smoothed", "rule_text": "r"}  # noqa: E731
    ps = {f"{c}_{k}": e(v) for c, v in (("liver", liver), ("tumor", tumor)) for k in ("dice_smoothed", "iou")}
    ps |= {"tumor_dice_gt_positive": e(gtpos, 6), "liver_dice_gt_positive": e(liver), "pixel_accuracy": e(0.95),
           "tumor_precision": e(float("nan") if precision_n == 0 else 0.5, precision_n, 10 - precision_n)}  # fmt: skip
    return {"per_slice": ps, "per_volume": {}, "checkpoint_epoch": 4, "provenance": {"params": {"epochs": 6}}}


def test_table04_has_the_papers_improvement_row(tmp_path: Path) -> None:
    p = resolve(output_root=str(tmp_path), run_name="r", ablation_arms=["paper", "no_enhancement"], epochs=6)
    (tmp_path / "r/ablation/no_enhancement").mkdir(parents=True)
    (tmp_path / "r/summary.json").write_text(json.dumps(_summary(0.90, 0.60, 0.30)))
    (tmp_path / "r/ablation/no_enhancement/summary.json").write_text(json.dumps(_summary(0.80, 0.50, 0.20)))
    t4 = table04(p)
    assert list(t4.kind) == ["arm", "arm", "improvement"] and t4.quantize_8bit[:2].tolist() == [True, True]
    imp = t4.iloc[-1]
    assert imp.liver_dice == pytest.approx(12.5) and imp.tumor_dice == pytest.approx(20.0)  # relative, in %
    assert imp.tumor_dice_gt_positive == pytest.approx(50.0)
    assert (imp.paper_liver_dice, imp.paper_tumor_dice) == paper.ABLATION_IMPROVEMENT == (3.3, 8.6)
    assert (0.916 - 0.887) / 0.887 * 100 == pytest.approx(3.3, abs=0.05)  # the paper's row is relative
    assert t4.tumor_gt_positive_n[0] == 6


def test_table06_paper_mean_column_and_n() -> None:
    t6 = tables.table06_test(_summary(0.9, 0.6, 0.3, precision_n=0))
    dice = t6.iloc[0]
    assert dice["mean"] == pytest.approx(0.75) and dice.paper_mean == 0.8630
    prec = t6[t6.metric.str.startswith("Precision")].iloc[0]
    assert math.isnan(prec.tumor_mean) and prec.tumor_n == 0 and prec.tumor_undefined == 10
    assert "| –" in tables.to_markdown(t6)


def test_table07_sign_is_test_minus_validation() -> None:
    val = {"val_liver_dice": 0.95, "val_tumor_dice": 0.7, "val_liver_iou": 0.9, "val_tumor_iou": 0.6,
           "val_pixel_acc": 0.99, "val_tumor_dice_gtpos": 0.4}  # fmt: skip
    t7 = tables.table07_val_vs_test(val, _summary(0.9, 0.6, 0.3)).set_index("metric")
    assert t7.loc["liver_dice", "difference"] == pytest.approx(0.9 - 0.95)
    assert t7.loc["average_dice", "val_best"] == pytest.approx(0.825) and t7.loc["average_dice", "test"] == 0.75
    assert t7.loc["tumor_dice_gt_positive", "difference"] == pytest.approx(0.3 - 0.4)
    assert t7.loc["liver_dice", "paper_difference"] == -0.0225 and t7.loc["average_dice", "paper_val"] == 0.8804
    assert isinstance(t7, pd.DataFrame)
