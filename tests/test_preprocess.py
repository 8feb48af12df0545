"""Tests of liverlib.data.preprocess (docs/study.md §2): each step against its formula, switches, cache key and cache."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from liverlib.data.cache import SliceCache, build_cache
from liverlib.data.nifti import find_cases, load_case
from liverlib.data.preprocess import (
    PreprocessConfig,
    clahe,
    normalize,
    preprocess_slice,
    preprocess_volume,
    quantize,
    resize_image,
    resize_mask,
)
from liverlib.params import DEFAULTS, PREPROCESS_KEYS, resolve


@pytest.fixture(scope="module")
def hu_slice() -> np.ndarray:
    """A 96×112 int16 HU slice: smooth gradient plus noise (CLAHE tiles of 12×14 px have something to equalise)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:112]
    return (x * 6 - 400 + y * 2 + rng.normal(0, 30, (96, 112))).astype(np.int16)


def test_normalize_is_min_max(hu_slice):
    x = normalize(hu_slice)
    lo, hi = float(hu_slice.min()), float(hu_slice.max())
    assert x.dtype == np.float32 and x.shape == hu_slice.shape
    np.testing.assert_allclose(x, (hu_slice.astype(np.float64) - lo) / (hi - lo), atol=1e-6)
    assert x.min() == 0.0 and x.max() == 1.0


def test_normalize_constant_slice_is_zeros():
    x = normalize(np.full((8, 8), -1000, np.int16))
    assert x.dtype == np.float32 and not x.any()


def test_normalize_hu_window_clips_then_scales():
    hu = np.array([[-1000, -200, 25, 250, 3000]], np.int16)
    np.testing.assert_allclose(normalize(hu, (-200.0, 250.0)), [[0, 0, 0.5, 1, 1]], atol=1e-7)
    assert normalize(np.full((4, 4), 40, np.int16), (-200.0, 250.0)).min() == pytest.approx(240 / 450)


def test_clahe_is_opencv_on_the_uint8_image(hu_slice):
    x = normalize(hu_slice)
    u8 = np.rint(x * 255).astype(np.uint8)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8).astype(np.float32) / 255
    out = clahe(x)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert not np.allclose(out, x, atol=0.02)  # it did something
    assert not np.array_equal(clahe(x, clip=4.0), out) and not np.array_equal(clahe(x, tile=2), out)


def test_gamma_is_x_to_the_1_2(hu_slice):
    cfg = PreprocessConfig(image_size=40, use_clahe=False)  # stages are at the original size
    st = preprocess_slice(hu_slice, cfg, stages=True)
    np.testing.assert_allclose(st["gamma"], quantize(normalize(hu_slice)) ** 1.2, rtol=1e-6, atol=1e-7)
    float_cfg = PreprocessConfig(image_size=40, use_clahe=False, quantize_8bit=False)
    float_st = preprocess_slice(hu_slice, float_cfg, stages=True)
    np.testing.assert_allclose(float_st["gamma"], normalize(hu_slice) ** 1.2, rtol=1e-6, atol=1e-7)
    assert "CLAHE" not in st and st["gamma"].dtype == np.float32


def test_pipeline_order_and_stages(hu_slice):
    cfg = PreprocessConfig(image_size=32)
    st = preprocess_slice(hu_slice, cfg, stages=True)
    assert list(st) == ["original", "normalised", "CLAHE", "gamma"]
    assert np.array_equal(st["original"], hu_slice.astype(np.float32))
    np.testing.assert_allclose(st["gamma"], clahe(normalize(hu_slice)) ** 1.2, rtol=1e-6)
    out = preprocess_slice(hu_slice, cfg)
    assert out.shape == (32, 32) and out.dtype == np.float32
    expected = cv2.resize(st["gamma"], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_switches_change_the_output(hu_slice):
    paper = preprocess_slice(hu_slice, PreprocessConfig(image_size=32))
    outs = {
        "no_clahe": PreprocessConfig(image_size=32, use_clahe=False),
        "no_gamma": PreprocessConfig(image_size=32, use_gamma=False),
        "baseline": PreprocessConfig(image_size=32, use_clahe=False, use_gamma=False),
        "window": PreprocessConfig(image_size=32, hu_window=(-200.0, 250.0)),
    }
    results = {k: preprocess_slice(hu_slice, c) for k, c in outs.items()}
    for k, r in results.items():
        assert not np.allclose(r, paper, atol=1e-3), k
    baseline = resize_image(quantize(normalize(hu_slice)), 32)
    np.testing.assert_allclose(results["baseline"], baseline, atol=1e-6)


def test_quantize_is_its_own_step(hu_slice):
    x = normalize(hu_slice)
    q = quantize(x)
    assert q.dtype == np.float32 and np.array_equal(q * 255, np.rint(q * 255)) and np.abs(q - x).max() <= 0.5 / 255
    on = preprocess_slice(hu_slice, PreprocessConfig(use_clahe=False, use_gamma=False), stages=True)
    off = preprocess_slice(
        hu_slice, PreprocessConfig(use_clahe=False, use_gamma=False, quantize_8bit=False), stages=True
    )
    assert np.array_equal(on["normalised"], q) and np.array_equal(off["normalised"], x)
    # without quantisation CLAHE runs on 16 bits (8-bit CLAHE on the float image would quantise it anyway)
    c16 = preprocess_slice(hu_slice, PreprocessConfig(use_gamma=False, quantize_8bit=False), stages=True)["CLAHE"]
    u16 = np.rint(x * 65535).astype(np.uint16)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u16).astype(np.float32) / 65535
    np.testing.assert_array_equal(c16, expected)


