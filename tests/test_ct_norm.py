"""``normalization: ct_norm`` (issue 17 item 4): nnU-Net's CT normalisation from the training split's foreground.

The statistics equal NumPy's percentiles, mean and standard deviation of the training volumes' foreground;
validation and test volumes never change them; they live beside the cache, in ``preprocess.json`` and in
every checkpoint, and ``segment`` applies the checkpoint's; the arm runs through the tiny study.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import liverlib.data.preprocess as pre
import liverlib.segment.segment as seg
from liverlib.data import ct_stats
from liverlib.data.cache import SliceCache, build_cache, cache_dir_for
from liverlib.data.ct_stats import foreground_histogram, stats_from_histogram
from liverlib.data.nifti import load_case
from liverlib.data.preprocess import (
    STATS_FILE,
    CTStats,
    PreprocessConfig,
    ct_normalize,
    preprocess_slice,
    preprocess_volume,
    resize_image,
)
from liverlib.errors import RunError
from liverlib.files import read_json, write_json
from liverlib.labels import LABELS
from liverlib.model.checkpoint import attach_normalization, check_normalization, load_checkpoint, save_checkpoint
from liverlib.params import PREPROCESS_KEYS, ParamError, Params, resolve
from liverlib.pipeline import stages
from liverlib.pipeline.ablation import ARM_LABELS, ARMS, prepare_arm, table04
from liverlib.run import RunDir
from tests.conftest import write_nifti
from tests.tiny import TINY_RUN, prepare

CT = PreprocessConfig(image_size=8, use_clahe=False, use_gamma=False, normalization="ct_norm")
"""The ct_norm arm's preprocessing at 8² (8-bit quantisation as in every arm)."""

LITS = CTStats(-17.0, 201.0, 99.40, 39.39, 1, (0,))
"""nnU-Net's LiTS fingerprint (shared/NOTES.md, "CT normalisation")."""


def _case(rng: np.random.Generator, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, mask uint8) of 6×10×12: air and fat around a liver of ~100 HU holding a ~60 HU tumor."""
    image = rng.normal(-700, 250, (6, 10, 12))
    mask = np.zeros(image.shape, np.uint8)
    mask[1:5, 2:8, 3:10] = LABELS["liver"]
    mask[2:4, 4:6, 5:8] = LABELS["tumor"]
    liver, tumor = mask == LABELS["liver"], mask == LABELS["tumor"]
    image[liver] = rng.normal(100 + shift, 35, liver.sum())
    image[tumor] = rng.normal(60 + shift, 25, tumor.sum())
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), mask


def _volumes(folder: Path, splits: dict[int, str], shifts: dict[int, int] | None = None, seed: int = 0) -> pd.DataFrame:
    """volumes.csv-like rows of synthetic NIfTI pairs, one per id, with their split."""
    rows = []
    for vid, split in splits.items():
        image, mask = _case(np.random.default_rng(seed + vid), (shifts or {}).get(vid, 0))
        vol = write_nifti(folder / f"volume-{vid}.nii", image)
        msk = write_nifti(folder / f"segmentation-{vid}.nii", mask)
        rows.append({"volume_id": vid, "volume_path": str(vol), "mask_path": str(msk), "split": split})
    return pd.DataFrame(rows)


SPLITS = {0: "train", 1: "train", 2: "train", 3: "val", 4: "test"}


def _foreground(volumes: pd.DataFrame, split: str = "train") -> np.ndarray:
    """Every foreground voxel's HU of the ``split`` volumes, read back as liverlib reads them."""
    parts = []
    for r in volumes[volumes.split == split].itertuples():
        case = load_case(r.volume_path, r.mask_path)
        parts.append(case.image[case.mask > 0])
    return np.concatenate(parts)


# --- the statistics ------------------------------------------------------------------------------


def test_stats_equal_numpy_percentiles_mean_and_std_of_the_training_foreground(tmp_path):
    volumes = _volumes(tmp_path / "data", SPLITS)
    info = build_cache(volumes, CT, tmp_path / "cache", progress=False)
    s = CTStats.from_dict(info["normalization"])
    fg = _foreground(volumes)
    lo, hi = np.percentile(fg, [0.5, 99.5])
    assert (s.lo, s.hi) == pytest.approx((lo, hi), rel=1e-12, abs=1e-9)
    assert s.mean == pytest.approx(fg.mean(), rel=1e-12) and s.sd == pytest.approx(fg.std(), rel=1e-12)
    assert s.voxels == fg.size and s.train_ids == (0, 1, 2)
    assert info["normalization"]["percentiles"] == [0.5, 99.5] and info["key"] == CT.key


