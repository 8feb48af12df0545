"""Tests of liverlib.training.losses against explicit numpy arithmetic on tiny tensors (docs/study.md §5, paper Table 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverlib.labels import LABELS
from liverlib.training.losses import CombinedLoss, cross_entropy_loss, dice_loss, focal_loss

BG, LIVER, TUMOR = LABELS["background"], LABELS["liver"], LABELS["tumor"]

# 1 × 3 × 2 × 2 logits and a 1 × 2 × 2 target holding all three classes.
LOGITS = np.array(
    [[[[2.0, -1.0], [0.5, 0.0]], [[0.1, 1.5], [0.2, 2.0]], [[-1.0, 0.3], [1.2, -0.5]]]],
    dtype=np.float64,
)
TARGET = np.array([[[BG, LIVER], [TUMOR, LIVER]]])
# The same pixels without tumor (2 → 1).
TARGET_NO_TUMOR = np.array([[[BG, LIVER], [LIVER, LIVER]]])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _p_true(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = _softmax(logits)
    b, h, w = np.indices(target.shape)
    return p[b, target, h, w]


def _np_ce(logits, target):
    return -np.log(_p_true(logits, target)).mean()


def _np_focal(logits, target, alpha=0.25, gamma=2.0):
    pt = _p_true(logits, target)
    return (-alpha * (1 - pt) ** gamma * np.log(pt)).mean()


def _np_dice_loss(logits, target, eps=1e-6):
    p = _softmax(logits)
    scores = []
    for c in range(p.shape[1]):
        g = (target == c).astype(np.float64)
        scores.append((2 * (p[:, c] * g).sum() + eps) / (p[:, c].sum() + g.sum() + eps))
    return 1 - np.mean(scores)


def _t(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(a, dtype=dtype)


@pytest.mark.parametrize("target", [TARGET, TARGET_NO_TUMOR], ids=["with_tumor", "without_tumor"])
def test_components_match_numpy(target):
    logits, tgt = _t(LOGITS), _t(target, torch.int64)
    assert cross_entropy_loss(logits, tgt).item() == pytest.approx(_np_ce(LOGITS, target), rel=1e-6)
    assert dice_loss(logits, tgt).item() == pytest.approx(_np_dice_loss(LOGITS, target), rel=1e-6)
    assert focal_loss(logits, tgt).item() == pytest.approx(_np_focal(LOGITS, target), rel=1e-6)


def test_hand_value_of_one_pixel():
    # One pixel, logits (0, 0, 0): p_t = 1/3. CE = ln 3; focal = 0.25 · (2/3)² · ln 3.
    logits, tgt = torch.zeros(1, 3, 1, 1), torch.tensor([[[LIVER]]])
    assert cross_entropy_loss(logits, tgt).item() == pytest.approx(np.log(3), rel=1e-6)
    assert focal_loss(logits, tgt).item() == pytest.approx(0.25 * (2 / 3) ** 2 * np.log(3), rel=1e-6)
    # Dice: liver 2·(1/3)/(1/3 + 1) = 1/2; background and tumor (ε)/(1/3 + ε) ≈ 0.
    expected = 1 - (0.5 + 2 * 1e-6 / (1 / 3 + 1e-6)) / 3
    assert dice_loss(logits, tgt).item() == pytest.approx(expected, rel=1e-6)


def test_absent_class_predicted_absent_scores_one():
    # Confident, correct prediction of a slice without tumor: every class Dice ≈ 1, loss ≈ 0.
    target = TARGET_NO_TUMOR
    logits = np.full((1, 3, 2, 2), -30.0)
    b, h, w = np.indices(target.shape)
    logits[b, target, h, w] = 30.0
    loss = dice_loss(_t(logits), _t(target, torch.int64)).item()
    assert loss == pytest.approx(_np_dice_loss(logits, target), abs=1e-6)
    assert loss < 1e-5


def test_focal_with_gamma_zero_is_alpha_times_ce():
    logits, tgt = _t(LOGITS), _t(TARGET, torch.int64)
    assert focal_loss(logits, tgt, alpha=0.25, gamma=0.0).item() == pytest.approx(
        0.25 * cross_entropy_loss(logits, tgt).item(), rel=1e-6
    )


def test_combined_loss_is_weighted_sum():
    logits, tgt = _t(LOGITS), _t(TARGET, torch.int64)
    parts = CombinedLoss().components(logits, tgt)
    assert set(parts) == {"ce", "dice", "focal", "total"}
    expected = _np_ce(LOGITS, TARGET) + _np_dice_loss(LOGITS, TARGET) + 0.5 * _np_focal(LOGITS, TARGET)
    assert parts["total"].item() == pytest.approx(expected, rel=1e-6)
    assert CombinedLoss()(logits, tgt).item() == pytest.approx(expected, rel=1e-6)
    custom = CombinedLoss(ce_weight=0.0, dice_weight=2.0, focal_weight=1.0, alpha=0.5, gamma=1.0, eps=1e-3)
    expected = 2 * _np_dice_loss(LOGITS, TARGET, eps=1e-3) + _np_focal(LOGITS, TARGET, alpha=0.5, gamma=1.0)
    assert custom(logits, tgt).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("scale", [1.0, 100.0], ids=["moderate", "extreme_logits"])
def test_gradients_are_finite(scale):
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, 8, 8) * scale).requires_grad_()
    target = torch.randint(0, 3, (2, 8, 8))
    target[1] = LIVER  # second image without tumor
    CombinedLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_autocast_computes_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    target = torch.randint(0, 3, (2, 8, 8), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CombinedLoss()(logits, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(CombinedLoss()(logits.float(), target.long()).item(), rel=1e-6)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="do not match"):
        dice_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.int64))