def test_ablation_arms_differ_only_by_the_steps_they_switch(hu_slice):
    """Every arm quantises alike; an arm's image is the paper arm's up to the step it switches off."""
    from liverlib.pipeline.ablation import ARMS

    cfgs = {a: PreprocessConfig.from_params(resolve(**v, image_size=40)) for a, v in ARMS.items()}
    for arm, cfg in cfgs.items():
        diff = {k for k, v in cfg.as_params().items() if cfgs["paper"].as_params()[k] != v}
        assert diff <= set(ARMS[arm]) and "quantize_8bit" not in diff, arm
    # ct_norm needs its training statistics (tests/test_ct_norm.py); every arm states its normalisation
    assert all("normalization" in v for v in ARMS.values())
    st = {a: preprocess_slice(hu_slice, c, stages=True) for a, c in cfgs.items() if c.normalization == "minmax"}
    paper, base = st["paper"], st["no_enhancement"]
    assert np.array_equal(base["normalised"], paper["normalised"]) and set(base) == {"original", "normalised"}
    assert np.array_equal(st["clahe_only"]["CLAHE"], paper["CLAHE"]) and "gamma" not in st["clahe_only"]
    gamma_of_base = np.power(base["normalised"], np.float32(1.2), dtype=np.float32)
    np.testing.assert_allclose(st["gamma_only"]["gamma"], gamma_of_base, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size", [16, 64])
def test_resize_shapes_and_mask_labels(size):
    rng = np.random.default_rng(size)
    img = rng.random((32, 40), dtype=np.float32)
    assert resize_image(img, size).shape == (size, size) and resize_image(img, size).dtype == np.float32
    mask = np.zeros((32, 40), np.uint8)
    mask[4:20, 5:30] = 1
    mask[8:14, 10:16] = 2
    mask[25:30, 30:38] = 2  # tumor touching background only: a linear resize would invent liver (1) at its edge
    out = resize_mask(mask, size)
    assert out.shape == (size, size) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1, 2}
    edge = out[int(25 * size / 32) - 1 : int(30 * size / 32) + 1, int(30 * size / 40) - 1 : int(38 * size / 40) + 1]
    assert 1 not in set(np.unique(edge))
    assert resize_mask(mask, (20, 24)).shape == (20, 24)
    assert resize_mask(mask, (32, 40)) is mask


def test_preprocess_volume_float16(hu_slice):
    vol = np.stack([hu_slice, hu_slice[::-1], np.full_like(hu_slice, 7)])
    out = preprocess_volume(vol, PreprocessConfig(image_size=24))
    assert out.dtype == np.float16 and out.shape == (3, 24, 24)
    assert 0 <= out.min() and out.max() <= 1
    assert len(np.unique(out[2])) == 1  # a constant slice stays constant (CLAHE maps it to one small value)
    np.testing.assert_allclose(out[0], preprocess_slice(hu_slice, PreprocessConfig(image_size=24)), atol=1e-3)


# --- cache key -----------------------------------------------------------------------------------

_CHANGED = {"image_size": 128, "hu_window": [-200, 250], "quantize_8bit": False, "use_clahe": False, "clahe_clip": 3.0, "clahe_tile": 4,
            "use_gamma": False, "gamma": 1.5, "normalization": "ct_norm"}  # fmt: skip


