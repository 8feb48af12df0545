"""``report.md`` (stage 06): what ran, the paper's numbers beside ours (rules and n named), statistics at the level
of the volume, per-volume metrics, ablation, tables and figures, each a section of its own. Everything is read from the
run's files (:func:`liverlib.report.report.run_settings`), never from the rendering notebook's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper
from liverlib.evaluation.stats import MIN_VOLUMES
from liverlib.files import MISSING, read_json, to_markdown, write_text
from liverlib.params import Params
from liverlib.report import tables
from liverlib.report.report import (
    FIGURES,
    FLOATFMT,
    TABLES,
    empty_credit_note,
    number_text,
    read_if_present,
    render_tables,
    run_settings,
)
from liverlib.run import RunDir

_f = number_text  # the report's number format (one for every section)


def _md(path: Path) -> str:
    """A table's Markdown, rebuilt from its CSV by :func:`liverlib.files.to_markdown` (one number format for all)."""
    csv = path.with_suffix(".csv")
    if csv.is_file():
        return to_markdown(pd.read_csv(csv), FLOATFMT.get(csv.stem[:7], ".4f"))
    md = path.with_suffix(".md")
    return md.read_text(encoding="utf-8") if md.is_file() else "_(not produced)_\n"


def headline_table(t6: pd.DataFrame) -> list[str]:
    """The report's test table as Markdown lines: Table 6's rows (:func:`tables.table06_test`), so the paper's
    values sit beside the same rows in both (its derived IoU and F1 beside our derived ones); ours as
    mean ± SD (n, slices left out), the paper's as printed."""
    lines = ["| metric | liver (ours) | liver (paper) | tumor (ours) | tumor (paper) |", "|---|---|---|---|---|"]
    for r in t6.to_dict("records"):
        cells = [f"{ours} | {_as_printed(r.get(f'paper_{c}'), r.get(f'paper_{c}_std')) if ours else ''}"
                 for c in ("liver", "tumor") for ours in [_ours(r, c)]]  # fmt: skip
        lines.append(f"| {r['metric']} | {cells[0]} | {cells[1]} |")
    return lines


def _ours(r: dict[str, Any], cls: str) -> str:
    """One class's cell of a Table 6 row: mean ± SD (n, left out); blank where the row has no such class."""
    n = r.get(f"{cls}_n")
    if cls == "tumor" and "all classes" in r["metric"]:
        return ""  # one value for all classes (pixel accuracy), in the liver column as in Table 6
    if n is None or (isinstance(n, float) and np.isnan(n)):
        return MISSING
    std = r.get(f"{cls}_std")
    out = _f(r.get(f"{cls}_mean")) + (f" ± {_f(std)}" if n > 1 and std is not None and np.isfinite(std) else "")
    left = r.get(f"{cls}_undefined")
    return f"{out} (n={int(n)}" + (f", {int(left)} left out)" if left and np.isfinite(left) else ")")


def _as_printed(mean: Any, std: Any) -> str:
    """A paper value as printed (``0.92``, ``0.9157 ± 0.1223``, at least 2 decimals), "–" when it gives none."""

    def txt(v: float) -> str:
        whole, _, frac = f"{v:.4f}".rstrip("0").partition(".")
        return f"{whole}.{frac.ljust(2, '0')}"

    if mean is None or not np.isfinite(mean):
        return MISSING
    return txt(mean) + (f" ± {txt(std)}" if std is not None and np.isfinite(std) else "")


def notebook_links(run: RunDir) -> list[str]:
    """Markdown lines linking the HTML renderings of the executed notebooks (``html/<notebook>.html``) that exist."""
    pages = sorted((run.root / "html").glob("*.html"))
    if not pages:
        return []
    return ["## The notebooks, executed (HTML)", "",
            "Each notebook of this run as it ran, readable without Jupyter:", "",
            *(f"- [{p.stem}](html/{p.name})" for p in pages), ""]  # fmt: skip


def _parameters(training: dict[str, Any]) -> str:
    tp = training.get("trained_parameters")
    if isinstance(tp, dict):
        tp = tp.get("total")
    if tp is not None:
        return f"{int(tp):,} parameters (the model trained)"
    total = training.get("parameters", {}).get("total")
    return f"{total:,} parameters (the hybrid's; training.json records no trained count)" if total else "n/a parameters"


@dataclass(frozen=True)
class ReportInputs:
    """What the report's sections read from the run folder, read once."""

    s: dict[str, Any]
    st: dict[str, Any]
    study: dict[str, Any]
    training: dict[str, Any]
    prov: dict[str, Any]
    pv: dict[str, Any]
    wall: dict[str, Any]
    nvol: int
    ci: dict[str, Any]
    cl: dict[str, Any]
    rl: dict[str, Any]
    phantom: bool


