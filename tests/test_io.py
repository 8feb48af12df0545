"""Tests of liverlib.data.nifti: discovery, loading in the display convention, the inverse, atomic writes, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ORIENTED, WORLD_SPACING, file_order, hand_affine, tiny_pair, write_nifti

import liverlib.data.nifti as lio
from liverlib import files
from liverlib.data import geometry
from liverlib.data.geometry import from_display, to_display
from liverlib.data.nifti import check_pair, find_cases, load_case, save_mask_like
from liverlib.errors import CaseError
from liverlib.labels import LABELS

# --- orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codes", ORIENTED)
def test_every_orientation_loads_to_the_same_display_arrays(oriented_dir, anatomy, codes):
    image, mask = anatomy
    vol, seg = oriented_dir[codes]
    assert "".join(nib.aff2axcodes(nib.load(vol).affine)) == codes  # the file really is stored that way
    case = load_case(vol, seg)
    assert case.image.dtype == np.int16 and case.mask.dtype == np.uint8
    assert np.array_equal(case.image, image) and np.array_equal(case.mask, mask)
    assert case.axcodes == tuple(codes) and case.source_shape == nib.load(vol).shape
    np.testing.assert_allclose(case.spacing, (WORLD_SPACING["z"], WORLD_SPACING["y"], WORLD_SPACING["x"]), rtol=1e-6)
    np.testing.assert_allclose(case.affine, hand_affine(codes))


def test_orientations_differ_on_disk(oriented_dir):
    """Guard against a vacuous fixture: the files hold different voxel orders."""
    arrays = [np.asanyarray(nib.load(oriented_dir[c][0]).dataobj) for c in ("RAS", "LPS", "LAS")]
    assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
    assert np.asanyarray(nib.load(oriented_dir["SRA"][0]).dataobj).shape[0] == 12  # slices on the first axis


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "ASL"])
def test_marker_at_right_anterior_superior_lands_left_top_last(tmp_path, codes):
    """A marker at the patient's right/anterior/superior corner ends up image left, top, last slice."""
    ras = np.zeros((10, 8, 6), np.int16)  # RAS voxel order: i → right, j → anterior, k → superior
    ras[-2:, -2:, -2:] = 1000  # patient's right, anterior, superior corner
    ras[0, 0, 0] = -500  # left, posterior, inferior corner
    # the same world content in another voxel order: permute/flip RAS axes by hand
    letters = {"R": (0, False), "L": (0, True), "A": (1, False), "P": (1, True), "S": (2, False), "I": (2, True)}
    data = ras.transpose([letters[c][0] for c in codes])
    data = data[tuple(slice(None, None, -1) if letters[c][1] else slice(None) for c in codes)]
    vol = write_nifti(tmp_path / "volume-1.nii", np.ascontiguousarray(data), hand_affine(codes))
    img = load_case(vol).image
    assert img.shape == (6, 8, 10)  # (slices = k, rows = j, cols = i)
    s, r, c = np.nonzero(img == 1000)
    assert set(s) == {4, 5} and set(r) == {0, 1} and set(c) == {0, 1}  # last slices, top rows, left cols
    assert img[0, -1, -1] == -500  # inferior slice, bottom row (posterior), right col (patient's left)


def test_spacing_follows_the_display_axes(tmp_path):
    aff = hand_affine("SRA")  # voxel axes: z, x, y
    vol = write_nifti(tmp_path / "volume-1.nii.gz", np.zeros((5, 6, 7), np.int16), aff)
    case = load_case(vol)
    assert case.image.shape == (5, 7, 6)  # (z, y, x)
    np.testing.assert_allclose(case.spacing, (2.5, 0.8, 0.7), rtol=1e-6)


def test_slightly_oblique_affine_uses_the_closest_axes(oriented_dir, anatomy, tmp_path):
    image, _ = anatomy
    aff = hand_affine("LPS")
    t = np.deg2rad(4)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff[:3, :3] = rot @ aff[:3, :3]
    vol = write_nifti(tmp_path / "volume-1.nii", file_order(image, "LPS"), aff)
    assert np.array_equal(load_case(vol).image, image)


