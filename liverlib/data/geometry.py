"""Where a NIfTI's voxels lie: the display convention, the header's geometry checks, and ITK's reading of the affine
(docs/study.md §1).

Every array liverlib hands out is in one *display convention*, whatever the file's orientation:
shape ``(slices, rows, cols)``, rows run anterior → posterior, columns run patient's right → patient's left,
slices run inferior → superior (:func:`to_display`; :func:`from_display` is its inverse). 3D Slicer and ITK-SNAP
read NIfTI through ITK, which chooses between qform and sform differently from nibabel: :func:`itk_affine` asks
ITK, and :func:`pair_geometry_problem` refuses an image and mask that would not overlay in either reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from liverlib.errors import CaseError

DISPLAY_AXCODES: tuple[str, str, str] = ("L", "P", "S")
"""Voxel axis codes (i, j, k) of the display convention before the (k, j, i) transpose."""


def raw_header(path: str | Path) -> nib.Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header of ``path`` exactly as stored, or None if it is not one.

    ``nib.load`` repairs a header while reading it (a zero pixdim becomes 1, a negative one its absolute value,
    with only a log line), so the geometry checks read the stored bytes themselves.
    """
    try:
        with nib.openers.ImageOpener(str(path)) as fh:
            block = fh.read(nib.Nifti2Header.sizeof_hdr)
    except Exception:  # unreadable or corrupt: nib.load names the problem
        return None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        n = klass.sizeof_hdr
        if len(block) >= n and klass.may_contain_header(block[:n]):
            try:
                return klass(block[:n], check=False)
            except Exception:
                return None
    return None


def _form_problem(aff: np.ndarray) -> str | None:
    """Why a 4×4 voxel-to-world affine cannot place voxels (non-finite, an axis of zero length, singular), or None."""
    m = np.asarray(aff, dtype=np.float64)
    if not np.isfinite(m).all():
        return "holds NaN or infinite values"
    lengths = np.linalg.norm(m[:3, :3], axis=0)
    if (lengths == 0).any():
        return f"gives voxel axis {int(np.argmin(lengths)) + 1} zero length"
    if abs(np.linalg.det(m[:3, :3] / lengths)) < 1e-6:
        return "is singular (its voxel axes do not span 3D space)"
    return None


def check_geometry(hdr: nib.Nifti1Header, path: str | Path) -> None:
    """Refuse a NIfTI header whose geometry cannot be right: spacing (``pixdim[1..3]``) zero, negative or not a
    number, or a qform/sform in use (code > 0) that is not finite or singular.

    nibabel and ITK would otherwise guess (nibabel sets a zero spacing to 1 mm, ITK too; a NaN spacing or a zero
    sform column fails later without naming the file), and volumes in mL would silently be wrong.

    Raises:
        CaseError: one line naming the file, the field and its value.
    """
    ndim = int(hdr["dim"][0])
    spatial = [float(v) for v in hdr["pixdim"][1 : 1 + min(max(ndim, 1), 3)]]
    bad = [i + 1 for i, v in enumerate(spatial) if not (np.isfinite(v) and v > 0)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in spatial)
        raise CaseError(f"{path}: voxel spacing pixdim[1:{len(spatial) + 1}] = ({shown}) mm: pixdim[{bad[0]}] is "
                        "not a positive number, so the voxel size and every volume in mL would be wrong; fix the "
                        "header")  # fmt: skip
    for name in ("sform", "qform"):
        code = int(hdr[f"{name}_code"])
        if code <= 0:
            continue
        try:
            aff = hdr.get_sform() if name == "sform" else hdr.get_qform()
        except Exception as exc:  # a quaternion nibabel cannot use
            problem: str | None = f"cannot be read ({type(exc).__name__}: {exc})"
        else:
            problem = _form_problem(aff)
        if problem:
            raise CaseError(f"{path}: the {name} ({name}_code {code}) {problem}; the voxels cannot be placed in "
                            "space, fix the header")  # fmt: skip


def sitk_module():
    """SimpleITK, imported on first use (DICOM reading and the ITK view of NIfTI geometry need it)."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # pragma: no cover - a dependency of liverlib
        raise CaseError("reading DICOM and checking NIfTI geometry need SimpleITK: pip install SimpleITK") from exc
    return sitk


@contextmanager
def itk_warnings_off() -> Iterator[None]:
    """Silence ITK's multi-line C++ warnings (``WARNING: In …/itkNiftiImageIO.cxx …``) for a block whose cases
    liverlib checks itself, then restore the global setting."""
    sitk = sitk_module()
    was = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(was)


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
"""Flips LPS world coordinates (ITK, DICOM) to RAS (nibabel, NIfTI) and back: it is its own inverse."""


def ras_affine(spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]) -> np.ndarray:
    """The 4×4 RAS voxel-to-world affine of an ITK image's LPS geometry (spacing, origin, row-major direction)."""
    aff = np.eye(4)
    aff[:3, :3] = LPS_TO_RAS @ np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    aff[:3, 3] = LPS_TO_RAS @ np.asarray(origin, float)
    return aff


