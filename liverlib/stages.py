"""One function per notebook stage: each reads the run folder's files, writes its own, returns what to show.

Notebooks stay thin: a parameters cell, ``P = liverlib.resolve_params(globals())`` and a few calls here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib.curation import curate, table3
from liverlib.io import load_case
from liverlib.params import CURATION_KEYS, Params, resolve_path
from liverlib.preprocess import PreprocessConfig, build_cache, preprocess_slice
from liverlib.run import RunDir, RunError, read_json, write_json, write_table


def cache_root(p: Params) -> Path:
    """Where preprocessed caches live: ``cache_dir`` or ``<output_root>/cache``."""
    return resolve_path(p.cache_dir) if p.cache_dir else resolve_path(p.output_root) / "cache"


def example_slice(run: RunDir, split: str = "train") -> pd.Series:
    """The manifest row with the most tumor pixels in ``split`` (figures' example slice)."""
    m = pd.read_csv(run.manifest)
    m = m[m.split == split] if (m.split == split).any() else m
    return m.sort_values(["tumor_px", "liver_px", "volume_id"], ascending=[False, False, True]).iloc[0]


def run_curation(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 01: curation → ``volumes.csv``, ``manifest.csv``, ``splits.json``, Table 3, Fig. 2."""
    from liverlib import figures

    run = RunDir.from_params(p)
    same = run.guard("01_curation", p.subset(CURATION_KEYS), overwrite=p.overwrite)
    if same and run.manifest.is_file() and run.volumes.is_file() and run.splits.is_file():
        volumes, manifest = pd.read_csv(run.volumes, keep_default_na=False), pd.read_csv(run.manifest)
        splits = read_json(run.splits)["splits"]
    else:
        res = curate(p, progress=progress)
        volumes, manifest, splits = res["volumes"], res["manifest"], res["splits"]
        write_table(volumes, run.volumes, markdown=False)
        write_table(manifest, run.manifest, markdown=False)
        write_json(run.splits, {"seed": p.seed, "folds": p.folds, "fold": p.fold, "data_dir": str(res["data_dir"]),
                                "splits": splits})  # fmt: skip
    t3 = table3(manifest)
    write_table(t3, run.table("table03_split_summary"))
    row = example_slice(run)
    case = load_case(row.volume_path, row.mask_path)
    fig = figures.fig02_case_overview(case.image[int(row.slice_idx)], case.mask[int(row.slice_idx)],
                                      title=f"volume {int(row.volume_id)}, slice {int(row.slice_idx)}")  # fmt: skip
    figures.save_figure(fig, run.figure("fig02_case_overview"))
    return {"run": run, "volumes": volumes, "manifest": manifest, "splits": splits, "table03": t3,
            "fig02": run.figure("fig02_case_overview")}  # fmt: skip


def selected_volumes(run: RunDir) -> pd.DataFrame:
    """Rows of ``volumes.csv`` that curation put in a split."""
    run.require("volumes.csv")
    v = pd.read_csv(run.volumes, keep_default_na=False)
    v = v[v.split != ""]
    if v.empty:
        raise RunError(f"{run.volumes}: no volume is in a split; rerun notebook 01")
    return v


def run_preprocessing(p: Params, cfg: PreprocessConfig | None = None, *, progress: bool = True,
                      figures_too: bool = True) -> dict[str, Any]:  # fmt: skip
    """Notebook 02: build (or reuse) the cache → ``preprocess.json``, Figs. 3–4."""
    from liverlib import figures

    run = RunDir.from_params(p)
    run.require("manifest.csv", "volumes.csv")
    cfg = cfg or PreprocessConfig.from_params(p)
    stats = build_cache(selected_volumes(run), cfg, cache_root(p), progress=progress)
    manifest = pd.read_csv(run.manifest)
    out: dict[str, Any] = {"run": run, "stats": stats}
    if figures_too:
        row = example_slice(run)
        case = load_case(row.volume_path, row.mask_path)
        hu, mask = case.image[int(row.slice_idx)], case.mask[int(row.slice_idx)]
        stages = preprocess_slice(hu, cfg, stages=True)
        figures.save_figure(figures.fig03_pipeline(stages), run.figure("fig03_preprocessing_pipeline"))
        raw = stages["normalised"]
        enhanced = stages.get("gamma", stages.get("CLAHE", raw))
        figures.save_figure(figures.fig04_histograms(raw, enhanced, mask), run.figure("fig04_intensity_histograms"))
        from liverlib.labels import LABELS

        liver, tumor = mask == LABELS["liver"], mask == LABELS["tumor"]
        stats["example_slice"] = {"volume_id": int(row.volume_id), "slice_idx": int(row.slice_idx)}
        if liver.any() and tumor.any():
            stats["example_contrast"] = {
                "liver_minus_tumor_normalised": float(raw[liver].mean() - raw[tumor].mean()),
                "liver_minus_tumor_enhanced": float(enhanced[liver].mean() - enhanced[tumor].mean()),
            }
        out.update(stages=stages, fig03=run.figure("fig03_preprocessing_pipeline"),
                   fig04=run.figure("fig04_intensity_histograms"))  # fmt: skip
    stats["manifest_slices"] = {s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}
    write_json(run.root / "preprocess.json", stats)
    return out


def cache_stats(p: Params) -> dict[str, Any]:
    """Intensity statistics of the cached training slices (mean/std/min/max of the float16 images)."""
    run = RunDir.from_params(p)
    info = read_json(run.root / "preprocess.json")
    from liverlib.preprocess import SliceCache

    cache = SliceCache(Path(info["cache_dir"]))
    vals = np.concatenate([np.asarray(cache.image(v)[::4]).ravel()[::97] for v in selected_volumes(run).volume_id])
    return {"mean": float(vals.mean()), "std": float(vals.std()), "min": float(vals.min()), "max": float(vals.max())}
