"""How to spend a small CPU on 2D trainings: one training on every core, or one training per core, side by side.

The hybrid's training step (the training loop's own ``train_step``: CombinedLoss, grad clip, AdamW) at the smoke
profile's size (64², batch 8, bf16 autocast where the CPU computes it natively, else fp32), measured in one run:

- one process with 1 thread and with all usable cores' threads, AdamW as the per-parameter loop and fused;
- N processes at once (N = usable cores), 1 thread each, fused AdamW: their summed rate is what
  ``cpu_parallel_trainings: N`` gets for the ablation arms (and the model beside its smp baseline).

Not a test (the numbers depend on the CPU and its load); docs/training.md §5 quotes its output.

    .venv/bin/python tools/cpu_parallel_training.py [--size 64] [--batch 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import torch

from liverlib.bench.timing import machine_info
from liverlib.labels import NUM_CLASSES
from liverlib.model.hybrid import build_model
from liverlib.runtime import cpu_bf16_supported, usable_cores
from liverlib.training.loop import make_optimizer
from liverlib.training.losses import CombinedLoss
from liverlib.training.step import train_step


def rate(threads: int, fused: bool, size: int, batch: int, seconds: float) -> float:
    """Training slices per second of one process with ``threads`` intra-op threads (after 3 warm-up steps)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model("hybrid", image_size=size, fused_attention=True).to(memory_format=torch.channels_last)
    opt = (make_optimizer(model, 1e-3, 1e-5, device) if fused
           else torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5))  # fmt: skip
    x = torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size))
    dtype = torch.bfloat16 if cpu_bf16_supported() else None
    loss_fn, scaler = CombinedLoss(), torch.amp.GradScaler("cuda", enabled=False)
    model.train()

    def step() -> None:
        train_step(model, x, y, opt, loss_fn, scaler, amp_dtype=dtype, grad_clip=1.0)

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def _child(args: tuple[int, bool, int, int, float], out: multiprocessing.Queue) -> None:
    out.put(rate(*args))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    cores = usable_cores()
    rows = {}
    for threads in sorted({1, cores}):
        for fused in (False, True):
            rows[f"1 process, {threads} thread(s), AdamW {'fused' if fused else 'loop'}"] = rate(
                threads, fused, a.size, a.batch, a.seconds)  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=((1, True, a.size, a.batch, a.seconds), q)) for _ in range(cores)]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    rows[f"{cores} processes at once, 1 thread each, AdamW fused (sum)"] = sum(rates)
    info = machine_info(torch.device("cpu"))
    print(json.dumps({"machine": info, "size": a.size, "batch": a.batch, "bf16": cpu_bf16_supported(),
                      "slices_per_s": {k: round(v, 2) for k, v in rows.items()}}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