def itk_affine(path: str | Path) -> np.ndarray:
    """The RAS affine ITK (and so 3D Slicer and ITK-SNAP) gives a NIfTI file, from its header alone.

    ITK does not always choose as nibabel does: SimpleITK 2.5 takes the sform only when ``sform_code`` is 1
    (scanner) or the qform is unset, and only when its scales match pixdim, else the qform; nibabel takes the sform
    whenever ``sform_code`` > 0 (``img.affine``). Asking ITK itself avoids re-implementing its rule.

    Raises:
        CaseError: ITK cannot read the header (names the file).
    """
    sitk = sitk_module()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_off():  # "has unexpected scales in sform": the caller compares what ITK chose
            reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise CaseError(f"{path}: ITK (3D Slicer, ITK-SNAP) cannot read its geometry ({first})") from exc
    d = min(reader.GetDimension(), 3)  # ITK drops trailing axes of length 1: a one-slice file reads as 2D
    direction = np.eye(3)
    direction[:d, :d] = np.asarray(reader.GetDirection(), float).reshape(reader.GetDimension(), -1)[:d, :d]
    spacing, origin = np.ones(3), np.zeros(3)
    spacing[:d], origin[:d] = reader.GetSpacing()[:d], reader.GetOrigin()[:d]
    return ras_affine(tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _forms(hdr: nib.Nifti1Header) -> dict[str, np.ndarray]:
    """The qform and sform a header declares in use (code > 0)."""
    out = {}
    for name in ("qform", "sform"):
        if int(hdr[f"{name}_code"]) > 0:
            out[name] = hdr.get_sform() if name == "sform" else hdr.get_qform()
    return out


def pair_geometry_problem(volume_path: Path, vi: nib.Nifti1Image, mask_path: Path, mi: nib.Nifti1Image) -> str | None:
    """Why an image and its mask would not overlay, judged on both geometries readers use, or None.

    nibabel's (``img.affine``: the sform if ``sform_code`` > 0, else the qform) and ITK's (:func:`itk_affine`;
    3D Slicer and ITK-SNAP read NIfTI through it). They choose differently, so a pair that agrees in one may be
    tens of millimetres apart in the other: the pair is refused when either differs.
    """
    if not np.allclose(vi.affine, mi.affine, atol=1e-3):
        return "image and mask affines differ"
    iv, im = itk_affine(volume_path), itk_affine(mask_path)
    if np.allclose(iv, im, atol=1e-3):
        return None
    fv, fm = _forms(vi.header), _forms(mi.header)
    differ = [
        n
        for n in ("qform", "sform")
        if (n in fv) != (n in fm) or (n in fv and not np.allclose(fv[n], fm[n], atol=1e-3))
    ]
    shift = LPS_TO_RAS @ (im[:3, 3] - iv[:3, 3])  # back to ITK's LPS, the numbers Slicer shows
    forms = " and ".join(f"{n}s" for n in differ) or "headers"
    return (f"image and mask affines differ as ITK reads them (3D Slicer, ITK-SNAP): their {forms} differ and ITK "
            f"places the mask ({', '.join(f'{v:.1f}' for v in shift)}) mm (LPS) from the image, although nibabel's "
            "affines agree; one form is stale: fix the mask's header")  # fmt: skip


def orientation_of(affine: np.ndarray) -> tuple[str, str, str]:
    """Axis codes of a file's voxel axes, e.g. ``("R", "A", "S")`` or ``("L", "P", "S")``."""
    return tuple(nio.aff2axcodes(affine))  # type: ignore[return-value]


def to_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a 3D array in a file's voxel order to the display convention (slices, rows, cols)."""
    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(DISPLAY_AXCODES))
    return np.ascontiguousarray(nio.apply_orientation(data, transform).transpose(2, 1, 0))


def from_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: a display-convention array back in the file's voxel order."""
    transform = nio.ornt_transform(nio.axcodes2ornt(DISPLAY_AXCODES), nio.io_orientation(affine))
    return np.ascontiguousarray(nio.apply_orientation(data.transpose(2, 1, 0), transform))


def display_spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm along the display axes (slice, row, col)."""
    zooms = nib.affines.voxel_sizes(img.affine)
    axes = nio.io_orientation(img.affine)[:, 0].astype(int)  # world axis of each voxel axis
    by_world = {int(w): float(z) for w, z in zip(axes, zooms)}
    # display axes: slice = world z, row = world y, col = world x
    return (by_world[2], by_world[1], by_world[0])
