"""Training-time augmentation of the study (paper §II.C; docs/study.md §3), in albumentations 2.0.8.

The paper's list was written for albumentations 1.x; this module is its 2.x translation. Every
transform and the ``Compose`` are built with ``strict=True``: a 1.x-only argument (``var_limit``,
``max_holes``, ``alpha_affine``, …) raises instead of being dropped with a warning and replaced by
a 2.x default.

Inputs: ``image`` float32 (H, W) in [0, 1] (the preprocessing output, docs/study.md §2) and ``mask`` uint8
(H, W) with values in ``liverlib.labels.LABELS``. Outputs keep shape, dtype and range (intensity
transforms clip to [0, 1]). Geometric transforms move the mask with nearest-neighbour interpolation
and fill borders with 0 (background) in image and mask; intensity transforms never touch the mask.
Validation and test data are not augmented.

Reproducibility: ``seed`` seeds the ``Compose``'s own random state (albumentations 2.x ignores
``np.random.seed``/``random.seed``). Two pipelines with the same seed give the same sequence. In a
``DataLoader`` every worker gets a copy of the same state, so call
``transform.set_random_seed(seed + worker_id)`` in ``worker_init_fn`` or the workers repeat each
other's augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import albumentations as A
import cv2

from liverlib.params import DEFAULTS, Params

# GaussNoise: 1.x's default var_limit=(10, 50) was a variance in uint8 grey levels, i.e. a standard
# deviation of sqrt(10)/255 … sqrt(50)/255 = 0.0124 … 0.0277 of the full range. That is what the
# paper's GaussNoise(p=0.3) applied to 8-bit data, so we keep it. (2.x's own default (0.2, 0.44)
# is sqrt(10/255), sqrt(50/255): 16× stronger.)
NOISE_STD_RANGE: tuple[float, float] = (math.sqrt(10) / 255, math.sqrt(50) / 255)
"""Standard deviation of the Gaussian noise as a fraction of the [0, 1] range (1.x default equivalent)."""

# GaussianBlur: 1.x's default (blur_limit=(3, 7), sigma=0) let OpenCV derive sigma from the kernel
# size: 0.8 (3×3) … 1.4 (7×7). 2.x samples sigma and derives the kernel (blur_limit=0).
BLUR_SIGMA_RANGE: tuple[float, float] = (0.8, 1.4)
"""Gaussian blur sigma in pixels (1.x default equivalent: "slight patient motion", paper §II.C)."""

# CoarseDropout: 1.x's default was 8 holes of 8 × 8 px; at the paper's 256 × 256 that is 1/32 of the
# side. 2.x takes hole sizes as fractions of the image, so the holes scale with the input size.
DROPOUT_HOLES: tuple[int, int] = (8, 8)
"""Number of CoarseDropout holes (1.x default)."""
DROPOUT_HOLE_FRACTION: tuple[float, float] = (1 / 32, 1 / 32)
"""Hole height and width as fractions of the image side (1.x default 8 px at 256 px)."""

_GEOMETRY = {
    "interpolation": cv2.INTER_LINEAR,
    "mask_interpolation": cv2.INTER_NEAREST,
    "border_mode": cv2.BORDER_CONSTANT,
    "fill": 0,
    "fill_mask": 0,
}


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the paper's transforms (§II.C; docs/study.md §3): the one home of the
    augmentation's defaults, for :func:`build_augmentation` and its torch port (:mod:`liverlib.training.gpu_augment`).
    ``elastic_alpha``/``elastic_sigma`` default to the parameters' defaults (:data:`liverlib.params.DEFAULTS`)."""

    hflip_p: float = 0.5
    vflip_p: float = 0.3
    rotate_limit: float = 25.0
    rotate_p: float = 0.5
    affine_p: float = 0.5
    affine_translate: float = 0.0625
    affine_scale: tuple[float, float] = (0.9, 1.1)
    affine_rotate: float = 15.0
    elastic_alpha: float = DEFAULTS["elastic_alpha"]
    elastic_sigma: float = DEFAULTS["elastic_sigma"]
    elastic_p: float = 0.3
    brightness_contrast: float = 0.2
    bc_p: float = 0.5
    noise_std_range: tuple[float, float] = NOISE_STD_RANGE
    noise_p: float = 0.3
    blur_sigma_range: tuple[float, float] = BLUR_SIGMA_RANGE
    blur_p: float = 0.2
    dropout_holes: tuple[int, int] = DROPOUT_HOLES
    dropout_hole_fraction: tuple[float, float] = DROPOUT_HOLE_FRACTION
    dropout_p: float = 0.3

    @classmethod
    def from_params(cls, p: Params) -> AugmentConfig:
        """The paper's transforms with the run's ``elastic_alpha`` and ``elastic_sigma``."""
        return cls(elastic_alpha=p.elastic_alpha, elastic_sigma=p.elastic_sigma)

    def without_transforms(self) -> AugmentConfig:
        """The same ranges with every probability 0 (the identity)."""
        return replace(self, **{f.name: 0.0 for f in fields(self) if f.name.endswith("_p")})


