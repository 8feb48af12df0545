"""Evaluation (docs/study.md §7, paper §II.F, §III.D): per slice as the paper, per volume as LiTS.

Per slice: the test split's curated slices at the model's resolution, metrics of
:mod:`liverlib.evaluation.metrics` with their empty-mask rules named; the same slices are scored once more
against the native-resolution masks (the nearest-neighbour resize can erase small tumors). Per
volume: every slice of each test volume is predicted, probabilities are resized to the original
in-plane size, and Dice, ASSD and HD95 (mm, the file's spacing) are computed LiTS-style (liver =
label ≥ 1, tumor = label 2). Statistics: the paper's slice bootstrap and t-test (labelled as its
method) beside a cluster bootstrap over test volumes, per-volume Dice intervals and a per-volume
Wilcoxon signed-rank test (:mod:`liverlib.evaluation.stats`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper
from liverlib.data.dataset import open_run_cache, split_index
from liverlib.data.nifti import load_case, save_mask_like
from liverlib.data.preprocess import PreprocessConfig
from liverlib.errors import RunError
from liverlib.evaluation.inference import predict_labels
from liverlib.evaluation.metrics import confusion_matrix, per_slice_table, summarize_slices
from liverlib.evaluation.per_volume import dice_over_volumes, volume_metrics
from liverlib.evaluation.stats import (
    MIN_VOLUMES,
    bootstrap_ci,
    cluster_bootstrap_ci,
    paired_ttest,
    wilcoxon_signed_rank,
)
from liverlib.files import atomic_write, write_json, write_table
from liverlib.model.checkpoint import (
    check_normalization,
    check_not_trained_on,
    load_checkpoint,
    model_dir,
    model_from_checkpoint,
)
from liverlib.params import Params
from liverlib.progress import bar
from liverlib.run import RunDir
from liverlib.runtime import provenance, resolve_device

VOLUME_RULES = {
    "dice": "nan: a volume whose prediction and ground truth are both empty for a class is left out of means",
    "distance": "nan: ASSD/HD95 are undefined when either mask is empty; such volumes are left out of the mean and "
    "counted (empty prediction / empty ground truth / both)",
    "classes": "LiTS: liver = label >= 1 (tumor included), tumor = label 2",
}


def evaluate(
    p: Params, *, model_name: str | None = None, progress: bool = True, save_predictions: bool = True
) -> dict[str, Any]:
    """Score ``models/<model>/best.pt`` on the test split, per slice and per volume.

    Returns:
        dict with ``per_slice`` (DataFrame), ``per_volume`` (DataFrame), ``summary`` (dict, also written
        as ``summary.json`` by :func:`liverlib.pipeline.stages.run_evaluation`), ``confusion`` (3×3) and ``arrays``
        (test slices' images, ground truth and predictions at the model's resolution, for figures).
    """
    model_name = model_name or p.model
    run = RunDir.from_params(p)
    cfg = PreprocessConfig.from_params(p)
    cache = open_run_cache(run.root, cfg)
    test = split_index(run.manifest, "test")
    device = resolve_device(p.device)
    ckpt_path = model_dir(run, model_name) / "best.pt"
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    held = ckpt["config"].get("model")  # training records its model name in config["model"]
    if held != model_name:  # another model's best.pt copied here would be scored and reported as this one
        what = f"a {held!r} model" if held else "a checkpoint that records no model type"
        raise RunError(f"{ckpt_path}: holds {what}, expected {model_name!r}; put {model_name}'s own best.pt there "
                       f"or retrain it (notebook 03)")  # fmt: skip
    check_not_trained_on(ckpt, run.split_ids()["test"], ckpt_path)  # never score a model on volumes it trained on
    check_normalization(ckpt, run.root, ckpt_path)  # ct_norm: the statistics it trained with
    if ckpt["config"].get("image_size") != p.image_size or ckpt["config"].get("preprocess_key") != cfg.key:
        raise RunError(f"{ckpt_path}: trained on another image size or preprocessing than these parameters")
    model = model_from_checkpoint(ckpt, device)
    t0 = time.perf_counter()

    # per slice (paper): the curated test slices at the model's resolution
    images = np.stack([cache.image(v)[s] for v, s in zip(test.volume_id, test.slice_idx)])
    gt = np.stack([cache.mask(v)[s] for v, s in zip(test.volume_id, test.slice_idx)])
    # the precision training runs in (runtime.autocast_dtype, the study's amp switch as runtime.amp_settings reads it)
    precision = {"precision": "auto" if p.amp else "fp32", "amp": p.amp, "cpu_bf16": p.cpu_bf16}
    pred = predict_labels(model, images, batch_size=p.eval_batch_size, device=device, **precision, progress=progress,
                          desc="test slices")  # fmt: skip
    per_slice = per_slice_table(
        pred, gt, ids={"volume_id": test.volume_id.to_numpy(), "slice_idx": test.slice_idx.to_numpy()}
    )
    per_slice["error_px"] = per_slice.liver_fp + per_slice.liver_fn + per_slice.tumor_fp + per_slice.tumor_fn
    cm = confusion_matrix(pred, gt)
    slice_seconds = time.perf_counter() - t0

    # per volume (LiTS): every slice, back at the original in-plane size, millimetres
    vols = pd.read_csv(run.volumes, keep_default_na=False)
    vols = vols[vols.volume_id.isin(test.volume_id.unique())]
    rows, native = [], []
    t1 = time.perf_counter()
    for r in bar(list(vols.itertuples()), desc="test volumes", unit="vol", disable=not progress):
        case = load_case(r.volume_path, r.mask_path)
        labels = predict_labels(model, cache.image(r.volume_id), out_size=case.mask.shape[1:], batch_size=p.eval_batch_size,
                                device=device, **precision)  # fmt: skip
        idx = test.slice_idx[test.volume_id == r.volume_id].to_numpy()
        native.append(per_slice_table(labels[idx], case.mask[idx],
                                      ids={"volume_id": np.full(idx.size, int(r.volume_id)), "slice_idx": idx}))  # fmt: skip
        m = volume_metrics(labels, case.mask, case.spacing, liver_lcc=p.liver_lcc)
        rows.append({"volume_id": int(r.volume_id), "slices": case.mask.shape[0], "spacing": "x".join(f"{s:.3g}" for s in case.spacing),
                     **{k: v for k, v in m.items() if not isinstance(v, str)}})  # fmt: skip
        if save_predictions:
            save_mask_like(
                labels, case, run.root / "predictions" / model_name / f"prediction-{int(r.volume_id)}.nii.gz"
            )
    per_volume = pd.DataFrame(rows)
    per_slice_native = pd.concat(native, ignore_index=True) if native else per_slice.iloc[:0]
    volume_seconds = time.perf_counter() - t1
    summary = summarize(p, per_slice, per_volume, cm, ckpt, model_name, per_slice_native=per_slice_native)
    summary["timing"] = {"per_slice_seconds": round(slice_seconds, 2), "per_volume_seconds": round(volume_seconds, 2)}
    return {"per_slice": per_slice, "per_volume": per_volume, "per_slice_native": per_slice_native, "summary": summary,
            "confusion": cm, "arrays": {"images": images, "gt": gt, "pred": pred}}  # fmt: skip


def _volume_summary(per_volume: pd.DataFrame, resamples: int, seed: int) -> dict[str, Any]:
    """Per-case and global Dice, per-volume Dice intervals, ASSD/HD95 means with n and why volumes were left out."""
    out: dict[str, Any] = {}
    nvol, pooled = len(per_volume), dice_over_volumes(per_volume)
    for c in ("liver", "tumor"):
        d = per_volume[f"{c}_dice"].astype(float)
        low, high = bootstrap_ci(d.to_numpy(), n_resamples=resamples, seed=seed)
        out[f"{c}_dice_per_case"] = {"mean": pooled[f"{c}_dice_per_case"], "std": float(d.std(ddof=1)) if d.notna().sum() > 1 else None,
                                     "n": int(d.notna().sum()), "undefined": int(d.isna().sum()), "rule": VOLUME_RULES["dice"],
                                     "ci95": {"low": low, "high": high, "method": "percentile bootstrap over test volumes",
                                              "resamples": resamples, "seed": seed, "volumes": int(d.notna().sum()),
                                              "meaningful": bool(d.notna().sum() >= MIN_VOLUMES)}}  # fmt: skip
        out[f"{c}_dice_global"] = {"value": pooled[f"{c}_dice_global"],
                                   "rule": "pooled voxels of all test volumes"}  # fmt: skip
        pred_empty, gt_empty = per_volume[f"{c}_pred_voxels"] == 0, per_volume[f"{c}_gt_voxels"] == 0
        for k in ("assd_mm", "hd95_mm"):
            v = per_volume[f"{c}_{k}"].astype(float)
            out[f"{c}_{k}"] = {"mean": float(v.mean()) if v.notna().any() else None, "n": int(v.notna().sum()),
                               "undefined": int(v.isna().sum()), "volumes": nvol,
                               "empty_prediction": int((pred_empty & ~gt_empty).sum()),
                               "empty_ground_truth": int((gt_empty & ~pred_empty).sum()),
                               "both_empty": int((pred_empty & gt_empty).sum()), "rule": VOLUME_RULES["distance"]}  # fmt: skip
    return out


def resize_loss(per_slice: pd.DataFrame, per_slice_native: pd.DataFrame) -> dict[str, Any]:
    """How many curated test slices hold each class at native resolution and after the nearest-neighbour resize."""
    if per_slice_native.empty:
        return {}
    key = ["volume_id", "slice_idx"]
    both = per_slice[key + ["liver_gt_px", "tumor_gt_px"]].merge(
        per_slice_native[key + ["liver_gt_px", "tumor_gt_px"]], on=key, suffixes=("", "_native")
    )
    out: dict[str, Any] = {"what": "curated test slices whose ground truth holds the class, at native resolution "
                           "and after the nearest-neighbour resize to the model's input size"}  # fmt: skip
    for c in ("liver", "tumor"):
        nat, res = both[f"{c}_gt_px_native"] > 0, both[f"{c}_gt_px"] > 0
        out[c] = {"native": int(nat.sum()), "resized": int(res.sum()), "lost": int((nat & ~res).sum())}
    return out


def summarize(p: Params, per_slice: pd.DataFrame, per_volume: pd.DataFrame, cm: np.ndarray, ckpt: dict[str, Any],
              model_name: str, *, per_slice_native: pd.DataFrame | None = None) -> dict[str, Any]:  # fmt: skip
    """``summary.json``: per-slice and per-volume metrics with rules, CIs, tests, counts, paper values, provenance."""
    s = summarize_slices(per_slice)
    nvol = int(per_slice.volume_id.nunique())

    def ci95(values: np.ndarray) -> dict[str, Any]:
        low, high = bootstrap_ci(values, n_resamples=p.bootstrap_resamples, seed=p.seed)
        return {"low": low, "high": high, "method": "percentile bootstrap over test slices (the paper's method)",
                "resamples": p.bootstrap_resamples, "seed": p.seed}  # fmt: skip

    ci, cluster = {}, {}
    for c in ("liver", "tumor"):
        dice = per_slice[f"{c}_dice_smoothed"]
        pos = per_slice[f"{c}_gt_px"] > 0
        ci[f"{c}_dice_smoothed"] = ci95(dice.to_numpy())
        ci[f"{c}_dice_gt_positive"] = ci95(dice[pos].to_numpy())
        cluster[f"{c}_dice_smoothed"] = cluster_bootstrap_ci(dice.to_numpy(), per_slice.volume_id.to_numpy(),
                                                             n_resamples=p.bootstrap_resamples, seed=p.seed)  # fmt: skip
        cluster[f"{c}_dice_gt_positive"] = cluster_bootstrap_ci(dice[pos].to_numpy(), per_slice.volume_id[pos].to_numpy(),
                                                                n_resamples=p.bootstrap_resamples, seed=p.seed)  # fmt: skip
    tt = paired_ttest(per_slice.liver_dice_smoothed.to_numpy(), per_slice.tumor_dice_smoothed.to_numpy())
    tt["what"] = ("paired t-test, liver vs tumor Dice (ε-smoothed) over test slices (scipy.stats.ttest_rel); the "
                  "paper's method: slices of one volume are not independent, so p is too small")  # fmt: skip
    if len(per_volume):
        wx = wilcoxon_signed_rank(per_volume.liver_dice.to_numpy(float), per_volume.tumor_dice.to_numpy(float))
    else:
        wx = wilcoxon_signed_rank([], [])
    wx["what"] = "Wilcoxon signed-rank, liver vs tumor per-volume Dice (LiTS rule), paired by test volume"
    native = summarize_slices(per_slice_native) if per_slice_native is not None and len(per_slice_native) else {}
    return {
        "model": model_name,
        "checkpoint_epoch": int(ckpt["epoch"]),
        "val_best": {k: v for k, v in ckpt.get("metrics", {}).items() if k.startswith("val_")},
        "per_slice": s,
        "per_slice_native": native,
        "resize_loss": resize_loss(per_slice, per_slice_native) if per_slice_native is not None else {},
        "per_volume": _volume_summary(per_volume, p.bootstrap_resamples, p.seed) if len(per_volume) else {},
        "per_volume_rows": per_volume.to_dict(orient="records"),
        "confidence_intervals": ci,
        "cluster_bootstrap": cluster,
        "ttest_liver_vs_tumor": tt,
        "wilcoxon_liver_vs_tumor": wx,
        "intervals_over_volumes_meaningful": nvol >= MIN_VOLUMES,
        "confusion_matrix": {
            "rows": "truth",
            "cols": "prediction",
            "classes": ["background", "liver", "tumor"],
            "counts": cm.tolist(),
        },  # fmt: skip
        "counts": {
            "test_slices": int(len(per_slice)),
            "test_slices_with_tumor": int((per_slice.tumor_gt_px > 0).sum()),
            "test_volumes": nvol,
        },  # fmt: skip
        "rules": {
            "per_slice_dice": "smoothed: (2TP+eps)/(2TP+FP+FN+eps), eps=1e-6, empty/empty = 1 (paper-comparable); "
            "gt_positive: slices whose ground truth holds the class",
            "per_slice_precision_recall_specificity_f1": "nan: a slice whose denominator is 0 is left out and counted "
            "('undefined'), never scored 1",
            "per_slice_classes": "paper: liver = label 1, tumor = label 2",
            "per_slice_native": "the same curated test slices, prediction upsampled to the native in-plane size, "
            "scored against the native masks (no nearest-neighbour resize of the ground truth)",
            "iou": "counted from TP/FP/FN (not derived from Dice)",
            "intervals": f"slice bootstrap (paper) and cluster bootstrap over volumes; with fewer than {MIN_VOLUMES} "
            "test volumes no interval over volumes is meaningful",
            **{f"per_volume_{k}": v for k, v in VOLUME_RULES.items()},
        },  # fmt: skip
        "paper": {"test": paper.TEST, "val_best": paper.VAL_BEST, "ci95": paper.CI95, "ttest": paper.TTEST},
        "provenance": {**provenance(), "params": dict(p), "preprocess_key": ckpt["config"].get("preprocess_key")},
    }


def write_outputs(run: RunDir, result: dict[str, Any], prefix: str = "") -> None:
    """Write ``per_slice.csv``, ``per_volume.csv`` and ``summary.json`` (atomically) under ``prefix``."""
    base = run.root / prefix if prefix else run.root
    write_table(result["per_slice"], base / "per_slice.csv", markdown=False)
    write_table(result["per_volume"], base / "per_volume.csv", markdown=False)
    if result.get("per_slice_native") is not None:
        write_table(result["per_slice_native"], base / "per_slice_native.csv", markdown=False)
    write_json(base / "summary.json", result["summary"])
    # test slices at the model's resolution, for Figs. 9-11 (drawn by notebook 04, report.render_evaluation)
    with atomic_write(base / "test_predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **result["arrays"])
