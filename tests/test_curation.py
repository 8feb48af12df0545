"""Tests of liverlib.data.curation (docs/study.md §1): eligibility, seeded selection, volume-level splits, manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PHANTOM, tiny_pair, write_nifti

from liverlib.data import curation as cur
from liverlib.data.curation import (
    CurationError,
    assess,
    build_manifest,
    explicit_split,
    scan_volumes,
    select_volumes,
    split_counts,
    split_volumes,
)
from liverlib.data.nifti import find_cases
from liverlib.errors import CaseError, RunError
from liverlib.params import resolve


def fake_volumes(n: int, rng: np.random.Generator, *, n_bad: int = 0) -> pd.DataFrame:
    """A volumes table as scan + assess would give: n eligible volumes with random ids and tumor sizes."""
    ids = rng.choice(1000, n + n_bad, replace=False)
    ml = rng.lognormal(1.0, 1.5, n + n_bad)
    status = ["eligible"] * n + ["rejected: no tumor"] * n_bad
    return pd.DataFrame({"volume_id": ids, "tumor_ml": ml, "status": status})


def strata_of(volumes: pd.DataFrame, k: int) -> list[set[int]]:
    """The k contiguous tumor-size strata of the eligible volumes (the documented rule)."""
    e = volumes[volumes.status == "eligible"].sort_values(["tumor_ml", "volume_id"])
    return [set(s.tolist()) for s in np.array_split(e.volume_id.to_numpy(), k)]


def params(phantom_dir, tmp_path, **kw):
    kw.setdefault("n_volumes", 0)
    kw.setdefault("run_name", "t")
    return resolve(data_dir=str(phantom_dir), output_root=str(tmp_path / "outputs"), **kw)


# --- scanning and eligibility --------------------------------------------------------------------


def test_scan_counts_match_the_phantom(phantom_scan, phantom_meta):
    volumes, slices = phantom_scan
    assert volumes.volume_id.tolist() == list(range(PHANTOM["n_cases"]))
    for r in volumes.itertuples():
        meta = phantom_meta[r.volume_id]
        if meta["outcome"] == "shape_mismatch":
            assert "shape" in r.problem and r.volume_id not in set(slices.volume_id)
            continue
        assert r.problem == "" and (r.tumor_voxels, r.tumor_slices) == (meta["tumor_voxels"], meta["tumor_slices"])
        assert r.liver_voxels == meta["liver_voxels"] and r.n_slices == meta["shape"][0]
        s = slices[slices.volume_id == r.volume_id]
        assert s.slice_idx.tolist() == list(range(r.n_slices)) and s.tumor_px.sum() == r.tumor_voxels
        assert r.spacing_slice == pytest.approx(meta["spacing"][0], rel=1e-5)


def test_assess_applies_rules_1_to_3_and_the_exclude_list(phantom_scan):
    volumes, _ = phantom_scan
    status = dict(zip(volumes.volume_id, assess(volumes).status))
    assert [status[i] for i in range(4)] == ["eligible"] * 4
    assert status[4] == "rejected: no tumor"
    assert status[5] == "rejected: tumor on 3 slices (< 5)"
    assert status[6].startswith("rejected: image shape")
    status = dict(zip(volumes.volume_id, assess(volumes, exclude_ids=[1, 6], min_tumor_slices=3).status))
    assert status[1] == status[6] == "excluded (exclude_ids)" and status[5] == "eligible"
    status = dict(zip(volumes.volume_id, assess(volumes, min_tumor_voxels=10**6).status))
    assert not any(s == "eligible" for s in status.values())


@pytest.mark.reliability("volumes.csv: 'rejected: no segmentation-7 file beside it'; strict: true stops, naming it",
                         None, "every other volume is judged")  # fmt: skip
def test_scan_volume_without_mask_is_rejected_or_named_when_strict(flat_dir):
    volumes, _ = scan_volumes(find_cases(flat_dir), progress=False)
    status = dict(zip(volumes.volume_id, assess(volumes, min_tumor_slices=1).status))
    assert status == {
        2: "eligible",
        3: "eligible",
        7: "rejected: volume-7.nii: no segmentation-7 file beside it",
        10: "eligible",
    }
    with pytest.raises(CaseError, match="no segmentation-7") as exc:
        scan_volumes(find_cases(flat_dir), progress=False, strict=True)
    assert str(flat_dir / "volume-7.nii") in str(exc.value)


def test_scan_rejects_affine_mismatch_instead_of_stopping(tmp_path):
    tiny_pair(tmp_path, 1)
    write_nifti(tmp_path / "volume-2.nii", np.zeros((6, 5, 4), np.int16), np.diag([2.0, 1, 1, 1]))
    write_nifti(tmp_path / "segmentation-2.nii", np.zeros((6, 5, 4), np.uint8))
    volumes, _ = scan_volumes(find_cases(tmp_path), progress=False)
    status = dict(zip(volumes.volume_id, assess(volumes, min_tumor_slices=1).status))
    assert status == {1: "eligible", 2: "rejected: image and mask affines differ"}


def _bad_mask(d, value, dtype=np.uint8):
    tiny_pair(d, 2)
    m = np.zeros((6, 5, 4), dtype)
    m[0, 0, 0] = value
    write_nifti(d / "segmentation-2.nii", m)


def _truncated(d, name, ext=".nii"):
    """Pair 2 of 16³ random voxels (incompressible: the cut falls in the voxel data), ``name`` cut in half."""
    shape = (16, 16, 16)
    write_nifti(d / f"volume-2{ext}", np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16))
    write_nifti(d / f"segmentation-2{ext}", np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8))
    blob = (d / name).read_bytes()
    (d / name).write_bytes(blob[: len(blob) // 2])


def _nan_image(d):
    tiny_pair(d, 2)
    x = np.zeros((6, 5, 4), np.float32)
    x[1, 1, 1] = np.nan
    (d / "volume-2.nii").unlink()
    write_nifti(d / "volume-2.nii.gz", x)


def _overwrite(d, name, blob):
    tiny_pair(d, 2)
    (d / name).write_bytes(blob)


BAD_VOLUME = {  # how pair 2 of a folder of three is broken → the reason volumes.csv gives
    "label 3": (lambda d: _bad_mask(d, 3), "segmentation-2.nii: labels outside {0, 1, 2} (found [3])"),
    "label 255": (lambda d: _bad_mask(d, 255), "segmentation-2.nii: labels outside {0, 1, 2} (found [255])"),
    "label -1": (lambda d: _bad_mask(d, -1, np.int16), "segmentation-2.nii: labels outside {0, 1, 2} (found [-1])"),
    "label 0.5": (lambda d: _bad_mask(d, 0.5, np.float32), "segmentation-2.nii: mask holds non-integer labels"),
    "unreadable image": (lambda d: _overwrite(d, "volume-2.nii", b"not a nifti" * 50),
                         "volume-2.nii: not a readable NIfTI file"),
    "unreadable mask": (lambda d: _overwrite(d, "segmentation-2.nii", b"\0" * 10),
                        "segmentation-2.nii: not a readable NIfTI file"),
    "truncated mask": (lambda d: _truncated(d, "segmentation-2.nii"), "segmentation-2.nii: header declares"),
    "truncated image .nii": (lambda d: _truncated(d, "volume-2.nii"), "volume-2.nii: header declares"),
    "truncated image .nii.gz": (lambda d: _truncated(d, "volume-2.nii.gz", ".nii.gz"),
                                "volume-2.nii.gz: voxel data cannot be read"),
    "NaN image": (_nan_image, "volume-2.nii.gz: image holds NaN or infinite voxels"),
}  # fmt: skip


def _folder_with_bad_volume(folder, kind):
    tiny_pair(folder, 1)
    tiny_pair(folder, 3)
    BAD_VOLUME[kind][0](folder)
    return folder


@pytest.mark.reliability("volumes.csv: 'rejected: <file>: <problem>' for that volume; curation goes on",
                         None, "every other volume is judged and can be selected")  # fmt: skip
@pytest.mark.parametrize("kind", list(BAD_VOLUME))
def test_one_bad_volume_is_rejected_with_its_reason_and_curation_goes_on(tmp_path, kind):
    folder = _folder_with_bad_volume(tmp_path, kind)
    volumes, slices = scan_volumes(find_cases(folder), progress=False)
    status = dict(zip(volumes.volume_id, assess(volumes, min_tumor_slices=1).status))
    assert status[1] == status[3] == "eligible", status
    assert status[2].startswith("rejected: " + BAD_VOLUME[kind][1]), status[2]
    assert str(tmp_path) not in status[2]  # the file's name; its path is in volume_path / mask_path
    assert set(slices.volume_id) == {1, 3}


@pytest.mark.reliability("strict: true: one line naming the file and the problem", None, "nothing written")
@pytest.mark.parametrize("kind", ["label 255", "unreadable image", "truncated image .nii.gz", "NaN image"])
def test_strict_stops_at_the_first_bad_volume(tmp_path, kind):
    folder = _folder_with_bad_volume(tmp_path, kind)
    with pytest.raises(CaseError) as exc:
        scan_volumes(find_cases(folder), progress=False, strict=True)
    name, problem = BAD_VOLUME[kind][1].split(": ", 1)
    assert str(tmp_path / name) in str(exc.value) and problem in str(exc.value)


def test_strict_is_a_curation_parameter_and_stops_curate(tmp_path):
    from liverlib.params import CURATION_KEYS, DEFAULTS

    assert DEFAULTS["strict"] is False and "strict" in CURATION_KEYS
    folder = _folder_with_bad_volume(tmp_path / "data", "label 3")
    with pytest.raises(CaseError, match="labels outside"):
        cur.curate(params(folder, tmp_path, strict=True, min_tumor_slices=1), progress=False)


@pytest.mark.reliability("exclude_ids skips a volume before reading it: an unreadable excluded file is no error",
                         None, "the other volumes")  # fmt: skip
def test_exclude_ids_are_skipped_before_reading(tmp_path, monkeypatch):
    folder = _folder_with_bad_volume(tmp_path, "unreadable image")
    opened = []
    real = cur.check_pair
    monkeypatch.setattr(cur, "check_pair", lambda v, m: opened.append(v.name) or real(v, m))
    volumes, _ = scan_volumes(find_cases(folder), progress=False, exclude_ids=[2], strict=True)
    assert "volume-2.nii" not in opened and opened
    status = dict(zip(volumes.volume_id, assess(volumes, min_tumor_slices=1, exclude_ids=[2]).status))
    assert status == {1: "eligible", 2: "excluded (exclude_ids)", 3: "eligible"}
    assert dict(zip(volumes.volume_id, assess(volumes, min_tumor_slices=1).status))[2].startswith("rejected")


@pytest.mark.reliability("one line: 'no eligible volume ... see <run>/volumes.csv'", None,
                         "volumes.csv with every volume's reason; an earlier good curation's files")  # fmt: skip
def test_nothing_eligible_still_writes_volumes_csv_and_points_to_it(phantom_dir, tmp_path):
    p = params(phantom_dir, tmp_path, exclude_ids=[0, 1, 2, 3])
    with pytest.raises(CurationError, match="no eligible volume") as exc:
        cur.curate(p, progress=False)
    written = tmp_path / "outputs" / "t" / "volumes.csv"
    assert str(written) in str(exc.value) and written.is_file()
    table = pd.read_csv(written, keep_default_na=False)
    assert table.status.tolist()[:4] == ["excluded (exclude_ids)"] * 4 and table.status[4] == "rejected: no tumor"
    assert exc.value.volumes.status.tolist() == table.status.tolist()
    with pytest.raises(CurationError, match="too few") as exc:  # any failed selection points to the table
        cur.curate(params(phantom_dir, tmp_path, exclude_ids=[0, 1]), progress=False)
    assert str(written) in str(exc.value)
    folder = tmp_path / "bad"  # every volume unreadable: nothing counted, the table still written
    for n in (1, 2, 3):
        tiny_pair(folder, n)[0].write_bytes(b"junk" * 100)
    with pytest.raises(CurationError, match="no eligible volume") as exc:
        cur.curate(params(folder, tmp_path, run_name="u"), progress=False)
    table = pd.read_csv(exc.value.path, keep_default_na=False)
    assert exc.value.path.name == "volumes.csv" and table.status.str.contains("not a readable NIfTI").all()


def test_a_failed_selection_keeps_an_earlier_curations_volumes_csv(phantom_dir, tmp_path, monkeypatch):
    stages = _no_figure(monkeypatch)
    first = stages.run_curation(params(phantom_dir, tmp_path), progress=False)
    before = first["run"].volumes.read_bytes()
    with pytest.raises(CurationError) as exc:
        stages.run_curation(params(phantom_dir, tmp_path, exclude_ids=[0, 1, 2, 3], overwrite=True), progress=False)
    assert first["run"].volumes.read_bytes() == before and exc.value.path.name == "volumes.failed.csv"


# --- selection -----------------------------------------------------------------------------------


def test_selection_is_seeded_stratified_and_reproducible():
    volumes = fake_volumes(30, np.random.default_rng(5), n_bad=4)
    draws = {tuple(select_volumes(volumes, 11, seed=s)) for s in range(20)}
    assert len(draws) > 1  # different seeds may differ
    for s in (0, 42):
        chosen = select_volumes(volumes, 11, seed=s)
        assert chosen == select_volumes(volumes, 11, seed=s) == sorted(chosen)
        assert len(set(chosen)) == 11
        assert [len(st & set(chosen)) for st in strata_of(volumes, 11)] == [1] * 11  # one per tumor-size stratum


def test_selection_all_explicit_and_errors():
    volumes = fake_volumes(6, np.random.default_rng(1), n_bad=2)
    eligible = sorted(volumes.volume_id[:6].tolist())
    assert select_volumes(volumes, 0) == eligible and select_volumes(volumes, 6) == eligible
    explicit = [eligible[3], eligible[0]]
    assert select_volumes(volumes, 11, volume_ids=explicit) == sorted(explicit)  # overrides n_volumes
    bad = int(volumes.volume_id.iloc[-1])
    with pytest.raises(CurationError, match=f"volume {bad} is not usable.*no tumor"):
        select_volumes(volumes, 0, volume_ids=[eligible[0], bad])
    with pytest.raises(CurationError, match="volume 5000 is not in the data folder"):
        select_volumes(volumes, 0, volume_ids=[5000])
    with pytest.raises(CurationError, match="twice"):
        select_volumes(volumes, 0, volume_ids=[eligible[0], eligible[1], eligible[0]])
    with pytest.raises(CurationError, match="n_volumes=7 but only 6"):
        select_volumes(volumes, 7)
    with pytest.raises(CurationError, match="no eligible volume"):
        select_volumes(volumes.assign(status="rejected: no tumor"), 3)


# --- splits --------------------------------------------------------------------------------------


def test_split_counts():
    assert split_counts(11, 0.1, 0.1) == (8, 1, 2)  # the paper's 8 / 1 / 2
    assert split_counts(9, 0.1, 0.2) == (6, 1, 2)  # smoke profile
    assert split_counts(3, 0.1, 0.1) == (1, 1, 1)
    assert split_counts(20, 0.1, 0.1) == (16, 2, 2)
    assert split_counts(30, 0.1, 0.1) == (24, 3, 3)  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert split_counts(100, 0.29, 0.1) == (61, 29, 10)  # 0.29 * 100 is 28.999999999999996
    with pytest.raises(CurationError, match="too few"):
        split_counts(2, 0.1, 0.1)


def test_split_of_11_volumes_is_8_1_2_and_stratified():
    volumes = fake_volumes(11, np.random.default_rng(3))
    ids = volumes.volume_id.tolist()
    ml = dict(zip(ids, volumes.tumor_ml))
    s = split_volumes(ids, ml, seed=42)
    assert [len(s[k]) for k in ("train", "val", "test")] == [8, 1, 2]
    assert s == split_volumes(list(reversed(ids)), ml, seed=42)  # input order does not matter
    held_out = set(s["val"]) | set(s["test"])
    assert [len(st & held_out) for st in strata_of(volumes, 3)] == [1, 1, 1]  # one per tumor-size tertile


def test_property_no_volume_in_two_splits():
    """Over many seeds and sizes: splits are disjoint, cover the selection, have the planned sizes."""
    for seed in range(120):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(3, 45))
        vf, tf = float(rng.choice([0.1, 0.15, 0.2])), float(rng.choice([0.1, 0.2, 0.3]))
        try:
            planned = split_counts(n, vf, tf)
        except CurationError:
            continue
        volumes = fake_volumes(n, rng, n_bad=int(rng.integers(0, 4)))
        chosen = select_volumes(volumes, int(rng.integers(0, n + 1)) if n > 3 else 0, seed=seed)
        if len(chosen) < 3:
            continue
        ml = dict(zip(volumes.volume_id, volumes.tumor_ml))
        s = split_volumes(chosen, ml, val_fraction=vf, test_fraction=tf, seed=seed)
        parts = [set(s[k]) for k in ("train", "val", "test")]
        assert sum(map(len, parts)) == len(set().union(*parts)) == len(chosen), (seed, n, s)
        assert set().union(*parts) == set(chosen)
        assert tuple(len(s[k]) for k in ("train", "val", "test")) == split_counts(len(chosen), vf, tf)
        assert all(len(p) >= 1 for p in parts)
        assert s == split_volumes(chosen, ml, val_fraction=vf, test_fraction=tf, seed=seed)
        if len(chosen) == n:
            assert tuple(map(len, parts)) == planned


def test_property_folds_test_every_volume_exactly_once():
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        k = int(rng.integers(2, 6))
        n = int(rng.integers(k + 2, 40))
        volumes = fake_volumes(n, rng)
        ids = volumes.volume_id.tolist()
        ml = dict(zip(ids, volumes.tumor_ml))
        folds = [split_volumes(ids, ml, seed=seed, folds=k, fold=f) for f in range(k)]
        tested = [v for s in folds for v in s["test"]]
        assert sorted(tested) == sorted(ids), (seed, k, n)  # each volume is test in exactly one fold
        for s in folds:
            parts = [set(s[x]) for x in ("train", "val", "test")]
            assert set().union(*parts) == set(ids) and sum(map(len, parts)) == n
            assert all(parts)
    with pytest.raises(CurationError, match="too few"):
        split_volumes([1, 2, 3, 4, 5, 6], {i: 1.0 for i in range(1, 7)}, folds=5)


def test_explicit_split(phantom_scan):
    volumes = assess(phantom_scan[0])
    p = resolve(train_ids=[0, 1], val_ids=[2], test_ids=[3])
    assert explicit_split(p, volumes) == {"train": [0, 1], "val": [2], "test": [3]}
    assert explicit_split(resolve(), volumes) is None
    with pytest.raises(CurationError, match="volume 1 is in both train_ids and test_ids"):
        explicit_split(resolve(train_ids=[0, 1], val_ids=[2], test_ids=[1, 3]), volumes)
    with pytest.raises(CurationError, match="together"):
        explicit_split(resolve(train_ids=[0, 1], test_ids=[3]), volumes)
    with pytest.raises(CurationError, match="volume 4 is not usable"):
        explicit_split(resolve(train_ids=[0, 4], val_ids=[2], test_ids=[3]), volumes)
    with pytest.raises(CurationError, match="volume 0 is listed twice in train_ids"):
        explicit_split(resolve(train_ids=[0, 0], val_ids=[2], test_ids=[3]), volumes)


# --- manifest and end to end ---------------------------------------------------------------------


def test_manifest_filters_empty_slices_unless_asked(phantom_scan):
    volumes, slices = phantom_scan
    splits = {"train": [0, 1], "val": [2], "test": [3]}
    m = build_manifest(slices, volumes, splits)
    assert ((m.liver_px + m.tumor_px) > 0).all()
    assert set(m.volume_id) == {0, 1, 2, 3} and m.split.tolist() == sorted(m.split, key=["train", "val", "test"].index)
    for v, s in ((0, "train"), (2, "val"), (3, "test")):
        assert set(m[m.volume_id == v].split) == {s}
    for col in ("volume_id", "split", "slice_idx", "liver_px", "tumor_px", "volume_path", "mask_path", "spacing_slice"):
        assert col in m.columns
    keep = slices[slices.volume_id.isin([0, 1, 2, 3])]
    assert len(m) == int(((keep.liver_px + keep.tumor_px) > 0).sum()) < len(keep)
    full = build_manifest(slices, volumes, splits, keep_empty_slices=True)
    assert len(full) == len(keep)
    empty = slices.assign(liver_px=0, tumor_px=0)
    with pytest.raises(CurationError, match="manifest is empty"):
        build_manifest(empty, volumes, splits)


def test_train_empty_fraction_adds_liver_free_training_slices_only(phantom_scan):
    volumes, slices = phantom_scan
    splits = {"train": [0, 1], "val": [2], "test": [3]}
    paper = build_manifest(slices, volumes, splits)
    half = build_manifest(slices, volumes, splits, train_empty_fraction=0.5, seed=7)
    again = build_manifest(slices, volumes, splits, train_empty_fraction=0.5, seed=7)
    every = build_manifest(slices, volumes, splits, train_empty_fraction=1.0, seed=7)
    assert half.equals(again)  # the same slices every run
    for m in (half, every):  # validation and test keep the paper's rule
        assert m[m.split != "train"].reset_index(drop=True).equals(paper[paper.split != "train"].reset_index(drop=True))
    for v in (0, 1):
        rows = slices[slices.volume_id == v]
        n_empty = int(((rows.liver_px + rows.tumor_px) == 0).sum())
        assert n_empty > 0
        got = half[half.volume_id == v]
        assert int(((got.liver_px + got.tumor_px) == 0).sum()) == round(0.5 * n_empty)
        assert len(every[every.volume_id == v]) == len(rows)
    assert half.slice_idx.is_monotonic_increasing or (half.groupby("volume_id").slice_idx.diff().dropna() > 0).all()


def test_curate_end_to_end(phantom_dir, tmp_path, phantom_meta):
    res = cur.curate(params(phantom_dir, tmp_path), progress=False)
    s = res["splits"]
    assert sorted(s["train"] + s["val"] + s["test"]) == [0, 1, 2, 3] and [
        len(s[k]) for k in ("train", "val", "test")
    ] == [2, 1, 1]
    assert set(res["manifest"].volume_id) == {0, 1, 2, 3}
    split_col = dict(zip(res["volumes"].volume_id, res["volumes"].split))
    assert [split_col[i] for i in (4, 5, 6)] == ["", "", ""]
    t3 = cur.table3(res["manifest"])
    assert t3.set_index("split").loc["total", "slices"] == len(res["manifest"])
    assert t3.set_index("split").loc[["train", "val", "test"], "volumes"].tolist() == [2, 1, 1]


def test_curate_too_few_and_no_eligible(phantom_dir, tmp_path):
    with pytest.raises(CurationError, match="too few"):
        cur.curate(params(phantom_dir, tmp_path, exclude_ids=[0, 1]), progress=False)
    with pytest.raises(CurationError, match="no eligible volume"):
        cur.curate(params(phantom_dir, tmp_path, exclude_ids=[0, 1, 2, 3]), progress=False)
    with pytest.raises(CurationError, match="only 4 volumes are eligible"):
        cur.curate(params(phantom_dir, tmp_path, n_volumes=5), progress=False)


def _no_figure(monkeypatch):
    from liverlib.pipeline import stages

    # Fig. 2 is the figures module's business; skipping it here saves seconds of matplotlib per call
    monkeypatch.setattr(stages, "render_fig02", lambda run: run.figure("fig02_case_overview"), raising=False)
    return stages


def test_run_curation_rerun_with_other_params_changes_nothing(phantom_dir, tmp_path, monkeypatch):
    stages = _no_figure(monkeypatch)
    p = params(phantom_dir, tmp_path)
    first = stages.run_curation(p, progress=False)
    manifest = first["run"].manifest
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns, first["run"].splits.read_bytes())
    with pytest.raises(RunError, match="seed"):
        stages.run_curation(params(phantom_dir, tmp_path, seed=7), progress=False)
    with pytest.raises(RunError, match="keep_empty_slices"):
        stages.run_curation(params(phantom_dir, tmp_path, keep_empty_slices=True), progress=False)
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns, first["run"].splits.read_bytes()) == before
    again = stages.run_curation(p, progress=False)  # same values: reused, not rewritten
    assert manifest.stat().st_mtime_ns == before[1] and again["splits"] == first["splits"]
    stages.run_curation(params(phantom_dir, tmp_path, keep_empty_slices=True, overwrite=True), progress=False)
    assert len(manifest.read_bytes()) > len(before[0])  # overwrite: true replaces, with the empty slices kept


def test_a_failed_curation_does_not_block_or_mislabel_the_next_run(phantom_dir, tmp_path, monkeypatch):
    stages = _no_figure(monkeypatch)
    with pytest.raises(CurationError):  # no eligible volume: nothing written
        stages.run_curation(params(phantom_dir, tmp_path, exclude_ids=[0, 1, 2, 3]), progress=False)
    good = params(phantom_dir, tmp_path)
    first = stages.run_curation(good, progress=False)  # the corrected parameters must be accepted
    with pytest.raises(CurationError):  # overwrite with parameters that fail: the old outputs stay
        stages.run_curation(params(phantom_dir, tmp_path, n_volumes=9, overwrite=True), progress=False)
    with pytest.raises(RunError):  # the files on disk were made with `good`, not with n_volumes=9
        stages.run_curation(params(phantom_dir, tmp_path, n_volumes=9), progress=False)
    assert stages.run_curation(good, progress=False)["splits"] == first["splits"]
