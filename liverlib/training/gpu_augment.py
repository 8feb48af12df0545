"""The paper's augmentation (paper §II.C; docs/study.md §3) in torch, on a whole batch, on the CPU or the GPU.

:func:`liverlib.training.augment.build_augmentation` (albumentations 2.0.8, one sample at a time on the CPU) stays the
paper path. This module draws the same transforms with the same parameter ranges and probabilities per sample
from a ``torch.Generator`` and applies them to a batch at once, so a GPU-resident training set can be augmented
where it lives (≈ 120–200 albumentations samples/s per CPU process cannot feed a GPU).

Order and ranges (albumentations 2.0.8 semantics, read from its source):

1. HorizontalFlip (p 0.5), VerticalFlip (p 0.3): exact flips.
2. Rotate ±25° (p 0.5) about the centre ((W-1)/2, (H-1)/2), as ``cv2.getRotationMatrix2D``.
3. Affine (p 0.5): translate ``int(U(±0.0625) · side)`` px per axis, scale U(0.9, 1.1) per axis
   (``keep_ratio=False``), rotate U(±15°), about the same centre.
4. ElasticTransform α, σ (p 0.3): a standard-normal field per axis, divided by its largest absolute value
   (both axes together), smoothed by a Gaussian of σ px (OpenCV's automatic kernel, radius 4σ, replicated
   border), times α: a displacement in pixels, ``out(p) = in(p + d(p))``.
   Steps 2–4 are composed into one resampling (``grid_sample``: bilinear for images, nearest for masks,
   zeros outside: background), where albumentations resamples after each; the distributions are the same.
5. RandomBrightnessContrast ±0.2 (p 0.5): ``clip(x · (1 + U(±0.2)) + U(±0.2), 0, 1)`` (albumentations'
   ``multiply_add`` with ``brightness_by_max=True``).
6. GaussNoise (p 0.3): std U(:data:`~liverlib.training.augment.NOISE_STD_RANGE`) of the [0, 1] range, clipped.
7. GaussianBlur (p 0.2): σ U(:data:`~liverlib.training.augment.BLUR_SIGMA_RANGE`), kernel ``int(3.5σ)·2 + 1`` taps
   (PIL's rule, as albumentations), reflected border.
8. CoarseDropout (p 0.3): :data:`~liverlib.training.augment.DROPOUT_HOLES` holes of ``int(side · fraction)`` px at
   uniform positions inside the image, image filled with 0, the mask keeps its labels.

Random numbers come from the generator only (on the tensors' device); the same generator state and input
give the same output. Every draw is made for every sample, whether or not its transform fires.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from liverlib.training.augment import AugmentConfig

Params = dict[str, torch.Tensor]


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """n draws of U(lo, hi) on the generator's device."""
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def _integers(g: torch.Generator, n: int, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """n integers uniform in [lo, hi] (inclusive; bounds may be tensors)."""
    u = torch.rand(n, generator=g, device=g.device)
    return (lo + torch.floor(u * (torch.as_tensor(hi) - lo + 1))).long()


def sample_params(n: int, height: int, width: int, cfg: AugmentConfig, g: torch.Generator) -> Params:
    """Per-sample random parameters of every transform (module docstring), drawn in a fixed order.

    Returns:
        dict of tensors of length ``n`` on the generator's device: ``*_on`` (bool, the transform fires),
        ``rotate_deg``, ``affine_deg``, ``scale_x``, ``scale_y``, ``tx``, ``ty`` (px, integers), ``contrast``
        (the multiplier 1 + a), ``brightness``, ``noise_std``, ``blur_sigma``, ``hole_count`` and ``holes``
        (n, max holes, 4: y0, x0, height, width in px).
    """
    p: Params = {}
    for name in ("hflip", "vflip", "rotate", "affine", "elastic", "bc", "noise", "blur", "dropout"):
        p[f"{name}_on"] = torch.rand(n, generator=g, device=g.device) < getattr(cfg, f"{name}_p")
    p["rotate_deg"] = _uniform(g, n, -cfg.rotate_limit, cfg.rotate_limit)
    p["affine_deg"] = _uniform(g, n, -cfg.affine_rotate, cfg.affine_rotate)
    p["scale_x"], p["scale_y"] = (_uniform(g, n, *cfg.affine_scale) for _ in range(2))
    t = cfg.affine_translate
    p["tx"] = torch.trunc(_uniform(g, n, -t, t) * width)  # albumentations: int(fraction · width)
    p["ty"] = torch.trunc(_uniform(g, n, -t, t) * height)
    c, b = cfg.brightness_contrast, cfg.brightness_contrast
    p["contrast"], p["brightness"] = 1.0 + _uniform(g, n, -c, c), _uniform(g, n, -b, b)
    p["noise_std"] = _uniform(g, n, *cfg.noise_std_range)
    p["blur_sigma"] = _uniform(g, n, *cfg.blur_sigma_range)
    k = int(cfg.dropout_holes[1])
    p["hole_count"] = _integers(g, n, *cfg.dropout_holes)
    hh = (height * _uniform(g, n * k, *cfg.dropout_hole_fraction)).long()
    ww = (width * _uniform(g, n * k, *cfg.dropout_hole_fraction)).long()
    y0, x0 = _integers(g, n * k, 0, height - hh), _integers(g, n * k, 0, width - ww)
    p["holes"] = torch.stack([y0, x0, hh, ww], dim=-1).view(n, k, 4)
    return p


def _rotation(deg: torch.Tensor, cx: float, cy: float, sx: torch.Tensor | None = None,
              sy: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """(n, 3, 3) forward matrices T(c) · R(deg) · S · T(-c) in OpenCV's convention ([[cos, sin], [-sin, cos]])."""
    r = torch.deg2rad(deg)
    cos, sin = torch.cos(r), torch.sin(r)
    sx = torch.ones_like(deg) if sx is None else sx
    sy = torch.ones_like(deg) if sy is None else sy
    m = torch.zeros(len(deg), 3, 3, device=deg.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = cos * sx, sin * sy, -sin * sx, cos * sy, 1.0
    m[:, 0, 2] = cx - m[:, 0, 0] * cx - m[:, 0, 1] * cy
    m[:, 1, 2] = cy - m[:, 1, 0] * cx - m[:, 1, 1] * cy
    return m


def geometry_matrix(p: Params, height: int, width: int) -> torch.Tensor:
    """(n, 3, 3) inverse matrices: output pixel (x, y, 1) → input pixel of Rotate then Affine (off → identity)."""
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    eye = torch.eye(3, device=p["rotate_deg"].device).expand(len(p["rotate_deg"]), 3, 3)
    rot = torch.where(p["rotate_on"][:, None, None], _rotation(p["rotate_deg"], cx, cy), eye)
    aff = _rotation(p["affine_deg"], cx, cy, p["scale_x"], p["scale_y"])
    aff[:, 0, 2] += p["tx"]
    aff[:, 1, 2] += p["ty"]
    aff = torch.where(p["affine_on"][:, None, None], aff, eye)
    return torch.linalg.inv(aff @ rot)


def _gaussian_taps(sigma: torch.Tensor, radius: int, cutoff: torch.Tensor) -> torch.Tensor:
    """(n, 2·radius + 1) normalised Gaussian kernels of ``sigma`` (n,), zero beyond ``cutoff`` (n,) taps."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma[:, None]) ** 2) * (x.abs() <= cutoff[:, None])
    return k / k.sum(1, keepdim=True)


def _separable_blur(x: torch.Tensor, taps: torch.Tensor, mode: str) -> torch.Tensor:
    """Blur each (C, H, W) sample of ``x`` (n, C, H, W) with its own 1-D kernel (n, k) along H and W."""
    n, c, h, w = x.shape
    r = taps.shape[1] // 2
    weight = taps.repeat_interleave(c, 0)[:, None]  # (n·C, 1, k)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode=mode)
    y = F.conv2d(y, weight[..., None], groups=n * c)  # along H
    y = F.conv2d(y, weight[:, :, None, :], groups=n * c)  # along W
    return y.view(n, c, h, w)


@functools.lru_cache(maxsize=8)
def _blur_matrix(side: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(side, side) matrix of a 1-D Gaussian blur of ``sigma`` px with OpenCV's automatic kernel (radius 4σ)
    and a replicated border: ``B @ v`` blurs a column ``v`` (the wide kernel as one matmul, not a convolution)."""
    radius = max(int(round(sigma * 4)), 1)  # OpenCV: ksize = round(8σ + 1) | 1 for float images
    s = torch.full((1,), float(sigma), device=device)
    taps = _gaussian_taps(s, radius, torch.full_like(s, radius))  # (1, 2r + 1)
    offsets = torch.arange(-radius, radius + 1, device=device)
    src = (torch.arange(side, device=device)[:, None] + offsets).clamp(0, side - 1)
    return torch.zeros(side, side, device=device).scatter_add_(1, src, taps.expand(side, -1).contiguous())


def elastic_displacement(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """(n, H, W, 2) displacements (dx, dy) in px from standard-normal ``noise`` (n, 2, H, W): albumentations'
    ElasticTransform field (module docstring)."""
    noise = noise / noise.flatten(1).abs().amax(1).clamp_min(1e-6)[:, None, None, None]
    bh = _blur_matrix(noise.shape[-2], sigma, noise.device)
    bw = _blur_matrix(noise.shape[-1], sigma, noise.device)
    return alpha * (bh @ noise @ bw.T).permute(0, 2, 3, 1)


def _resample(image: torch.Tensor, mask: torch.Tensor, inv: torch.Tensor,
              disp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Warp images (bilinear) and masks (nearest) to ``in(inv · (p + disp(p)))``, zeros outside."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=torch.float32),
                            torch.arange(w, device=image.device, dtype=torch.float32), indexing="ij")  # fmt: skip
    q = torch.stack([xs, ys], dim=-1) + disp
    src = q @ inv[:, None, :2, :2].transpose(-1, -2) + inv[:, :2, 2][:, None, None, :]
    grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], dim=-1)
    img = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    msk = F.grid_sample(mask[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img, msk[:, 0].round().to(mask.dtype)


def _hole_mask(p: Params, height: int, width: int) -> torch.Tensor:
    """(n, H, W) True inside a CoarseDropout hole of a sample whose dropout fires."""
    y0, x0, hh, ww = p["holes"].unbind(-1)  # (n, k)
    active = torch.arange(p["holes"].shape[1], device=y0.device) < p["hole_count"][:, None]
    rows = torch.arange(height, device=y0.device)
    cols = torch.arange(width, device=y0.device)
    in_y = (rows >= y0[..., None]) & (rows < (y0 + hh)[..., None]) & active[..., None]  # (n, k, H)
    in_x = (cols >= x0[..., None]) & (cols < (x0 + ww)[..., None])  # (n, k, W)
    holes = in_y.float().transpose(1, 2) @ in_x.float() > 0  # (n, H, W): inside some hole's rows and columns
    return holes & p["dropout_on"][:, None, None]


def _intensity(x: torch.Tensor, p: Params, g: torch.Generator) -> torch.Tensor:
    """Brightness/contrast, Gaussian noise, Gaussian blur and dropout on (n, 1, H, W) float32 images."""
    on = lambda key: p[key][:, None, None, None]  # noqa: E731
    x = torch.where(on("bc_on"), (x * on("contrast") + on("brightness")).clamp(0, 1), x)
    noise = torch.randn(x.shape, generator=g, device=x.device) * on("noise_std")
    x = torch.where(on("noise_on"), (x + noise).clamp(0, 1), x)
    if bool(p["blur_on"].any()):
        sigma = p["blur_sigma"]
        radius = int(max(3.5 * float(sigma.max()), 1))
        taps = _gaussian_taps(sigma, radius, torch.floor(3.5 * sigma))
        x = torch.where(on("blur_on"), _separable_blur(x, taps, "reflect"), x)
    return x.masked_fill(_hole_mask(p, x.shape[-2], x.shape[-1])[:, None], 0.0)


def augment_batch(image: torch.Tensor, mask: torch.Tensor, g: torch.Generator,
                  cfg: AugmentConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The paper's transforms (module docstring) with per-sample parameters, on the tensors' device.

    Args:
        image: (B, 1, H, W) float images in [0, 1] (any float dtype).
        mask: (B, H, W) integer labels in {0, 1, 2} (``liverlib.labels.LABELS``).
        g: the random generator, on the same device as the tensors.
        cfg: probabilities and ranges (default: the paper's, as :func:`liverlib.training.augment.build_augmentation`).

    Returns:
        (float32 (B, 1, H, W) in [0, 1], mask of the input's dtype (B, H, W) in {0, 1, 2}); new tensors.
    """
    cfg = cfg or AugmentConfig()
    n, _, h, w = image.shape
    if g.device.type != image.device.type:
        raise ValueError(f"the generator is on {g.device}, the batch on {image.device}")
    p = sample_params(n, h, w, cfg, g)
    x = image.float()
    x = torch.where(p["hflip_on"][:, None, None, None], x.flip(-1), x)
    y = torch.where(p["hflip_on"][:, None, None], mask.flip(-1), mask)
    x = torch.where(p["vflip_on"][:, None, None, None], x.flip(-2), x)
    y = torch.where(p["vflip_on"][:, None, None], y.flip(-2), y)
    noise = torch.randn(n, 2, h, w, generator=g, device=g.device)  # drawn for every sample: a fixed stream
    warp = p["rotate_on"] | p["affine_on"] | p["elastic_on"]
    if bool(warp.any()):
        idx = warp.nonzero().squeeze(1)
        el = p["elastic_on"][idx]
        d = torch.zeros(len(idx), h, w, 2, device=x.device)
        if bool(el.any()):
            d[el] = elastic_displacement(noise[idx][el], cfg.elastic_alpha, cfg.elastic_sigma)
        xi, yi = _resample(x[idx], y[idx], geometry_matrix(p, h, w)[idx], d)
        x, y = x.index_copy(0, idx, xi), y.index_copy(0, idx, yi)
    return _intensity(x, p, g), y