def read_inputs(run: RunDir) -> ReportInputs:
    """The run's ``summary.json``, settings, ``study.json`` and ``training.json``, as the sections use them."""
    s = read_json(run.root / "summary.json")
    st = run_settings(run)
    study = read_if_present(run.root / "study.json")
    training = read_if_present(run.root / "training.json")
    prov = s["provenance"]
    pv = s.get("per_volume", {})
    wall = study.get("notebooks", {})
    nvol = s["counts"]["test_volumes"]
    ci, cl = s["confidence_intervals"], s.get("cluster_bootstrap", {})
    rl = s.get("resize_loss", {})
    phantom = st.get("data_dir") == "phantom"

    return ReportInputs(s, st, study, training, prov, pv, wall, nvol, ci, cl, rl, phantom)


def _interval(d: dict[str, Any] | None) -> str:
    return f"[{_f((d or {}).get('low'), 3)}, {_f((d or {}).get('high'), 3)}]"


def _normalization_text(st: dict[str, Any]) -> str:
    """How the run normalised CT, and whether that is the paper's recipe (docs/study.md §2, §12)."""
    if st.get("normalization", "minmax") == "ct_norm":
        return ("`ct_norm` (nnU-Net's CT normalisation from the training foreground; not the paper's recipe, which "
                "Table 4's `paper` arm trains)")  # fmt: skip
    return "min-max per slice (the paper's)"


def _section_setup(run: RunDir, inp: ReportInputs) -> list[str]:
    """The title and "What was run"."""
    s, st, training, prov, wall, nvol, phantom = inp.s, inp.st, inp.training, inp.prov, inp.wall, inp.nvol, inp.phantom
    ref = paper.SETTINGS
    return [
        f"# Report — run `{run.root.name}`", "",
        "Generated from this run's files; every number below was measured in this run unless it is labelled as the "
        f"paper's. Settings are read from {st['_source']}.", "",
        "## What was run", "",
        f"- Data: `{st.get('data_dir')}`" + (" (the embedded synthetic LiTS-like phantom, not real CT)" if phantom else ""),
        f"- Split (by volume, seed {st.get('seed')}): see Table 3 below; {nvol} test volumes, {s['counts']['test_slices']} test slices",
        f"- Model: {training.get('model') or st.get('model')}, {_parameters(training)}; {st.get('epochs')} epochs "
        f"(paper: {ref['epochs']}; {training.get('epochs', 'n/a')} completed), image size {st.get('image_size')} (paper: "
        f"{ref['image_size']}), batch {st.get('batch_size')} (paper: {ref['batch_size']}), lr {st.get('lr', float('nan')):g} "
        f"(paper: {ref['lr']:g}); best epoch {s['checkpoint_epoch']} (paper: {ref['best_epoch']})",
        f"- Preprocessing: {_normalization_text(st)}, CLAHE {st.get('use_clahe')}, gamma {st.get('use_gamma')}, "
        f"8-bit quantisation {st.get('quantize_8bit', True)}, HU window {st.get('hu_window') or 'none'}",
        f"- Hardware: {prov['device']}; torch {prov['versions'].get('torch')}; training time "
        f"{_f(training.get('train_seconds', float('nan')) / 60, 1)} min (paper: {paper.TRAINING['hours_100_epochs']} h on a Tesla T4)",
        f"- Wall time per notebook (s): {', '.join(f'{k}: {v}' for k, v in wall.items()) or 'n/a'}",
        f"- Git commit: `{prov.get('git_commit')}`", "",
    ]  # fmt: skip


