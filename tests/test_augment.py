"""Tests of liverlib.training.augment: label safety, mask untouched by intensity, seeding, strict mode (docs/study.md §3)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from liverlib.labels import LABELS
from liverlib.training.augment import build_augmentation

GEOMETRY_OFF = {"hflip_p": 0.0, "vflip_p": 0.0, "rotate_p": 0.0, "affine_p": 0.0, "elastic_p": 0.0}
INTENSITY_OFF = {"bc_p": 0.0, "noise_p": 0.0, "blur_p": 0.0, "dropout_p": 0.0}


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((64, 64), dtype=np.float32)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 12:52] = LABELS["liver"]
    mask[20:30, 25:33] = LABELS["tumor"]
    return image, mask


@pytest.mark.parametrize("always", [False, True], ids=["paper_probabilities", "every_transform"])
def test_masks_keep_label_values_and_images_keep_range(sample, always):
    image, mask = sample
    kwargs = {k: 1.0 for k in (*GEOMETRY_OFF, *INTENSITY_OFF)} if always else {}
    aug = build_augmentation(seed=0, elastic_alpha=100.0 if always else 1.0, **kwargs)
    for _ in range(100):
        out = aug(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.float32
        assert out["mask"].shape == mask.shape and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= set(LABELS.values())
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


def test_intensity_transforms_never_touch_the_mask(sample):
    image, mask = sample
    aug = build_augmentation(seed=0, bc_p=1.0, noise_p=1.0, blur_p=1.0, dropout_p=1.0, **GEOMETRY_OFF)
    for _ in range(20):
        out = aug(image=image, mask=mask)
        np.testing.assert_array_equal(out["mask"], mask)
        assert not np.array_equal(out["image"], image)
    # Intensity transforms are image-only, and CoarseDropout leaves the mask alone (fill_mask=None).
    for t in aug.transforms:
        if isinstance(t, A.CoarseDropout):
            assert t.fill_mask is None
        elif not isinstance(t, A.DualTransform):
            assert isinstance(t, A.ImageOnlyTransform)


def test_geometric_transform_moves_image_and_mask_together(sample):
    image, mask = sample
    out = build_augmentation(hflip_p=1.0, vflip_p=1.0, rotate_p=0.0, affine_p=0.0, elastic_p=0.0, **INTENSITY_OFF)(
        image=image, mask=mask
    )
    np.testing.assert_array_equal(out["mask"], mask[::-1, ::-1])
    np.testing.assert_array_equal(out["image"], image[::-1, ::-1])


def test_paper_elastic_parameters_are_negligible_in_2x(sample):
    # Documents the comment in build_augmentation: alpha=1, sigma=50 moves pixels by a fraction of a
    # pixel, so the mask never changes; alpha=100 does warp it.
    image, mask = sample
    off = {**GEOMETRY_OFF, **INTENSITY_OFF}
    del off["elastic_p"]
    weak = build_augmentation(seed=0, elastic_p=1.0, **off)
    strong = build_augmentation(seed=0, elastic_p=1.0, elastic_alpha=100.0, **off)
    assert all(np.array_equal(weak(image=image, mask=mask)["mask"], mask) for _ in range(10))
    assert not all(np.array_equal(strong(image=image, mask=mask)["mask"], mask) for _ in range(10))


def test_seeded_pipelines_repeat(sample):
    image, mask = sample
    first, second, other = (build_augmentation(seed=s) for s in (7, 7, 8))
    same, differs = True, False
    for _ in range(10):
        a, b, c = first(image=image, mask=mask), second(image=image, mask=mask), other(image=image, mask=mask)
        same &= np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        differs |= not np.array_equal(a["image"], c["image"])
    assert same and differs


def test_strict_mode_rejects_1x_arguments():
    assert build_augmentation().strict
    with pytest.raises(ValueError, match="var_limit"):
        A.GaussNoise(var_limit=(10, 50), strict=True)
    with pytest.warns(UserWarning, match="max_holes"), pytest.raises(ValueError, match="max_holes"):
        A.Compose([A.CoarseDropout(max_holes=8)], strict=True)  # non-strict transform warns, Compose raises