@pytest.mark.parametrize("codes", ORIENTED)
def test_from_display_inverts_to_display(codes):
    aff = hand_affine(codes)
    display = np.arange(12 * 20 * 24, dtype=np.int32).reshape(12, 20, 24)
    x = file_order(display, codes)
    assert np.array_equal(to_display(x, aff), display)
    assert np.array_equal(from_display(display, aff), x)
    assert np.array_equal(from_display(to_display(x, aff), aff), x)
    assert to_display(x, aff).flags["C_CONTIGUOUS"] and from_display(display, aff).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("codes", ["LPS", "SRA"])
def test_save_mask_like_overlays_the_reference(oriented_dir, anatomy, tmp_path, ext, codes):
    _, mask = anatomy
    vol, _ = oriented_dir[codes]
    ref = nib.load(vol)
    out_dir = tmp_path / "pred"
    pred = np.zeros_like(mask)
    pred[mask == LABELS["tumor"]] = LABELS["tumor"]
    pred[0, 0, 0] = LABELS["liver"]  # an asymmetric voxel: inferior, anterior, patient's right
    path = save_mask_like(pred, vol, out_dir / f"segmentation-0{ext}")
    assert sorted(os.listdir(out_dir)) == [f"segmentation-0{ext}"]  # no temp file left
    out = nib.load(path)
    assert out.shape == ref.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), ref.header.get_zooms(), rtol=1e-6)
    data = np.asanyarray(out.dataobj)
    assert np.array_equal(data, from_display(pred, ref.affine))
    assert np.array_equal(data, file_order(pred, codes))  # the hand-built voxel order of that file
    # reading it back beside its reference gives the display array written
    assert np.array_equal(load_case(vol, path).mask, pred)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (ext == ".nii.gz")  # gzip magic only for .nii.gz


def test_save_mask_like_accepts_a_case_and_rejects_a_wrong_shape(oriented_dir, anatomy, tmp_path):
    _, mask = anatomy
    case = load_case(*oriented_dir["LAS"])
    path = save_mask_like(mask, case, tmp_path / "m.nii.gz")
    assert np.array_equal(load_case(case.volume_path, path).mask, mask)
    with pytest.raises(CaseError, match="does not fit"):
        save_mask_like(mask[:-1], case, tmp_path / "bad.nii")
    assert sorted(os.listdir(tmp_path)) == ["m.nii.gz"]


def test_save_mask_like_resets_the_reference_scaling(tmp_path, anatomy):
    """A reference stored with scl_slope/inter (HU = 2·v − 1024) must not rescale the labels written."""
    image, mask = anatomy
    aff = hand_affine("LPS")
    img = nib.Nifti1Image(file_order(image, "LPS"), aff)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "volume-5.nii"))
    path = save_mask_like(mask, tmp_path / "volume-5.nii", tmp_path / "out" / "seg.nii")
    assert np.array_equal(np.asanyarray(nib.load(path).dataobj), file_order(mask, "LPS"))
    assert np.array_equal(load_case(tmp_path / "volume-5.nii", path).mask, mask)


def test_save_nifti_replaces_atomically(tmp_path):
    p = tmp_path / "x.nii.gz"
    lio.save_nifti(np.zeros((2, 3, 4), np.uint8), np.eye(4), p)
    lio.save_nifti(np.ones((2, 3, 4), np.uint8), np.eye(4), p)
    assert np.asanyarray(nib.load(p).dataobj).min() == 1
    assert os.listdir(tmp_path) == ["x.nii.gz"]


# --- discovery -----------------------------------------------------------------------------------


def test_find_cases_flat_folder(flat_dir):
    cases = find_cases(flat_dir)
    assert [c.case_id for c in cases] == [2, 3, 7, 10]  # sorted by N, numerically
    by = {c.case_id: c for c in cases}
    assert by[10].volume.name == "volume-10.nii.gz" and by[10].mask.name == "segmentation-10.nii.gz"
    assert by[3].mask == flat_dir / "segmentation-3.nii"
    assert by[7].mask is None


