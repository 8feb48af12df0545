"""Shared fixtures: a tiny synthetic LiTS set in temporary folders (STYLE.md, Tests).

Everything here is session-scoped and small (at most 32×32×18 voxels a volume) so the suite stays fast
on two cores. The file writers are independent of :mod:`liverlib.data.nifti`: they build each file's voxel order
and affine by hand from the axis codes, so the loader is checked against an oracle, not against itself.

Display convention (liverlib.data.nifti): array (slices, rows, cols); slices inferior → superior, rows anterior →
posterior, cols patient's right → patient's left.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from liverlib.labels import LABELS

ANATOMY_SHAPE = (12, 20, 24)
"""Display shape (slices, rows, cols) of the orientation fixture: all different, so a transpose shows."""
WORLD_SPACING = {"x": 0.7, "y": 0.8, "z": 2.5}
"""mm along the patient's x (right-left), y (anterior-posterior), z (inferior-superior)."""
ORIENTED = ("RAS", "LPS", "LAS", "SRA", "PIL")
"""File voxel orders of the orientation fixture; the last two put the slices on the first / middle axis."""

# display axis, the code the display axis points to, the world axis name, per anatomical letter
_AXIS = {c: (d, pos, w) for d, (pos, neg, w) in enumerate((("S", "I", "z"), ("P", "A", "y"), ("L", "R", "x")))
         for c in (pos, neg)}  # fmt: skip
_WORLD_ROW = {"x": 0, "y": 1, "z": 2}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``reliability`` marker: docs/reliability.md is generated from the tests that carry it."""
    config.addinivalue_line(
        "markers", "reliability(seen, exit, kept): a bad input or fault the reliability table lists"
    )


def file_order(display: np.ndarray, codes: str) -> np.ndarray:
    """A display-convention array in the voxel order of a file with axis ``codes`` (oracle, by hand)."""
    order = [_AXIS[c][0] for c in codes]
    out = display.transpose(order)
    flips = tuple(slice(None, None, -1) if c != _AXIS[c][1] else slice(None) for c in codes)
    return np.ascontiguousarray(out[flips])


def hand_affine(codes: str, offset: tuple[float, float, float] = (12.0, -30.0, 250.0)) -> np.ndarray:
    """Axis-aligned affine whose voxel axes point along ``codes`` (nibabel RAS+ world), with WORLD_SPACING."""
    aff = np.eye(4)
    aff[:3, :3] = 0.0
    for i, c in enumerate(codes):
        w = _AXIS[c][2]
        aff[_WORLD_ROW[w], i] = (1.0 if c in "RAS" else -1.0) * WORLD_SPACING[w]
    aff[:3, 3] = offset
    return aff


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """nibabel save of ``data`` (file voxel order) with ``affine`` (default: 1 mm RAS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def tiny_pair(
    folder: Path, n: int, ext: str = ".nii", *, mask_dir: Path | None = None, shape=(6, 5, 4)
) -> tuple[Path, Path]:
    """Write ``volume-n`` (int16) and ``segmentation-n`` (uint8, liver + tumor) of a tiny shape."""
    image = np.full(shape, -100 + n, np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[1:3] = LABELS["liver"]
    mask[2, 1] = LABELS["tumor"]
    vol = write_nifti(folder / f"volume-{n}{ext}", image)
    seg = write_nifti((mask_dir or folder) / f"segmentation-{n}{ext}", mask)
    return vol, seg


@pytest.fixture(scope="session")
def anatomy() -> tuple[np.ndarray, np.ndarray]:
    """Display-convention (image int16, mask uint8) of ANATOMY_SHAPE: random HU, liver on the patient's right."""
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, ANATOMY_SHAPE).astype(np.int16)
    mask = np.zeros(ANATOMY_SHAPE, np.uint8)
    mask[2:10, 3:12, 2:10] = LABELS["liver"]  # anterior, patient's right (image left)
    mask[4:8, 5:8, 4:7] = LABELS["tumor"]
    return image, mask


@pytest.fixture(scope="session")
def oriented_dir(tmp_path_factory, anatomy) -> dict[str, tuple[Path, Path]]:
    """The same anatomy written in every ORIENTED voxel order (alternately .nii and .nii.gz)."""
    root = tmp_path_factory.mktemp("oriented")
    image, mask = anatomy
    out = {}
    for i, codes in enumerate(ORIENTED):
        ext = ".nii.gz" if i % 2 else ".nii"
        aff = hand_affine(codes)
        vol = write_nifti(root / codes / f"volume-{i}{ext}", file_order(image, codes), aff)
        seg = write_nifti(root / codes / f"segmentation-{i}{ext}", file_order(mask, codes), aff)
        out[codes] = (vol, seg)
    return out


PHANTOM = {"n_cases": 7, "size": 32, "n_slices": (16, 18), "seed": 3}
"""Cases 0–3 eligible (burdens small/large/medium/small), 4 no tumor, 5 tumor on 3 slices, 6 shape mismatch."""


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A tiny embedded-phantom LiTS folder (RAS/LPS/LAS by case id; see PHANTOM)."""
    from liverlib.data.phantom import generate_phantom

    out = tmp_path_factory.mktemp("phantom")
    generate_phantom(out, **PHANTOM, progress=False)
    return out


@pytest.fixture(scope="session")
def phantom_meta(phantom_dir) -> dict[int, dict]:
    """phantom.json cases by id."""
    return {c["id"]: c for c in json.loads((phantom_dir / "phantom.json").read_text(encoding="utf-8"))["cases"]}


@pytest.fixture(scope="session")
def phantom_scan(phantom_dir):
    """``scan_volumes`` of the phantom folder: (volumes, slices) DataFrames."""
    from liverlib.data.curation import scan_volumes
    from liverlib.data.nifti import find_cases

    return scan_volumes(find_cases(phantom_dir), progress=False)


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory, phantom_dir) -> Path:
    """Kaggle layout under two dataset roots: part 1 (volume_pt1, volume_pt2, segmentations/) and part 2
    (volume_pt6 only; its masks live in part 1's segmentations/), .nii and .nii.gz mixed."""
    root = tmp_path_factory.mktemp("kaggle")
    p1, p2 = root / "liver-tumor-segmentation", root / "liver-tumor-segmentation-part-2"
    segs = p1 / "segmentations"
    tiny_pair(p1 / "volume_pt1", 0, mask_dir=segs)
    tiny_pair(p1 / "volume_pt1", 1, ".nii.gz", mask_dir=segs)
    tiny_pair(p1 / "volume_pt2", 12, mask_dir=segs)
    tiny_pair(p2 / "volume_pt6", 51, ".nii.gz", mask_dir=segs)
    (p1 / "volume_pt2" / "notes.txt").write_text("not a volume")
    # a phantom case copied in, so a loaded case from this layout is a real one
    shutil.copy(phantom_dir / "volume-2.nii", p2 / "volume_pt6" / "volume-60.nii")
    shutil.copy(phantom_dir / "segmentation-2.nii", segs / "segmentation-60.nii")
    return root


@pytest.fixture(scope="session")
def flat_dir(tmp_path_factory) -> Path:
    """A flat LiTS folder: .nii and .nii.gz pairs, one volume without a mask, an unrelated NIfTI file."""
    root = tmp_path_factory.mktemp("flat")
    tiny_pair(root, 3)
    tiny_pair(root, 10, ".nii.gz")
    tiny_pair(root, 2)
    write_nifti(root / "volume-7.nii", np.zeros((6, 5, 4), np.int16))  # no segmentation-7
    write_nifti(root / "other.nii", np.zeros((6, 5, 4), np.int16))
    return root
