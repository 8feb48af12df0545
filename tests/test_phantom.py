"""Tests of the embedded synthetic LiTS data (liverlib.data.phantom)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from liverlib.data.geometry import from_display
from liverlib.data.nifti import check_pair, find_cases, load_case
from liverlib.data.phantom import BURDENS, ORIENTATIONS, file_array, generate_phantom, make_case, phantom_affine
from liverlib.errors import CaseError
from liverlib.labels import LABELS

LIVER, TUMOR = LABELS["liver"], LABELS["tumor"]
SMOKE = {"n_cases": 14, "size": 128, "n_slices": (24, 40), "seed": 42}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke phantom (14 cases, 128 px) on disk, its phantom.json and every loadable case."""
    out = tmp_path_factory.mktemp("phantom")
    paths = generate_phantom(out, **SMOKE, progress=False)
    meta = json.loads((out / "phantom.json").read_text(encoding="utf-8"))
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
    assert np.array_equal(file_array(data, aff), from_display(data, aff))  # the fast writer's voxel order


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
    c = json.loads((tmp_path / "phantom.json").read_text(encoding="utf-8"))["cases"][2]
    loaded = load_case(cases[2].volume, cases[2].mask)
    built = make_case(2, 64, c["shape"][0], np.random.default_rng([7, 2]), outcome=c["outcome"])
    assert c["outcome"] == "few_tumor_slices" and c["tumor_slices"] == 3
    assert np.array_equal(loaded.image, built[0]) and np.array_equal(loaded.mask, built[1])


# --- refactor guard (issue 11) and user data (issue 9, item 3) --------------------------------------

GOLDEN = {  # (case_id, size, n_slices, seed, outcome, burden) → sha256[:16] of the mask, Σ|HU| of the image
    (0, 64, 20, 0, "eligible", "large"): ("1d162b98360ce7a3", 52421580, (5.0, 6.3287, 6.3287)),
    (5, 40, 18, 9, "shape_mismatch", "medium"): ("86b53e69816e3969", 17485602, (5.0, 10.5235, 10.5235)),
}
"""Computed with make_case as one 163-line function (commit e1c8c6c), before it was split by anatomy."""


@pytest.mark.parametrize("key", list(GOLDEN))
def test_make_case_split_by_anatomy_builds_the_same_case(key):
    import hashlib

    cid, size, n, seed, outcome, burden = key
    image, mask, spacing = make_case(cid, size, n, np.random.default_rng([seed, cid]), outcome=outcome, burden=burden)
    mask_sha, abs_hu, golden_spacing = GOLDEN[key]
    assert hashlib.sha256(mask.tobytes()).hexdigest()[:16] == mask_sha and spacing == golden_spacing
    # the image to within a few voxels rounded the other way (float32 sums may differ in the last bit by BLAS)
    assert abs(int(np.abs(image.astype(np.int64)).sum()) - abs_hu) <= 20


KW = {"n_cases": 2, "size": 32, "n_slices": (16, 16), "seed": 1, "progress": False}


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.reliability("one line: 'DIR: holds volume-1.nii, which liverlib phantom did not write ...'", 2,
                         "every file in the folder, untouched; nothing written")  # fmt: skip
@pytest.mark.parametrize("foreign", ["volume-1.nii", "segmentation-0.nii.gz", "notes.txt", "phantom.json"])
def test_phantom_refuses_a_folder_holding_files_it_did_not_write(tmp_path, foreign):
    (tmp_path / foreign).write_bytes(b"the user's own data")
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError) as exc:
        generate_phantom(tmp_path, **KW)
    msg = str(exc.value)
    assert str(tmp_path) in msg and foreign in msg and "\n" not in msg
    assert _snapshot(tmp_path) == before


@pytest.mark.reliability("one line naming the changed file; a second phantom run never deletes or replaces it", 2,
                         "the changed file and every other file")  # fmt: skip
