"""Mixed precision: an autocast training step computes the same loss and gradient as fp32, within a stated
tolerance (issue 6; issue 9 replaced a bound on an AdamW step, which moves every weight by ≈ lr whatever the
gradient, with a check on the gradient itself).

Tolerance: the loss agrees within 2% relative, and the gradient (all parameters, one vector) has cosine
similarity > 0.95 with the fp32 one (measured 0.967 for bf16 on CPU), while the fp32 gradient of another
batch does not (< 0.5; measured 0.14): the check would fail on a wrong or random gradient. bf16 has an
8-bit mantissa (≈ 0.4% relative precision), and small gradients lose relatively more.
"""

from __future__ import annotations

import copy

import pytest
import torch

from liverlib.losses import CombinedLoss
from liverlib.model import HybridTransUNet


def _grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, dtype: torch.dtype | None):
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast(device, dtype=dtype) if dtype else torch.autocast(device, enabled=False)
    with ctx:
        logits = model(x)
    loss = CombinedLoss()(logits.float(), y)
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def _compare(device: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = HybridTransUNet(base=16, ffn=128, heads=4, dropout=0.0).to(device)
    x, x2 = torch.rand(2, 1, 32, 32, device=device), torch.rand(2, 1, 32, 32, device=device)
    y, y2 = torch.randint(0, 3, (2, 32, 32), device=device), torch.randint(0, 3, (2, 32, 32), device=device)
    loss32, g32 = _grad(copy.deepcopy(model), x, y, device, None)
    loss16, g16 = _grad(copy.deepcopy(model), x, y, device, dtype)
    _, g_other = _grad(copy.deepcopy(model), x2, y2, device, None)
    cos = torch.nn.functional.cosine_similarity
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert cos(g32, g16, dim=0) > 0.95
    assert cos(g32, g_other, dim=0) < 0.5  # a gradient of other data is told apart: the check can fail


def test_cpu_bf16_autocast_step_matches_fp32() -> None:
    _compare("cpu", torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_step_matches_fp32() -> None:
    _compare("cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