@pytest.mark.parametrize("n", [1, 2, 7, 200, 1001])
def test_histogram_percentiles_are_numpys_for_any_count(n):
    """The 65,536-bin histogram gives np.percentile's linear interpolation between order statistics exactly."""
    rng = np.random.default_rng(n)
    hu = rng.integers(-1024, 3071, n).astype(np.int16)
    mask = np.ones(n, np.uint8)
    if n == 1:
        with pytest.raises(ValueError, match="lo < hi"):  # one voxel: no spread to clip to or divide by
            stats_from_histogram(foreground_histogram(hu, mask), [0])
        return
    s = stats_from_histogram(foreground_histogram(hu, mask), [5, 1])
    assert [s.lo, s.hi] == pytest.approx(list(np.percentile(hu, [0.5, 99.5])), rel=1e-13, abs=1e-9)
    assert s.mean == pytest.approx(hu.mean(), rel=1e-13) and s.sd == pytest.approx(hu.std(), rel=1e-12)
    assert s.train_ids == (1, 5)


def test_only_the_foreground_counts_and_empty_training_foreground_is_refused():
    hu = np.array([[-1000, 50], [150, 3000]], np.int16)
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    counts = foreground_histogram(hu, mask)
    assert counts.sum() == 2 and counts[50 + 32768] == 1 and counts[150 + 32768] == 1
    with pytest.raises(ValueError, match="no foreground"):
        stats_from_histogram(foreground_histogram(hu, np.zeros_like(mask)), [3])
    with pytest.raises(ValueError, match="integer HU"):
        foreground_histogram(hu.astype(np.float32), mask)


def test_validation_and_test_volumes_do_not_change_the_stats(tmp_path):
    """Leak test: val/test volumes 600 HU brighter, or swapped for others, leave the statistics as they were."""
    base = build_cache(_volumes(tmp_path / "a", SPLITS), CT, tmp_path / "cache", progress=False)
    bright = _volumes(tmp_path / "b", SPLITS, shifts={3: 600, 4: 600})
    other = build_cache(bright, CT, tmp_path / "cache", progress=False)
    assert other["cache_dir"] != base["cache_dir"]  # other source files: another folder...
    assert other["normalization"] == base["normalization"]  # ...but the same statistics
    # the test volume's cache image is its HU under the training statistics, not its own
    stats = CTStats.from_dict(other["normalization"])
    case = load_case(bright.volume_path[4], bright.mask_path[4])
    img = SliceCache(other["cache_dir"]).image(4)
    np.testing.assert_array_equal(img, preprocess_volume(case.image, CT.with_stats(stats)))
    # the training volumes, in contrast, do move them
    train_bright = build_cache(
        _volumes(tmp_path / "c", SPLITS, shifts={0: 600}), CT, tmp_path / "cache", progress=False
    )
    assert train_bright["normalization"]["mean"] > base["normalization"]["mean"] + 100


def test_the_training_split_names_the_cache_folder(tmp_path):
    """Same files and parameters, another training split: another folder and other statistics (folds never share)."""
    volumes = _volumes(tmp_path / "data", SPLITS)
    swapped = volumes.assign(
        split=volumes.split.replace({"train": "val", "val": "train"}).where(volumes.volume_id != 0, "train")
    )
    a = build_cache(volumes, CT, tmp_path / "cache", progress=False)
    b = build_cache(swapped, CT, tmp_path / "cache", progress=False)
    assert a["key"] == b["key"] and a["cache_dir"] != b["cache_dir"]
    assert a["normalization"]["train_ids"] == [0, 1, 2] and b["normalization"]["train_ids"] == [0, 3]
    assert a["normalization"] != b["normalization"]
    # the min-max folders do not depend on the split (runs and arms keep sharing them)
    mm = PreprocessConfig(image_size=8)
    assert cache_dir_for(tmp_path, mm, volumes) == cache_dir_for(tmp_path, mm, swapped)
    with pytest.raises(ValueError, match="'split' column"):
        cache_dir_for(tmp_path, CT, volumes.drop(columns="split"))
    with pytest.raises(ValueError, match="no training volume"):
        build_cache(volumes.assign(split="test"), CT, tmp_path / "cache", progress=False)


