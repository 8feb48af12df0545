"""Table builders on hand-made summaries: the paper's rows and columns (Tables 4, 6, 7)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from liverlib import files, paper
from liverlib.params import resolve
from liverlib.pipeline.ablation import table04
from liverlib.report import tables


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
    assert "| –" in files.to_markdown(t6)


def test_table07_sign_is_test_minus_validation() -> None:
    val = {"val_liver_dice": 0.95, "val_tumor_dice": 0.7, "val_liver_iou": 0.9, "val_tumor_iou": 0.6,
           "val_pixel_acc": 0.99, "val_tumor_dice_gtpos": 0.4}  # fmt: skip
    t7 = tables.table07_val_vs_test(val, _summary(0.9, 0.6, 0.3)).set_index("metric")
    assert t7.loc["liver_dice", "difference"] == pytest.approx(0.9 - 0.95)
    assert t7.loc["average_dice", "val_best"] == pytest.approx(0.825) and t7.loc["average_dice", "test"] == 0.75
    assert t7.loc["tumor_dice_gt_positive", "difference"] == pytest.approx(0.3 - 0.4)
    assert t7.loc["liver_dice", "paper_difference"] == -0.0225 and t7.loc["average_dice", "paper_val"] == 0.8804
    assert isinstance(t7, pd.DataFrame)


def test_table05_holds_every_epoch_of_ours_and_every_epoch_of_the_papers() -> None:
    h = pd.DataFrame({"epoch": range(1, 13), "train_loss": 1.0, "val_loss": [1.0] * 3 + [0.5] + [0.9] * 8})
    t5 = tables.table05_training(h, best_epoch=4)
    assert set(t5.epoch) == set(range(1, 13)) | set(paper.TABLE5) and t5.epoch.is_monotonic_increasing
    assert {10, 20, 30, 40, 50, 60, 70, 80, 90, 98, 100} <= set(t5.epoch) and t5.epoch.is_unique
    row = t5.set_index("epoch")
    assert row.loc[4, "note"] == "best" and row.loc[12, "note"] == "last"
    assert row.loc[98, "note"] == "paper only; paper's best"
    assert row.loc[10, "paper_val_loss"] == paper.TABLE5[10][1] and row.loc[10, "val_loss"] == 0.9  # one row
    assert math.isnan(row.loc[20, "val_loss"]) and math.isnan(row.loc[2, "paper_val_loss"])


def _run_with_summary(tmp_path: Path) -> Path:
    run = tmp_path / "r"
    (run / "models/unet_smp").mkdir(parents=True)
    s = _summary(0.9, 0.6, 0.3) | {"counts": {"test_slices": 10, "test_volumes": 2, "test_slices_with_tumor": 6},
                                   "per_volume": {"liver_dice_per_case": {"mean": 0.8}, "tumor_dice_per_case": {"mean": 0.5}}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(s))
    (run / "models/unet_smp/summary.json").write_text(json.dumps(s | {"model": "unet_smp"}))
    return run


def test_table08_puts_per_slice_beside_per_slice_and_names_the_level(tmp_path: Path) -> None:
    from liverlib.report.report import table08_comparison
    from liverlib.run import RunDir

    t8 = table08_comparison(RunDir(_run_with_summary(tmp_path)))
    own = t8[t8.method == "Hybrid CNN–Transformer"].set_index("source")
    # the paper's own row is per slice, so ours beside it in the same columns is the per-slice Dice
    assert own.loc["as reported", "level"].startswith("per slice")
    assert own.loc["same data", "level"].startswith("per slice")
    assert own.loc["same data", "liver_dice_pct"] == pytest.approx(90.0)  # per slice, not the per-volume 80
    assert own.loc["same data", "liver_dice_per_volume_pct"] == pytest.approx(80.0)
    assert t8.level.notna().all() and (t8.source == "same data").sum() == 2
    assert (t8[t8.source == "same data"].level.str.startswith("per slice")).all()


def test_report_headline_and_table06_pair_the_same_rows_with_the_same_paper_values() -> None:
    from liverlib.report.document import headline_table

    t6 = tables.table06_test(_summary(0.9, 0.6, 0.3))
    lines = headline_table(t6)[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == list(t6.metric)
    for line, row in zip(lines, t6.itertuples(), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        for cell, value in ((cells[2], row.paper_liver), (cells[4], row.paper_tumor)):
            expected = {files.MISSING, ""} if math.isnan(value) else {value}
            assert (cell if cell in (files.MISSING, "") else float(cell.split(" ± ")[0])) in expected, line
    counted = next(line for line in lines if line.startswith("| IoU, counted, ε-smoothed"))
    assert "0.8447" not in counted  # the paper's IoU was derived from Dice: it sits beside the derived row only


def test_report_says_when_the_tumor_score_is_all_empty_slice_credit() -> None:
    from liverlib.report.report import empty_credit_note

    s = _summary(0.9, 0.4, 0.0) | {"counts": {"test_slices": 10}}
    note = empty_credit_note(s)
    assert "all empty-slice credit" in note and "4 of 10 test slices" in note
    assert empty_credit_note(_summary(0.9, 0.6, 0.3) | {"counts": {"test_slices": 10}}) is None
    assert "none found" in empty_credit_note(_summary(0.9, 0.0, 0.0) | {"counts": {"test_slices": 10}})
    assert empty_credit_note({}) is None


def test_report_links_the_executed_notebooks_that_exist(tmp_path: Path) -> None:
    from liverlib.report.document import notebook_links
    from liverlib.run import RunDir

    assert notebook_links(RunDir(tmp_path)) == []
    (tmp_path / "html").mkdir()
    for stem in ("01_curation", "04_evaluation"):
        (tmp_path / "html" / f"{stem}.html").write_text("<html></html>")
    text = "\n".join(notebook_links(RunDir(tmp_path)))
    assert "[01_curation](html/01_curation.html)" in text and "html/04_evaluation.html" in text
    assert "02_preprocessing" not in text


def test_display_formats_counts_as_integers_numbers_to_4_decimals_and_undefined_as_a_dash() -> None:
    from liverlib.report import display

    df = pd.DataFrame({"metric": ["a", "b"], "mean": [0.57581932, float("nan")], "n": [26.0, 3.0],
                       "year": [2022.0, None], "parameters": [20_832_963, 7], "flag": [True, False]})  # fmt: skip
    shown = display.show(df)
    assert shown.text.to_dict("list") == {"metric": ["a", "b"], "mean": ["0.5758", "–"], "n": ["26", "3"],
                                          "year": ["2022", "–"], "parameters": ["20,832,963", "7"],
                                          "flag": ["True", "False"]}  # fmt: skip
    html = shown._repr_html_()
    assert "nan" not in html.lower() and "NaN" not in repr(shown) and "0.5758" in html and "<th" in html
    assert "…" not in html and html.count("<th") >= len(df.columns)  # every column, none elided
    kv = display.show({"a": {"b": 1, "c": None}, "d": 0.5})
    assert kv.text.to_dict("list") == {"key": ["a › b", "a › c", "d"], "value": ["1", "–", "0.5000"]}
