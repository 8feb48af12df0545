"""Finding, reading and writing LiTS-style NIfTI cases (docs/study.md §1).

Every array liverlib hands out is in one *display convention*, whatever the file's orientation:
shape ``(slices, rows, cols)``, rows run anterior → posterior (anterior at the top), columns run
patient's right → patient's left (the patient's right on the image's left, as radiologists view
axial CT), slices run inferior → superior. In nibabel's axis codes the file is reoriented to
``("L", "P", "S")`` and transposed to ``(S, P, L)`` order. :func:`from_display` is the inverse and is
what :func:`save_mask_like` uses to write a mask back in a source file's own voxel order and affine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from liverlib.files import atomic_write
from liverlib.labels import LABELS

DISPLAY_AXCODES: tuple[str, str, str] = ("L", "P", "S")
"""Voxel axis codes (i, j, k) of the display convention before the (k, j, i) transpose."""

KAGGLE_ROOTS: tuple[str, ...] = ("/kaggle/input",)
"""Where Kaggle mounts attached datasets; searched when no data folder is given."""

_NAME = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


class CaseError(ValueError):
    """A NIfTI file or a volume/mask pair that cannot be used; the message names the file."""


@dataclass(frozen=True)
class CasePaths:
    """One LiTS case on disk: ``volume-N`` and (if present) ``segmentation-N``."""

    case_id: int
    volume: Path
    mask: Path | None


@dataclass
class Case:
    """A loaded case in the display convention (see module docstring).

    Attributes:
        case_id: LiTS number N of ``volume-N`` (-1 when the name has none).
        image: int16 Hounsfield units, shape (slices, rows, cols).
        mask: uint8 labels in {0, 1, 2} of the same shape, or None.
        spacing: voxel size in mm as (slice, row, col).
        affine: the source file's 4×4 affine (voxel order of the file, not of ``image``).
        source_shape: the source file's 3D shape.
        volume_path: path of the image file.
        notes: what was done to the geometry on reading that the user must be told (e.g. a resampled DICOM series).
    """

    case_id: int
    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    volume_path: Path
    mask_path: Path | None = None
    axcodes: tuple[str, str, str] = field(default=("R", "A", "S"))
    notes: list[str] = field(default_factory=list)


def case_id_of(path: str | Path) -> int:
    """The N of ``volume-N.nii[.gz]`` / ``segmentation-N.nii[.gz]``, or -1 for other names."""
    m = _NAME.match(Path(path).name)
    return int(m.group(2)) if m else -1


def find_kaggle_root() -> Path | None:
    """The Kaggle input mount if it exists and holds LiTS files, else None."""
    for root in KAGGLE_ROOTS:
        p = Path(root)
        if p.is_dir() and any(_NAME.match(f.name) for f in p.rglob("*.nii*")):
            return p
    return None


def find_cases(data_dir: str | Path | None = None) -> list[CasePaths]:
    """Pair every ``volume-N`` with its ``segmentation-N`` under ``data_dir`` (recursively).

    Works for a flat folder and for the Kaggle layout (``volume_pt1`` … ``volume_pt8`` plus
    ``segmentations/``, possibly under several dataset roots). ``.nii`` and ``.nii.gz`` both count.
    With ``data_dir=None`` the Kaggle mount (``/kaggle/input``) is searched if it exists.

    Returns:
        Cases sorted by N; ``mask`` is None for a volume without a segmentation file.

    Raises:
        CaseError: the folder does not exist, holds no volumes, or holds one N twice.
    """
    if data_dir is None:
        root = find_kaggle_root()
        if root is None:
            raise CaseError(
                "no data folder given and no Kaggle LiTS mount found under "
                f"{', '.join(KAGGLE_ROOTS)}; pass a folder holding volume-N.nii[.gz] files"
            )
    else:
        root = Path(data_dir).expanduser()
        if root.is_file():
            raise CaseError(f"{root}: is a file; data_dir must be a folder holding volume-N.nii[.gz] files")
        if not root.is_dir():
            raise CaseError(f"{root}: data folder does not exist")
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for f in sorted(root.rglob("*.nii*")):
        m = _NAME.match(f.name)
        if not m or not f.is_file():
            continue
        kind, n = m.group(1), int(m.group(2))
        if n in found[kind]:
            raise CaseError(f"{kind}-{n} found twice: {found[kind][n]} and {f}")
        found[kind][n] = f
    if not found["volume"]:
        raise CaseError(f"{root}: no volume-N.nii or volume-N.nii.gz files found (searched recursively)")
    return [CasePaths(n, v, found["segmentation"].get(n)) for n, v in sorted(found["volume"].items())]


def _open(path: Path) -> nib.Nifti1Image:
    if not Path(path).is_file():
        raise CaseError(f"{path}: file does not exist")
    raw = raw_header(path)
    if raw is not None:  # before nib.load, which would "fix" a zero or negative pixdim silently
        check_geometry(raw, path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for corrupt headers
        raise CaseError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CaseError(f"{path}: not a NIfTI image ({type(img).__name__})")
    _check_declared_size(img, path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise CaseError(f"{path}: expected a 3D volume, got shape {tuple(shape)}")
    return img


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


DEFLATE_MAX_RATIO = 1032
"""Deflate's largest compression ratio (≈1032:1, zlib tech notes): no gzip file expands beyond it."""