def test_stats_are_stored_with_the_cache_and_not_recomputed(tmp_path, monkeypatch):
    volumes = _volumes(tmp_path / "data", SPLITS)
    first = build_cache(volumes, CT, tmp_path / "cache", progress=False)
    stored = read_json(Path(first["cache_dir"]) / STATS_FILE)
    assert stored == first["normalization"]

    def boom(*a, **k):
        raise AssertionError("statistics recomputed although the cache holds them")

    monkeypatch.setattr(ct_stats, "training_ct_stats", boom)
    again = build_cache(volumes, CT, tmp_path / "cache", progress=False)
    assert again["normalization"] == first["normalization"] and again["volumes_reused"] == len(volumes)
    with pytest.raises(ValueError, match="not the training split's"):
        build_cache(volumes, CT.with_stats(LITS), tmp_path / "cache", progress=False)


# --- the image -----------------------------------------------------------------------------------


def test_the_image_is_the_zscore_under_a_fixed_affine_map():
    """u in [0, 1] maps back to (clip(HU, lo, hi) − mean) / sd; nnU-Net's LiTS fingerprint as the example."""
    hu = np.array([[-1000, -17, 0, 99, 150, 201, 2000]], np.int16)
    u = ct_normalize(hu, LITS)
    assert u.dtype == np.float32 and u.min() == 0.0 and u.max() == 1.0
    assert u[0, 0] == u[0, 1] == 0.0 and u[0, -2] == u[0, -1] == 1.0
    z = np.clip(hu.astype(np.float64), -17, 201)
    np.testing.assert_allclose(LITS.zscore(u), (z - 99.40) / 39.39, atol=1e-5)
    assert LITS.zscore(ct_normalize(np.array([[99]], np.int16), LITS))[0, 0] == pytest.approx(-0.4 / 39.39, abs=1e-5)


def test_ct_norm_preprocessing_steps_and_refusals():
    hu = np.random.default_rng(1).integers(-300, 400, (20, 24)).astype(np.int16)
    st = preprocess_slice(hu, CT.with_stats(LITS), stages=True)
    assert list(st) == ["original", "normalised"]  # no CLAHE, no gamma in the arm
    np.testing.assert_array_equal(st["normalised"], pre.quantize(ct_normalize(hu, LITS)))
    out = preprocess_slice(hu, CT.with_stats(LITS))
    np.testing.assert_allclose(out, resize_image(st["normalised"], 8), atol=1e-6)
    with pytest.raises(ValueError, match="needs the training statistics"):
        preprocess_slice(hu, CT)
    with pytest.raises(ValueError, match="none are recorded"):
        CT.with_stats(None)
    assert PreprocessConfig().with_stats(LITS) == PreprocessConfig()  # min-max ignores them
    with pytest.raises(ParamError, match="'normalization' must be one of minmax, ct_norm"):
        PreprocessConfig.from_params(resolve(normalization="zscore"))
    with pytest.raises(ParamError, match="set hu_window"):
        PreprocessConfig.from_params(resolve(normalization="ct_norm", hu_window=[-200, 250]))
    with pytest.raises(ValueError, match="sd > 0"):
        CTStats(0.0, 10.0, 5.0, 0.0, 3, (1,))


def test_ct_norm_is_a_preprocessing_parameter_and_an_arm():
    assert "normalization" in PREPROCESS_KEYS and resolve().normalization == "minmax"
    cfg = PreprocessConfig.from_params(resolve(**ARMS["ct_norm"]))
    assert cfg.normalization == "ct_norm" and not cfg.use_clahe and not cfg.use_gamma and cfg.hu_window is None
    assert cfg.key != PreprocessConfig.from_params(resolve(**ARMS["no_enhancement"])).key
    assert cfg.with_stats(LITS).key == cfg.key  # the statistics name the folder, not the parameter key
    assert set(ARM_LABELS) == set(ARMS) and all(
        a["normalization"] == "minmax" for k, a in ARMS.items() if k != "ct_norm"
    )


# --- checkpoint and segment ----------------------------------------------------------------------

