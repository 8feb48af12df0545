"""Dropout for CPU training with a faster mask generator: the same distribution, another random stream.

PyTorch's CPU ``bernoulli_`` (behind ``F.dropout``) draws every element serially from its Mersenne Twister at about
7 ns per element. At the paper's 256² input the hybrid's attention dropout covers 8 × 8 × 1,024 × 1,024 = 67 M
elements per layer and step, and those masks cost more than the attention products themselves (docs/training.md
§4.1). :func:`keep_mask` draws the same Bernoulli(1 − p) mask from 32 uniform random bits per element (numpy's SFC64,
two elements per 64-bit word), compared with round((1 − p)·2³²): the keep probability is exact to 2⁻³², finer than
``bernoulli_``'s own float uniform (2⁻²⁴). The words come in fixed chunks, each with its own stream spawned from one
seed drawn from torch's default generator, so ``torch.manual_seed`` fixes the masks and they do not depend on how
many threads drew them. :func:`dropout` applies it as ``F.dropout`` does: kept elements scaled by 1 / (1 − p).

The model calls it only where it pays (a CPU training step from
:data:`liverlib.model.hybrid.CPU_FAST_DROPOUT_MIN_TOKENS` tokens on); everywhere else dropout is ``F.dropout``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

CHUNK_WORDS = 1 << 22
"""64-bit words (8 M mask elements) per independent stream; fixed, so the mask does not depend on the thread count."""

_pool: tuple[int, int, ThreadPoolExecutor] | None = None
"""(process id, workers, pool): rebuilt after a fork (a forked child has the pool object but not its threads)."""


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="liverlib-dropout"))
    return _pool[2]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 − ``p``, independently.

    Seeded from torch's default CPU generator (one draw per call); chunks of :data:`CHUNK_WORDS` words are drawn on
    up to ``torch.get_num_threads()`` threads (numpy releases the GIL while it draws and compares).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    threshold = round((1.0 - p) * 2**32) - 2**31  # signed 32-bit words are uniform over [-2³¹, 2³¹)
    n = math.prod(shape)
    if threshold >= 2**31 or n == 0:  # p below 2⁻³³: every element kept
        return torch.ones(shape, dtype=torch.bool)
    words = (n + 1) // 2
    out = torch.empty(2 * words, dtype=torch.bool)
    seed = int(torch.empty((), dtype=torch.int64).random_())
    streams = np.random.SeedSequence(seed).spawn(-(-words // CHUNK_WORDS))
    flat = out.numpy()

    def draw(i: int) -> None:
        lo, hi = i * CHUNK_WORDS, min(words, (i + 1) * CHUNK_WORDS)
        raw = np.random.SFC64(streams[i]).random_raw(hi - lo)
        np.less(raw.view(np.int32), np.int32(threshold), out=flat[2 * lo : 2 * hi])

    workers = min(len(streams), max(1, torch.get_num_threads()))
    with torch.profiler.record_function("liverlib::dropout_mask"):  # numpy's time, visible in torch.profiler
        if workers == 1:
            for i in range(len(streams)):
                draw(i)
        else:
            list(_executor(workers).map(draw, range(len(streams))))
    return out[:n].view(shape)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of a CPU tensor: ``x`` times a :func:`keep_mask` scaled by 1 / (1 − ``p``)."""
    if p == 0.0:
        return x
    return x * keep_mask(x.shape, p).to(x.dtype).mul_(1.0 / (1.0 - p))
