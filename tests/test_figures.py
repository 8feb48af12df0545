"""Tests of liverlib.report.figures: panel counts, exact overlay / error-map colours, atomic saving, case choice."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from liverlib.labels import CLASS_NAMES, LABELS
from liverlib.report import case_figures, drawing, figures

BG, LIVER, TUMOR = LABELS["background"], LABELS["liver"], LABELS["tumor"]
YELLOW, BLUE = np.array(drawing.FP_COLOUR), np.array(drawing.FN_COLOUR)


def _case(seed: int = 0, size: int = 16, hu: bool = True, **extra) -> dict:
    """A tiny slice: HU (or [0, 1]) noise, a liver square with a tumor inside, a shifted prediction."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1000, 400, (size, size)) if hu else rng.uniform(0, 1, (size, size))
    gt = np.zeros((size, size), np.uint8)
    gt[4:12, 4:12] = LIVER
    gt[6:9, 6:9] = TUMOR
    pred = np.roll(gt, 1, axis=1)
    return {"image": image, "gt": gt, "pred": pred, **extra}


def _history(val_loss: list[float]) -> pd.DataFrame:
    n = len(val_loss)
    epochs = np.arange(1, n + 1)
    dice = np.linspace(0.3, 0.9, n)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": np.linspace(1.0, 0.2, n),
            "val_loss": val_loss,
            "val_liver_dice": dice,
            "val_tumor_dice": dice / 2,
            "val_liver_iou": dice / (2 - dice),
            "val_tumor_iou": dice / 4,
        }
    )