def test_find_cases_kaggle_layout_two_roots(kaggle_root):
    cases = find_cases(kaggle_root)
    assert [c.case_id for c in cases] == [0, 1, 12, 51, 60]
    for c in cases:
        assert c.mask is not None and c.mask.parent.name == "segmentations"
        assert c.mask.name.startswith(f"segmentation-{c.case_id}.nii")
    by = {c.case_id: c for c in cases}
    assert by[51].volume.parent.name == "volume_pt6" and by[1].volume.name.endswith(".nii.gz")
    case = load_case(by[60].volume, by[60].mask)  # pairs across dataset roots load together
    assert case.case_id == 60 and case.mask.shape == case.image.shape


def test_find_cases_duplicate_n_names_both_files(tmp_path):
    tiny_pair(tmp_path / "volume_pt1", 4, mask_dir=tmp_path / "segmentations")
    write_nifti(tmp_path / "volume_pt2" / "volume-4.nii.gz", np.zeros((6, 5, 4), np.int16))
    with pytest.raises(CaseError, match="volume-4 found twice") as exc:
        find_cases(tmp_path)
    msg = str(exc.value)
    assert (
        str(tmp_path / "volume_pt1" / "volume-4.nii") in msg and str(tmp_path / "volume_pt2" / "volume-4.nii.gz") in msg
    )
    (tmp_path / "volume_pt2" / "volume-4.nii.gz").unlink()
    write_nifti(tmp_path / "other" / "segmentation-4.nii", np.zeros((6, 5, 4), np.uint8))
    with pytest.raises(CaseError, match="segmentation-4 found twice"):
        find_cases(tmp_path)


def test_find_cases_empty_or_missing_folder(tmp_path):
    with pytest.raises(CaseError, match="does not exist") as exc:
        find_cases(tmp_path / "nope")
    assert "nope" in str(exc.value)
    (tmp_path / "empty").mkdir()
    write_nifti(tmp_path / "empty" / "segmentation-1.nii", np.zeros((2, 2, 2), np.uint8))  # masks only
    with pytest.raises(CaseError, match="no volume-N") as exc:
        find_cases(tmp_path / "empty")
    assert "empty" in str(exc.value)


def test_find_cases_without_folder_and_without_kaggle_mount(tmp_path, monkeypatch):
    monkeypatch.setattr(lio, "KAGGLE_ROOTS", (str(tmp_path / "kaggle" / "input"),))
    with pytest.raises(CaseError, match="no data folder given") as exc:
        find_cases(None)
    assert "kaggle" in str(exc.value)
    (tmp_path / "kaggle" / "input").mkdir(parents=True)  # mounted but without LiTS files
    with pytest.raises(CaseError, match="no data folder given"):
        find_cases(None)


def test_find_cases_auto_discovers_the_kaggle_mount(kaggle_root, monkeypatch, tmp_path):
    monkeypatch.setattr(lio, "KAGGLE_ROOTS", (str(tmp_path / "absent"), str(kaggle_root)))
    assert lio.find_kaggle_root() == kaggle_root
    assert [c.case_id for c in find_cases(None)] == [0, 1, 12, 51, 60]


# --- bad input -----------------------------------------------------------------------------------