SEG_STATS = CTStats(0.0, 1000.0, 500.0, 100.0, 10, (1, 2))
"""Clip [0, 1000] HU: −600 → 0, 200 → 0.2, 600 → 0.6, 900 → 0.9 (per-slice min-max would give 200 → 0.53)."""
SEG_CONFIG = {"image_size": 16, "hu_window": [], "quantize_8bit": False, "use_clahe": False, "clahe_clip": 2.0, "clahe_tile": 8,
              "use_gamma": False, "gamma": 1.2, "normalization": "ct_norm", "model": "threshold", "encoder": "none",
              "fused_attention": True}  # fmt: skip


class _Threshold(torch.nn.Module):
    """Liver where the network input > 0.5, tumor where > 0.8 (labels follow the preprocessed image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver, tumor = (x > 0.5).float(), (x > 0.8).float()
        return torch.cat([1 - liver, liver - tumor, tumor], 1) * 20


def _run_with_stats(root: Path, stats: CTStats) -> Path:
    """A run folder whose preprocess.json (notebook 02's) holds ``stats``; returns models/threshold/."""
    write_json(root / "preprocess.json", {"key": "x", "normalization": stats.as_dict()})
    return root / "models" / "threshold"


def test_checkpoint_carries_the_stats_and_segment_applies_them(tmp_path, monkeypatch):
    out = _run_with_stats(tmp_path / "run", SEG_STATS)
    config = {**SEG_CONFIG, "preprocess_key": PreprocessConfig.from_params(SEG_CONFIG).key,
              "split": {"train": [2, 1], "val": [3], "test": [4]}}  # fmt: skip
    save_checkpoint({"model": {}, "config": config, "epoch": 1, "split": config["split"]}, out / "best.pt")
    ckpt = load_checkpoint(out / "best.pt")  # weights_only: the statistics are plain numbers
    assert ckpt["normalization"] == SEG_STATS.as_dict()
    assert seg.preprocess_config(ckpt).ct_stats == SEG_STATS

    monkeypatch.setattr(seg, "model_from_checkpoint", lambda ckpt, device: _Threshold())
    hu = np.array([-600, 200, 600, 900], np.int16)[np.random.default_rng(0).integers(0, 4, (16, 16, 5))]
    vol = write_nifti(tmp_path / "ct.nii.gz", hu)
    (r,) = seg.segment_file(out / "best.pt", vol, tmp_path / "mask.nii.gz", device="cpu", postprocess=False,
                            progress=False, report=tmp_path / "report.json")  # fmt: skip
    import nibabel as nib

    mask = np.asanyarray(nib.load(r["output"]).dataobj)
    expected = np.select([hu == 900, hu == 600], [LABELS["tumor"], LABELS["liver"]], LABELS["background"])
    np.testing.assert_array_equal(mask, expected)  # 200 HU is background only under the stored clip
    assert read_json(tmp_path / "report.json")["checkpoint"]["normalization"]["clip_hu"] == [0.0, 1000.0]


def test_checkpoint_without_matching_stats_is_refused(tmp_path):
    config = {**SEG_CONFIG, "preprocess_key": PreprocessConfig.from_params(SEG_CONFIG).key}
    bare = {"model": {}, "config": config, "epoch": 1}
    with pytest.raises(RunError, match="trained with normalization ct_norm, but .*none are recorded"):
        seg.preprocess_config(bare, "old.pt")
    with pytest.raises(RunError, match="preprocess.json is missing"):
        save_checkpoint(bare, tmp_path / "loose.pt")
    out = _run_with_stats(tmp_path / "run", SEG_STATS)
    with pytest.raises(RunError, match=r"training volumes \[1, 2\], the model trains on \[7\]"):
        save_checkpoint({**bare, "split": {"train": [7]}}, out / "best.pt")
    plain = {"model": {}, "config": {**config, "normalization": "minmax"}}
    assert attach_normalization(plain, tmp_path / "x.pt") is plain  # min-max checkpoints are left as they are


def test_evaluation_check_refuses_a_checkpoint_of_other_statistics(tmp_path):
    """check_normalization: a ct_norm model is scored only on a cache normalised with its own statistics."""
    config = {**SEG_CONFIG, "split": {"train": [1, 2]}}
    out = _run_with_stats(tmp_path / "run", SEG_STATS)
    save_checkpoint({"model": {}, "config": config, "epoch": 1}, out / "best.pt")
    ckpt = load_checkpoint(out / "best.pt")
    check_normalization(ckpt, tmp_path / "run", "best.pt")  # same statistics: passes
    _run_with_stats(tmp_path / "run", dataclasses.replace(SEG_STATS, mean=400.0))  # notebook 02 rerun on a new split
    with pytest.raises(RunError, match="best.pt: trained with ct_norm statistics .* but the cache of"):
        check_normalization(ckpt, tmp_path / "run", "best.pt")
    check_normalization(
        {"config": {"normalization": "minmax"}}, tmp_path / "nowhere", "x.pt"
    )  # min-max: nothing to check


# --- the arm through the tiny study --------------------------------------------------------------


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Params, Path]:
    """Main run ``main`` curated and cached (tiny.prepare), its ct_norm arm made and preprocessed (no figures):
    (main parameters, arm parameters, the arm's run folder)."""
    root = tmp_path_factory.mktemp("ct_norm_arm")
    p = prepare(resolve(**TINY_RUN, epochs=1, bootstrap_resamples=20, eval_batch_size=8, ablation_arms=["ct_norm"],
                        output_root=str(root), run_name="main"))  # fmt: skip
    values, arm_root = prepare_arm(p, "ct_norm")
    pa = resolve(**values)
    stages.run_preprocessing(pa, progress=False, figures_too=False)
    return p, pa, arm_root


