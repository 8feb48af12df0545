"""Tests of the embedded synthetic LiTS data (liverlib.phantom)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from liverlib.io import CaseError, check_pair, find_cases, from_display, load_case
from liverlib.labels import LABELS
from liverlib.phantom import BURDENS, ORIENTATIONS, _file_array, generate_phantom, make_case, phantom_affine

LIVER, TUMOR = LABELS["liver"], LABELS["tumor"]
SMOKE = {"n_cases": 14, "size": 128, "n_slices": (24, 40), "seed": 42}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke phantom (14 cases, 128 px) on disk, its phantom.json and every loadable case."""
    out = tmp_path_factory.mktemp("phantom")
    paths = generate_phantom(out, **SMOKE, progress=False)
    meta = json.loads((out / "phantom.json").read_text())
    loaded = {}
    for cp in find_cases(out):
        try:
            loaded[cp.case_id] = load_case(cp.volume, cp.mask)
        except CaseError:
            pass
    return out, paths, meta, loaded


def _tiny(seed: int, **kw):
    return make_case(0, 64, 20, np.random.default_rng(seed), **kw)


def test_make_case_is_deterministic_by_seed():
    a, b, c = _tiny(1), _tiny(1), _tiny(2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_make_case_dtypes_shapes_and_spacing():
    image, mask, (t, s_row, s_col) = make_case(3, 96, 30, np.random.default_rng(0))
    assert image.dtype == np.int16 and mask.dtype == np.uint8
    assert image.shape == mask.shape == (30, 96, 96)
    assert set(np.unique(mask)) == {0, LIVER, TUMOR}
    assert 1.0 <= t <= 5.0 and s_row == s_col
    assert 0.6 * 512 / 96 <= s_row <= 0.9 * 512 / 96  # field of view scales with 512 / size


def test_make_case_rejects_bad_arguments():
    with pytest.raises(ValueError, match="outcome"):
        _tiny(0, outcome="eligable")
    with pytest.raises(ValueError, match="n_slices"):
        make_case(0, 64, 8, np.random.default_rng(0))


@pytest.mark.parametrize("codes", [*ORIENTATIONS, ("P", "I", "R")])
def test_phantom_affine_has_the_requested_axis_codes(codes):
    aff = phantom_affine(codes, (2.5, 0.7, 0.7), (40, 64, 64))
    assert nib.aff2axcodes(aff) == codes
    assert sorted(np.round(nib.affines.voxel_sizes(aff), 3)) == [0.7, 0.7, 2.5]
    data = np.arange(40 * 64 * 64, dtype=np.int16).reshape(40, 64, 64)
    assert np.array_equal(_file_array(data, aff), from_display(data, aff))  # the fast writer's voxel order


def test_smoke_files_intensities_and_labels(smoke):
    out, paths, meta, loaded = smoke
    assert [p.name for p in paths] == [f"volume-{i}.nii" for i in range(14)]
    assert meta["params"]["size"] == 128 and len(meta["cases"]) == 14
    for cid, case in loaded.items():
        image, mask = case.image, case.mask
        assert image.dtype == np.int16 and mask.dtype == np.uint8, cid
        assert set(np.unique(mask)) <= {0, LIVER, TUMOR}, cid
        assert abs(image[:, :6, :6].mean() + 1000) < 10, cid  # air in the anterior corners, outside the body
        liver_mean = image[mask == LIVER].mean()
        assert 80 <= liver_mean <= 140, (cid, liver_mean)
        if (mask == TUMOR).any():
            assert 20 <= liver_mean - image[mask == TUMOR].mean() <= 60, cid  # hypodense tumors


def test_phantom_json_matches_files_and_curation_outcomes(smoke):
    out, _, meta, loaded = smoke
    outcomes = {c["id"]: c["outcome"] for c in meta["cases"]}
    assert [outcomes[i] for i in (11, 12, 13)] == ["no_tumor", "few_tumor_slices", "shape_mismatch"]
    for c in meta["cases"]:
        if c["outcome"] == "shape_mismatch":
            assert check_pair(out / c["volume"], out / c["segmentation"]) is not None
            seg = np.asanyarray(nib.load(out / c["segmentation"]).dataobj)
            assert c["id"] not in loaded and seg.ndim == 3 and (seg == TUMOR).any()
            continue
        mask = loaded[c["id"]].mask
        tumor_slices = int((mask == TUMOR).any(axis=(1, 2)).sum())
        assert list(mask.shape) == c["shape"] == c["mask_shape"]
        assert (c["liver_voxels"], c["tumor_voxels"], c["tumor_slices"]) == (
            int((mask == LIVER).sum()),
            int((mask == TUMOR).sum()),
            tumor_slices,
        )
        expected = {"eligible": tumor_slices >= 5, "no_tumor": c["tumor_voxels"] == 0}
        expected["few_tumor_slices"] = 1 <= tumor_slices <= 4
        assert expected[c["outcome"]], c


def test_tumor_burden_strata_are_balanced_and_ordered(smoke):
    eligible = [c for c in smoke[2]["cases"] if c["outcome"] == "eligible"]
    by = {b: [c["tumor_voxels"] for c in eligible if c["tumor_burden"] == b] for b in BURDENS}
    assert sorted(len(v) for v in by.values()) == [3, 4, 4]
    assert max(by["small"]) < min(by["large"])
    assert np.median(by["small"]) < np.median(by["medium"]) < np.median(by["large"])


def test_orientations_on_disk_and_anatomy_after_loading(smoke):
    out, _, meta, loaded = smoke
    codes = {nib.aff2axcodes(nib.load(out / c["volume"]).affine) for c in meta["cases"]}
    assert set(ORIENTATIONS) <= codes
    for c in meta["cases"]:
        if c["outcome"] != "eligible":
            continue
        case = loaded[c["id"]]
        assert "".join(case.axcodes) == c["orientation"]
        np.testing.assert_allclose(case.spacing, c["spacing"], rtol=1e-5)
        _, rows, cols = np.nonzero(case.mask == LIVER)
        height, width = case.mask.shape[1:]
        assert cols.mean() < width / 2 and rows.mean() < height / 2, c["id"]  # patient's right, anterior


@pytest.mark.parametrize("case_id", [0, 1, 2])  # RAS, LPS, LAS
def test_loading_returns_the_arrays_make_case_built(smoke, case_id):
    c = smoke[2]["cases"][case_id]
    rng = np.random.default_rng([SMOKE["seed"], case_id])
    image, mask, spacing = make_case(case_id, 128, c["shape"][0], rng, burden=c["tumor_burden"])
    case = smoke[3][case_id]
    assert np.array_equal(case.image, image) and np.array_equal(case.mask, mask)
    assert list(spacing) == c["spacing"]


def test_rerun_is_idempotent_and_compression_switch_rewrites(tmp_path):
    kw = {"n_cases": 4, "size": 64, "n_slices": (16, 20), "seed": 7, "progress": False}
    first = generate_phantom(tmp_path, **kw)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert generate_phantom(tmp_path, **kw) == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    (tmp_path / "segmentation-0.nii").unlink()  # an incomplete folder is regenerated
    generate_phantom(tmp_path, **kw)
    assert (tmp_path / "segmentation-0.nii").is_file()

    gz = generate_phantom(tmp_path, **kw, compress=True)
    assert [p.name for p in gz] == [f"volume-{i}.nii.gz" for i in range(4)]
    assert not list(tmp_path.glob("*.nii"))  # the uncompressed files of the earlier run are gone
    cases = find_cases(tmp_path)
    assert len(cases) == 4 and all(cp.mask is not None for cp in cases)
    c = json.loads((tmp_path / "phantom.json").read_text())["cases"][2]
    loaded = load_case(cases[2].volume, cases[2].mask)
    built = make_case(2, 64, c["shape"][0], np.random.default_rng([7, 2]), outcome=c["outcome"])
    assert c["outcome"] == "few_tumor_slices" and c["tumor_slices"] == 3
    assert np.array_equal(loaded.image, built[0]) and np.array_equal(loaded.mask, built[1])