def _half(src, dst):
    blob = src.read_bytes()
    dst.write_bytes(blob[: len(blob) // 2])
    return dst


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_corrupt_file_is_named(tmp_path, ext):
    bad = tmp_path / f"volume-1{ext}"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(CaseError, match="not a readable NIfTI") as exc:
        load_case(bad)
    assert str(bad) in str(exc.value)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_truncated_file_is_named(tmp_path, anatomy, ext):
    image, mask = anatomy
    good = write_nifti(tmp_path / f"good{ext}", image)
    cut = _half(good, tmp_path / f"volume-1{ext}")
    with pytest.raises(CaseError, match="corrupt or truncated") as exc:
        load_case(cut)
    assert str(cut) in str(exc.value)
    seg = _half(write_nifti(tmp_path / f"seg{ext}", mask), tmp_path / f"segmentation-1{ext}")
    with pytest.raises(CaseError, match="truncated") as exc:
        load_case(good, seg)
    assert str(seg) in str(exc.value)


def test_header_only_stub_is_named(tmp_path, anatomy):
    stub = tmp_path / "volume-1.nii"
    stub.write_bytes(write_nifti(tmp_path / "good.nii", anatomy[0]).read_bytes()[:200])
    with pytest.raises(CaseError) as exc:
        load_case(stub)
    assert str(stub) in str(exc.value)


def test_4d_volume_is_rejected_but_a_singleton_4th_axis_is_fine(tmp_path):
    four = write_nifti(tmp_path / "volume-1.nii", np.zeros((4, 5, 6, 2), np.int16))
    with pytest.raises(CaseError, match="expected a 3D volume") as exc:
        load_case(four)
    assert str(four) in str(exc.value) and "(4, 5, 6, 2)" in str(exc.value)
    single = write_nifti(tmp_path / "volume-2.nii", np.arange(120, dtype=np.int16).reshape(4, 5, 6, 1))
    assert load_case(single).image.shape == (6, 5, 4)
    with pytest.raises(CaseError, match="3D"):
        load_case(write_nifti(tmp_path / "volume-3.nii", np.zeros((4, 5), np.int16)))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CaseError, match="does not exist") as exc:
        load_case(tmp_path / "volume-9.nii")
    assert "volume-9.nii" in str(exc.value)


def test_shape_mismatch_load_raises_check_pair_explains(tmp_path):
    vol = write_nifti(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16))
    seg = write_nifti(tmp_path / "segmentation-1.nii", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(CaseError, match="shape") as exc:
        load_case(vol, seg)
    assert str(seg) in str(exc.value) and str(vol) in str(exc.value)
    assert "shape" in check_pair(vol, seg)


def test_affine_mismatch_load_raises_check_pair_explains(tmp_path):
    vol = write_nifti(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16), hand_affine("LPS"))
    seg = write_nifti(tmp_path / "segmentation-1.nii", np.zeros((6, 5, 4), np.uint8), hand_affine("RAS"))
    with pytest.raises(CaseError, match="affine") as exc:
        load_case(vol, seg)
    assert str(seg) in str(exc.value)
    assert "affine" in check_pair(vol, seg)
    ok = write_nifti(tmp_path / "segmentation-2.nii", np.zeros((6, 5, 4), np.uint8), hand_affine("LPS"))
    assert check_pair(vol, ok) is None


@pytest.mark.parametrize("bad", [3, -1, 255])
def test_labels_outside_0_1_2_are_named(tmp_path, bad):
    vol = write_nifti(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16))
    m = np.zeros((6, 5, 4), np.int16 if bad < 0 else np.uint8)
    m[1, 2, 3] = bad
    seg = write_nifti(tmp_path / "segmentation-1.nii", m)
    with pytest.raises(CaseError, match="labels outside") as exc:
        load_case(vol, seg)
    assert str(seg) in str(exc.value) and str(bad) in str(exc.value)


def test_float_masks(tmp_path):
    vol = write_nifti(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16))
    m = np.zeros((6, 5, 4), np.float32)
    m[0, 0, 0], m[1, 1, 1] = 2.0, 1.0
    assert load_case(vol, write_nifti(tmp_path / "segmentation-1.nii", m)).mask.max() == 2
    m[2, 2, 2] = 0.5
    with pytest.raises(CaseError, match="non-integer"):
        load_case(vol, write_nifti(tmp_path / "segmentation-2.nii", m))
    m[2, 2, 2] = np.nan
    with pytest.raises(CaseError, match="NaN"):
        load_case(vol, write_nifti(tmp_path / "segmentation-3.nii", m))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_a_float_image_is_named(tmp_path, value):
    x = np.zeros((6, 5, 4), np.float32)
    x[2, 2, 2] = value
    vol = write_nifti(tmp_path / "volume-1.nii.gz", x)
    with pytest.raises(CaseError, match="NaN or infinite") as exc:
        load_case(vol)
    assert str(vol) in str(exc.value)