def test_arm_preprocessing_takes_the_training_split_statistics(arm):
    _, pa, arm_root = arm
    assert pa.normalization == "ct_norm" and not pa.use_clahe and not pa.use_gamma
    info = read_json(arm_root / "preprocess.json")
    splits = read_json(arm_root / "splits.json")["splits"]
    stats = CTStats.from_dict(info["normalization"])
    assert list(stats.train_ids) == sorted(splits["train"]) and -100 < stats.lo < stats.mean < stats.hi < 300
    volumes = pd.read_csv(arm_root / "volumes.csv", keep_default_na=False)
    fg = _foreground(volumes[volumes.split != ""])
    assert stats.voxels == fg.size and stats.mean == pytest.approx(fg.mean(), rel=1e-12)
    test_image = SliceCache(info["cache_dir"]).image(splits["test"][0])
    assert 0.0 <= float(np.min(test_image)) and float(np.max(test_image)) <= 1.0


def test_figs_3_4_of_the_arm_with_its_statistics(arm):
    """Figs. 3–4 draw the ct_norm stages once the statistics are attached (PreprocessConfig.with_stats)."""
    _, pa, arm_root = arm
    cfg = PreprocessConfig.from_params(pa).with_stats(read_json(arm_root / "preprocess.json")["normalization"])
    out = stages.render_fig03_04(RunDir.from_params(pa), cfg)
    assert list(out["stages"]) == ["original", "normalised"]
    assert (arm_root / "figures/fig03_preprocessing_pipeline.png").is_file()


def test_notebook_02_of_the_arm_draws_its_figures(arm):
    _, pa, arm_root = arm
    stages.run_preprocessing(pa, progress=False)
    assert (arm_root / "figures/fig04_intensity_histograms.png").is_file()


@pytest.mark.slow  # ~1 min on 2 busy cores: training and evaluation of the arm
def test_ct_norm_arm_trains_evaluates_and_enters_table_4(arm):
    """The arm's 03 → 04 in ablation/ct_norm/; its checkpoints carry the statistics segment applies; Table 4."""
    p, pa, arm_root = arm
    stats = CTStats.from_dict(read_json(arm_root / "preprocess.json")["normalization"])
    stages.run_training(pa, progress=False)
    best = load_checkpoint(arm_root / "models/hybrid/best.pt")
    last = load_checkpoint(arm_root / "models/hybrid/last.pt")
    assert best["normalization"] == last["normalization"] == stats.as_dict()
    assert seg.preprocess_config(best).ct_stats == stats  # what segment will apply to a user's CT
    stages.run_evaluation(pa, progress=False)

    t4 = table04(p)
    row = t4.set_index("arm").loc["ct_norm"]
    assert row["recipe"] == ARM_LABELS["ct_norm"] and row["source"] == "ablation/ct_norm"
    assert row["normalization"].startswith(f"ct_norm: clip [{stats.lo:g}, {stats.hi:g}] HU")
    assert 0.0 <= row["liver_dice"] <= 1.0
