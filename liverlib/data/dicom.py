"""DICOM CT series in and out, through SimpleITK (GDCM), as liverlib :class:`~liverlib.data.nifti.Case` objects.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np

from liverlib.data.geometry import (
    LPS_TO_RAS,
    display_spacing,
    from_display,
    itk_warnings_off,
    orientation_of,
    ras_affine,
    sitk_module,
    to_display,
)
from liverlib.data.nifti import Case, to_int16
from liverlib.errors import CaseError
from liverlib.files import atomic_write

UNEVEN_TOLERANCE = 0.1
"""A series is uneven when a gap between neighbouring slices, or a slice's distance from where an even grid from the
first to the last slice would put it, exceeds this fraction of the median gap (0.16 mm for 1.6 mm slices). ITK's
reader puts every slice on that even grid (with only a C++ warning), so beyond it slices land in the wrong place."""

MAX_RESAMPLE_FACTOR = 4
"""``--resample-dicom`` refuses to make more than this many times the series' slices (a near-duplicate slice would
otherwise set a tiny spacing)."""


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
    """SimpleITK, imported on first use (:func:`liverlib.data.geometry.sitk_module`)."""
    return sitk_module()


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


def _floats(text: str, n: int) -> np.ndarray | None:
    """A DICOM multi-valued decimal string (``"1\\2\\3"``) as ``n`` floats, or None if it is not one."""
    try:
        values = np.array([float(v) for v in text.strip().split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size == n and np.isfinite(values).all() else None


@dataclass(frozen=True)
class SliceGeometry:
    """Where the slices of a series lie, from each file's header (DICOM LPS world coordinates, mm).

    Attributes:
        files: the files sorted by position along ``normal``.
        positions: ``ImagePositionPatient · normal`` of each file, ascending.
        row, col: unit direction of a row (first ``ImageOrientationPatient`` triplet) and of a column.
        normal: ``row × col``, the slice normal.
        first: ``ImagePositionPatient`` of the first slice.
    """

    files: tuple[str, ...]
    positions: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    first: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        """Distance between neighbouring slices along the normal (mm)."""
        return np.diff(self.positions)

    def largest_gap(self) -> tuple[float, int]:
        """(the largest gap in mm, the index of the slice before it)."""
        k = int(np.argmax(self.gaps))
        return float(self.gaps[k]), k

    def grid_error(self) -> float:
        """The largest distance (mm) of a slice from the even grid between the first and the last slice: where ITK's
        reader, which stacks the slices evenly, would put it."""
        even = np.linspace(self.positions[0], self.positions[-1], len(self.positions))
        return float(np.abs(self.positions - even).max())

    def uneven(self) -> float:
        """How far the series is from even spacing (mm): the largest of a gap's distance from the median gap and
        :meth:`grid_error`."""
        return float(max(np.abs(self.gaps - np.median(self.gaps)).max(), self.grid_error()))


def slice_geometry(folder: Path, uid: str, files: list[str] | tuple[str, ...]) -> SliceGeometry:
    """Read every file's ``ImagePositionPatient`` and ``ImageOrientationPatient`` and sort the slices along the normal.

    Raises:
        CaseError: a slice without a readable position or orientation, slices of different orientations, or two
            slices at one position (one line naming the series).
    """
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    pos, orient = [], None
    for f in files:
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1][:200]
            raise CaseError(f"{folder}: series {uid}: {Path(f).name} cannot be read ({first})") from exc
        ipp = _floats(reader.GetMetaData("0020|0032"), 3) if reader.HasMetaDataKey("0020|0032") else None
        iop = _floats(reader.GetMetaData("0020|0037"), 6) if reader.HasMetaDataKey("0020|0037") else None
        if ipp is None or iop is None:
            raise CaseError(f"{folder}: series {uid}: {Path(f).name} has no valid ImagePositionPatient/"
                            "ImageOrientationPatient, so its slice position cannot be checked")  # fmt: skip
        if orient is None:
            orient = iop
        elif np.abs(iop - orient).max() > 1e-4:
            raise CaseError(f"{folder}: series {uid}: {Path(f).name} is oriented {iop.round(4).tolist()} but the "
                            f"first slice {orient.round(4).tolist()}: not one volume")  # fmt: skip
        pos.append(ipp)
    assert orient is not None
    row, col = orient[:3] / np.linalg.norm(orient[:3]), orient[3:] / np.linalg.norm(orient[3:])
    normal = np.cross(row, col)
    along = np.asarray(pos) @ normal
    order = np.argsort(along, kind="stable")
    geo = SliceGeometry(tuple(str(files[i]) for i in order), along[order], row, col, normal, np.asarray(pos)[order[0]])
    if (geo.gaps <= 1e-3).any():
        k = int(np.argmin(geo.gaps))
        raise CaseError(f"{folder}: series {uid}: {Path(geo.files[k]).name} and {Path(geo.files[k + 1]).name} lie at "
                        f"the same position ({geo.positions[k]:.2f} mm along the slice normal): the series mixes "
                        "acquisitions; choose one")  # fmt: skip
    return geo


def resample_slices(data: np.ndarray, positions: np.ndarray, spacing: float) -> np.ndarray:
    """Linear interpolation of (k, j, i) slices at ``positions`` (ascending, mm) onto an even grid of ``spacing`` from
    the first to the last position. Returns float32 (k', j, i)."""
    n = int(round((positions[-1] - positions[0]) / spacing)) + 1
    grid = positions[0] + np.arange(n) * spacing
    upper = np.clip(np.searchsorted(positions, grid, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    w = ((grid - positions[lower]) / (positions[upper] - positions[lower])).clip(0, 1).astype(np.float32)[:, None, None]
    src = data.astype(np.float32)
    return src[lower] * (1 - w) + src[upper] * w


@keeps_locale
def read_series(folder: str | Path, series: str | None = None, *, resample: bool = False,
                notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Read one DICOM series: (int16 HU in voxel order (i, j, k), its 4×4 RAS affine).

    Slice positions are checked along the series normal (``ImagePositionPatient`` projected on the normal of
    ``ImageOrientationPatient``) before the voxels are read: ITK's reader stacks the slices on an even grid whatever
    their positions, so an uneven series (a missing slice, a change of spacing; :data:`UNEVEN_TOLERANCE`) would be
    misplaced. It is refused, or with ``resample`` interpolated linearly along the normal onto an even grid of the
    smallest gap, whose true geometry the affine then carries (a line saying so is appended to ``notes``).

    Raises:
        CaseError: no series, an ambiguous or unknown ``series`` (:func:`choose_series`), unreadable files, fewer
            than two slices (not a 3D volume), slices without positions, of different orientations or at one
            position, or an uneven series without ``resample`` (one line naming the series and its largest gap).
    """
    sitk, folder = _sitk(), Path(folder)
    uid = choose_series(folder, series)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if len(files) < 2:
        raise CaseError(f"{folder}: series {uid} has {len(files)} slice; expected a 3D volume")
    geo = slice_geometry(folder, uid, files)
    gaps, (largest, k) = geo.gaps, geo.largest_gap()
    median = float(np.median(gaps))
    uneven = geo.uneven() > UNEVEN_TOLERANCE * median
    n_even = int(round((geo.positions[-1] - geo.positions[0]) / gaps.min())) + 1
    if uneven and not resample:
        a, b = Path(geo.files[k]).name, Path(geo.files[k + 1]).name
        raise CaseError(f"{folder}: series {uid} is not evenly spaced: slice gaps {gaps.min():.2f} to {largest:.2f} "
                        f"mm, the largest {largest:.2f} mm between {a} and {b} (a missing slice or a change of "
                        "spacing); read as one even grid, as ITK does, its slices would lie up to "
                        f"{geo.grid_error():.2f} mm from their true positions. Pass --resample-dicom to resample it "
                        f"onto an even {gaps.min():.2f} mm grid")  # fmt: skip
    if uneven and n_even > MAX_RESAMPLE_FACTOR * len(files):
        raise CaseError(f"{folder}: series {uid}: resampling onto its smallest gap ({gaps.min():.3f} mm) would make "
                        f"{n_even} slices from {len(files)}; it is not one evenly acquired volume")  # fmt: skip
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(geo.files))
    try:
        with itk_warnings_off():  # ITK's "Non uniform sampling or missing slices" warning: checked above
            img = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise CaseError(f"{folder}: series {uid} cannot be read ({first})") from exc
    if img.GetDimension() != 3:
        raise CaseError(f"{folder}: series {uid} is {img.GetDimension()}D; expected a 3D volume")
    voxels = sitk.GetArrayFromImage(img)  # (k, j, i), slices in the order of geo.files
    if not uneven:
        data = to_int16(voxels, folder, "series").transpose(2, 1, 0)  # (k, j, i) → (i, j, k)
        return np.ascontiguousarray(data), ras_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    step = (geo.positions[-1] - geo.positions[0]) / (n_even - 1)
    data = to_int16(resample_slices(voxels, geo.positions, step), folder, "series").transpose(2, 1, 0)
    direction = np.stack([geo.row, geo.col, geo.normal], axis=1)  # columns: i, j, k in LPS
    affine = ras_affine((*img.GetSpacing()[:2], step), tuple(geo.first), tuple(direction.ravel()))
    if notes is not None:
        notes.append(f"DICOM series {uid} resampled (--resample-dicom): {len(files)} unevenly spaced slices (gaps "
                     f"{gaps.min():.2f} to {largest:.2f} mm) interpolated onto {n_even} slices of {step:.2f} mm along "
                     "the slice normal; the mask is on that grid, in the series' world coordinates")  # fmt: skip
    return np.ascontiguousarray(data), affine


@keeps_locale
def load_dicom_case(folder: str | Path, series: str | None = None, *, resample: bool = False) -> Case:
    """A DICOM series as a :class:`~liverlib.data.nifti.Case` in the display convention (``volume_path`` = the folder).

    Args:
        resample: resample an unevenly spaced series onto an even grid instead of refusing it (:func:`read_series`);
            ``Case.notes`` then says so.

    Returns:
        A Case: image int16 (slices, rows, cols), ``affine``/``source_shape`` those of the series in voxel
        order (i, j, k) (module docstring), no mask.

    Raises:
        CaseError: see :func:`read_series`.
    """
    notes: list[str] = []
    data, affine = read_series(folder, series, resample=resample, notes=notes)
    img = nib.Nifti1Image(data, affine)
    return Case(case_id=-1, image=to_display(data, affine), mask=None, spacing=display_spacing(img), affine=affine,
                source_shape=tuple(int(s) for s in data.shape), volume_path=Path(folder),
                axcodes=orientation_of(affine), notes=notes)  # type: ignore[arg-type]  # fmt: skip


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
