"""Display-ready tables for the notebooks: numbers formatted once, here, never in a notebook cell.

:func:`show` turns a DataFrame (or a flat or nested dict) into a :class:`Shown` table that Jupyter renders as
HTML (every column, long text wrapped, no index) and a terminal as text: counts and years as integers
(``26``, ``2022``, ``20,832,963``), other numbers with a fixed number of decimals (4 by default), and every
undefined value (None, NaN) as :data:`~liverlib.files.MISSING` ("–"), never ``NaN``.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from liverlib.files import MISSING, is_whole_column

_CSS = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.9em;"},
    {
        "selector": "th",
        "props": "text-align: left; vertical-align: bottom; padding: 2px 6px; border-bottom: 1px solid #888;"
        "white-space: normal; min-width: 4em;",
    },
    {"selector": "td", "props": "text-align: right; padding: 2px 8px; white-space: nowrap;"},
    {"selector": "td.text", "props": "text-align: left; white-space: normal; min-width: 12em; max-width: 28em;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; padding: 4px 0;"},
]


def format_value(value: Any, *, whole: bool = False, decimals: int = 4) -> str:
    """One cell as text: "–" when undefined, an integer (thousands separated from 10,000) when ``whole``,
    else a float with ``decimals`` decimals; booleans and text unchanged."""
    if _undefined(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if _number(value):
        if whole or isinstance(value, (numbers.Integral, np.integer)):
            v = int(round(float(value)))
            return f"{v:,}" if abs(v) >= 10_000 else str(v)
        return f"{float(value):.{decimals}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, decimals=decimals) for v in value) or MISSING
    return str(value)


def formatted(df: pd.DataFrame, decimals: int | Mapping[str, int] = 4) -> pd.DataFrame:
    """Every cell of ``df`` as display text (:func:`format_value`); ``decimals`` per table or per column."""
    out = {}
    for col in df.columns:
        d = decimals.get(col, 4) if isinstance(decimals, Mapping) else decimals
        whole = is_whole_column(col, df[col])
        out[col] = [format_value(v, whole=whole, decimals=d) for v in df[col]]
    return pd.DataFrame(out, columns=df.columns, index=range(len(df)))


class Shown:
    """A table ready to display: HTML in Jupyter (``_repr_html_``), aligned text elsewhere (``repr``)."""

    def __init__(self, text: pd.DataFrame, caption: str = "", numeric: frozenset[str] = frozenset()) -> None:
        self.text, self.caption, self.numeric = text, caption, numeric

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        body = self.text.to_string(index=False) if len(self.text.columns) else "(empty table)"
        return f"{self.caption}\n{body}" if self.caption else body

    def to_html(self) -> str:
        """The table as an HTML fragment with its own style (no index, every column, text cells wrapped)."""
        styler = self.text.style.hide(axis="index").set_table_styles(_CSS)
        text_cols = [c for c in self.text.columns if c not in self.numeric]
        if text_cols and len(self.text):
            classes = {c: ["" if c in self.numeric else "text"] * len(self.text) for c in self.text.columns}
            styler = styler.set_td_classes(pd.DataFrame(classes, index=self.text.index, columns=self.text.columns))
        if self.caption:
            styler = styler.set_caption(html.escape(self.caption))
        # headers may break after "_" (narrow numeric columns); a wide table scrolls rather than being cut off
        styler = styler.format_index(lambda c: html.escape(str(c)).replace("_", "_<wbr>"), axis=1)
        return f'<div style="overflow-x: auto; max-width: 100%;">{styler.to_html()}</div>'


def show(table: pd.DataFrame | Mapping[str, Any], decimals: int | Mapping[str, int] = 4, caption: str = "") -> Shown:
    """A DataFrame, or a dict (flattened into ``key`` / ``value`` rows, nested keys joined by " › "), formatted
    for display (:func:`formatted`) with an optional caption."""
    df = key_values(table) if isinstance(table, Mapping) else table.reset_index(drop=True)
    numeric = frozenset(c for c in df.columns if df[c].map(lambda v: _number(v) or _undefined(v)).all())
    return Shown(formatted(df, decimals), caption, numeric)


def key_values(d: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """A (nested) dict as a two-column table, ``key`` (nested keys joined by " › ") and ``value``."""
    rows: list[dict[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix} › {k}" if prefix else str(k)
        if isinstance(v, Mapping):
            rows += key_values(v, key).to_dict("records")
        else:
            rows.append({"key": key, "value": v})
    return pd.DataFrame(rows, columns=["key", "value"], dtype=object)


def _undefined(v: Any) -> bool:
    """None, NaN or pandas' NA."""
    if v is None or v is pd.NA:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _number(v: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_))


