"""Finding, reading and writing LiTS-style NIfTI cases (docs/study.md §1).

Every array liverlib hands out is in one *display convention*, whatever the file's orientation:
shape ``(slices, rows, cols)``, rows run anterior → posterior (anterior at the top), columns run
patient's right → patient's left (the patient's right on the image's left, as radiologists view
axial CT), slices run inferior → superior. In nibabel's axis codes the file is reoriented to
``("L", "P", "S")`` and transposed to ``(S, P, L)`` order (:mod:`liverlib.data.geometry`).
:func:`~liverlib.data.geometry.from_display` is the inverse and is what :func:`save_mask_like` uses to write a
mask back in a source file's own voxel order and affine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from liverlib.data.geometry import (
    check_geometry,
    display_spacing,
    from_display,
    orientation_of,
    pair_geometry_problem,
    raw_header,
    to_display,
)
from liverlib.errors import CaseError
from liverlib.files import atomic_write
from liverlib.labels import LABELS

KAGGLE_ROOTS: tuple[str, ...] = ("/kaggle/input",)
"""Where Kaggle mounts attached datasets; searched when no data folder is given."""

_NAME = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


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