def test_float_image_is_rounded_and_clipped_to_int16(tmp_path):
    x = np.array([-1024.4, 39.6, 1e6, -1e6], np.float32).reshape(1, 1, 4)
    case = load_case(write_nifti(tmp_path / "volume-1.nii", x))
    assert case.image.dtype == np.int16
    assert sorted(case.image.ravel().tolist()) == [-32768, -1024, 40, 32767]


def test_header_only_read_keeps_the_mask(oriented_dir, anatomy):
    case = load_case(*oriented_dir["LAS"], read_image=False)
    assert case.image.size == 0 and np.array_equal(case.mask, anatomy[1])


# --- fault hygiene (issue 9, item 9) ---------------------------------------------------------------


def _huge_header(path, n: int = 1024):
    """A NIfTI header declaring n³ int16 voxels, followed by a few bytes: the 1.3 KB file of issue 9."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((n, n, n))
    hdr.set_data_dtype(np.int16)
    hdr["vox_offset"] = 352
    blob = hdr.binaryblock + b"\0" * 4 + b"\1" * 1000
    if path.name.endswith(".gz"):
        import gzip

        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


@pytest.mark.reliability("one line: 'PATH: header declares 1024x1024x1024 int16 voxels ...' before any allocation",
                         None, "nothing read, nothing written")  # fmt: skip
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_a_header_declaring_more_voxels_than_the_file_holds_is_refused_before_reading(tmp_path, ext, monkeypatch):
    bad = _huge_header(tmp_path / f"volume-1{ext}")
    assert bad.stat().st_size < 2000

    def no_read(*a, **k):
        raise AssertionError("voxel data was read")

    monkeypatch.setattr(lio, "_read", no_read)
    for call in (lambda: load_case(bad), lambda: load_case(bad, bad), lambda: check_pair(bad, bad)):
        with pytest.raises(CaseError, match="header declares") as exc:
            call()
        assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_the_size_check_passes_every_complete_file(tmp_path, anatomy, ext):
    zeros = write_nifti(tmp_path / f"volume-1{ext}", np.zeros((64, 64, 64), np.int16))  # gzip's best ratio
    assert load_case(zeros).image.shape == (64, 64, 64)
    assert load_case(write_nifti(tmp_path / f"volume-2{ext}", anatomy[0])).image.shape == anatomy[0].shape[::-1]


@pytest.mark.reliability("written files get the usual mode (0644 under umask 022), not 0600", None,
                         "an existing file's own mode")  # fmt: skip
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_write_respects_the_umask_and_keeps_an_existing_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = tmp_path / "x.csv"
        with files.atomic_write(p) as tmp:
            tmp.write_text("a")
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask
        lio.save_nifti(np.zeros((2, 3, 4), np.uint8), np.eye(4), tmp_path / "m.nii.gz")
        assert (tmp_path / "m.nii.gz").stat().st_mode & 0o777 == 0o666 & ~mask
        p.chmod(0o640)
        with files.atomic_write(p) as tmp:
            tmp.write_text("b")
        assert p.stat().st_mode & 0o777 == 0o640 and p.read_text(encoding="utf-8") == "b"
        assert files.current_umask() == mask  # read without changing it
    finally:
        os.umask(old)


@pytest.mark.reliability("a killed writer's temp file '.last.*.pt' is removed by remove_stale_temps", None,
                         "every other file, including other targets' temp files")  # fmt: skip
def test_remove_stale_temps_removes_only_the_targets_temp_files(tmp_path):
    p = tmp_path / "last.pt"
    try:
        with files.atomic_write(p) as tmp:
            tmp.write_bytes(b"half")
            stale = tmp
            raise KeyboardInterrupt  # atomic_write removes its own temp on an exception...
    except KeyboardInterrupt:
        pass
    assert not stale.exists()
    import tempfile

    kept = [tmp_path / n for n in ("last.pt", ".best.abcd1234.pt", ".last.abcd1234.pt.bak", ".last.abc.pt",
                                   ".last.abcd1234.ckpt", "last.abcd1234.pt", ".lastx.abcd1234.pt")]  # fmt: skip
    for k in kept:
        k.write_bytes(b"x")
    # ...but a SIGKILL does not: temp files made exactly as atomic_write makes them stay behind
    made = [Path(tempfile.mkstemp(prefix=".last.", suffix=".pt", dir=tmp_path)[1]) for _ in range(2)]
    removed = files.remove_stale_temps(tmp_path, "last.pt")
    assert sorted(removed) == sorted(made) and all(k.exists() for k in kept)
    assert files.remove_stale_temps(tmp_path, "last.pt") == []
    assert files.remove_stale_temps(tmp_path / "absent", "last.pt") == []
    gz = Path(tempfile.mkstemp(prefix=".volume-3.", suffix=".nii.gz", dir=tmp_path)[1])
    assert files.remove_stale_temps(tmp_path, "volume-3.nii") == [] and gz.exists()
    assert files.remove_stale_temps(tmp_path, "volume-3.nii.gz") == [gz]


# --- geometry that is right or refused (issue 20, item 1) ------------------------------------------


def _patched(path: Path, data: np.ndarray, affine: np.ndarray, *, sform: int, qform: int, pixdim: dict | None = None,
             sform_matrix: np.ndarray | None = None) -> Path:  # fmt: skip
    """Write a NIfTI with the given form codes, then overwrite stored header fields as a damaged file holds them
    (nibabel would repair pixdim on save): ``pixdim`` {index: value}, ``sform_matrix`` the stored srow_x/y/z."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform)
    img.set_sform(affine, code=sform)
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    for i, v in (pixdim or {}).items():
        raw[76 + 4 * i : 80 + 4 * i] = np.float32(v).tobytes()
    if sform_matrix is not None:
        raw[280:328] = np.asarray(sform_matrix[:3], np.float32).tobytes()
    path.write_bytes(bytes(raw))
    return path