def test_a_second_run_never_replaces_or_deletes_a_file_changed_since_the_first(tmp_path):
    generate_phantom(tmp_path, **KW)
    (tmp_path / "volume-1.nii").write_bytes(b"someone else's scan")
    before = _snapshot(tmp_path)
    for kw in (KW, KW | {"compress": True}, KW | {"n_cases": 1}):  # same, other files, fewer cases
        with pytest.raises(FileExistsError, match="volume-1.nii") as exc:
            generate_phantom(tmp_path, **kw)
        assert str(tmp_path) in str(exc.value)
        assert _snapshot(tmp_path) == before


def test_an_older_phantom_json_without_checksums_is_reused_but_never_replaced(tmp_path):
    generate_phantom(tmp_path, **KW)
    meta = json.loads((tmp_path / "phantom.json").read_text(encoding="utf-8"))
    (tmp_path / "phantom.json").write_text(json.dumps({"params": meta["params"], "cases": meta["cases"]}))
    before = _snapshot(tmp_path)
    assert [p.name for p in generate_phantom(tmp_path, **KW)] == ["volume-0.nii", "volume-1.nii"]  # reused
    with pytest.raises(FileExistsError, match="checksum"):  # other parameters: it cannot tell them from yours
        generate_phantom(tmp_path, **KW | {"seed": 2})
    assert _snapshot(tmp_path) == before


def test_a_killed_run_is_completed_by_the_next_and_its_temp_files_removed(tmp_path, monkeypatch):
    import liverlib.data.phantom as ph

    real, calls = ph.save_nifti, []

    def dies_on_third(data, affine, path):
        calls.append(path)
        if len(calls) == 3:
            Path(path).with_name(f".{Path(path).name.split('.')[0]}.k1lled_x.nii").write_bytes(b"half")
            raise KeyboardInterrupt
        return real(data, affine, path)

    monkeypatch.setattr(ph, "save_nifti", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(tmp_path, **KW)
    monkeypatch.setattr(ph, "save_nifti", real)
    paths = generate_phantom(tmp_path, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["phantom.json", "volume-0.nii", "segmentation-0.nii", "volume-1.nii", "segmentation-1.nii"]
    )
    assert len(paths) == 2 and json.loads((tmp_path / "phantom.json").read_text(encoding="utf-8"))["complete"] is True


def test_phantom_json_records_each_files_size_and_sha256(tmp_path):
    import hashlib

    generate_phantom(tmp_path, **KW)
    files = json.loads((tmp_path / "phantom.json").read_text(encoding="utf-8"))["files"]
    assert sorted(files) == ["segmentation-0.nii", "segmentation-1.nii", "volume-0.nii", "volume-1.nii"]
    for name, rec in files.items():
        blob = (tmp_path / name).read_bytes()
        assert rec == {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


@pytest.mark.reliability("one line: 'liverlib phantom: error: ...' naming the bad value", 2, "nothing written")
@pytest.mark.parametrize(
    "args, word",
    [(["--min-slices", "4"], "slices"), (["--min-slices", "40", "--max-slices", "30"], "slices"),
     (["--cases", "0"], "cases"), (["--size", "8"], "size")],
)  # fmt: skip
def test_phantom_cli_bad_values_are_one_line_errors(tmp_path, capsys, args, word):
    from liverlib.pipeline.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("liverlib phantom: error:") and "\n" not in err and word in err
    assert not out.exists()


def test_phantom_cli_refuses_a_folder_of_user_files(tmp_path, capsys):
    from liverlib.pipeline.cli import main

    (tmp_path / "volume-3.nii").write_bytes(b"mine")
    assert main(["phantom", "--out", str(tmp_path), "--cases", "1", "--size", "32", "--min-slices", "16",
                 "--max-slices", "16"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "volume-3.nii" in err and str(tmp_path) in err and "\n" not in err
    assert (tmp_path / "volume-3.nii").read_bytes() == b"mine" and sorted(tmp_path.iterdir()) == [
        tmp_path / "volume-3.nii"
    ]
