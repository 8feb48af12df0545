"""Figures and tables rebuilt from a run folder's files (no training; notebooks 03, 04, 06); ``report.md`` is
:mod:`liverlib.report.document`.

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
from liverlib.files import MISSING, read_json, write_table
from liverlib.params import Params
from liverlib.report import case_figures, drawing, figures, tables
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


def read_if_present(path: Path) -> dict[str, Any]:
    """A JSON file of the run, or {} when it is not there."""
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
        values = get(read_if_present(run.root / name))
        if values:
            out.update(values)
            sources.append(name)
    out["_source"] = ", ".join(reversed(sources)) or "no run file"
    if out.get("data_dir") == "auto":  # what "auto" resolved to, from the folder curation read (splits.json)
        folder = str(read_if_present(run.root / "splits.json").get("data_dir", ""))
        out["data_dir"] = "phantom" if Path(folder).name.startswith("phantom-") else folder or "auto"
    return out


def _save(df: pd.DataFrame, path: Path, key: str) -> None:
    """CSV (NaN empty) and Markdown ("–" for undefined) of a table, in the table's number format."""
    write_table(df, path, floatfmt=FLOATFMT.get(key, ".4f"))


def render_training(run: RunDir, p: Params | None = None) -> dict[str, Any]:
    """Tables 1, 2, 5 and Figs. 6–7 from the run's files (``models/<model>/history.csv``, ``training.json``)."""
    settings = run_settings(run)
    model = (
        read_if_present(run.root / "training.json").get("model")
        or settings.get("model")
        or (p.model if p else "hybrid")
    )
    hist_p = run.root / "models" / model / "history.csv"
    if not hist_p.is_file():
        raise RunError(f"{hist_p}: missing; run notebook 03 (training) first")
    hist = pd.read_csv(hist_p)
    setup = render_setup_tables(run)
    best = int(hist.epoch[hist.val_loss.idxmin()])
    t5 = tables.table05_training(hist, best)
    _save(t5, run.table(TABLES["table05"]), "table05")
    drawing.save_figure(figures.fig06_loss_curves(hist, paper=paper.TABLE5), run.figure(FIGURES["fig06"]))
    drawing.save_figure(figures.fig07_metric_curves(hist, paper=paper.TABLE5), run.figure(FIGURES["fig07"]))
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
    drawing.save_figure(
        case_figures.fig08_confusion_matrix(np.array(s["confusion_matrix"]["counts"])), run.figure(FIGURES["fig08"])
    )
    tumor = ps[ps.tumor_gt_px > 0] if (ps.tumor_gt_px > 0).sum() >= 3 else ps
    drawing.save_figure(case_figures.fig09_cases(_cases(arrays, ps, case_figures.select_cases(tumor, min(3, len(tumor)), by="tumor_gt_px", strategy="spread"))),
                        run.figure(FIGURES["fig09"]))  # fmt: skip
    drawing.save_figure(case_figures.fig10_overlays(_cases(arrays, ps, case_figures.select_cases(ps, min(6, len(ps)), by="liver_gt_px", strategy="spread"))),
                        run.figure(FIGURES["fig10"]))  # fmt: skip
    strata = case_figures.stratify_errors(ps, 1, column="error_px") if len(ps) >= 3 else ps.assign(stratum="all")
    drawing.save_figure(case_figures.fig11_error_maps(_cases(arrays, ps, strata)), run.figure(FIGURES["fig11"]))
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


def number_text(x: Any, nd: int = 4) -> str:
    """A number for the report; "–" when undefined (None, NaN)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return MISSING
    return f"{x:,}" if isinstance(x, int) else f"{x:.{nd}f}"


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
    head = f"{who} {found} (tumor Dice over GT-positive slices {number_text(gp['mean'])})"
    credit = round((sm.get("mean") or 0.0) * slices)  # every other slice scores ~0
    if credit == 0:
        return f"**Tumor: none found.** {head}; its tumor Dice is 0 by either rule."
    return (f"**Tumor: all empty-slice credit.** {head}. Its ε-smoothed tumor Dice of {number_text(sm.get('mean'))} is "
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
    return (f"The tumor Dice over the {gp['n']} test slices whose ground truth holds tumor is {number_text(gp.get('mean'))}: "
            "the model found tumor there (the ε-smoothed score also credits tumor-free slices).")  # fmt: skip