_RULES = {"smoothed": "ε-smoothed, all slices", "gt_positive": "GT-positive slices"}


def per_volume_summary(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary.json``'s per-volume block (LiTS rule) as one row per class: Dice per case (mean, SD, n volumes),
    global Dice, ASSD and HD95 in mm (mean, n volumes, volumes left out because a mask is empty)."""
    pv = summary.get("per_volume", {})
    rows = []
    for cls in ("liver", "tumor"):
        d, g = pv.get(f"{cls}_dice_per_case", {}), pv.get(f"{cls}_dice_global", {})
        row = {"class": cls, "dice_per_case": d.get("mean"), "dice_per_case_sd": d.get("std"), "dice_n": d.get("n"),
               "dice_global": g.get("value")}  # fmt: skip
        for k in ("assd_mm", "hd95_mm"):
            e = pv.get(f"{cls}_{k}", {})
            row |= {k: e.get("mean"), f"{k[:-3]}_n": e.get("n"), f"{k[:-3]}_left_out": e.get("undefined")}
        rows.append(row)
    return pd.DataFrame(rows)


def interval_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Every 95% interval of mean Dice in ``summary.json``, one row each: the method (slice bootstrap as the
    paper, cluster bootstrap over volumes, bootstrap of per-volume Dice), class and rule, mean, low, high,
    resamples and the unit resampled."""
    ps, pv = summary.get("per_slice", {}), summary.get("per_volume", {})
    rows = []
    for method, block, unit in (("slice bootstrap (the paper's method)", summary.get("confidence_intervals", {}),
                                 "slices"),
                                ("cluster bootstrap over volumes", summary.get("cluster_bootstrap", {}), "volumes")):  # fmt: skip
        for key, ci in block.items():
            cls, _, rule = key.partition("_dice_")
            rows.append({"method": method, "class": cls, "rule": _RULES.get(rule, rule),
                         "mean": (ps.get(key) or {}).get("mean", ci.get("mean")), "low": ci.get("low"),
                         "high": ci.get("high"), "resamples": ci.get("resamples"), "unit": unit})  # fmt: skip
    for cls in ("liver", "tumor"):
        d = pv.get(f"{cls}_dice_per_case", {})
        if d.get("ci95"):
            rows.append({"method": "bootstrap of per-volume Dice (LiTS rule)", "class": cls, "rule": "per case",
                         "mean": d.get("mean"), "low": d["ci95"].get("low"), "high": d["ci95"].get("high"),
                         "resamples": d["ci95"].get("resamples"), "unit": "volumes"})  # fmt: skip
    return pd.DataFrame(rows)


def significance_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The liver-vs-tumor tests of ``summary.json``: the paired t-test over slices (the paper's) and the
    Wilcoxon signed-rank test over volumes, with statistic, p, n and what each is."""
    tt, wx = summary.get("ttest_liver_vs_tumor", {}), summary.get("wilcoxon_liver_vs_tumor", {})
    return pd.DataFrame([
        {"test": "paired t-test (the paper's)", "statistic": tt.get("t"), "p": tt.get("p"), "n": tt.get("n"),
         "unit": "slices", "note": tt.get("what", "")},
        {"test": "Wilcoxon signed-rank", "statistic": wx.get("statistic"), "p": wx.get("p"), "n": wx.get("n"),
         "unit": "volumes", "note": wx.get("what", "") if wx.get("run") else wx.get("note", "not run")},
    ])  # fmt: skip