def _section_results(run: RunDir, inp: ReportInputs) -> list[str]:
    """The "Test results beside the paper" section: Table 6's rows, the empty-credit notes, the resize loss."""
    s, st, rl = inp.s, inp.st, inp.rl
    lines = [
        "## Test results beside the paper", "",
        "Per slice (as the paper): means over the test split's curated slices at the model's resolution, with n = the "
        "slices each mean is over. Dice and IoU are shown two ways: ε-smoothed over all slices (a slice with no tumor in "
        "truth and prediction scores 1: the paper-comparable value, which flatters a model that misses tumor) and over "
        "GT-positive slices only (slices whose ground truth holds the class). Precision, recall and F1 leave out (and "
        "count) every slice whose denominator is zero — precision a slice with nothing predicted, recall a slice with "
        "nothing true — never scoring it 1; '–' = undefined (no slice left). IoU is counted, not derived from Dice; "
        "the paper's IoU and F1 were derived (from mean Dice, from mean precision and recall) and stand beside the "
        "rows derived the same way, as in Table 6.", "",
        f"**±** is the standard deviation over the n slices of the cell (mean ± SD), not a confidence interval (those are "
        f"under Statistics); the paper's ± is the standard deviation over its {paper.TEST_SLICES} test slices.", "",
        *headline_table(tables.table06_test(s)), "",
        *(f"{note}\n" for note in (empty_credit_note(s), empty_credit_note(read_if_present(run.root / "models/unet_smp/summary.json"),
                                                                         "The smp U-Net baseline")) if note),
    ]  # fmt: skip
    if rl:
        lines += [
            f"Nearest-neighbour resize to {st.get('image_size')}²: of the {rl['tumor']['native']} curated test slices whose "
            f"native-resolution ground truth holds tumor, {rl['tumor']['resized']} still do after the resize "
            f"({rl['tumor']['lost']} lose every tumor pixel; liver: {rl['liver']['native']} → {rl['liver']['resized']}). "
            "The 'native resolution' rows score the same slices with the prediction upsampled to the original in-plane "
            "size against the original masks.", "",
        ]  # fmt: skip
    return lines


def _section_statistics(inp: ReportInputs) -> list[str]:
    """The "Statistics" section: intervals over slices and volumes, the t-test and the Wilcoxon test."""
    s, pv, nvol, ci, cl = inp.s, inp.pv, inp.nvol, inp.ci, inp.cl
    pci = paper.CI95
    tt, wx = s["ttest_liver_vs_tumor"], s.get("wilcoxon_liver_vs_tumor", {})
    return [
        "## Statistics", "",
        f"Slices of one patient are not independent; the test set has {nvol} volume(s). "
        + (f"With fewer than {MIN_VOLUMES} test volumes no interval over volumes is meaningful: the intervals below are "
           "printed for completeness only, and the slice-level ones are far too narrow."
           if nvol < MIN_VOLUMES else "Intervals over volumes resample the unit that was sampled."), "",
        "| 95% interval of mean Dice | liver | tumor | paper liver | paper tumor |", "|---|---|---|---|---|",
        f"| slice bootstrap, ε-smoothed (the paper's method, {ci['liver_dice_smoothed']['resamples']} resamples) | "
        f"{_interval(ci['liver_dice_smoothed'])} | {_interval(ci['tumor_dice_smoothed'])} | "
        f"{_interval(dict(zip(('low', 'high'), pci['liver_dice'])))} | {_interval(dict(zip(('low', 'high'), pci['tumor_dice'])))} |",
        f"| slice bootstrap, GT-positive slices | {_interval(ci.get('liver_dice_gt_positive'))} | "
        f"{_interval(ci.get('tumor_dice_gt_positive'))} | – | – |",
        f"| cluster bootstrap over volumes, ε-smoothed | {_interval(cl.get('liver_dice_smoothed'))} | "
        f"{_interval(cl.get('tumor_dice_smoothed'))} | – | – |",
        f"| cluster bootstrap over volumes, GT-positive slices | {_interval(cl.get('liver_dice_gt_positive'))} | "
        f"{_interval(cl.get('tumor_dice_gt_positive'))} | – | – |",
        f"| per-volume Dice (LiTS rule), bootstrap over volumes | {_interval(pv.get('liver_dice_per_case', {}).get('ci95'))} | "
        f"{_interval(pv.get('tumor_dice_per_case', {}).get('ci95'))} | – | – |", "",
        f"Paired t-test liver vs tumor Dice over test slices (the paper's test; n = {tt.get('n')} slices, not independent): "
        f"t = {_f(tt.get('t'), 2)}, p = {_f(tt.get('p'), 4)} (paper: t = {paper.TTEST['t']}, p {paper.TTEST['p']}). Wilcoxon signed-rank, liver vs "
        f"tumor per-volume Dice, paired by volume: "
        + (f"W = {_f(wx.get('statistic'), 1)}, p = {_f(wx.get('p'), 4)}, n = {wx.get('n')} volumes."
           if wx.get("run") else f"{wx.get('note', 'not run')}."), "",
    ]  # fmt: skip