def test_cache_key_changes_with_each_preprocessing_parameter():
    assert set(_CHANGED) == set(PREPROCESS_KEYS)
    base = PreprocessConfig.from_params(resolve())
    assert base == PreprocessConfig() and base.key == PreprocessConfig().key
    keys = {base.key}
    for k, v in _CHANGED.items():
        cfg = PreprocessConfig.from_params(resolve(**{k: v}))
        assert cfg.key != base.key, k
        keys.add(cfg.key)
    assert len(keys) == len(_CHANGED) + 1


def test_cache_key_of_minmax_is_the_key_before_normalization_existed():
    """``normalization`` came later: at its default it leaves the key of earlier caches and checkpoints as it was."""
    from liverlib.data.preprocess import CACHE_VERSION
    from liverlib.params import digest

    cfg = PreprocessConfig()
    before = {k: v for k, v in cfg.as_params().items() if k != "normalization"}
    assert cfg.key == digest({"v": CACHE_VERSION, **before})


def test_cache_key_ignores_other_parameters():
    base = PreprocessConfig.from_params(resolve()).key
    unrelated = {
        "epochs": 3,
        "lr": 1e-3,
        "seed": 7,
        "run_name": "x",
        "n_volumes": 5,
        "augment": False,
        "model": "unet_smp",
    }
    assert set(unrelated) <= set(DEFAULTS)
    assert PreprocessConfig.from_params(resolve(**unrelated)).key == base
    assert PreprocessConfig.from_params(resolve(hu_window=[-200, 250])).key == (
        PreprocessConfig.from_params(resolve(hu_window=[-200.0, 250.0])).key
    )


def test_config_round_trips_through_params():
    cfg = PreprocessConfig(image_size=64, hu_window=(-200.0, 250.0), use_gamma=False)
    again = PreprocessConfig.from_params(resolve(**cfg.as_params()))
    assert again == cfg and again.key == cfg.key
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gamma = 2.0  # type: ignore[misc]


# --- cache ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_volumes(phantom_dir) -> pd.DataFrame:
    """volumes.csv-like rows for the phantom's four eligible cases."""
    cases = [c for c in find_cases(phantom_dir) if c.case_id < 4]
    return pd.DataFrame({"volume_id": [c.case_id for c in cases], "volume_path": [str(c.volume) for c in cases],
                         "mask_path": [str(c.mask) for c in cases]})  # fmt: skip


def test_build_cache_then_reuse(phantom_volumes, tmp_path):
    cfg = PreprocessConfig(image_size=16)
    first = build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    assert (first["volumes_built"], first["volumes_reused"]) == (4, 0) and first["key"] == cfg.key
    root = Path(first["cache_dir"])
    files = sorted(root.glob("*.npy"))
    assert len(files) == 8 and first["bytes"] == sum(f.stat().st_size for f in files)
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    again = build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    assert (again["volumes_built"], again["volumes_reused"]) == (0, 4)
    assert again["cache_dir"] == first["cache_dir"] and again["slices"] == first["slices"]
    assert {f.name: f.stat().st_mtime_ns for f in root.glob("*.npy")} == stamps
    assert not [f for f in root.iterdir() if f.name.startswith(".")]  # no temp files left
    # a half-written volume (mask written, image missing) is rebuilt
    (root / "2_image.npy").unlink()
    third = build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    assert (third["volumes_built"], third["volumes_reused"]) == (1, 3)


def test_cached_arrays_are_memory_mapped_and_correct(phantom_volumes, tmp_path):
    cfg = PreprocessConfig(image_size=16)
    stats = build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    cache = SliceCache(stats["cache_dir"])
    total = 0
    for r in phantom_volumes.itertuples():
        case = load_case(r.volume_path, r.mask_path)
        img, mask = cache.image(r.volume_id), cache.mask(r.volume_id)
        assert isinstance(img, np.memmap) and isinstance(mask, np.memmap)
        assert img.dtype == np.float16 and mask.dtype == np.uint8
        assert img.shape == mask.shape == (case.image.shape[0], 16, 16)
        assert set(np.unique(mask)) <= {0, 1, 2} and (mask == 1).any()
        np.testing.assert_array_equal(img, preprocess_volume(case.image, cfg))
        np.testing.assert_array_equal(mask, np.stack([resize_mask(m, 16) for m in case.mask]))
        total += img.shape[0]
    assert stats["slices"] == total
    with pytest.raises(FileNotFoundError, match="volume 99"):
        cache.image(99)
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers reopen their own maps
    assert clone._open == {} and np.array_equal(clone.mask(0), cache.mask(0))


