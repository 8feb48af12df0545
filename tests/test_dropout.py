"""The CPU training path's dropout masks (liverlib.model.dropout): the distribution and scale of ``F.dropout``, fixed
by ``torch.manual_seed``, independent of the thread count; and where the hybrid uses them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import liverlib.model.dropout as D
import liverlib.model.hybrid as H


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_each_element_with_probability_1_minus_p(p):
    torch.manual_seed(0)
    n = 2_000_000
    keep = D.keep_mask((n,), p)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * sd
    # independent neighbours: the two halves of every 64-bit word, and adjacent words, are uncorrelated
    a, b = keep[0::2].float(), keep[1::2].float()
    assert abs((a * b).mean().item() - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / (n / 2))


def test_keep_mask_is_fixed_by_the_seed_and_not_by_the_thread_count():
    shape = (3, 2 * D.CHUNK_WORDS + 5, 2)  # several chunks, an odd element count
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(7)
        one = D.keep_mask(shape, 0.1)
        torch.set_num_threads(2)
        torch.manual_seed(7)
        two = D.keep_mask(shape, 0.1)
        again = D.keep_mask(shape, 0.1)
    finally:
        torch.set_num_threads(threads)
    assert one.shape == shape
    assert torch.equal(one, two)
    assert not torch.equal(two, again)  # the next call draws a new mask
    for chunk in one.flatten().split(2 * D.CHUNK_WORDS):  # every chunk's stream draws, none is left at its fill value
        assert 0.85 < chunk.float().mean().item() < 0.95


def test_keep_mask_edges():
    assert D.keep_mask((4, 0), 0.1).shape == (4, 0)
    assert D.keep_mask((5, 3), 0.0).all()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout probability"):
            D.keep_mask((2,), bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_scales_what_it_keeps_as_F_dropout_does(dtype):
    torch.manual_seed(1)
    x = (torch.rand(64, 1000) + 0.5).to(dtype).requires_grad_()
    y = D.dropout(x, 0.2)
    kept = y != 0
    assert 0.75 < kept.float().mean().item() < 0.85
    scale = torch.ones((), dtype=dtype).div_(0.8)  # F.dropout's mask: bernoulli(1 − p) divided by (1 − p) in x's dtype
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale, rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) * scale, rtol=0, atol=0)
    reference = F.dropout(x.detach(), 0.2)  # the same two values, other positions
    assert set(reference.unique().tolist()) <= {0.0} | set((x.detach() * scale).unique().tolist())
    assert D.dropout(x, 0.0) is x


def test_the_worker_pool_is_rebuilt_after_a_fork(monkeypatch):
    first = D._executor(2)
    assert D._executor(2) is first
    monkeypatch.setattr(D.os, "getpid", lambda: -1)  # as in a forked child: the pool's threads are not there
    assert D._executor(2) is not first


def test_the_hybrid_takes_the_fast_masks_in_cpu_training_from_the_threshold(monkeypatch):
    """From CPU_FAST_DROPOUT_MIN_TOKENS tokens on, a CPU training step's transformer dropouts (attention, residual,
    FFN: 4 per layer) come from liverlib.model.dropout; below it, and in evaluation, none do."""
    calls = []
    real = D.dropout
    monkeypatch.setattr(D, "dropout", lambda x, p: calls.append(tuple(x.shape)) or real(x, p))
    layer = H.TransformerLayer(16, 2, 32, dropout=0.1)
    big, small = torch.randn(2, H.CPU_FAST_DROPOUT_MIN_TOKENS, 16), torch.randn(2, 64, 16)
    layer.train()
    layer(small)
    assert calls == []
    layer(big)
    n = H.CPU_FAST_DROPOUT_MIN_TOKENS
    assert sorted(calls) == sorted([(2, 2, n, n), (2, n, 16), (2, n, 32), (2, n, 16)])
    calls.clear()
    layer.eval()
    with torch.no_grad():
        layer(big)
    assert calls == []
    plain = H.TransformerLayer(16, 2, 32, dropout=0.1, fused=False)  # the paper's path keeps F.dropout
    plain.train()
    plain(big)
    assert calls == []


def test_under_torch_compile_the_layer_keeps_F_dropout(monkeypatch):
    """Inductor draws its own masks in its fused kernels (numpy would break the graph): while compiling, none come from
    liverlib.model.dropout."""
    calls = []
    monkeypatch.setattr(D, "dropout", lambda x, p: calls.append(1) or x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    layer = H.TransformerLayer(16, 2, 32, dropout=0.1)
    layer.train()
    layer(torch.randn(1, H.CPU_FAST_DROPOUT_MIN_TOKENS, 16))
    assert calls == []