def _assert_text_inside(fig: Figure) -> None:
    """Every title, label and annotation of ``fig`` lies inside the saved canvas (nothing clipped)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer, box = canvas.get_renderer(), fig.bbox
    texts = [*fig.texts, fig._suptitle, fig._supxlabel, *(t for leg in fig.legends for t in leg.get_texts())]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += ax.get_legend().get_texts() if ax.get_legend() else []
    texts = [t for t in texts if t is not None and t.get_visible() and t.get_text()]
    for t in texts:
        e = t.get_window_extent(renderer)
        assert e.x0 >= box.x0 - 1 and e.y0 >= box.y0 - 1 and e.x1 <= box.x1 + 1 and e.y1 <= box.y1 + 1, t.get_text()


def _images(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


# --- colours -----------------------------------------------------------------------------------------------


def test_to_grey_windows_hu_and_keeps_unit_range():
    hu = np.array([[-1000.0, -200.0], [25.0, 3000.0]])
    np.testing.assert_allclose(drawing.to_grey(hu), [[0.0, 0.0], [0.5, 1.0]])
    unit = np.array([[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(drawing.to_grey(unit), unit)
    np.testing.assert_allclose(drawing.to_grey(unit, hu=True), np.full((2, 2), 200 / 450) + unit / 450)


def test_overlay_rgb_blends_class_colours_exactly():
    image = np.full((1, 3), 0.5)
    mask = np.array([[BG, LIVER, TUMOR]], np.uint8)
    rgb = drawing.overlay_rgb(image, mask, alpha=0.4)
    expected = [[[0.5, 0.5, 0.5], [0.3, 0.7, 0.3], [0.7, 0.3, 0.3]]]
    np.testing.assert_allclose(rgb, expected)


def test_error_map_rgb_marks_false_positives_yellow_and_false_negatives_blue():
    gt = np.array([[BG, LIVER, LIVER, TUMOR, TUMOR, BG]], np.uint8)
    pred = np.array([[LIVER, BG, TUMOR, LIVER, TUMOR, BG]], np.uint8)
    # pixel 0: predicted liver on background -> FP; 1: missed liver -> FN; 2: GT liver predicted tumor -> tumor FP;
    # 3: GT tumor predicted liver -> missed tumor (FN); 4, 5: correct.
    expected = np.array([[YELLOW, BLUE, YELLOW, BLUE, [0, 0, 0], [0, 0, 0]]], dtype=float)
    np.testing.assert_array_equal(drawing.error_map_rgb(gt, pred), expected)


def test_error_map_rgb_dims_the_ct_under_correct_pixels():
    gt = np.array([[LIVER, LIVER], [BG, BG]], np.uint8)
    pred = np.array([[LIVER, BG], [LIVER, BG]], np.uint8)
    image = np.array([[1.0, 1.0], [0.5, 0.5]])
    rgb = drawing.error_map_rgb(gt, pred, image=image, dim=0.4)
    np.testing.assert_allclose(rgb[0, 0], [0.4] * 3)
    np.testing.assert_allclose(rgb[1, 1], [0.2] * 3)
    np.testing.assert_array_equal(rgb[0, 1], BLUE)
    np.testing.assert_array_equal(rgb[1, 0], YELLOW)


def test_masks_are_validated():
    gt = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        drawing.error_map_rgb(gt, np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="values"):
        drawing.error_map_rgb(gt, np.full((2, 2), 7, np.uint8))


# --- figures -----------------------------------------------------------------------------------------------


def test_fig02_has_four_image_panels():
    case = _case()
    fig = figures.fig02_case_overview(case["image"], case["gt"], title="volume 1, slice 3")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    liver_panel = fig.axes[2].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(liver_panel), (case["gt"] == LIVER).astype(float))


def test_overlay_draws_on_given_axes_or_new_figure():
    case = _case()
    ax = drawing.overlay(case["image"], case["gt"])
    assert isinstance(ax.figure, Figure) and len(ax.images) == 1
    fig = figures.fig02_case_overview(case["image"], case["gt"])
    assert drawing.overlay(case["image"], case["gt"], ax=fig.axes[0]) is fig.axes[0]


def test_fig03_one_panel_per_stage_in_order():
    image = _case()["image"]
    norm = (image - image.min()) / (image.max() - image.min())
    stages = {"original": image, "normalised": norm, "CLAHE": norm, "gamma": norm**1.2}
    fig = figures.fig03_pipeline(stages)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split("\n")[0] for t in titles] == list(stages)
    assert titles[0] == "original\n(shown in HU window\n[-200, 250] HU)"  # the display window is named
    _assert_text_inside(fig)  # no title clipped
    assert all("HU window" not in t for t in titles[1:])
    assert len(figures.fig03_pipeline({"only": norm}).axes) == 1


@pytest.mark.parametrize("with_mask", [False, True])
def test_fig04_images_above_histograms(with_mask):
    case = _case(size=16)
    enhanced = np.random.default_rng(1).uniform(0, 1, (8, 8))  # another size: the mask is resized
    fig = figures.fig04_histograms(case["image"], enhanced, mask=case["gt"] if with_mask else None)
    assert len(fig.axes) == 4 and len(_images(fig)) == 2
    assert [ax.get_title() for ax in fig.axes[:2]] == ["(a) min-max normalised", "(b) enhanced (CLAHE + gamma)"]
    for hist_ax in fig.axes[2:]:
        assert len(hist_ax.patches) == (100 + 2 if with_mask else 100)  # all-pixel bars (+ liver, tumor steps)
        if with_mask:
            assert [t.get_text() for t in hist_ax.get_legend().get_texts()] == ["all pixels", "liver", "tumor"]


def test_fig06_marks_the_lowest_validation_loss():
    val = [1.5, 0.9, 0.7, 0.31, 0.4, 0.30, 0.35, 0.30]  # minimum 0.30 first at epoch 6 (tie at 8)
    fig = figures.fig06_loss_curves(_history(val))
    (best,) = [line for line in fig.axes[0].lines if line.get_label().startswith("best")]
    assert list(best.get_xdata()) == [6] and list(best.get_ydata()) == [0.30]
    assert best.get_label() == "best epoch 6" and best.get_color() == "green"
    assert "best epoch 6" in fig.axes[0].get_title()
    assert figures.best_epoch(_history(val)) == 6


def test_fig06_shows_the_validation_dice_beside_the_loss_and_marks_the_best_epoch_in_both():
    h = _history([1.0, 0.5, 0.4, 0.45]).assign(val_tumor_dice_gtpos=[0.0, 0.1, 0.2, 0.3], val_tumor_gtpos_n=7)
    fig = figures.fig06_loss_curves(h)
    loss_ax, dice_ax = fig.axes[:2]
    assert dice_ax.get_shared_x_axes().joined(loss_ax, dice_ax)
    for ax in (loss_ax, dice_ax):  # a vertical line at the best epoch (3) in both panels
        assert any(list(line.get_xdata()) == [3, 3] for line in ax.lines)
    labels = [line.get_label() for line in dice_ax.lines]
    assert "liver, ε-smoothed" in labels and "tumor, GT-positive slices, n=7" in labels
    assert "epoch 3" in dice_ax.get_title()
    _assert_text_inside(fig)


def test_fig06_and_fig07_axes_fit_this_runs_epochs_not_the_papers():
    from liverlib import paper

    h = _history([1.0, 0.5, 0.4, 0.3, 0.35, 0.3])  # 6 epochs; the paper's Table 5 runs to 100
    for fig in (figures.fig06_loss_curves(h, paper=paper.TABLE5), figures.fig07_metric_curves(h, paper=paper.TABLE5)):
        for ax in fig.axes[:2]:
            lo, hi = ax.get_xlim()
            assert lo >= 0 and hi <= 7, ax.get_xlim()
        assert "100 epochs" in fig._supxlabel.get_text() and "best epoch 98" in fig._supxlabel.get_text()
        _assert_text_inside(fig)


def test_fig06_and_fig07_overlay_the_papers_table5_inside_the_runs_epochs():
    from liverlib import paper

    h = _history(list(np.linspace(1.0, 0.3, 20)))
    fig6 = figures.fig06_loss_curves(h, paper=paper.TABLE5)
    (ref,) = [line for line in fig6.axes[0].lines if line.get_label() == "paper validation loss (Table 5)"]
    assert list(ref.get_xdata()) == [1, 10, 20] and ref.get_ydata()[-1] == paper.TABLE5[20][1]
    fig7 = figures.fig07_metric_curves(h, paper=paper.TABLE5)
    (tumor,) = [line for line in fig7.axes[0].lines if line.get_label() == "paper tumor (Table 5)"]
    assert list(tumor.get_xdata()) == [1, 10, 20] and tumor.get_ydata()[-1] == paper.TABLE5[20][4]
    long = _history(list(np.linspace(1.0, 0.3, 100)))
    (ref,) = [line for line in figures.fig06_loss_curves(long, paper=paper.TABLE5).axes[0].lines
              if line.get_label() == "paper validation loss (Table 5)"]  # fmt: skip
    assert list(ref.get_xdata()) == sorted(paper.TABLE5) and ref.get_ydata()[-2] == 0.2766  # epoch 98


def test_fig07_gt_positive_tumor_dice_is_the_main_visible_tumor_line():
    h = _history([1.0, 0.5, 0.4]).assign(val_tumor_dice_gtpos=[0.0, 0.1, 0.2], val_tumor_gtpos_n=10)
    dice_ax = figures.fig07_metric_curves(h).axes[0]
    labels = [line.get_label() for line in dice_ax.lines]
    assert "tumor, GT-positive slices, n=10" in labels and "liver, ε-smoothed, all slices" in labels
    (gtpos,) = [line for line in dice_ax.lines if "GT-positive" in line.get_label()]
    assert list(gtpos.get_ydata()) == [0.0, 0.1, 0.2] and gtpos.get_linestyle() == "-" and gtpos.get_marker() == "s"
    (smoothed,) = [line for line in dice_ax.lines if line.get_label().startswith("tumor, ε-smoothed")]
    assert "tumor-free slices score 1" in smoothed.get_label() and smoothed.get_linestyle() == ":"
    assert gtpos.get_zorder() > smoothed.get_zorder() and not gtpos.get_clip_on()
    assert dice_ax.get_ylim()[0] < 0  # a curve at 0 is drawn above the frame, not on it


def test_fig07_says_when_no_tumor_was_found_and_shares_the_epoch_axis():
    h = _history([1.0, 0.5, 0.4]).assign(val_tumor_dice_gtpos=0.0, val_tumor_gtpos_n=9)
    fig = figures.fig07_metric_curves(h)
    assert fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[1])
    assert "empty-slice credit" in fig._supxlabel.get_text()
    assert "empty-slice credit" not in figures.fig07_metric_curves(h.assign(val_tumor_dice_gtpos=0.2)).texts


def test_fig07_dice_and_iou_panels():
    fig = figures.fig07_metric_curves(_history([1.0, 0.5, 0.4]))
    assert len(fig.axes) == 2
    for ax in fig.axes:  # liver, tumor ε-smoothed, the best-epoch line
        assert [line.get_label() for line in ax.lines][:2] == ["liver, ε-smoothed, all slices",
                                                               "tumor, ε-smoothed: tumor-free slices score 1"]  # fmt: skip
    with pytest.raises(ValueError, match="val_tumor_iou"):
        figures.fig07_metric_curves(_history([1.0]).drop(columns="val_tumor_iou"))


def test_fig08_counts_and_row_normalised_heatmaps():
    cm = np.array([[900, 50, 0], [10, 80, 10], [0, 0, 0]])
    fig = case_figures.fig08_confusion_matrix(cm)
    heatmaps = [ax for ax in fig.axes if ax.collections and ax.get_xlabel() == "prediction"]
    assert len(heatmaps) == 2
    for ax in heatmaps:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    normed = np.asarray(heatmaps[1].collections[0].get_array()).reshape(3, 3)
    np.testing.assert_allclose(normed[:2].sum(axis=1), 1.0)
    np.testing.assert_allclose(normed[2], 0.0)  # empty row: zeros, not NaN
    with pytest.raises(ValueError):
        case_figures.fig08_confusion_matrix(np.ones((2, 2)))


def test_fig09_five_panels_per_case_with_dice_titles():
    cases = [_case(i, title=f"case {i}", liver_dice=0.9 + i / 100, tumor_dice=0.5) for i in range(3)]
    fig = case_figures.fig09_cases(cases)
    assert len(fig.axes) == 15
    assert fig.axes[3].get_title() == "pred liver (Dice 0.900)"
    assert fig.axes[4].get_title() == "pred tumor (Dice 0.500)"
    assert fig.axes[5].get_ylabel() == "case 1"
    assert case_figures.fig09_cases([_case()]).axes[3].get_title() == "pred liver"


def test_fig10_gt_row_above_prediction_row():
    cases = [_case(i, hu=bool(i % 2)) for i in range(6)]
    fig = case_figures.fig10_overlays(cases)
    assert len(fig.axes) == 12
    top, bottom = fig.axes[0].images[0].get_array(), fig.axes[6].images[0].get_array()
    np.testing.assert_allclose(top, drawing.overlay_rgb(cases[0]["image"], cases[0]["gt"]))
    np.testing.assert_allclose(bottom, drawing.overlay_rgb(cases[0]["image"], cases[0]["pred"]))
    with pytest.raises(ValueError):
        case_figures.fig10_overlays([])


def test_fig11_error_map_panel_and_legend():
    cases = [_case(i, title=s) for i, s in enumerate(case_figures.STRATA)]
    fig = case_figures.fig11_error_maps(cases)
    assert len(fig.axes) == 12
    shown = fig.axes[3].images[0].get_array()
    expected = drawing.error_map_rgb(cases[0]["gt"], cases[0]["pred"], image=cases[0]["image"])
    np.testing.assert_allclose(shown, expected)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["liver", "tumor", "false positive", "false negative"]


def test_fig_ablation_bars_and_paper_markers():
    table = pd.DataFrame(
        {
            "arm": ["no_enhancement", "paper"],
            "liver_dice": [0.88, 0.91],
            "tumor_dice": [0.74, 0.80],
            "paper_liver_dice": [0.887, 0.916],
            "paper_tumor_dice": [0.746, 0.810],
        }
    )
    ax = figures.fig_ablation(table).axes[0]
    assert len(ax.patches) == 4 and len(ax.lines) == 2
    # our arm is never called "paper" beside the paper's own markers
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ours: no enhancement", "ours: CLAHE + gamma"]
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "paper, Table 4 (its own data)"
    assert len(figures.fig_ablation(table.iloc[:, :3]).axes[0].lines) == 0
    # the GT-positive tumor Dice gets its own bars; the improvement row is not an arm
    more = pd.concat([table.assign(kind="arm", tumor_dice_gt_positive=[0.3, 0.4]),
                      pd.DataFrame([{"arm": "improvement", "kind": "improvement", "liver_dice": 3.4, "tumor_dice": 8.1}])])  # fmt: skip
    ax = figures.fig_ablation(more).axes[0]
    assert len(ax.patches) == 6 and len(ax.get_xticklabels()) == 2
    assert "tumor Dice, GT-positive slices" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_fig_ablation_labels_zero_and_undefined_bars_and_takes_any_number_of_arms():
    arms = ["paper", "no_enhancement", "clahe_only", "gamma_only", "hu_window", "ct_norm"]
    table = pd.DataFrame({"arm": arms, "kind": "arm", "liver_dice": np.linspace(0.5, 0.9, 6), "tumor_dice": 0.0,
                          "tumor_dice_gt_positive": [0.0] * 5 + [np.nan]})  # fmt: skip
    fig = figures.fig_ablation(table)
    ax = fig.axes[0]
    assert len(ax.patches) == 18 and [t.get_text() for t in ax.get_xticklabels()][-1] == "ours: ct norm"
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("0.00") == 11 and labels.count("–") == 1 and "0.90" in labels
    assert ax.get_ylim()[0] < 0  # a zero bar's outline is drawn above the frame
    _assert_text_inside(fig)


# --- saving ------------------------------------------------------------------------------------------------


def test_save_figure_writes_png_atomically(tmp_path):
    fig = figures.fig02_case_overview(_case()["image"], _case()["gt"])
    path = drawing.save_figure(fig, tmp_path / "new" / "fig02_case_overview.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["fig02_case_overview.png"]


def test_save_figure_leaves_no_temp_file_on_failure(tmp_path):
    fig = figures.fig03_pipeline({"a": np.zeros((4, 4))})
    with pytest.raises(ValueError):
        drawing.save_figure(fig, tmp_path / "fig03.notaformat")
    assert list(tmp_path.iterdir()) == []


# --- case choice -------------------------------------------------------------------------------------------


@pytest.fixture
def per_slice() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"tumor_gt_px": rng.integers(0, 500, 30), "error_px": rng.integers(0, 1000, 30)})
    df.loc[[3, 17], "tumor_gt_px"] = 999  # a tie at the top: row order decides
    return df.set_axis([f"s{i}" for i in range(30)])


def test_select_cases_largest(per_slice):
    chosen = case_figures.select_cases(per_slice, 3)
    assert list(chosen.index[:2]) == ["s3", "s17"]
    assert chosen["tumor_gt_px"].tolist() == sorted(per_slice["tumor_gt_px"], reverse=True)[:3]
    assert len(case_figures.select_cases(per_slice, 100)) == 30


def test_select_cases_spread_covers_the_range(per_slice):
    chosen = case_figures.select_cases(per_slice, 5, strategy="spread")
    values = chosen["tumor_gt_px"].tolist()
    assert len(chosen) == 5 and chosen.index.is_unique
    assert values == sorted(values)
    assert values[0] == per_slice["tumor_gt_px"].min() and values[-1] == per_slice["tumor_gt_px"].max()
    pd.testing.assert_frame_equal(chosen, case_figures.select_cases(per_slice, 5, strategy="spread"))
    with pytest.raises(ValueError):
        case_figures.select_cases(per_slice, 5, strategy="random")


def test_stratify_errors_one_row_per_tertile():
    df = pd.DataFrame({"error_px": [50, 10, 90, 30, 70, 20, 80, 40, 60]})  # tertiles 10-30, 40-60, 70-90
    chosen = case_figures.stratify_errors(df)
    assert chosen["stratum"].tolist() == ["small", "medium", "large"]
    assert chosen["error_px"].tolist() == [20, 50, 80]
    two = case_figures.stratify_errors(df, n_per_stratum=2)
    assert two["stratum"].value_counts().to_dict() == {"small": 2, "medium": 2, "large": 2}
    assert two.groupby("stratum")["error_px"].max()["small"] < two.groupby("stratum")["error_px"].min()["medium"]
    pd.testing.assert_frame_equal(two, case_figures.stratify_errors(df, n_per_stratum=2))
    with pytest.raises(ValueError):
        case_figures.stratify_errors(df.head(2))
