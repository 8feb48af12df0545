"""Which attention path a CPU training step should take: PyTorch's SDPA, the explicit softmax(QKᵀ/√d)V, or the
explicit one with the faster dropout masks of ``liverlib.model.dropout``.

On the CPU, ``F.scaled_dot_product_attention`` has no fused kernel when dropout is on (training), so it falls back to
a math path that materialises the (B, heads, N, N) attention matrix and also runs NaN checks over it; the hybrid's
explicit path (``fused=False``) computes the same formula with the same parameters. This tool times the hybrid's
training step (the loop's ``train_step``: CombinedLoss, grad clip, fused AdamW; bf16 autocast where the CPU computes it
natively, else fp32; channels_last) with each path, **interleaved in one process** (a round = 2 steps of each, after
one step of warm-up), so a drift of the machine hits both alike, and prints the median per path and their ratio.
``liverlib.model.hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS`` and ``CPU_FAST_DROPOUT_MIN_TOKENS`` are chosen from its
output (docs/training.md §4.1). The fast masks draw the same Bernoulli(1 − p) distribution from another random stream
(``liverlib.model.dropout``), so the model's mathematics is unchanged.

Not a test (the numbers depend on the CPU and its load).

    .venv/bin/python tools/cpu_attention_paths.py [--sizes 64 128 256] [--rounds 4] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import liverlib.model.hybrid as hybrid
from liverlib.bench.timing import machine_info
from liverlib.labels import NUM_CLASSES
from liverlib.runtime import cpu_bf16_supported, usable_cores
from liverlib.training.loop import make_optimizer
from liverlib.training.losses import CombinedLoss
from liverlib.training.step import train_step

PATHS = {"sdpa": (10**9, 10**9), "explicit": (0, 10**9), "explicit + fast masks": (0, 0)}
"""Path name → the token thresholds that force it: (explicit attention, fast dropout masks); 10⁹ never switches."""


def measure(size: int, batch: int, rounds: int) -> dict[str, list[float]]:
    """Training slices per second of each path at ``size``², one value per round."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = hybrid.build_model("hybrid", image_size=size, fused_attention=True).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, 1e-3, 1e-5, device)
    loss_fn = CombinedLoss(1.0, 1.0, 0.5, 0.25, 2.0, 1e-6)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.rand(batch, 1, size, size)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size))
    dtype = torch.bfloat16 if cpu_bf16_supported() else None

    def step() -> None:
        train_step(model, x, y, opt, loss_fn, scaler, grad_clip=1.0, amp_dtype=dtype, channels_last=True)

    model.train()
    step()
    rates: dict[str, list[float]] = {name: [] for name in PATHS}
    saved = hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS, hybrid.CPU_FAST_DROPOUT_MIN_TOKENS
    try:
        for _ in range(rounds):
            for name, (explicit, fast) in PATHS.items():
                hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS, hybrid.CPU_FAST_DROPOUT_MIN_TOKENS = explicit, fast
                step()  # the first step after a switch is not timed
                t = time.perf_counter()
                step()
                step()
                rates[name].append(2 * batch / (time.perf_counter() - t))
    finally:
        hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS, hybrid.CPU_FAST_DROPOUT_MIN_TOKENS = saved
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=usable_cores())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps(machine_info(torch.device("cpu")), indent=1))
    print(f"threads {a.threads}, batch {a.batch}, {a.rounds} interleaved rounds of 2 timed steps per path\n")
    names = list(PATHS)
    print(
        "| input | tokens | "
        + " | ".join(f"{n}, slices/s (median)" for n in names)
        + " | fastest / SDPA | path taken |"
    )
    print("|---|---:|" + "---:|" * len(names) + "---:|---|")
    for size in a.sizes:
        r = measure(size, a.batch, a.rounds)
        med = {n: statistics.median(r[n]) for n in names}
        tokens = (size // 8) ** 2
        taken = "explicit" if tokens >= hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS else "SDPA"
        if tokens >= hybrid.CPU_FAST_DROPOUT_MIN_TOKENS:
            taken += " + fast masks"
        cells = " | ".join(f"{med[n]:.2f} ({' '.join(f'{v:.2f}' for v in r[n])})" for n in names)
        print(f"| {size}² | {tokens:,} | {cells} | {max(med.values()) / med['sdpa']:.2f}× | {taken} |", flush=True)


if __name__ == "__main__":
    main()