GEOMETRY = np.diag([0.8, 0.8, 3.0, 1.0])
"""0.8 × 0.8 × 3 mm voxels: a pixdim[3] set to 1 makes every volume in mL 3x too small (issue 20)."""


@pytest.mark.reliability("one line: 'PATH: voxel spacing pixdim[1:4] = (0.8, 0.8, 0) mm: pixdim[3] is not a positive "
                         "number ...' (also -3, nan); no nibabel 'setting 0 dims to 1'", None,
                         "nothing read, nothing written")  # fmt: skip
@pytest.mark.parametrize("value", [0.0, -3.0, float("nan")])
def test_zero_negative_or_nan_spacing_is_refused_naming_the_file(tmp_path, value, capfd):
    """pixdim[3] 0, -3 or NaN, qform only (0: nibabel took 1 mm, a third of the liver, exit 0; NaN: LinAlgError)."""
    vol = _patched(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16), GEOMETRY, sform=0, qform=1,
                   pixdim={3: value})  # fmt: skip
    seg = _patched(tmp_path / "segmentation-1.nii", np.zeros((6, 5, 4), np.uint8), GEOMETRY, sform=0, qform=1)
    for call in (lambda: load_case(vol), lambda: load_case(vol, seg), lambda: check_pair(vol, seg),
                 lambda: lio.check_image(vol), lambda: save_mask_like(np.zeros((4, 5, 6), np.uint8), vol,
                                                                      tmp_path / "m.nii.gz")):  # fmt: skip
        with pytest.raises(CaseError, match=r"pixdim\[3\] is not a positive number") as exc:
            call()
        assert str(exc.value).startswith(f"{vol}: voxel spacing") and "\n" not in str(exc.value)
    assert not (tmp_path / "m.nii.gz").exists()
    assert "setting 0 dims to 1" not in capfd.readouterr().err  # refused before nibabel repairs the header
    assert load_case(seg).spacing == pytest.approx((3.0, 0.8, 0.8))  # the same header, undamaged


