"""Segment users' own CT volumes into NIfTI label masks (STUDY §9, issue 4 item 7).

``python -m liverlib segment --checkpoint best.pt --input volume.nii.gz --output mask.nii.gz`` reads a 3D CT
in Hounsfield units, applies exactly the preprocessing recorded in the checkpoint's config (HU window,
CLAHE, gamma, image size: STUDY §2), predicts every axial slice in batches and writes uint8 labels
(``LABELS``: 0 background, 1 liver, 2 tumor) with the input's shape, affine, voxel sizes and voxel order,
so the mask overlays the CT voxel for voxel in 3D Slicer or ITK-SNAP.

Folder mode: ``--input`` a folder → every ``*.nii`` / ``*.nii.gz`` directly in it (not recursive) is
segmented into ``<output folder>/<name>_seg.nii.gz``, where ``<name>`` is the input's file name without
``.nii``/``.nii.gz``. The checkpoint is loaded once. Every input header is checked before any inference;
a volume whose voxel data turns out unreadable is reported and the others are still written.

Refusals (the CLI prints one line and exits 2): :class:`~liverlib.io.CaseError` for a missing, unreadable,
corrupt or non-3D input and for a wrong kind of output path; :class:`FileExistsError` for an existing
output without ``overwrite``; :class:`~liverlib.run.RunError` for a missing or foreign checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverlib.checkpoint import load_checkpoint, model_from_checkpoint
from liverlib.inference import predict_labels
from liverlib.io import Case, CaseError, load_case, save_mask_like
from liverlib.labels import LABELS
from liverlib.metrics import binary_masks, largest_connected_component
from liverlib.params import PREPROCESS_KEYS
from liverlib.preprocess import PreprocessConfig, preprocess_volume
from liverlib.run import RunError
from liverlib.runtime import resolve_device

SUFFIX = "_seg.nii.gz"
"""Name ending of the masks written in folder mode: ``volume-3.nii`` → ``volume-3_seg.nii.gz``."""

NIFTI_ENDINGS: tuple[str, ...] = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name (case-insensitive)."""
    return path.name.lower().endswith(NIFTI_ENDINGS)


def _stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]


