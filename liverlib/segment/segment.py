"""Segment users' own CT volumes into NIfTI label masks (docs/study.md §14, issue 4 item 7, issue 9, issue 12; docs/segment.md).

``python -m liverlib segment --checkpoint best.pt --input volume.nii.gz --output mask.nii.gz`` reads a 3D CT
in Hounsfield units, applies exactly the preprocessing recorded in the checkpoint's config (HU window,
CLAHE, gamma, image size: docs/study.md §2; for ``normalization: ct_norm`` the training split's clip and z-score
statistics the checkpoint carries as ``normalization``), predicts every axial slice in batches and writes uint8 labels
(``LABELS``: 0 background, 1 liver, 2 tumor) with the input's shape, affine, voxel sizes and voxel order,
so the mask overlays the CT voxel for voxel in 3D Slicer or ITK-SNAP. Beside each mask ``<name>.json`` names
the labels (:data:`LABEL_SIDECAR`).

Inputs: a ``.nii``/``.nii.gz`` file; a folder of them (folder mode: every ``*.nii``/``*.nii.gz`` directly in it
→ ``<output folder>/<name>_seg.nii.gz``, the checkpoint loaded once); or a folder holding one DICOM CT series
(:mod:`liverlib.data.dicom`; ``series`` picks one of several) → one mask file on the series' grid.

Postprocessing (on by default): only the largest 26-connected liver component (label ≥ 1) is kept, so tumor
survives only inside the kept liver; ``postprocess=False`` writes the raw argmax. Every output path is
checked (exists? writable?) before any inference.

Refusals (the CLI prints one line and exits 2): :class:`~liverlib.errors.CaseError` for a missing, unreadable,
corrupt or non-3D input, an ambiguous DICOM folder and a wrong kind of or unwritable output path;
:class:`FileExistsError` for an existing output without ``overwrite``; :class:`~liverlib.run.RunError` for a
missing or foreign checkpoint and bad options.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from liverlib.data.dicom import load_dicom_case, save_mask_for_series
from liverlib.data.geometry import from_display
from liverlib.data.nifti import Case, load_case, save_mask_like
from liverlib.data.preprocess import PreprocessConfig, preprocess_volume
from liverlib.errors import CaseError, RunError
from liverlib.evaluation.inference import predict_volume
from liverlib.evaluation.per_volume import keep_largest_liver
from liverlib.files import atomic_group, atomic_write, write_json
from liverlib.labels import CLASS_NAMES, LABELS
from liverlib.model.checkpoint import load_checkpoint, model_from_checkpoint
from liverlib.params import PREPROCESS_KEYS
from liverlib.runtime import PRECISIONS, autocast_dtype, provenance, resolve_device
from liverlib.segment.plan import (  # noqa: F401  (re-exported for callers of liverlib.segment.segment)
    NIFTI_ENDINGS,
    PROB_SUFFIX,
    SUFFIX,
    Job,
    check_writable,
    is_nifti,
    nifti_stem,
    plan_outputs,
    sidecar_path,
)

LABEL_SIDECAR: dict[str, Any] = {"labels": {str(v): k for k, v in LABELS.items()}}
"""Written as ``<mask name without .nii/.nii.gz>.json`` beside every mask: ``{"labels": {"0": "background", …}}``."""

_DEFAULTED_KEYS = frozenset({"quantize_8bit", "normalization"})
"""Preprocessing keys newer than some checkpoints: ``PreprocessConfig.from_params`` defaults them (the recorded
``preprocess_key`` then tells whether the preprocessing is the same)."""

STAGES: tuple[str, ...] = ("read", "preprocess", "predict", "postprocess", "write")
"""Stages timed per volume in the report."""


def preprocess_config(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> PreprocessConfig:
    """The preprocessing a checkpoint was trained with (docs/study.md §2), from its ``config`` (and, for ``ct_norm``, the
    training statistics it carries as ``normalization``: :func:`liverlib.model.checkpoint.attach_normalization`).

    Raises:
        RunError: the config lacks a preprocessing key or holds an unknown one, its recorded ``preprocess_key``
            differs from the key this liverlib computes for the same settings (the preprocessing code changed
            since), or a ``ct_norm`` checkpoint carries no (or malformed) statistics.
    """
    cfg = ckpt["config"]
    missing = [k for k in (*PREPROCESS_KEYS, "model") if k not in cfg and k not in _DEFAULTED_KEYS]
    if missing:
        raise RunError(f"{source}: not a liverlib checkpoint (config lacks {', '.join(missing)})")
    try:
        pre = PreprocessConfig.from_params(cfg)
    except ValueError as exc:  # ParamError: e.g. a normalisation this liverlib does not know
        raise RunError(f"{source}: its preprocessing cannot be rebuilt: {exc}") from exc
    recorded = cfg.get("preprocess_key")
    if recorded is not None and recorded != pre.key:
        raise RunError(f"{source}: trained with preprocessing {recorded}, but this liverlib computes {pre.key} for the "
                       "same settings (the preprocessing changed); use the liverlib version it was trained with")  # fmt: skip
    if pre.normalization == "ct_norm":
        try:
            pre = pre.with_stats(ckpt.get("normalization"))
        except ValueError as exc:
            raise RunError(f"{source}: trained with normalization ct_norm, but {exc}; it cannot be applied to other "
                           "CT (retrain with this liverlib, which stores the statistics in every checkpoint)") from exc  # fmt: skip
    return pre


def load_model(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, PreprocessConfig, dict[str, Any]]:
    """Load a liverlib checkpoint once: (model in eval mode on ``device``, its preprocessing, the checkpoint dict).

    Raises:
        RunError: missing, unreadable or non-liverlib checkpoint, an unknown model, or weights that do not fit it.
    """
    checkpoint = Path(checkpoint).expanduser()
    ckpt = load_checkpoint(checkpoint)
    pre = preprocess_config(ckpt, checkpoint)
    try:
        model = model_from_checkpoint(ckpt, device)
    except (ValueError, KeyError, TypeError) as exc:  # unknown model name or malformed config
        raise RunError(f"{checkpoint}: cannot rebuild its model ({type(exc).__name__}: {exc})") from exc
    model = model.to(memory_format=torch.channels_last)  # predict_volume feeds NHWC batches
    return model, pre, ckpt


@dataclass
class Segmentation:
    """One segmented volume, in the display convention.

    Attributes:
        labels: uint8 (slices, rows, cols) in {0, 1, 2}.
        case: the loaded CT (``image`` int16 HU of the same shape).
        probabilities: float16 (slices, 3, rows, cols) softmax (TTA-averaged) before postprocessing, or None.
        seconds: per stage of :data:`STAGES` (``write`` filled in by :func:`segment_file`).
    """

    labels: np.ndarray
    case: Case
    probabilities: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def read_input(path: str | Path, series: str | None = None, resample_dicom: bool = False) -> Case:
    """A NIfTI file via :func:`~liverlib.data.nifti.load_case`, or a DICOM series folder via
    :func:`~liverlib.data.dicom.load_dicom_case` (``resample_dicom``: resample an uneven series instead of refusing it)."""
    path = Path(path)
    return load_dicom_case(path, series, resample=resample_dicom) if path.is_dir() else load_case(path)


def segment_volume(model: torch.nn.Module, cfg: PreprocessConfig, volume_path: str | Path, *, device: torch.device | str,
                   batch_size: int = 16, precision: str = "auto", amp: bool = False, tta: bool = False,
                   postprocess: bool = True, keep_probabilities: bool = False, series: str | None = None,
                   progress: bool = True, resample_dicom: bool = False) -> Segmentation:  # fmt: skip
    """Segment one CT volume in the display convention.

    Args:
        model: network mapping (B, 1, S, S) in [0, 1] to (B, 3, S, S) logits, eval mode, on ``device``.
        cfg: the preprocessing the model was trained with (:func:`preprocess_config`), S = ``cfg.image_size``.
        volume_path: a 3D NIfTI CT in Hounsfield units (any orientation), or a DICOM series folder.
        device: where the model runs.
        batch_size: slices per forward pass.
        precision: ``auto``, ``fp32`` or ``bf16`` (:func:`liverlib.runtime.autocast_dtype`); ``amp``: autocast on CUDA under ``auto``.
        tta: average probabilities over slice flips (:data:`~liverlib.evaluation.inference.TTA_FLIPS`).
        postprocess: keep only the largest liver component (:func:`keep_largest_liver`).
        keep_probabilities: also return the probabilities.
        series: the DICOM series UID to read from a folder holding several.
        progress: tqdm bar over batches.

    Returns:
        A :class:`Segmentation` at the input's in-plane size (probabilities resized bilinearly before the argmax).

    Raises:
        CaseError: unreadable, corrupt or non-3D input; the message names it.
    """
    t = [time.perf_counter()]
    case = read_input(volume_path, series, resample_dicom)
    t.append(time.perf_counter())
    images = preprocess_volume(case.image, cfg)
    t.append(time.perf_counter())
    labels, probs = predict_volume(model, images, out_size=case.image.shape[1:], batch_size=batch_size, device=device,
                                   precision=precision, amp=amp, tta=tta, keep_probabilities=keep_probabilities,
                                   progress=progress, desc=Path(volume_path).name)  # fmt: skip
    t.append(time.perf_counter())
    if postprocess:
        labels = keep_largest_liver(labels)
    t.append(time.perf_counter())
    return Segmentation(labels, case, probs, dict(zip(STAGES, np.diff(t).tolist())))


def save_probabilities(probs: np.ndarray, case: Case, path: Path) -> Path:
    """Write (slices, 3, rows, cols) display-convention probabilities as an ``.npz`` of float16 arrays
    ``background``/``liver``/``tumor``, each in the input's own voxel order and shape (``case.source_shape``)."""
    arrays = {name: from_display(probs[:, i], case.affine) for i, name in enumerate(CLASS_NAMES)}
    with atomic_write(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def write_outputs(seg: Segmentation, job: Job) -> None:
    """The mask on the input's grid, its label sidecar and (if asked) the probabilities; all atomic."""
    if seg.case.volume_path.is_dir():
        save_mask_for_series(seg.labels, seg.case, job.mask)
    else:
        save_mask_like(seg.labels, seg.case, job.mask)
    write_json(sidecar_path(job.mask), LABEL_SIDECAR)
    if job.probabilities is not None and seg.probabilities is not None:
        save_probabilities(seg.probabilities, seg.case, job.probabilities)


def volume_summary(seg: Segmentation, job: Job) -> dict[str, Any]:
    """One report row: paths, grid, volumes in mL, tumor components, mean HU per class, seconds per stage."""
    labels, case = seg.labels, seg.case
    ml = float(np.prod(case.spacing)) / 1000.0
    counts = {name: int(np.count_nonzero(labels == v)) for name, v in LABELS.items()}
    _, components = ndimage.label(labels == LABELS["tumor"], structure=np.ones((3, 3, 3), bool))
    hu = {name: float(case.image[labels == v].mean()) if counts[name] else None for name, v in LABELS.items()}
    return {"input": str(job.input), "output": str(job.mask), "shape": case.source_shape,
            "orientation": "".join(case.axcodes), "spacing_mm": case.spacing, "liver_voxels": counts["liver"],
            "tumor_voxels": counts["tumor"], "liver_ml": round(counts["liver"] * ml, 1),
            "tumor_ml": round(counts["tumor"] * ml, 1), "tumor_components": int(components),
            "mean_hu": {k: None if v is None else round(v, 1) for k, v in hu.items()},
            "seconds": {k: round(v, 3) for k, v in seg.seconds.items()},
            "total_seconds": round(sum(seg.seconds.values()), 2), "notes": list(case.notes)}  # fmt: skip


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_report(checkpoint: Path, ckpt: dict[str, Any], device: torch.device, options: dict[str, Any],
               volumes: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """The ``--report`` JSON: versions, device, checkpoint (sha256, config, split), options and one row per volume."""
    import liverlib

    prov = provenance()
    try:
        import SimpleITK as sitk

        prov["versions"]["SimpleITK"] = sitk.Version.VersionString()
    except ImportError:  # pragma: no cover
        prov["versions"]["SimpleITK"] = None
    return {"liverlib": liverlib.__version__, **prov, "torch_device": str(device),
            "checkpoint": {"path": str(checkpoint), "sha256": sha256(checkpoint), "epoch": ckpt.get("epoch"),
                           "config": ckpt.get("config"), "split": ckpt.get("split"),
                           "normalization": ckpt.get("normalization")},
            "options": options, "label_names": LABEL_SIDECAR["labels"], "volumes": volumes}  # fmt: skip


def _device(device: str) -> torch.device:
    """:func:`~liverlib.runtime.resolve_device` with unknown names as RunError."""
    try:
        return resolve_device(device)
    except RunError:
        raise
    except RuntimeError as exc:  # torch.device("gpu")
        raise RunError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc


def _print_row(r: dict[str, Any]) -> None:
    """The one line printed per written mask."""
    print(f"{r['input']} -> {r['output']}: shape {r['shape']} {r['orientation']}, liver {r['liver_voxels']} voxels "
          f"({r['liver_ml']} mL), tumor {r['tumor_voxels']} voxels ({r['tumor_ml']} mL, {r['tumor_components']} "
          f"components), {r['total_seconds']:.1f} s" + "".join(f"; {n}" for n in r.get("notes", [])),
          flush=True)  # fmt: skip


def _check_options(batch_size: int, precision: str, overwrite: bool, skip_existing: bool) -> None:
    """Refuse bad options of :func:`segment_file` before any work (RunError)."""
    if batch_size < 1:
        raise RunError(f"batch size must be at least 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise RunError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if overwrite and skip_existing:
        raise RunError("--overwrite and --skip-existing exclude each other; pass one")


def segment_file(checkpoint: str | Path, input: str | Path, output: str | Path, *, device: str = "auto",
                 batch_size: int = 16, overwrite: bool = False, skip_existing: bool = False, postprocess: bool = True,
                 tta: bool = False, precision: str = "auto", amp: bool = False,
                 probabilities: str | Path | None = None, report: str | Path | None = None, series: str | None = None,
                 progress: bool = True, resample_dicom: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Segment one NIfTI volume, one DICOM series or every NIfTI of a folder into uint8 NIfTI label masks.

    Args:
        checkpoint: a liverlib checkpoint (``best.pt``); loaded once.
        input: a ``.nii``/``.nii.gz`` CT in Hounsfield units, a folder of them, or a DICOM series folder.
        output: the mask file (``.nii``/``.nii.gz``), or a folder for a folder of NIfTI files.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` …
        batch_size: slices per forward pass.
        overwrite: replace existing outputs. ``skip_existing``: skip inputs whose mask exists (one line says so).
        postprocess: keep only the largest liver component, tumor only inside it (on by default).
        tta: flip test-time augmentation (4 forward passes per slice).
        precision: ``auto``, ``fp32`` or ``bf16`` (:func:`liverlib.runtime.autocast_dtype`). ``amp``: autocast on CUDA under ``auto``.
        probabilities: ``.npz`` of float16 class probabilities per input (a folder in folder mode; see
            :func:`save_probabilities`).
        report: JSON file of versions, device, checkpoint, timings and volumes (:func:`run_report`).
        series: the DICOM series UID to read from a folder holding several.
        progress: tqdm bars over batches. One line per volume is always printed.
        resample_dicom: resample an unevenly spaced DICOM series (a missing slice, a change of spacing) onto an
            even grid instead of refusing it; the printed line and the report say so
            (:func:`liverlib.data.dicom.read_series`).

    Returns:
        One dict per written mask (see :func:`volume_summary`).

    Raises:
        CaseError: bad input or output path, unreadable/corrupt/non-3D volume (in folder mode after the
            other volumes are written, naming every failed file).
        FileExistsError: an output exists and ``overwrite`` is False (nothing is written).
        RunError: missing or non-liverlib checkpoint, unknown device or precision, CUDA requested but
            unavailable, ``batch_size`` < 1, or ``overwrite`` with ``skip_existing``.
    """
    _check_options(batch_size, precision, overwrite, skip_existing)
    jobs = plan_outputs(input, output, overwrite=overwrite, skip_existing=skip_existing, probabilities=probabilities,
                        report=report, series=series)  # fmt: skip
    if not jobs:
        print("nothing to segment: every mask exists", flush=True)
        return []
    dev = _device(device)
    checkpoint = Path(checkpoint).expanduser()
    model, cfg, ckpt = load_model(checkpoint, dev)
    dtype = autocast_dtype(dev, precision, amp)
    options = {"tta": tta, "postprocess": postprocess, "precision": precision, "autocast_dtype": str(dtype or "fp32"),
               "batch_size": batch_size, "series": series, "resample_dicom": resample_dicom}  # fmt: skip
    results, failed = [], []
    # all or nothing: one volume's mask, sidecar and probabilities (and, for one input, the report) are renamed into
    # place together at the end, so a failed or killed run leaves no half-written set that a rerun would refuse
    with atomic_group() if len(jobs) == 1 else nullcontext():
        for job in jobs:
            try:
                seg = segment_volume(model, cfg, job.input, device=dev, batch_size=batch_size, precision=precision,
                                     amp=amp, tta=tta, postprocess=postprocess, series=series, progress=progress,
                                     keep_probabilities=job.probabilities is not None, resample_dicom=resample_dicom)  # fmt: skip
            except CaseError as exc:
                if len(jobs) == 1:
                    raise
                failed.append(str(exc))
                print(f"skipped: {exc}", flush=True)
                continue
            t0 = time.perf_counter()
            with atomic_group():
                write_outputs(seg, job)
            seg.seconds["write"] = time.perf_counter() - t0
            results.append(volume_summary(seg, job))
            if len(jobs) > 1:  # written now; one input's files are in place only when the group ends
                _print_row(results[-1])
        if report is not None:
            write_json(Path(report).expanduser(), run_report(checkpoint, ckpt, dev, options, results))
    if len(jobs) == 1:
        _print_row(results[0])
    if failed:
        raise CaseError(f"{len(failed)} of {len(jobs)} volumes failed ({len(results)} written): " + "; ".join(failed))
    return results


def segment_cli(args: argparse.Namespace) -> None:
    """``python -m liverlib segment``: :func:`segment_file` with the parsed arguments."""
    segment_file(args.checkpoint, args.input, args.output, device=args.device, batch_size=args.batch_size,
                 overwrite=args.overwrite, skip_existing=args.skip_existing, postprocess=not args.no_postprocess,
                 tta=args.tta, precision=args.precision, amp=args.amp, probabilities=args.save_probabilities,
                 report=args.report, series=args.series, resample_dicom=args.resample_dicom)  # fmt: skip