def _check_declared_size(img: nib.Nifti1Image, path: Path) -> None:
    """Refuse a header that declares more voxel bytes than the file can hold, before anything is allocated.

    Uncompressed ``.nii``: ``vox_offset + n_voxels × itemsize`` must fit in the file (exact). ``.nii.gz``: the
    uncompressed size is not known without reading, and the gzip trailer's ISIZE (size mod 2³²) covers only the
    last member of a multi-member file, so the bound used is deflate's: the declared bytes must not exceed
    ``DEFLATE_MAX_RATIO ×`` the file size (sound for every gzip file; a truncated but plausible ``.nii.gz`` is
    still caught when its voxels are read). Other suffixes are not checked.
    """
    hdr = img.header
    declared = int(np.prod(hdr.get_data_shape(), dtype=np.int64)) * hdr.get_data_dtype().itemsize
    size = Path(path).stat().st_size
    name = Path(path).name.lower()
    if name.endswith(".nii"):
        fits, holds = int(hdr.get_data_offset()) + declared <= size, f"the file has {size} bytes"
    elif name.endswith(".gz"):
        fits, holds = declared <= DEFLATE_MAX_RATIO * size, f"a {size}-byte gzip file expands to at most "
        holds += f"{DEFLATE_MAX_RATIO * size} bytes"
    else:
        return
    if not fits:
        dims = "x".join(str(int(d)) for d in hdr.get_data_shape())
        raise CaseError(
            f"{path}: header declares {dims} {hdr.get_data_dtype()} voxels ({declared} bytes) but {holds}; "
            "file corrupt or truncated"
        )


