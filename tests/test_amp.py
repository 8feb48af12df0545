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

from liverlib.model.hybrid import HybridTransUNet
from liverlib.training.losses import CombinedLoss


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


def test_cpu_bf16_parameter_chooses_the_training_precision(tmp_path, monkeypatch) -> None:
    """``cpu_bf16`` trains under bf16 where the CPU has it natively and stays fp32 where it would be emulated;
    off is fp32 everywhere (on by default: same Dice within 0.003, docs/training.md §4)."""
    import liverlib.runtime as runtime
    from liverlib.params import resolve
    from liverlib.training.loop import train
    from tests.tiny import TINY_RUN, prepare, share_prepared

    p = prepare(resolve(**{**TINY_RUN, "epochs": 1}, output_root=str(tmp_path), run_name="r"))
    for native, asked, expected in ((True, True, "torch.bfloat16"), (False, True, "off"), (True, False, "off")):
        monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda native=native: native)
        q = resolve(**{**dict(p), "cpu_bf16": asked, "run_name": f"r{native:d}{asked:d}"})
        share_prepared(tmp_path, "r", q.run_name)
        res = train(q, progress=False)
        assert res["amp"] == expected, (native, asked)
        assert torch.isfinite(torch.tensor(res["history"].train_loss.to_numpy())).all()


def test_parallel_trainings_share_the_cpu_cores_and_stay_sequential_on_cuda(monkeypatch):
    """cpu_parallel_trainings: N trainings at once on the CPU with cores // N threads each; 1, one job or CUDA:
    sequential with torch's default threads."""
    from liverlib import runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    assert runtime.parallel_trainings("cpu", 2, 3) == (2, 2)
    assert runtime.parallel_trainings("cpu", 4, 2) == (2, 2)  # never more at once than jobs
    assert runtime.parallel_trainings("cpu", 8, 8) == (4, 1)  # never more than cores
    assert runtime.parallel_trainings("cpu", 1, 3) == (1, 0)
    assert runtime.parallel_trainings("cpu", 2, 1) == (1, 0)
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    assert runtime.parallel_trainings("auto", 2, 2) == (1, 0)