def preprocess_config(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> PreprocessConfig:
    """The preprocessing a checkpoint was trained with (STUDY §2), from its ``config``.

    Raises:
        RunError: the config lacks a preprocessing key, or its recorded ``preprocess_key`` differs from
            the key this liverlib computes for the same settings (the preprocessing code changed since).
    """
    cfg = ckpt["config"]
    missing = [k for k in (*PREPROCESS_KEYS, "model") if k not in cfg]
    if missing:
        raise RunError(f"{source}: not a liverlib checkpoint (config lacks {', '.join(missing)})")
    pre = PreprocessConfig.from_params(cfg)
    recorded = cfg.get("preprocess_key")
    if recorded is not None and recorded != pre.key:
        raise RunError(f"{source}: trained with preprocessing {recorded}, but this liverlib computes {pre.key} for the "
                       "same settings (the preprocessing changed); use the liverlib version it was trained with")  # fmt: skip
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
    model = model.to(memory_format=torch.channels_last)  # predict_labels feeds NHWC batches
    return model, pre, ckpt


def keep_largest_liver(labels: np.ndarray) -> np.ndarray:
    """Labels with everything outside the largest 26-connected liver component (label ≥ 1) set to background."""
    return np.where(
        largest_connected_component(binary_masks(labels, "liver", True)), labels, LABELS["background"]
    ).astype(np.uint8)


def segment_volume(model: torch.nn.Module, cfg: PreprocessConfig, volume_path: str | Path, *, device: torch.device | str,
                   batch_size: int = 16, amp: bool = False, liver_lcc: bool = False,
                   progress: bool = True) -> tuple[np.ndarray, Case]:  # fmt: skip
    """Segment one CT volume in the display convention.

    Args:
        model: network mapping (B, 1, S, S) in [0, 1] to (B, 3, S, S) logits, eval mode, on ``device``.
        cfg: the preprocessing the model was trained with (:func:`preprocess_config`), S = ``cfg.image_size``.
        volume_path: a 3D NIfTI CT in Hounsfield units, any orientation.
        device: where the model runs.
        batch_size: slices per forward pass.
        amp: autocast on CUDA.
        liver_lcc: keep only the largest liver component (:func:`keep_largest_liver`).
        progress: tqdm bar over batches.

    Returns:
        labels: uint8 (slices, rows, cols) in {0, 1, 2}, display convention, the input's in-plane size
            (probabilities resized bilinearly before the argmax);
        case: the loaded :class:`~liverlib.io.Case` (its ``image`` is int16 HU of the same shape).

    Raises:
        CaseError: unreadable, corrupt or non-3D file; the message names it.
    """
    case = load_case(volume_path)
    images = preprocess_volume(case.image, cfg)
    labels = predict_labels(model, images, out_size=case.image.shape[1:], batch_size=batch_size, device=device,
                            amp=amp, progress=progress, desc=Path(volume_path).name)  # fmt: skip
    if liver_lcc:
        labels = keep_largest_liver(labels)
    return labels, case


def plan_outputs(input: str | Path, output: str | Path, *, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """Pair every input volume with its output mask path and check both before any work.

    A file input needs a ``.nii``/``.nii.gz`` output file name; a folder input needs an output folder
    (created if missing) and gets ``<name>_seg.nii.gz`` per volume (module docstring).

    Raises:
        CaseError: missing input, wrong kind of output, no volumes in the folder, two inputs with one
            output name, or an input whose header is unreadable or not 3D.
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    src, dst = Path(input).expanduser(), Path(output).expanduser()
    if not src.exists():
        raise CaseError(f"{src}: input does not exist")
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise CaseError(f"{dst}: is a file, but the input {src} is a folder; give an output folder")
        if not dst.exists() and _is_nifti(dst):
            raise CaseError(f"{dst}: looks like a file name, but the input {src} is a folder; give an output folder")
        same = dst.exists() and dst.resolve() == src.resolve()
        inputs = sorted(
            f for f in src.iterdir() if f.is_file() and _is_nifti(f) and not (same and f.name.endswith(SUFFIX))
        )
        if not inputs:
            raise CaseError(f"{src}: no .nii or .nii.gz files in this folder (it is not searched recursively)")
        pairs = [(f, dst / f"{_stem(f)}{SUFFIX}") for f in inputs]
        seen: dict[Path, Path] = {}
        for f, o in pairs:
            if o in seen:
                raise CaseError(f"{seen[o]} and {f} would both be written to {o}; rename one of them")
            seen[o] = f
    else:
        if dst.is_dir() or str(output).endswith(("/", "\\")):
            raise CaseError(f"{dst}: is a folder, but the input {src} is a single file; give a .nii.gz file name")
        if not _is_nifti(dst):
            raise CaseError(f"{dst}: output must be a .nii or .nii.gz file name")
        if dst.exists() and dst.resolve() == src.resolve():
            raise CaseError(f"{dst}: output would replace the input CT; give another file name")
        pairs = [(src, dst)]
    existing = [o for _, o in pairs if o.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more}: output exists; pass --overwrite (overwrite=True) to replace it")
    for f, _ in pairs:
        load_case(f, read_image=False)  # header only: unreadable or non-3D files are refused before any inference
    return pairs


def _report(src: Path, dst: Path, labels: np.ndarray, case: Case, seconds: float) -> dict[str, Any]:
    """One result row: paths, shapes, voxel counts and volumes per class, seconds."""
    ml = float(np.prod(case.spacing)) / 1000.0
    liver = int(np.count_nonzero(labels == LABELS["liver"]))
    tumor = int(np.count_nonzero(labels == LABELS["tumor"]))
    return {"input": str(src), "output": str(dst), "shape": case.source_shape, "orientation": "".join(case.axcodes),
            "spacing_mm": case.spacing, "liver_voxels": liver, "tumor_voxels": tumor, "liver_ml": round(liver * ml, 1),
            "tumor_ml": round(tumor * ml, 1), "seconds": round(seconds, 2)}  # fmt: skip


def segment_file(checkpoint: str | Path, input: str | Path, output: str | Path, *, device: str = "auto",
                 batch_size: int = 16, overwrite: bool = False, liver_lcc: bool = False, amp: bool = False,
                 progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Segment one NIfTI volume, or every volume of a folder, into uint8 NIfTI label masks.

    Args:
        checkpoint: a liverlib checkpoint (``best.pt``); loaded once.
        input: a ``.nii``/``.nii.gz`` CT in Hounsfield units, or a folder of them.
        output: the mask file (``.nii``/``.nii.gz``), or a folder for a folder input (module docstring).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` …
        batch_size: slices per forward pass.
        overwrite: replace existing outputs.
        liver_lcc: keep only the largest liver component.
        amp: autocast on CUDA.
        progress: tqdm bars over batches. One line per volume is always printed (paths, shape, orientation,
            liver and tumor voxels and mL, seconds).

    Returns:
        One dict per written mask (see :func:`_report`).

    Raises:
        CaseError: bad input or output path, unreadable/corrupt/non-3D volume (in folder mode after the
            other volumes are written, naming every failed file).
        FileExistsError: an output exists and ``overwrite`` is False (nothing is written).
        RunError: missing or non-liverlib checkpoint, unknown device, CUDA requested but unavailable, or
            ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise RunError(f"batch size must be at least 1, got {batch_size}")
    pairs = plan_outputs(input, output, overwrite=overwrite)
    try:
        dev = resolve_device(device)
    except RunError:
        raise
    except RuntimeError as exc:  # torch.device("gpu")
        raise RunError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    model, cfg, _ = load_model(checkpoint, dev)
    results, failed = [], []
    for src, dst in pairs:
        t0 = time.perf_counter()
        try:
            labels, case = segment_volume(model, cfg, src, device=dev, batch_size=batch_size, amp=amp,
                                          liver_lcc=liver_lcc, progress=progress)  # fmt: skip
        except CaseError as exc:
            if len(pairs) == 1:
                raise
            failed.append(str(exc))
            print(f"skipped: {exc}", flush=True)
            continue
        save_mask_like(labels, case, dst)
        r = _report(src, dst, labels, case, time.perf_counter() - t0)
        results.append(r)
        print(f"{r['input']} -> {r['output']}: shape {r['shape']} {r['orientation']}, liver {r['liver_voxels']} voxels "
                  f"({r['liver_ml']} mL), tumor {r['tumor_voxels']} voxels ({r['tumor_ml']} mL), {r['seconds']:.1f} s", flush=True)  # fmt: skip
    if failed:
        raise CaseError(f"{len(failed)} of {len(pairs)} volumes failed ({len(results)} written): " + "; ".join(failed))
    return results


def segment_cli(args: argparse.Namespace) -> None:
    """``python -m liverlib segment``: :func:`segment_file` with the parsed arguments."""
    segment_file(args.checkpoint, args.input, args.output, device=args.device, batch_size=args.batch_size,
                 overwrite=args.overwrite, liver_lcc=args.liver_lcc, amp=getattr(args, "amp", False))  # fmt: skip