def _section_per_volume(inp: ReportInputs) -> list[str]:
    """The "Per volume (LiTS style)" section: Dice per case and global, ASSD and HD95 per class."""
    s, pv, nvol = inp.s, inp.pv, inp.nvol
    lines = [
        "## Per volume (LiTS style, beyond the paper)", "",
        "Every slice of each test volume, predictions resized back to the original in-plane size; liver = label ≥ 1, tumor "
        "= label 2; distances in mm from the file's spacing. " + s["rules"]["per_volume_dice"] + ". "
        + s["rules"]["per_volume_distance"] + ".", "",
        "| class | Dice per case | Dice global | ASSD (mm) | HD95 (mm) |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for c in ("liver", "tumor"):
        d = pv.get(f"{c}_dice_per_case", {})
        dist = []
        for k in ("assd_mm", "hd95_mm"):
            e = pv.get(f"{c}_{k}", {})
            left = ", ".join(f"{e[w]} {w.replace('_', ' ')}" for w in ("empty_prediction", "empty_ground_truth", "both_empty")
                             if e.get(w))  # fmt: skip
            dist.append(
                f"{_f(e.get('mean'), 2)} (n={e.get('n')} of {e.get('volumes', nvol)}"
                + (f"; left out: {left})" if left else ")")
            )
        lines.append(f"| {c} | {_f(d.get('mean'))} (n={d.get('n')}) | {_f(pv.get(f'{c}_dice_global', {}).get('value'))} | "
                     f"{dist[0]} | {dist[1]} |")  # fmt: skip
    return lines


def _section_tables(run: RunDir, inp: ReportInputs) -> list[str]:
    """The "Tables" section: every table's Markdown, with the notes of Tables 1 and 5."""
    st = inp.st
    lines = ["", "## Tables", ""]
    for key, name in TABLES.items():
        head = f"### {key.replace('table', 'Table ').replace(' 0', ' ')} — `tables/{name}.csv`"
        note = {"table05": f"Training settings: {tables.table05_caption(st)}.", "table01": "Shapes at the paper's 256² "
                f"input; the column output_shape_{st.get('image_size')}px gives the shapes at the input this run trained at."}.get(key)  # fmt: skip
        lines += [head, "", *([note, ""] if note else []), _md(run.table(name)), ""]
    return lines


def _section_figures(run: RunDir) -> list[str]:
    """The "Figures" section: every figure of the registry (the ablation's noted when it was not made)."""
    lines = ["## Figures", ""]
    for key, name in FIGURES.items():
        title = (
            "Ablation (Table 4 as bars)" if key == "fig_ablation" else key.replace("fig", "Fig. ").replace(" 0", " ")
        )
        if key == "fig_ablation" and not run.figure(name).is_file():
            lines += [f"### {title}", "", "_(not produced: the ablation notebook was not run)_", ""]
            continue
        lines += [f"### {title}", "", f"![{name}](figures/{name}.png)", ""]
    return lines


def _section_differences(inp: ReportInputs) -> list[str]:
    """The "How this run differs from the paper" section."""
    st, prov, phantom = inp.st, inp.prov, inp.phantom
    ref = paper.SETTINGS
    return [
        "## How this run differs from the paper", "",
        "- " + ("Data: the embedded phantom is synthetic; its numbers show the pipeline works, not clinical accuracy."
                if phantom else "Data: the paper did not name its 11 volumes; ours are listed in Table 3."),
        f"- Training: {st.get('epochs')} epochs at {st.get('image_size')}² on {prov['device']} vs {ref['epochs']} epochs at {ref['image_size']}² on a T4.",
        "- Metrics: the paper derived IoU from Dice and did not state its empty-slice rule; we count IoU, report tumor Dice "
        "ε-smoothed and over GT-positive slices, leave zero-denominator slices out of precision/recall/F1, and add "
        "LiTS-style per-volume metrics. Per-slice Dice is not comparable with LiTS per-case Dice (docs/metrics.md).",
        "- Augmentation uses albumentations 2.0.8 (the paper's 1.x arguments renamed); the paper's ElasticTransform(alpha=1, "
        "sigma=50) moves pixels by well under a pixel.", "",
    ]  # fmt: skip


def write_report(run: RunDir, p: Params | None = None) -> Path:
    """``report.md``: what ran, the paper's numbers beside ours (rules and n named), statistics at the level of
    the volume, ablation, tables and figures. Everything is read from the run's files; ``p`` (the rendering
    notebook's parameters) is not used for any number or setting."""
    render_tables(run)
    inp = read_inputs(run)
    lines = [*_section_setup(run, inp), *notebook_links(run), *_section_results(run, inp), *_section_statistics(inp),
             *_section_per_volume(inp), *_section_tables(run, inp), *_section_figures(run), *_section_differences(inp)]  # fmt: skip
    return write_text(run.root / "report.md", "\n".join(lines))
