"""DICOM CT series in and out, through SimpleITK (GDCM), as liverlib :class:`~liverlib.io.Case` objects.

A folder holding one CT series is read with ``ImageSeriesReader`` (slices sorted by position, HU from the
rescale slope and intercept). DICOM and ITK describe the patient in LPS; NIfTI and nibabel in RAS. A voxel
(i, j, k) (i along a row, j down the columns, k across slices) lies at LPS ``origin + D · diag(spacing) · (i, j, k)``;
flipping the first two world axes, ``F = diag(-1, -1, 1)``, gives the RAS affine
``[[F · D · diag(spacing), F · origin], [0, 0, 0, 1]]`` — what ``sitk.WriteImage`` would put in a ``.nii``. The
mask ``segment`` writes for a series has that affine and voxel order (i, j, k), so it overlays the series
in 3D Slicer or ITK-SNAP.
"""

from __future__ import annotations

import functools
import locale
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np

from liverlib.io import (
    Case,
    CaseError,
    atomic_write,
    display_spacing,
    from_display,
    orientation_of,
    to_display,
    to_int16,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
"""Flips LPS world coordinates to RAS (and back: it is its own inverse)."""


F = TypeVar("F", bound=Callable[..., Any])


def keeps_locale(fn: F) -> F:
    """Restore the process locale after ``fn``: ITK's DICOM writer sets it to "C" (ASCII), which would make every
    later ``open()`` of the process without an explicit encoding fail on non-ASCII text."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = locale.setlocale(locale.LC_ALL)
        try:
            return fn(*args, **kwargs)
        finally:
            locale.setlocale(locale.LC_ALL, saved)

    return wrapper  # type: ignore[return-value]


def _sitk():
    """SimpleITK, imported on first use (only DICOM needs it)."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # pragma: no cover - a dependency of liverlib
        raise CaseError("reading DICOM needs SimpleITK: pip install SimpleITK") from exc
    return sitk


@keeps_locale
def series_ids(folder: str | Path) -> dict[str, int]:
    """The DICOM series directly in ``folder``: ``{series instance UID: number of files}`` (empty if none)."""
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    return {uid: len(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in reader.GetGDCMSeriesIDs(str(folder))}


@keeps_locale
def choose_series(folder: str | Path, series: str | None = None) -> str:
    """The UID of the one series to read from ``folder``, or ``series`` if the folder holds it.

    Raises:
        CaseError: no series, several series and no ``series`` given (the message lists every UID and how
            to choose), or ``series`` not among them.
    """
    found = series_ids(folder)
    listed = ", ".join(f"{uid} ({n} files)" for uid, n in found.items())
    if not found:
        raise CaseError(f"{folder}: no DICOM series and no .nii or .nii.gz files in this folder")
    if series is not None:
        if series not in found:
            raise CaseError(f"{folder}: no series {series}; it holds {listed}")
        return series
    if len(found) > 1:
        raise CaseError(f"{folder}: holds {len(found)} DICOM series: {listed}; choose one with --series UID")
    return next(iter(found))


def ras_affine(spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]) -> np.ndarray:
    """The 4×4 RAS voxel-to-world affine of an ITK image's LPS geometry (module docstring)."""
    aff = np.eye(4)
    aff[:3, :3] = LPS_TO_RAS @ np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    aff[:3, 3] = LPS_TO_RAS @ np.asarray(origin, float)
    return aff


@keeps_locale
def read_series(folder: str | Path, series: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one DICOM series: (int16 HU in voxel order (i, j, k), its 4×4 RAS affine).

    Raises:
        CaseError: no series, an ambiguous or unknown ``series`` (:func:`choose_series`), unreadable files,
            or fewer than two slices (not a 3D volume).
    """
    sitk, folder = _sitk(), Path(folder)
    uid = choose_series(folder, series)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if len(files) < 2:
        raise CaseError(f"{folder}: series {uid} has {len(files)} slice; expected a 3D volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise CaseError(f"{folder}: series {uid} cannot be read ({first})") from exc
    if img.GetDimension() != 3:
        raise CaseError(f"{folder}: series {uid} is {img.GetDimension()}D; expected a 3D volume")
    data = to_int16(sitk.GetArrayFromImage(img), folder, "series").transpose(2, 1, 0)  # (k, j, i) → (i, j, k)
    return np.ascontiguousarray(data), ras_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection())


@keeps_locale
def load_dicom_case(folder: str | Path, series: str | None = None) -> Case:
    """A DICOM series as a :class:`~liverlib.io.Case` in the display convention (``volume_path`` = the folder).

    Returns:
        A Case: image int16 (slices, rows, cols), ``affine``/``source_shape`` those of the series in voxel
        order (i, j, k) (module docstring), no mask.

    Raises:
        CaseError: see :func:`read_series`.
    """
    data, affine = read_series(folder, series)
    img = nib.Nifti1Image(data, affine)
    return Case(case_id=-1, image=to_display(data, affine), mask=None, spacing=display_spacing(img), affine=affine,
                source_shape=tuple(int(s) for s in data.shape), volume_path=Path(folder),
                axcodes=orientation_of(affine))  # type: ignore[arg-type]  # fmt: skip


@keeps_locale
def save_mask_for_series(mask: np.ndarray, case: Case, path: str | Path) -> Path:
    """Write display-convention uint8 labels as a NIfTI on a DICOM case's grid (its affine, mm units, scanner
    qform/sform), atomically."""
    data = from_display(np.asarray(mask, dtype=np.uint8), case.affine)
    out = nib.Nifti1Image(data, case.affine)
    out.set_qform(case.affine, code=1)
    out.set_sform(case.affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    with atomic_write(path) as tmp:
        nib.save(out, str(tmp))
    return Path(path)


@keeps_locale
def write_series(data: np.ndarray, affine: np.ndarray, folder: str | Path, *, series_uid: str | None = None,
                 study_uid: str | None = None) -> list[Path]:  # fmt: skip
    """Write a 3D int16 HU volume as a CT DICOM series, one file per slice (``slice-0000.dcm`` …).

    Used by the tests and to hand a NIfTI to DICOM-only tools. Image position and orientation come from the
    RAS ``affine`` (converted to LPS); the in-plane axes must be orthogonal.

    Args:
        data: int16 (i, j, k) in the voxel order of ``affine``.
        affine: 4×4 RAS affine of ``data``.
        folder: created if missing.
        series_uid: Series Instance UID; a new one if None. ``study_uid`` likewise.

    Returns:
        The files written, in slice order k.
    """
    sitk, folder = _sitk(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spacing = nib.affines.voxel_sizes(affine)
    direction = (LPS_TO_RAS @ affine[:3, :3] / spacing).ravel()
    origin = LPS_TO_RAS @ affine[:3, 3]
    vol = sitk.GetImageFromArray(np.ascontiguousarray(data.astype(np.int16).transpose(2, 1, 0)))
    vol.SetSpacing([float(s) for s in spacing])
    vol.SetDirection([float(d) for d in direction])
    vol.SetOrigin([float(o) for o in origin])
    series_uid = series_uid or f"2.25.{uuid.uuid4().int}"  # a UUID-derived UID (DICOM PS3.5 B.2)
    study_uid = study_uid or f"2.25.{uuid.uuid4().int}"
    tags = {"0008|0060": "CT", "0020|000e": series_uid, "0020|000d": study_uid, "0010|0010": "PHANTOM^LIVERLIB",
            "0020|0037": "\\".join(f"{d:.8f}" for d in (*direction[0::3], *direction[1::3])),
            "0018|0050": f"{spacing[2]:.6f}", "0028|1052": "0", "0028|1053": "1"}  # fmt: skip
    writer, paths = sitk.ImageFileWriter(), []
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in pos))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        paths.append(folder / f"slice-{k:04d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(sl)
    return paths
