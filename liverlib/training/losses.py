"""The study's mixed loss L = CE + Dice + 0.5 × Focal (paper §II.E, Table 2, Eq. 10; docs/study.md §5).

Pure functions over logits (B, C, H, W) and integer targets (B, H, W) with values in
``liverlib.labels.LABELS``, plus :class:`CombinedLoss`, a thin ``nn.Module`` over them (as in
segmentation-models-pytorch). Every function computes in float32, also under autocast.

We deliberately do not use ``smp.losses.FocalLoss``: with ``mode="multiclass"`` it is a one-vs-rest
*sigmoid* focal loss, and its reduction over classes changed between smp 0.5 (sum) and 0.6 (mean),
a factor of 3 for 3 classes. The paper's Table 2 gives the softmax form −α(1 − p_t)^γ log p_t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _prepare(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits as float32 and target as int64, with matching batch and spatial shapes."""
    if logits.dim() != target.dim() + 1 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    return logits.float(), target.long()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft multi-class Dice loss (paper Table 2, ε = 1e-6; docs/study.md §5).

    With p = softmax(logits) and g = one-hot(target), for each class c the Dice is computed over all
    pixels of the whole batch at once: D_c = (2 Σ p_c g_c + ε) / (Σ p_c + Σ g_c + ε), the sums running
    over batch, height and width. The loss is 1 − mean_c D_c over all C classes (background included).
    A class absent from the target and predicted with probability ≈ 0 everywhere (e.g. tumor in a
    batch without tumor) gets D_c ≈ ε/ε = 1, i.e. it adds no loss; predicting it anyway costs.

    Args:
        logits: (B, C, H, W) raw scores, any float dtype.
        target: (B, H, W) integer labels in [0, C).
        eps: smoothing ε added to numerator and denominator.

    Returns:
        Scalar float32 tensor in [0, 1].
    """
    logits, target = _prepare(logits, target)
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + eps) / (cardinality + eps)
    return 1.0 - dice.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss −α (1 − p_t)^γ log p_t averaged over all pixels (paper Table 2; docs/study.md §5).

    p_t is the softmax probability of each pixel's true class; α is one constant for every class
    (paper: "a constant weight applied uniformly across classes"). With γ = 0 this is α × CE.

    Args:
        logits: (B, C, H, W) raw scores, any float dtype.
        target: (B, H, W) integer labels in [0, C).
        alpha: balancing factor α (0.25).
        gamma: focusing parameter γ (2.0).

    Returns:
        Scalar float32 tensor ≥ 0.
    """
    logits, target = _prepare(logits, target)
    log_pt = logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    return (-alpha * (1.0 - pt).pow(gamma) * log_pt).mean()


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean cross-entropy without class weights (paper Table 2, §II.E): (B, C, H, W), (B, H, W) → scalar."""
    logits, target = _prepare(logits, target)
    return F.cross_entropy(logits, target)


class CombinedLoss(nn.Module):
    """L = w_ce·CE + w_dice·Dice + w_focal·Focal (paper Eq. 10: weights 1, 1, 0.5; docs/study.md §5).

    Args:
        ce_weight: weight of cross-entropy (1.0).
        dice_weight: weight of the soft Dice loss (1.0).
        focal_weight: weight of the focal loss (0.5).
        alpha: focal α (0.25), the same for every class.
        gamma: focal γ (2.0).
        eps: Dice smoothing ε (1e-6).

    ``forward(logits, target)`` returns the total as a float32 scalar; ``components`` returns the
    unweighted terms and the total, for logging. Autocast is disabled inside, so the loss is float32.
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        focal_weight: float = 0.5,
        alpha: float = 0.25,
        gamma: float = 2.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.ce_weight, self.dice_weight, self.focal_weight = ce_weight, dice_weight, focal_weight
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"ce", "dice", "focal", "total"}``: unweighted terms and the weighted sum (float32 scalars)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            ce = cross_entropy_loss(logits, target)
            dice = dice_loss(logits, target, eps=self.eps)
            focal = focal_loss(logits, target, alpha=self.alpha, gamma=self.gamma)
        total = self.ce_weight * ce + self.dice_weight * dice + self.focal_weight * focal
        return {"ce": ce, "dice": dice, "focal": focal, "total": total}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) logits, (B, H, W) integer target → scalar float32 total loss."""
        return self.components(logits, target)["total"]

    def extra_repr(self) -> str:
        """Weights and hyper-parameters, for ``print(module)``."""
        return (
            f"ce_weight={self.ce_weight}, dice_weight={self.dice_weight}, focal_weight={self.focal_weight}, "
            f"alpha={self.alpha}, gamma={self.gamma}, eps={self.eps}"
        )