def test_cache_of_another_data_folder_is_not_reused(phantom_volumes, oriented_dir, tmp_path):
    """Files are named by volume id: volume 0 of another folder (LiTS vs phantom) must not get these arrays."""
    cfg = PreprocessConfig(image_size=16)
    build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    vol, seg = oriented_dir["RAS"]  # volume-0 of another folder: 12 slices instead of 16–18
    other = pd.DataFrame({"volume_id": [0], "volume_path": [str(vol)], "mask_path": [str(seg)]})
    stats = build_cache(other, cfg, tmp_path, progress=False)
    assert stats["volumes_built"] == 1
    assert SliceCache(stats["cache_dir"]).mask(0).shape == (12, 16, 16)
    # and the first folder's cache is still there, untouched
    assert build_cache(phantom_volumes, cfg, tmp_path, progress=False)["volumes_reused"] == 4


def test_two_arm_caches_differ_only_by_clahe_and_gamma(phantom_volumes, tmp_path):
    """The paper and no-enhancement caches: same masks; images = resize(f(quantised min-max)), with f the
    switched steps (CLAHE + gamma) in the paper arm and the identity in the other."""
    from liverlib.pipeline.ablation import ARMS

    paper_cfg = PreprocessConfig.from_params(resolve(**ARMS["paper"], image_size=16))
    base_cfg = PreprocessConfig.from_params(resolve(**ARMS["no_enhancement"], image_size=16))
    paper = SliceCache(build_cache(phantom_volumes, paper_cfg, tmp_path, progress=False)["cache_dir"])
    base = SliceCache(build_cache(phantom_volumes, base_cfg, tmp_path, progress=False)["cache_dir"])
    assert paper.root != base.root
    for r in phantom_volumes.itertuples():
        case = load_case(r.volume_path, r.mask_path)
        np.testing.assert_array_equal(paper.mask(r.volume_id), base.mask(r.volume_id))
        q = [quantize(normalize(s)) for s in case.image]
        expect_base = np.stack([resize_image(x, 16) for x in q]).astype(np.float16)
        lut = np.power(np.arange(256, dtype=np.float32) / np.float32(255), 1.2, dtype=np.float32)
        expect_paper = np.stack([resize_image(lut[np.rint(clahe(x) * 255).astype(np.uint8)], 16) for x in q])
        np.testing.assert_array_equal(base.image(r.volume_id), expect_base)
        np.testing.assert_array_equal(paper.image(r.volume_id), expect_paper.astype(np.float16))


def test_cache_records_each_volume_and_verifies_cheaply(phantom_volumes, tmp_path):
    """Each volume's files get a record (size, mtime, dtype, shape, checksum); a reuse reads headers only while the
    files match it, and checks the values (and writes the record) when they do not or it is missing."""
    import json

    from liverlib.data.cache import verify_volume

    cfg = PreprocessConfig(image_size=16)
    root = Path(build_cache(phantom_volumes, cfg, tmp_path, progress=False)["cache_dir"])
    rec = json.loads((root / "0_record.json").read_text(encoding="utf-8"))
    assert set(rec) == {"image", "mask"} and rec["image"]["dtype"] == "float16" and len(rec["mask"]["blake2b"]) == 32
    assert verify_volume(root, 0, 16) is None and verify_volume(root, 0, 32).endswith("expected (slices, 32, 32)")
    (root / "0_record.json").unlink()  # a cache from before records: values checked, record written
    assert verify_volume(root, 0, 16) is None and (root / "0_record.json").read_text(encoding="utf-8") == json.dumps(
        rec
    )
    # same size and values that pass the checks, but not what was built: the checksum tells
    img = np.load(root / "1_image.npy", mmap_mode="r+")
    img[0] = img[0][::-1]
    img.flush()
    del img
    assert "checksum differs" in verify_volume(root, 1, 16)
    with open(root / "2_mask.npy", "ab") as fh:  # extended
        fh.write(b"\0" * 16)
    assert "(extended)" in verify_volume(root, 2, 16)
    again = build_cache(phantom_volumes, cfg, tmp_path, progress=False)
    assert (again["volumes_built"], again["volumes_repaired"], again["volumes_reused"]) == (2, 2, 2)
