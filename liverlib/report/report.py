"""Figures, tables and ``report.md`` rebuilt from a run folder's files (no training; notebooks 03, 04, 06).

Settings (lr, batch, epochs, image size, data, model) come from the run's recorded files — ``training.json``
``settings`` first, then ``params.json``, then the parameters ``summary.json`` was evaluated with — never from
the parameters cell of the notebook that renders them (:func:`run_settings`). Undefined numbers print "–".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper
from liverlib.errors import RunError
from liverlib.evaluation.stats import MIN_VOLUMES
from liverlib.files import read_json, write_table, write_text
from liverlib.params import Params
from liverlib.report import figures, tables
from liverlib.run import RunDir

FIGURES = {
    "fig02": "fig02_case_overview", "fig03": "fig03_preprocessing_pipeline", "fig04": "fig04_intensity_histograms",
    "fig06": "fig06_loss_curves", "fig07": "fig07_dice_iou_curves", "fig08": "fig08_confusion_matrix",
    "fig09": "fig09_case_comparison", "fig10": "fig10_overlays", "fig11": "fig11_error_maps",
    "fig_ablation": "fig_ablation",
}  # fmt: skip
TABLES = {
    "table01": "table01_architecture", "table02": "table02_loss", "table03": "table03_split_summary",
    "table04": "table04_ablation", "table05": "table05_training_log", "table06": "table06_test_metrics",
    "table07": "table07_val_vs_test", "table08": "table08_comparison",
}  # fmt: skip
FLOATFMT = {"table01": ",.0f", "table08": ".2f"}
"""Markdown number format of each table (``.4f`` otherwise)."""


def _read(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts (e.g. ``{"loss": {"ce_weight": 1.0}}``) flattened into one level."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v) if isinstance(v, dict) else {k: v})
    return out


def run_settings(run: RunDir) -> dict[str, Any]:
    """The run's settings from its files: ``training.json`` ``settings`` over ``params.json`` over the
    parameters ``summary.json`` records; ``_source`` names the files used. Never the caller's parameters."""
    sources, out = [], {}
    for name, get in (("summary.json", lambda d: d.get("provenance", {}).get("params", {})),
                      ("params.json", lambda d: d.get("parameters", {})),
                      ("training.json", lambda d: _flat(d.get("settings", {})))):  # fmt: skip
        values = get(_read(run.root / name))
        if values:
            out.update(values)
            sources.append(name)
    out["_source"] = ", ".join(reversed(sources)) or "no run file"
    if out.get("data_dir") == "auto":  # what "auto" resolved to, from the folder curation read (splits.json)
        folder = str(_read(run.root / "splits.json").get("data_dir", ""))
        out["data_dir"] = "phantom" if Path(folder).name.startswith("phantom-") else folder or "auto"
    return out


def _save(df: pd.DataFrame, path: Path, key: str) -> None:
    """CSV (NaN empty) and Markdown ("–" for undefined) of a table."""
    write_table(df, path, markdown=False)
    write_text(path.with_suffix(".md"), tables.to_markdown(df, FLOATFMT.get(key, ".4f")))


