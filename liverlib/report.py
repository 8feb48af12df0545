"""Figures, tables and ``report.md`` rebuilt from a run folder's files (no training; notebooks 03, 04, 06)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib import figures, paper, tables
from liverlib.params import Params
from liverlib.run import RunDir, RunError, read_json, write_table, write_text

FIGURES = {
    "fig02": "fig02_case_overview", "fig03": "fig03_preprocessing_pipeline", "fig04": "fig04_intensity_histograms",
    "fig06": "fig06_loss_curves", "fig07": "fig07_dice_iou_curves", "fig08": "fig08_confusion_matrix",
    "fig09": "fig09_case_comparison", "fig10": "fig10_overlays", "fig11": "fig11_error_maps",
}  # fmt: skip
TABLES = {
    "table01": "table01_architecture", "table02": "table02_loss", "table03": "table03_split_summary",
    "table04": "table04_ablation", "table05": "table05_training_log", "table06": "table06_test_metrics",
    "table07": "table07_val_vs_test", "table08": "table08_comparison",
}  # fmt: skip


def render_training(run: RunDir, p: Params) -> dict[str, Any]:
    """Table 5 and Figs. 6–7 from ``models/<model>/history.csv``."""
    hist_p = run.root / "models" / p.model / "history.csv"
    if not hist_p.is_file():
        raise RunError(f"{hist_p}: missing; run notebook 03 (training) first")
    hist = pd.read_csv(hist_p)
    best = int(hist.epoch[hist.val_loss.idxmin()])
    t5 = tables.table05_training(hist, best)
    write_table(t5, run.table(TABLES["table05"]))
    figures.save_figure(figures.fig06_loss_curves(hist), run.figure(FIGURES["fig06"]))
    figures.save_figure(figures.fig07_metric_curves(hist), run.figure(FIGURES["fig07"]))
    return {
        "history": hist,
        "table05": t5,
        "fig06": run.figure(FIGURES["fig06"]),
        "fig07": run.figure(FIGURES["fig07"]),
    }


def _cases(arrays: Any, per_slice: pd.DataFrame, rows: pd.DataFrame) -> list[dict[str, Any]]:
    pos = {(v, s): i for i, (v, s) in enumerate(zip(per_slice.volume_id, per_slice.slice_idx))}
    out = []
    for r in rows.itertuples():
        i = pos[(r.volume_id, r.slice_idx)]
        title = f"vol {int(r.volume_id)} slice {int(r.slice_idx)}" + (
            f" ({r.stratum} error)" if hasattr(r, "stratum") else ""
        )
        out.append({"image": arrays["images"][i].astype(np.float32), "gt": arrays["gt"][i], "pred": arrays["pred"][i],
                    "liver_dice": float(r.liver_dice_smoothed), "tumor_dice": float(r.tumor_dice_smoothed), "title": title})  # fmt: skip
    return out


def render_evaluation(run: RunDir) -> dict[str, Any]:
    """Tables 6–7 and Figs. 8–11 from ``summary.json``, ``per_slice.csv`` and ``test_predictions.npz``."""
    run.require("summary.json", "per_slice.csv", "test_predictions.npz")
    s = read_json(run.root / "summary.json")
    ps = pd.read_csv(run.root / "per_slice.csv")
    arrays = np.load(run.root / "test_predictions.npz")
    t6, t7 = tables.table06_test(s), tables.table07_val_vs_test(s["val_best"], s)
    write_table(t6, run.table(TABLES["table06"]))
    write_table(t7, run.table(TABLES["table07"]))
    figures.save_figure(
        figures.fig08_confusion_matrix(np.array(s["confusion_matrix"]["counts"])), run.figure(FIGURES["fig08"])
    )
    tumor = ps[ps.tumor_gt_px > 0] if (ps.tumor_gt_px > 0).sum() >= 3 else ps
    figures.save_figure(figures.fig09_cases(_cases(arrays, ps, figures.select_cases(tumor, min(3, len(tumor)), by="tumor_gt_px", strategy="spread"))),
                        run.figure(FIGURES["fig09"]))  # fmt: skip
    figures.save_figure(figures.fig10_overlays(_cases(arrays, ps, figures.select_cases(ps, min(6, len(ps)), by="liver_gt_px", strategy="spread"))),
                        run.figure(FIGURES["fig10"]))  # fmt: skip
    strata = figures.stratify_errors(ps, 1, column="error_px") if len(ps) >= 3 else ps.assign(stratum="all")
    figures.save_figure(figures.fig11_error_maps(_cases(arrays, ps, strata)), run.figure(FIGURES["fig11"]))
    return {"summary": s, "per_slice": ps, "table06": t6, "table07": t7,
            **{k: run.figure(FIGURES[k]) for k in ("fig08", "fig09", "fig10", "fig11")}}  # fmt: skip


def _slice_mean(s: dict[str, Any], key: str) -> float | None:
    return s["per_slice"].get(key, {}).get("mean")


def table08_comparison(run: RunDir) -> pd.DataFrame:
    """Table 8: the paper's literature rows ("as reported") and this run's models ("same data")."""
    rows = [{"method": m, "year": y, "liver_dice_pct": lv, "tumor_dice_pct": tu, "data": note, "source": "as reported"}
            for m, y, lv, tu, note in paper.LITERATURE]  # fmt: skip
    for name, path in (("Hybrid CNN-Transformer (this run)", run.root / "summary.json"),
                       ("smp U-Net ResNet-34 (this run)", run.root / "models" / "unet_smp" / "summary.json")):  # fmt: skip
        if path.is_file():
            s = read_json(path)
            pv = s.get("per_volume", {})
            rows.append({"method": name, "year": None,
                         "liver_dice_pct": 100 * _slice_mean(s, "liver_dice_smoothed"),
                         "tumor_dice_pct": 100 * _slice_mean(s, "tumor_dice_smoothed"),
                         "data": f"same data: per slice, ε-smoothed, {s['counts']['test_slices']} test slices; per volume "
                                 f"liver {100 * (pv.get('liver_dice_per_case', {}).get('mean') or float('nan')):.2f} / tumor "
                                 f"{100 * (pv.get('tumor_dice_per_case', {}).get('mean') or float('nan')):.2f}",
                         "source": "same data"})  # fmt: skip
    return pd.DataFrame(rows)


def _md(path: Path) -> str:
    return path.with_suffix(".md").read_text() if path.with_suffix(".md").is_file() else "_(not produced)_\n"


def write_report(run: RunDir, p: Params) -> Path:
    """``report.md``: what ran, the paper's numbers beside ours (per slice and per volume, rules named), ablation, figures."""
    s = read_json(run.root / "summary.json")
    study = read_json(run.root / "study.json") if (run.root / "study.json").is_file() else {}
    training = read_json(run.root / "training.json") if (run.root / "training.json").is_file() else {}
    prov = s["provenance"]
    ps, pv = s["per_slice"], s.get("per_volume", {})
    wall = study.get("notebooks", {})

    def f(x: Any, nd: int = 4) -> str:
        return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"

    lines = [
        f"# Report — run `{p.run_name}`", "",
        "Generated by notebook 06 from this run's files; every number below was measured in this run unless it is "
        "labelled as the paper's.", "",
        "## What was run", "",
        f"- Data: `{p.data_dir}`" + (" (the embedded synthetic LiTS-like phantom, not real CT)" if p.data_dir == "phantom" else ""),
        f"- Split (by volume, seed {p.seed}): see Table 3 below; {s['counts']['test_volumes']} test volumes, {s['counts']['test_slices']} test slices",
        f"- Model: {p.model}, {training.get('parameters', {}).get('total', 'n/a'):,} parameters; {training.get('epochs')} epochs "
        f"(paper: 100), image size {p.image_size} (paper: 256), batch {p.batch_size}, lr {p.lr:g} (paper: 1e-4); best epoch "
        f"{s['checkpoint_epoch']} (paper: 98)",
        f"- Hardware: {prov['device']}; torch {prov['versions'].get('torch')}; training time {f(training.get('train_seconds', float('nan')) / 60, 1)} min "
        f"(paper: 4.02 h on a Tesla T4)",
        f"- Wall time per notebook (s): {', '.join(f'{k}: {v}' for k, v in wall.items()) or 'n/a'}",
        f"- Git commit: `{prov.get('git_commit')}`", "",
        "## Test results beside the paper", "",
        "Per slice (as the paper): means over the test split's curated slices at the model's resolution. Dice and IoU use "
        "the ε-smoothed rule (a slice with no tumor in truth and prediction scores 1); 'GT-positive' uses only slices whose "
        "ground truth holds the class. IoU is counted, not derived from Dice.", "",
        "| metric | liver (ours) | liver (paper) | tumor (ours) | tumor (paper) |", "|---|---|---|---|---|",
        f"| Dice, ε-smoothed, all slices | {f(_slice_mean(s, 'liver_dice_smoothed'))} ± {f(ps['liver_dice_smoothed']['std'])} | 0.9157 ± 0.1223 | {f(_slice_mean(s, 'tumor_dice_smoothed'))} ± {f(ps['tumor_dice_smoothed']['std'])} | 0.8103 ± 0.3037 |",
        f"| Dice, GT-positive slices | {f(_slice_mean(s, 'liver_dice_gt_positive'))} (n={ps['liver_dice_gt_positive']['n']}) | – | {f(_slice_mean(s, 'tumor_dice_gt_positive'))} (n={ps['tumor_dice_gt_positive']['n']}) | – |",
        f"| IoU, counted | {f(_slice_mean(s, 'liver_iou'))} | 0.8447 (derived from Dice) | {f(_slice_mean(s, 'tumor_iou'))} | 0.6809 (derived from Dice) |",
        f"| Precision | {f(_slice_mean(s, 'liver_precision'))} | 0.92 | {f(_slice_mean(s, 'tumor_precision'))} | 0.78 |",
        f"| Recall | {f(_slice_mean(s, 'liver_recall'))} | 0.91 | {f(_slice_mean(s, 'tumor_recall'))} | 0.82 |",
        f"| Pixel accuracy (all classes) | {f(_slice_mean(s, 'pixel_accuracy'))} | 0.9920 | | |", "",
        f"Bootstrap 95% CI of per-slice Dice ({s['confidence_intervals']['liver_dice_smoothed']['resamples']} resamples): liver "
        f"[{f(s['confidence_intervals']['liver_dice_smoothed']['low'], 3)}, {f(s['confidence_intervals']['liver_dice_smoothed']['high'], 3)}] "
        f"(paper [0.897, 0.934]); tumor [{f(s['confidence_intervals']['tumor_dice_smoothed']['low'], 3)}, "
        f"{f(s['confidence_intervals']['tumor_dice_smoothed']['high'], 3)}] (paper [0.765, 0.856]). Paired t-test liver vs tumor "
        f"Dice over test slices: t = {f(s['ttest_liver_vs_tumor'].get('t'), 2)}, p = {f(s['ttest_liver_vs_tumor'].get('p'), 4)} "
        "(paper: t = 4.36, p < 0.001).", "",
        "Per volume (LiTS style, beyond the paper): every slice of each test volume, predictions resized back to the original "
        "in-plane size; liver = label ≥ 1, tumor = label 2; distances in mm from the file's spacing. " + s["rules"]["per_volume_dice"] + ". "
        + s["rules"]["per_volume_distance"] + ".", "",
        "| class | Dice per case | Dice global | ASSD (mm) | HD95 (mm) |", "|---|---|---|---|---|",
        *[f"| {c} | {f(pv.get(f'{c}_dice_per_case', {}).get('mean'))} (n={pv.get(f'{c}_dice_per_case', {}).get('n')}) | "
          f"{f(pv.get(f'{c}_dice_global', {}).get('value'))} | {f(pv.get(f'{c}_assd_mm', {}).get('mean'), 2)} | "
          f"{f(pv.get(f'{c}_hd95_mm', {}).get('mean'), 2)} |" for c in ("liver", "tumor")], "",
        "## Tables", "",
    ]  # fmt: skip
    for key, name in TABLES.items():
        lines += [
            f"### {key.replace('table', 'Table ').replace(' 0', ' ')} — `tables/{name}.csv`",
            "",
            _md(run.table(name)),
            "",
        ]
    lines += ["## Figures", ""]
    for key, name in FIGURES.items():
        lines += [f"### {key.replace('fig', 'Fig. ').replace(' 0', ' ')}", "", f"![{name}](figures/{name}.png)", ""]
    lines += [
        "## How this run differs from the paper", "",
        "- " + ("Data: the embedded phantom is synthetic; its numbers show the pipeline works, not clinical accuracy."
                if p.data_dir == "phantom" else "Data: the paper did not name its 11 volumes; ours are listed in Table 3."),
        f"- Training: {training.get('epochs')} epochs at {p.image_size}² on {prov['device']} vs 100 epochs at 256² on a T4.",
        "- Metrics: the paper derived IoU from Dice and did not state its empty-slice rule; we count IoU and report both tumor "
        "Dice conventions, plus LiTS-style per-volume metrics.",
        "- Augmentation uses albumentations 2.0.8 (the paper's 1.x arguments renamed); the paper's ElasticTransform(alpha=1, "
        "sigma=50) moves pixels by well under a pixel.", "",
    ]  # fmt: skip
    return write_text(run.root / "report.md", "\n".join(lines))