@pytest.mark.reliability("one line: 'PATH: the sform (sform_code 1) gives voxel axis 3 zero length ...'", None,
                         "nothing read, nothing written")  # fmt: skip
@pytest.mark.parametrize("qform", [0, 1])
def test_a_zero_or_nan_sform_column_is_refused_naming_the_file(tmp_path, qform):
    """A zero or NaN sform column (was KeyError: 2; ITK refuses the file: no orthonormal definition)."""
    zero = GEOMETRY.copy()
    zero[:, 2] = 0.0
    vol = _patched(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16), GEOMETRY, sform=1, qform=qform,
                   sform_matrix=zero)  # fmt: skip
    with pytest.raises(CaseError, match=r"the sform \(sform_code 1\) gives voxel axis 3 zero length") as exc:
        load_case(vol)
    assert str(exc.value).startswith(str(vol)) and "\n" not in str(exc.value)
    nan = GEOMETRY.copy()
    nan[0, 3] = np.nan
    vol = _patched(tmp_path / "volume-2.nii", np.zeros((6, 5, 4), np.int16), GEOMETRY, sform=2, qform=qform,
                   sform_matrix=nan)  # fmt: skip
    with pytest.raises(CaseError, match="holds NaN or infinite values"):
        load_case(vol)
    # an unused sform (code 0) is not judged: nibabel and ITK both take the qform
    ok = _patched(tmp_path / "volume-3.nii", np.zeros((6, 5, 4), np.int16), GEOMETRY, sform=0, qform=1,
                  sform_matrix=zero)  # fmt: skip
    assert load_case(ok).spacing == pytest.approx((3.0, 0.8, 0.8))


@pytest.mark.reliability("'image and mask affines differ as ITK reads them (3D Slicer, ITK-SNAP): their qforms "
                         "differ and ITK places the mask (-40.0, 25.0, 60.0) mm (LPS) from the image ...'", None,
                         "curation rejects the pair with that reason; load_case names both files")  # fmt: skip
def test_an_image_and_mask_whose_qform_alone_differs_are_refused(tmp_path):
    """Image and mask whose qforms alone differ by 40/-25/60 mm (sform_code 2: nibabel aligned, ITK apart; scored).

    nibabel takes the sform, ITK (so 3D Slicer and ITK-SNAP) the qform."""
    import SimpleITK as sitk

    shifted = GEOMETRY.copy()
    shifted[:3, 3] = [40.0, -25.0, 60.0]
    vol = _patched(tmp_path / "volume-1.nii", np.zeros((6, 5, 4), np.int16), GEOMETRY, sform=2, qform=1)
    seg = tmp_path / "segmentation-1.nii"
    img = nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), GEOMETRY)
    img.set_qform(shifted, code=1)
    img.set_sform(GEOMETRY, code=2)
    nib.save(img, str(seg))
    assert np.allclose(nib.load(vol).affine, nib.load(seg).affine)  # nibabel: aligned
    assert sitk.ReadImage(str(seg)).GetOrigin() != sitk.ReadImage(str(vol)).GetOrigin()  # ITK: 79 mm apart
    reason = check_pair(vol, seg)
    assert reason.startswith("image and mask affines differ as ITK reads them") and "qforms differ" in reason
    assert "(-40.0, 25.0, 60.0) mm (LPS)" in reason
    with pytest.raises(CaseError, match="affines differ as ITK reads them") as exc:
        load_case(vol, seg)
    assert str(exc.value).startswith(f"{seg}: does not overlay {vol}") and "\n" not in str(exc.value)
    # the same pair with the qforms agreeing is aligned for both readers
    same = _patched(tmp_path / "segmentation-2.nii", np.zeros((6, 5, 4), np.uint8), GEOMETRY, sform=2, qform=1)
    assert check_pair(vol, same) is None and load_case(vol, same).mask is not None