def build_augmentation(cfg: AugmentConfig | None = None, *, seed: int | None = None, **changes: Any) -> A.Compose:
    """The paper's augmentation pipeline (§II.C; docs/study.md §3), in its order, strict mode on.

    1. HorizontalFlip (p 0.5); 2. VerticalFlip (p 0.3); 3. Rotate ±25° (p 0.5);
    4. ShiftScaleRotate (p 0.5) as 2.x ``Affine``: translate ±6.25 %, scale 0.9–1.1, rotate ±15°
       (our choice for the range, which the paper does not give; 1.x's ShiftScaleRotate defaults were
       ±6.25 %, ±10 %, ±45°);
    5. ElasticTransform α = 1, σ = 50 (p 0.3); 6. RandomBrightnessContrast ±0.2 (p 0.5);
    7. GaussNoise (p 0.3, :data:`NOISE_STD_RANGE`); 8. GaussianBlur (p 0.2, :data:`BLUR_SIGMA_RANGE`);
    9. CoarseDropout (p 0.3, :data:`DROPOUT_HOLES` holes of :data:`DROPOUT_HOLE_FRACTION`, image
       filled with 0, mask untouched).

    Set a probability to 0 to switch a transform off (e.g. every geometric one for an
    intensity-only pipeline).

    Args:
        cfg: probabilities and ranges (default: :class:`AugmentConfig`, the paper's).
        seed: seed of the Compose's random state; None draws a fresh one.
        changes: fields of :class:`AugmentConfig` to change (``elastic_alpha=100.0``, ``bc_p=1.0``, …).

    Returns:
        ``A.Compose`` to call as ``out = aug(image=image, mask=mask)``; ``image`` float32 (H, W) in
        [0, 1], ``mask`` uint8 (H, W) in {0, 1, 2}.
    """
    c = replace(cfg or AugmentConfig(), **changes)
    transforms = [
        A.HorizontalFlip(p=c.hflip_p, strict=True),
        A.VerticalFlip(p=c.vflip_p, strict=True),
        A.Rotate(limit=c.rotate_limit, p=c.rotate_p, strict=True, **_GEOMETRY),
        A.Affine(
            translate_percent=(-c.affine_translate, c.affine_translate),
            scale=c.affine_scale,
            rotate=(-c.affine_rotate, c.affine_rotate),
            p=c.affine_p,
            strict=True,
            **_GEOMETRY,
        ),
        # The paper's alpha=1, sigma=50 moves pixels by only ≈ 0.03 px at 256² in 2.x (measured with
        # 2.0.8: mean ≈ 0.004 px, max ≈ 0.06 px): the noise field is scaled to [-1, 1], smoothed with
        # sigma=50 and multiplied by alpha, so the mask never changes. Visible warps need alpha ≈ 50–300
        # (alpha=120: max ≈ 7 px). We keep the paper's values as the default; alpha and sigma are parameters.
        A.ElasticTransform(alpha=c.elastic_alpha, sigma=c.elastic_sigma, p=c.elastic_p, strict=True, **_GEOMETRY),
        A.RandomBrightnessContrast(
            brightness_limit=c.brightness_contrast, contrast_limit=c.brightness_contrast, p=c.bc_p, strict=True
        ),
        A.GaussNoise(std_range=c.noise_std_range, p=c.noise_p, strict=True),
        A.GaussianBlur(blur_limit=0, sigma_limit=c.blur_sigma_range, p=c.blur_p, strict=True),
        A.CoarseDropout(
            num_holes_range=c.dropout_holes,
            hole_height_range=c.dropout_hole_fraction,
            hole_width_range=c.dropout_hole_fraction,
            fill=0,
            fill_mask=None,  # None: the mask keeps its labels under the holes
            p=c.dropout_p,
            strict=True,
        ),
    ]
    return A.Compose(transforms, strict=True, seed=seed)