def render_training(run: RunDir, p: Params | None = None) -> dict[str, Any]:
    """Tables 1, 2, 5 and Figs. 6–7 from the run's files (``models/<model>/history.csv``, ``training.json``)."""
    settings = run_settings(run)
    model = _read(run.root / "training.json").get("model") or settings.get("model") or (p.model if p else "hybrid")
    hist_p = run.root / "models" / model / "history.csv"
    if not hist_p.is_file():
        raise RunError(f"{hist_p}: missing; run notebook 03 (training) first")
    hist = pd.read_csv(hist_p)
    setup = render_setup_tables(run)
    best = int(hist.epoch[hist.val_loss.idxmin()])
    t5 = tables.table05_training(hist, best)
    _save(t5, run.table(TABLES["table05"]), "table05")
    figures.save_figure(figures.fig06_loss_curves(hist, paper=paper.TABLE5), run.figure(FIGURES["fig06"]))
    figures.save_figure(figures.fig07_metric_curves(hist, paper=paper.TABLE5), run.figure(FIGURES["fig07"]))
    return {
        **setup,
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
    _save(t6, run.table(TABLES["table06"]), "table06")
    _save(t7, run.table(TABLES["table07"]), "table07")
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


def _mean(d: dict[str, Any], key: str) -> float | None:
    return (d.get(key) or {}).get("mean")


def _pct(x: Any) -> float:
    """100 × x, NaN for None (a true 0 stays 0.0)."""
    return float("nan") if x is None else 100.0 * float(x)


def table08_comparison(run: RunDir) -> pd.DataFrame:
    """Table 8, like with like: the paper's rows as printed ("as reported") and this run's models ("same data").

    The main columns ``liver_dice_pct`` / ``tumor_dice_pct`` hold, for this run's models, the per-slice
    ε-smoothed Dice: the level and rule of the paper's own row (mean over its 170 test slices), so per slice
    stands beside per slice; ``level`` names it on every row (the paper does not say at which level the other
    methods were scored). The per-volume Dice (LiTS rule: per-case mean, liver = label >= 1) and the tumor Dice
    over GT-positive slices have columns of their own, undefined ("–") for the rows as reported.
    """
    rows = [{"reference": ref, "year": str(y), "method": m, "dataset": ds, "liver_dice_pct": lv, "tumor_dice_pct": tu,
             "level": paper.TABLE8_LEVEL.get(m, "as reported (level not stated)"), "rule": "as reported",
             "note": note, "source": "as reported"}
            for ref, y, m, ds, lv, tu, note in paper.LITERATURE]  # fmt: skip
    st = run_settings(run)
    data = "phantom (synthetic)" if st.get("data_dir") == "phantom" else "LiTS"
    for name, path in (("Hybrid CNN–Transformer", run.root / "summary.json"),
                       ("smp U-Net ResNet-34", run.root / "models" / "unet_smp" / "summary.json")):  # fmt: skip
        if not path.is_file():
            continue
        s = read_json(path)
        pv, ps, counts = s.get("per_volume", {}), s["per_slice"], s["counts"]
        rows.append({"reference": "this run", "year": "", "method": name, "dataset": f"{data}, same split",
                     "liver_dice_pct": _pct(_mean(ps, "liver_dice_smoothed")),
                     "tumor_dice_pct": _pct(_mean(ps, "tumor_dice_smoothed")),
                     "level": f"per slice (mean over {counts['test_slices']} test slices)",
                     "rule": "ε-smoothed, all slices (the paper's rule); per-volume columns: per-case mean over "
                             f"{counts['test_volumes']} test volumes, liver = label >= 1, tumor = label 2",
                     "tumor_dice_gt_positive_pct": _pct(_mean(ps, "tumor_dice_gt_positive")),
                     "tumor_gt_positive_n": ps["tumor_dice_gt_positive"]["n"],
                     "liver_dice_per_volume_pct": _pct(_mean(pv, "liver_dice_per_case")),
                     "tumor_dice_per_volume_pct": _pct(_mean(pv, "tumor_dice_per_case")),
                     "note": f"{_epochs(s, st)} epochs at {st.get('image_size')}²", "source": "same data"})  # fmt: skip
    return pd.DataFrame(rows)


def _epochs(summary: dict[str, Any], settings: dict[str, Any]) -> Any:
    """Epochs the model of ``summary`` trained: the baseline's own count for the smp baseline."""
    used = summary.get("provenance", {}).get("params", {}) or settings
    if summary.get("model") == "unet_smp" and used.get("baseline_epochs"):
        return used["baseline_epochs"]
    return used.get("epochs", settings.get("epochs"))


def render_setup_tables(run: RunDir) -> dict[str, pd.DataFrame]:
    """Tables 1 and 2 from the run's files (the trained input size, the loss settings); stage 03 writes them."""
    st = run_settings(run)
    t1 = tables.table01_architecture(256, trained_size=int(st["image_size"]) if st.get("image_size") else None)
    _save(t1, run.table(TABLES["table01"]), "table01")
    out = {"table01": t1}
    if all(k in st for k in ("ce_weight", "dice_weight", "focal_weight", "focal_alpha", "focal_gamma", "dice_eps")):
        out["table02"] = tables.table02_loss(st)
        _save(out["table02"], run.table(TABLES["table02"]), "table02")
    return out


def render_tables(run: RunDir) -> None:
    """Table 8 (the comparison) from the run's files; stage 06 writes it (every other table has its stage)."""
    if (run.root / "summary.json").is_file():
        _save(table08_comparison(run), run.table(TABLES["table08"]), "table08")


def _md(path: Path) -> str:
    """A table's Markdown, rebuilt from its CSV by :func:`tables.to_markdown` (one number format for all)."""
    csv = path.with_suffix(".csv")
    if csv.is_file():
        return tables.to_markdown(pd.read_csv(csv), FLOATFMT.get(csv.stem[:7], ".4f"))
    md = path.with_suffix(".md")
    return md.read_text(encoding="utf-8") if md.is_file() else "_(not produced)_\n"


def _f(x: Any, nd: int = 4) -> str:
    """A number for the report; "–" when undefined (None, NaN)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return tables.MISSING
    return f"{x:,}" if isinstance(x, int) else f"{x:.{nd}f}"


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
        return tables.MISSING
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
        return tables.MISSING
    return txt(mean) + (f" ± {txt(std)}" if std is not None and np.isfinite(std) else "")


def empty_credit_note(summary: dict[str, Any], who: str = "The model") -> str | None:
    """A sentence when the model found no tumor (GT-positive tumor Dice ≈ 0), else None: its ε-smoothed tumor
    Dice is then all empty-slice credit, the tumor-free test slices where it predicted none (each scores 1).

    ``summary`` is a ``summary.json`` (an empty dict gives None).
    """
    ps = summary.get("per_slice", {})
    gp, sm = ps.get("tumor_dice_gt_positive") or {}, ps.get("tumor_dice_smoothed") or {}
    if not gp.get("n") or gp.get("mean") is None or gp["mean"] >= 1e-3:
        return None
    slices = summary.get("counts", {}).get("test_slices", sm.get("n"))
    predicted = (ps.get("tumor_precision") or {}).get("n")
    found = "predicted no tumor on any test slice" if predicted == 0 else (
        f"found no tumor on any of the {gp['n']} test slices whose ground truth holds tumor")  # fmt: skip
    head = f"{who} {found} (tumor Dice over GT-positive slices {_f(gp['mean'])})"
    credit = round((sm.get("mean") or 0.0) * slices)  # every other slice scores ~0
    if credit == 0:
        return f"**Tumor: none found.** {head}; its tumor Dice is 0 by either rule."
    return (f"**Tumor: all empty-slice credit.** {head}. Its ε-smoothed tumor Dice of {_f(sm.get('mean'))} is "
            f"credit for the {credit} of {slices} test slices that hold no tumor and where it predicted none (each "
            "scores 1), not tumor it found.")  # fmt: skip


def tumor_verdict(summary: dict[str, Any]) -> str:
    """One sentence on whether the tumor score of ``summary`` is tumor found: :func:`empty_credit_note` when
    it is all empty-slice credit, else the GT-positive tumor Dice and its n."""
    if note := empty_credit_note(summary):
        return note
    gp = (summary.get("per_slice", {}).get("tumor_dice_gt_positive")) or {}
    if not gp.get("n"):
        return "No test slice holds tumor: the tumor scores say nothing about tumor found."
    return (f"The tumor Dice over the {gp['n']} test slices whose ground truth holds tumor is {_f(gp.get('mean'))}: "
            "the model found tumor there (the ε-smoothed score also credits tumor-free slices).")  # fmt: skip


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


def write_report(run: RunDir, p: Params | None = None) -> Path:
    """``report.md``: what ran, the paper's numbers beside ours (rules and n named), statistics at the level of
    the volume, ablation, tables and figures. Everything is read from the run's files; ``p`` (the rendering
    notebook's parameters) is not used for any number or setting."""
    render_tables(run)
    s = read_json(run.root / "summary.json")
    st = run_settings(run)
    study = _read(run.root / "study.json")
    training = _read(run.root / "training.json")
    prov = s["provenance"]
    pv = s.get("per_volume", {})
    wall = study.get("notebooks", {})
    nvol = s["counts"]["test_volumes"]
    ci, cl = s["confidence_intervals"], s.get("cluster_bootstrap", {})
    rl = s.get("resize_loss", {})
    phantom = st.get("data_dir") == "phantom"

    ref, pci = paper.SETTINGS, paper.CI95

    def interval(d: dict[str, Any] | None) -> str:
        return f"[{_f((d or {}).get('low'), 3)}, {_f((d or {}).get('high'), 3)}]"

    lines = [
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
        f"- Preprocessing: CLAHE {st.get('use_clahe')}, gamma {st.get('use_gamma')}, 8-bit quantisation "
        f"{st.get('quantize_8bit', True)}, HU window {st.get('hu_window') or 'none'}",
        f"- Hardware: {prov['device']}; torch {prov['versions'].get('torch')}; training time "
        f"{_f(training.get('train_seconds', float('nan')) / 60, 1)} min (paper: {paper.TRAINING['hours_100_epochs']} h on a Tesla T4)",
        f"- Wall time per notebook (s): {', '.join(f'{k}: {v}' for k, v in wall.items()) or 'n/a'}",
        f"- Git commit: `{prov.get('git_commit')}`", "",
        *notebook_links(run),
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
        *(f"{note}\n" for note in (empty_credit_note(s), empty_credit_note(_read(run.root / "models/unet_smp/summary.json"),
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
    tt, wx = s["ttest_liver_vs_tumor"], s.get("wilcoxon_liver_vs_tumor", {})
    lines += [
        "## Statistics", "",
        f"Slices of one patient are not independent; the test set has {nvol} volume(s). "
        + (f"With fewer than {MIN_VOLUMES} test volumes no interval over volumes is meaningful: the intervals below are "
           "printed for completeness only, and the slice-level ones are far too narrow."
           if nvol < MIN_VOLUMES else "Intervals over volumes resample the unit that was sampled."), "",
        "| 95% interval of mean Dice | liver | tumor | paper liver | paper tumor |", "|---|---|---|---|---|",
        f"| slice bootstrap, ε-smoothed (the paper's method, {ci['liver_dice_smoothed']['resamples']} resamples) | "
        f"{interval(ci['liver_dice_smoothed'])} | {interval(ci['tumor_dice_smoothed'])} | "
        f"{interval(dict(zip(('low', 'high'), pci['liver_dice'])))} | {interval(dict(zip(('low', 'high'), pci['tumor_dice'])))} |",
        f"| slice bootstrap, GT-positive slices | {interval(ci.get('liver_dice_gt_positive'))} | "
        f"{interval(ci.get('tumor_dice_gt_positive'))} | – | – |",
        f"| cluster bootstrap over volumes, ε-smoothed | {interval(cl.get('liver_dice_smoothed'))} | "
        f"{interval(cl.get('tumor_dice_smoothed'))} | – | – |",
        f"| cluster bootstrap over volumes, GT-positive slices | {interval(cl.get('liver_dice_gt_positive'))} | "
        f"{interval(cl.get('tumor_dice_gt_positive'))} | – | – |",
        f"| per-volume Dice (LiTS rule), bootstrap over volumes | {interval(pv.get('liver_dice_per_case', {}).get('ci95'))} | "
        f"{interval(pv.get('tumor_dice_per_case', {}).get('ci95'))} | – | – |", "",
        f"Paired t-test liver vs tumor Dice over test slices (the paper's test; n = {tt.get('n')} slices, not independent): "
        f"t = {_f(tt.get('t'), 2)}, p = {_f(tt.get('p'), 4)} (paper: t = {paper.TTEST['t']}, p {paper.TTEST['p']}). Wilcoxon signed-rank, liver vs "
        f"tumor per-volume Dice, paired by volume: "
        + (f"W = {_f(wx.get('statistic'), 1)}, p = {_f(wx.get('p'), 4)}, n = {wx.get('n')} volumes."
           if wx.get("run") else f"{wx.get('note', 'not run')}."), "",
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
    lines += ["", "## Tables", ""]
    for key, name in TABLES.items():
        head = f"### {key.replace('table', 'Table ').replace(' 0', ' ')} — `tables/{name}.csv`"
        note = {"table05": f"Training settings: {tables.table05_caption(st)}.", "table01": "Shapes at the paper's 256² "
                f"input; the column output_shape_{st.get('image_size')}px gives the shapes at the input this run trained at."}.get(key)  # fmt: skip
        lines += [head, "", *([note, ""] if note else []), _md(run.table(name)), ""]
    lines += ["## Figures", ""]
    for key, name in FIGURES.items():
        title = (
            "Ablation (Table 4 as bars)" if key == "fig_ablation" else key.replace("fig", "Fig. ").replace(" 0", " ")
        )
        if key == "fig_ablation" and not run.figure(name).is_file():
            lines += [f"### {title}", "", "_(not produced: the ablation notebook was not run)_", ""]
            continue
        lines += [f"### {title}", "", f"![{name}](figures/{name}.png)", ""]
    lines += [
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
    return write_text(run.root / "report.md", "\n".join(lines))