@pytest.mark.parametrize(("scode", "qcode", "reader"), [(1, 1, "sform"), (2, 1, "qform"), (0, 1, "qform"),
                                                          (2, 0, "sform"), (4, 2, "qform")])  # fmt: skip
def test_itk_affine_is_the_form_itk_chooses(tmp_path, scode, qcode, reader):
    """The rule :func:`liverlib.data.geometry.itk_affine` reads from ITK itself (SimpleITK 2.5): the sform when sform_code is 1
    or the qform is unset, else the qform; nibabel's ``img.affine`` is the sform whenever sform_code > 0."""
    q = GEOMETRY.copy()
    q[:3, 3] = [5.0, 6.0, 7.0]
    path = tmp_path / "x.nii"
    img = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), GEOMETRY)
    img.set_qform(q, code=qcode)
    img.set_sform(GEOMETRY, code=scode)
    nib.save(img, str(path))
    assert np.allclose(geometry.itk_affine(path), q if reader == "qform" else GEOMETRY, atol=1e-4)


def test_the_shared_real_ct_and_its_labels_pass_every_geometry_check():
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"
    if not (real / "example_ct_sm.nii.gz").is_file():
        pytest.skip("shared real CT not found at ../shared/data/real-ct (beside the repository)")
    assert check_pair(real / "example_ct_sm.nii.gz", real / "example_seg.nii.gz") is None
    assert load_case(real / "example_ct_sm.nii.gz").spacing == pytest.approx((3.0, 3.0, 3.0))


@pytest.mark.reliability("one line: 'PATH: cannot be written (No space left on device); the earlier file is kept "
                         "unchanged; free disk space and rerun the same command' (permission: '... check the folder's "
                         "permissions')", 1, "the earlier file, unchanged; no temporary file")  # fmt: skip
@pytest.mark.parametrize("where", ["write", "rename", "permission"])
def test_a_failed_write_names_its_file_and_what_was_kept(tmp_path, monkeypatch, where):
    """A full disk or a refused write while writing or renaming (was '[Errno 28] No space left on device', no file)."""
    import errno

    from liverlib.errors import WriteError

    target = tmp_path / "sub" / "summary.json"
    files.write_json(target, {"a": 1})
    fault = OSError(errno.EACCES if where == "permission" else errno.ENOSPC,
                    os.strerror(errno.EACCES if where == "permission" else errno.ENOSPC))  # fmt: skip
    if where == "rename":
        monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(fault))
    else:
        monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(fault))
    with pytest.raises(WriteError) as caught:
        files.write_json(target, {"a": 2})
    monkeypatch.undo()
    said = str(caught.value)
    assert said.startswith(f"{target}: cannot be written (") and "\n" not in said
    assert ("Permission denied" in said and "permissions" in said) if where == "permission" else (
        "No space left on device" in said and "free disk space" in said)  # fmt: skip
    assert "the earlier file is kept unchanged" in said
    assert files.read_json(target) == {"a": 1} and [f.name for f in target.parent.iterdir()] == ["summary.json"]
    with pytest.raises(WriteError, match="nothing was written in its place"):
        monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(fault))
        files.write_text(tmp_path / "new.txt", "x")
    assert not (tmp_path / "new.txt").exists()


def test_atomic_group_renames_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    files.write_json(a, "old a")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_group():
            files.write_json(a, "new a")
            with files.atomic_group():  # joins the outer group
                files.write_json(b, "new b")
            assert files.read_json(a) == "old a" and not b.exists()
            raise KeyboardInterrupt
    assert files.read_json(a) == "old a" and sorted(f.name for f in tmp_path.iterdir()) == ["a.json"]
    with files.atomic_group():
        files.write_json(a, "new a")
        files.write_json(b, "new b")
    assert (files.read_json(a), files.read_json(b)) == ("new a", "new b")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.json", "b.json"]
