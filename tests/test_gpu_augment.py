"""The torch augmentation against the albumentations paper pipeline: ranges, probabilities, geometry, masks."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from liverlib.labels import LABELS
from liverlib.training.augment import AugmentConfig, build_augmentation
from liverlib.training.gpu_augment import (
    _blur_matrix,
    _gaussian_taps,
    _resample,
    augment_batch,
    elastic_displacement,
    geometry_matrix,
    sample_params,
)

N = 20_000
ONLY = AugmentConfig().without_transforms()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(n, size, size, dtype=torch.int64)
    mask[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = LABELS["liver"]
    mask[:, size // 3 : size // 2, size // 3 : size // 2] = LABELS["tumor"]
    return torch.rand(n, 1, size, size, generator=g), mask


@pytest.fixture(scope="module")
def paper():
    return {type(t).__name__: t for t in build_augmentation(seed=0).transforms}


@pytest.fixture(scope="module")
def params():
    return sample_params(N, 256, 256, AugmentConfig(), _gen())


def test_defaults_are_the_albumentations_pipeline(paper):
    c = AugmentConfig()
    assert (c.hflip_p, c.vflip_p) == (paper["HorizontalFlip"].p, paper["VerticalFlip"].p)
    assert (-c.rotate_limit, c.rotate_limit) == tuple(paper["Rotate"].limit) and c.rotate_p == paper["Rotate"].p
    aff = paper["Affine"]
    assert aff.p == c.affine_p and tuple(aff.rotate) == (-c.affine_rotate, c.affine_rotate)
    assert tuple(aff.scale["x"]) == tuple(aff.scale["y"]) == c.affine_scale and not aff.keep_ratio
    assert tuple(aff.translate_percent["x"]) == (-c.affine_translate, c.affine_translate)
    el = paper["ElasticTransform"]
    assert (el.alpha, el.sigma, el.p) == (c.elastic_alpha, c.elastic_sigma, c.elastic_p)
    bc = paper["RandomBrightnessContrast"]
    assert tuple(bc.brightness_limit) == tuple(bc.contrast_limit) == (-c.brightness_contrast, c.brightness_contrast)
    assert bc.p == c.bc_p and bc.brightness_by_max
    assert tuple(paper["GaussNoise"].std_range) == pytest.approx(c.noise_std_range)
    assert paper["GaussNoise"].p == c.noise_p
    assert tuple(paper["GaussianBlur"].sigma_limit) == pytest.approx(c.blur_sigma_range)
    assert paper["GaussianBlur"].p == c.blur_p
    cd = paper["CoarseDropout"]
    assert tuple(cd.num_holes_range) == c.dropout_holes and cd.p == c.dropout_p
    assert tuple(cd.hole_height_range) == tuple(cd.hole_width_range) == pytest.approx(c.dropout_hole_fraction)
    assert cd.fill_mask is None  # the mask keeps its labels under the holes


@pytest.mark.parametrize("key, lo, hi", [("rotate_deg", -25, 25), ("affine_deg", -15, 15), ("scale_x", 0.9, 1.1),
                                         ("scale_y", 0.9, 1.1), ("tx", -15, 15), ("ty", -15, 15),
                                         ("contrast", 0.8, 1.2), ("brightness", -0.2, 0.2),
                                         ("noise_std", np.sqrt(10) / 255, np.sqrt(50) / 255),
                                         ("blur_sigma", 0.8, 1.4)])  # fmt: skip
def test_sampled_parameters_fill_the_albumentations_ranges(params, key, lo, hi):
    v = params[key].double()
    assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6
    assert v.min() < lo + 0.02 * (hi - lo) and v.max() > hi - 0.02 * (hi - lo)  # the whole range is used
    if key in ("tx", "ty"):  # int(U(±0.0625) · 256) px: integers truncated toward zero, so ±16 is never reached
        assert torch.equal(v, v.round())


@pytest.mark.parametrize("key, p", [("hflip_on", 0.5), ("vflip_on", 0.3), ("rotate_on", 0.5), ("affine_on", 0.5),
                                    ("elastic_on", 0.3), ("bc_on", 0.5), ("noise_on", 0.3), ("blur_on", 0.2),
                                    ("dropout_on", 0.3)])  # fmt: skip
def test_probabilities(params, key, p):
    assert float(params[key].float().mean()) == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / N))


def test_holes_are_eight_of_eight_pixels_inside_the_image(params):
    y0, x0, hh, ww = params["holes"].unbind(-1)
    assert (params["hole_count"] == 8).all() and params["holes"].shape[1] == 8
    assert (hh == 8).all() and (ww == 8).all()  # int(256 / 32)
    assert y0.min() == 0 and (y0 + hh).max() == 256 and x0.min() == 0 and (x0 + ww).max() == 256


def test_masks_stay_labels_and_images_stay_in_range_with_every_transform_on():
    cfg = AugmentConfig(**{k: 1.0 for k in ("hflip_p", "vflip_p", "rotate_p", "affine_p", "elastic_p", "bc_p",
                                                 "noise_p", "blur_p", "dropout_p")}, elastic_alpha=120.0)  # fmt: skip
    x, y = _batch(8)
    xa, ya = augment_batch(x, y, _gen(), cfg)
    assert xa.shape == x.shape and xa.dtype == torch.float32 and ya.shape == y.shape and ya.dtype == y.dtype
    assert set(ya.unique().tolist()) <= set(LABELS.values()) and (ya == LABELS["tumor"]).any()
    assert xa.min() >= 0 and xa.max() <= 1 and not torch.equal(ya, y)


def test_identity_when_every_probability_is_zero():
    x, y = _batch()
    xa, ya = augment_batch(x.half(), y, _gen(), ONLY)
    assert torch.equal(ya, y) and torch.equal(xa, x.half().float())


def test_same_seed_same_batch_other_seed_other_batch():
    x, y = _batch()
    a, b, c = (augment_batch(x, y, _gen(s)) for s in (3, 3, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_flips_are_exact():
    x, y = _batch()
    from dataclasses import replace

    xa, ya = augment_batch(x, y, _gen(), replace(ONLY, hflip_p=1.0, vflip_p=1.0))
    assert torch.equal(xa, x.flip(-1).flip(-2)) and torch.equal(ya, y.flip(-1).flip(-2))


def test_rotation_and_affine_match_opencv():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 2)
    p = sample_params(1, 64, 64, ONLY, _gen())
    p |= {"rotate_on": torch.tensor([True]), "affine_on": torch.tensor([True]), "rotate_deg": torch.tensor([20.0]),
          "affine_deg": torch.tensor([-10.0]), "scale_x": torch.tensor([1.05]), "scale_y": torch.tensor([0.95]),
          "tx": torch.tensor([3.0]), "ty": torch.tensor([-2.0])}  # fmt: skip
    rot = cv2.getRotationMatrix2D((31.5, 31.5), 20.0, 1.0)
    ref = cv2.warpAffine(img, rot, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    aff = A.Affine(rotate=(-10, -10), scale={"x": (1.05, 1.05), "y": (0.95, 0.95)},
                   translate_px={"x": (3, 3), "y": (-2, -2)}, p=1.0, border_mode=cv2.BORDER_CONSTANT)  # fmt: skip
    ref = aff(image=ref)["image"]
    got, _ = _resample(torch.from_numpy(img)[None, None], torch.zeros(1, 64, 64, dtype=torch.int64),
                       geometry_matrix(p, 64, 64), torch.zeros(1, 64, 64, 2))  # fmt: skip
    inner = (slice(16, 48), slice(16, 48))  # one resampling vs two: compare away from the borders
    assert np.abs(got[0, 0].numpy()[inner] - ref[inner]).max() < 0.02


def test_blur_kernels_match_albumentations_and_opencv():
    from albumentations.augmentations.blur.functional import create_gaussian_kernel_1d

    for sigma in (0.8, 1.1, 1.4):
        ref = create_gaussian_kernel_1d(sigma)
        r = len(ref) // 2
        got = _gaussian_taps(torch.tensor([sigma]), 4, torch.floor(torch.tensor([3.5 * sigma])))[0]
        assert np.allclose(got[4 - r : 5 + r].numpy(), ref, atol=1e-6) and got[: 4 - r].sum() == 0
    v = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    ref = cv2.GaussianBlur(v, (0, 0), 5.0, borderType=cv2.BORDER_REPLICATE)
    b = _blur_matrix(64, 5.0, torch.device("cpu"))
    assert np.abs((b @ torch.from_numpy(v) @ b.T).numpy() - ref).max() < 1e-5


def test_elastic_field_has_albumentations_magnitude():
    from albumentations.augmentations.geometric.functional import generate_displacement_fields

    rng = np.random.default_rng(0)
    ref = np.stack([generate_displacement_fields((128, 128), 120.0, 20.0, False, (0, 0), rng, "gaussian")
                    for _ in range(8)])  # fmt: skip
    got = elastic_displacement(torch.randn(8, 2, 128, 128, generator=_gen()), 120.0, 20.0)
    assert float(got.abs().mean()) == pytest.approx(float(np.abs(ref).mean()), rel=0.25)


def test_dropout_blanks_image_holes_and_keeps_the_mask():
    from dataclasses import replace

    x, y = _batch(2, 256)
    xa, ya = augment_batch(x + 0.5, y, _gen(), replace(ONLY, dropout_p=1.0))  # +0.5: no pixel is 0 before
    zeros = (xa == 0).flatten(1).sum(1)
    assert torch.equal(ya, y) and (zeros > 0).all() and (zeros <= 8 * 64).all()