def _read(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated files: EOFError, ValueError (mmap), zlib.error, OSError
        raise CaseError(
            f"{path}: voxel data cannot be read, file corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    return np.asarray(data)


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


def to_int16(data: np.ndarray, path: Path, what: str = "image") -> np.ndarray:
    """HU voxels as int16: floats rounded, everything clipped to the int16 range (NIfTI and DICOM alike).

    Raises:
        CaseError: ``"{path}: {what} holds NaN or infinite voxels"``.
    """
    if data.dtype == np.int16:
        return data
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise CaseError(f"{path}: {what} holds NaN or infinite voxels")
        data = np.rint(data)
    info = np.iinfo(np.int16)
    return np.clip(data, info.min, info.max).astype(np.int16)


def _to_labels(data: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise CaseError(f"{path}: mask holds NaN or infinite voxels")
        if not np.array_equal(data, np.rint(data)):
            raise CaseError(f"{path}: mask holds non-integer labels; expected {sorted(LABELS.values())}")
    if data.size and (data.min() < 0 or data.max() > max(LABELS.values())):
        bad = np.unique(data[(data < 0) | (data > max(LABELS.values()))])[:5]
        raise CaseError(
            f"{path}: labels outside {{0, 1, 2}} (found {bad.tolist()}); LiTS masks hold 0 background, 1 liver, 2 tumor"
        )
    return data.astype(np.uint8)


def check_pair(volume_path: Path, mask_path: Path) -> str | None:
    """Why a volume and its mask do not align (shape or affine differ), or None if they do.

    Reads headers only. Used by curation (docs/study.md §1 rule 3) to reject a pair instead of stopping.
    """
    vi, mi = _open(volume_path), _open(mask_path)
    if vi.shape != mi.shape:
        return f"image shape {vi.shape} != mask shape {mi.shape}"
    return pair_geometry_problem(Path(volume_path), vi, Path(mask_path), mi)


def check_image(path: str | Path) -> None:
    """Read a CT file's voxels to the end and check them; curation uses it so that 02 never meets a bad image.

    An uncompressed integer ``.nii`` is memory-mapped and its size checked against the header (see
    :func:`_check_declared_size`); compressed or float files are read in full and must be finite.

    Raises:
        CaseError: unreadable, corrupt or truncated file, not 3D, NaN/inf voxels (names the file).
    """
    path = Path(path)
    data = _read(_open(path), path)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise CaseError(f"{path}: image holds NaN or infinite voxels")


def load_case(volume_path: str | Path, mask_path: str | Path | None = None, *, read_image: bool = True) -> Case:
    """Read a CT volume (and its mask) into the display convention.

    Args:
        volume_path: ``volume-N.nii[.gz]`` or any 3D NIfTI CT in Hounsfield units.
        mask_path: the matching label file (0 background, 1 liver, 2 tumor), or None.
        read_image: False to read only the header of the image (``image`` is then an empty array);
            curation uses it to scan masks cheaply.

    Returns:
        A :class:`Case`; image int16 (slices, rows, cols), mask uint8 or None.

    Raises:
        CaseError: unreadable, corrupt or truncated file, not 3D, NaN/inf voxels, labels outside
            {0,1,2}, or image and mask of different shape or affine. The message names the file.
    """
    volume_path = Path(volume_path)
    img = _open(volume_path)
    image = (
        to_display(to_int16(_read(img, volume_path), volume_path), img.affine)
        if read_image
        else np.empty((0, 0, 0), np.int16)
    )
    mask = None
    if mask_path is not None:
        mask_path = Path(mask_path)
        mimg = _open(mask_path)
        if mimg.shape != img.shape:
            raise CaseError(
                f"{mask_path}: mask shape {mimg.shape} differs from image shape {img.shape} of {volume_path}"
            )
        problem = pair_geometry_problem(volume_path, img, mask_path, mimg)
        if problem:
            raise CaseError(f"{mask_path}: does not overlay {volume_path}: {problem}")
        mask = to_display(_to_labels(_read(mimg, mask_path), mask_path), img.affine)
    return Case(
        case_id=case_id_of(volume_path),
        image=image,
        mask=mask,
        spacing=display_spacing(img),
        affine=np.asarray(img.affine, dtype=np.float64),
        source_shape=tuple(int(s) for s in img.shape),  # type: ignore[arg-type]
        volume_path=volume_path,
        mask_path=Path(mask_path) if mask_path is not None else None,
        axcodes=orientation_of(img.affine),
    )


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, header: nib.Nifti1Header | None = None) -> Path:
    """Write a NIfTI file atomically (temp file, then rename): a crash never leaves half a file."""
    out = nib.Nifti1Image(data, affine, header=header)
    if header is not None:
        out.set_data_dtype(data.dtype)
        out.header.set_slope_inter(1.0, 0.0)
    with atomic_write(path) as tmp:
        nib.save(out, str(tmp))
    return Path(path)


def save_mask_like(mask: np.ndarray, reference: str | Path | Case, path: str | Path) -> Path:
    """Write a display-convention uint8 label array in a reference file's own orientation and affine.

    The written file has the reference's shape, affine and voxel sizes, so it overlays the reference
    voxel for voxel in 3D Slicer or ITK-SNAP.

    Args:
        mask: uint8 labels, shape (slices, rows, cols) in the display convention.
        reference: the source CT (path or loaded :class:`Case`).
        path: output ``.nii`` or ``.nii.gz``.
    """
    ref_path = reference.volume_path if isinstance(reference, Case) else Path(reference)
    ref = _open(ref_path)
    data = from_display(np.asarray(mask, dtype=np.uint8), ref.affine)
    if data.shape != ref.shape:
        raise CaseError(f"mask of shape {mask.shape} does not fit {ref_path} of shape {ref.shape}")
    header = ref.header.copy()
    return save_nifti(data, ref.affine, path, header=header)
