"""Planning a ``segment`` run before any inference: which inputs, which outputs, and that every output can be
written (folder mode, ``--skip-existing``, DICOM series, probabilities and report paths). See :mod:`liverlib.segment.segment`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from liverlib.data.dicom import choose_series, series_ids
from liverlib.data.nifti import load_case
from liverlib.errors import CaseError

SUFFIX = "_seg.nii.gz"
"""Name ending of the masks written in folder mode: ``volume-3.nii`` → ``volume-3_seg.nii.gz``."""

PROB_SUFFIX = "_probs.npz"
"""Name ending of the probabilities written in folder mode: ``volume-3.nii`` → ``volume-3_probs.npz``."""

NIFTI_ENDINGS: tuple[str, ...] = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name (case-insensitive)."""
    return path.name.lower().endswith(NIFTI_ENDINGS)


def nifti_stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]


def sidecar_path(mask: str | Path) -> Path:
    """The label sidecar of a mask: ``mask.nii.gz`` → ``mask.json``."""
    mask = Path(mask)
    return mask.with_name(nifti_stem(mask) + ".json")


@dataclass(frozen=True)
class Job:
    """One input and the files written for it."""

    input: Path
    mask: Path
    probabilities: Path | None = None


def _folder_inputs(src: Path, dst: Path) -> list[Path]:
    """The NIfTI files directly in ``src`` (outputs of an earlier run into the same folder excluded)."""
    same = dst.exists() and dst.resolve() == src.resolve()
    return sorted(f for f in src.iterdir() if f.is_file() and is_nifti(f) and not (same and f.name.endswith(SUFFIX)))


def _file_output(src: Path, dst: Path, output: str | Path, what: str) -> None:
    """Refuse an output that is not a NIfTI file name for a single-volume input."""
    if dst.is_dir() or str(output).endswith(("/", "\\")):
        raise CaseError(f"{dst}: is a folder, but the input {src} is {what}; give a .nii.gz file name")
    if not is_nifti(dst):
        raise CaseError(f"{dst}: output must be a .nii or .nii.gz file name")


def _plan_folder(src: Path, dst: Path, probabilities: Path | None) -> list[Job]:
    """Jobs of folder mode: ``<name>_seg.nii.gz`` (and ``<name>_probs.npz``) per NIfTI file of ``src``."""
    if dst.exists() and not dst.is_dir():
        raise CaseError(f"{dst}: is a file, but the input {src} is a folder; give an output folder")
    if not dst.exists() and is_nifti(dst):
        raise CaseError(f"{dst}: looks like a file name, but the input {src} is a folder; give an output folder")
    if probabilities is not None and probabilities.suffix == ".npz":
        raise CaseError(f"{probabilities}: the input {src} is a folder; give a folder for the probabilities")
    jobs = [Job(f, dst / f"{nifti_stem(f)}{SUFFIX}", probabilities / f"{nifti_stem(f)}{PROB_SUFFIX}" if probabilities else None)
            for f in _folder_inputs(src, dst)]  # fmt: skip
    seen: dict[Path, Path] = {}
    for j in jobs:
        if j.mask in seen:
            raise CaseError(f"{seen[j.mask]} and {j.input} would both be written to {j.mask}; rename one of them")
        seen[j.mask] = j.input
    return jobs


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output whose folder cannot be created or written.

    Raises:
        CaseError: naming ``path``: an existing parent is a file, or the nearest existing folder is not writable.
    """
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CaseError(f"{path}: cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CaseError(f"{path}: cannot be written: no write permission in {parent}")


def plan_outputs(input: str | Path, output: str | Path, *, overwrite: bool = False, skip_existing: bool = False,
                 probabilities: str | Path | None = None, report: str | Path | None = None,
                 series: str | None = None) -> list[Job]:  # fmt: skip
    """Pair every input volume with its output files and check them all before any work.

    A file or DICOM-folder input needs a ``.nii``/``.nii.gz`` output file name (and a ``.npz`` for
    ``probabilities``); a folder of NIfTI files needs an output folder (and a probabilities folder) and gets
    ``<name>_seg.nii.gz`` per volume (module docstring). ``skip_existing`` drops the jobs whose mask exists.

    Raises:
        CaseError: missing input, wrong kind of output, no volumes in the folder, an ambiguous DICOM
            folder, two inputs with one output name, an unwritable output, or an input whose header is
            unreadable or not 3D.
        FileExistsError: an output exists and neither ``overwrite`` nor ``skip_existing`` is set.
    """
    src, dst = Path(input).expanduser(), Path(output).expanduser()
    probs = Path(probabilities).expanduser() if probabilities is not None else None
    if not src.exists():
        raise CaseError(f"{src}: input does not exist")
    if src.is_dir() and any(is_nifti(f) for f in src.iterdir()):
        jobs = _plan_folder(src, dst, probs)
    else:
        _file_output(src, dst, output, "a DICOM series folder" if src.is_dir() else "a single file")
        if src.is_dir() and not series_ids(src):
            raise CaseError(f"{src}: no .nii or .nii.gz files and no DICOM series in this folder (it is not searched recursively)")  # fmt: skip
        if not src.is_dir() and dst.exists() and dst.resolve() == src.resolve():
            raise CaseError(f"{dst}: output would replace the input CT; give another file name")
        if probs is not None and probs.suffix != ".npz":
            raise CaseError(f"{probs}: probabilities are written as .npz; give a .npz file name")
        jobs = [Job(src, dst, probs)]
    if skip_existing:
        skipped = [j for j in jobs if j.mask.exists()]
        jobs = [j for j in jobs if not j.mask.exists()]
        if skipped:
            print(f"skipping {len(skipped)} input(s) whose mask exists: {', '.join(j.mask.name for j in skipped)}", flush=True)  # fmt: skip
    outputs = [p for j in jobs for p in (j.mask, j.probabilities) if p is not None]
    outputs += [Path(report).expanduser()] if report is not None else []
    existing = [o for o in outputs if o.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more}: output exists; pass --overwrite (overwrite=True) to replace it")
    sidecars = [sidecar_path(j.mask) for j in jobs]
    if report is not None and Path(report).expanduser() in sidecars:
        raise CaseError(f"{report}: is the label sidecar of a mask; give the report another name")
    for o in outputs + sidecars:
        check_writable(o)
    for j in jobs:
        if j.input.is_dir():
            choose_series(j.input, series)  # an ambiguous or unknown series is refused before any inference
        else:
            load_case(j.input, read_image=False)  # header only: bad files are refused before any inference
    return jobs
