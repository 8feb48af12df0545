"""Model steps of the benchmark: the paper path and the fast path of each model, timed in turn on random batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from liverlib.bench.profile import profile_step
from liverlib.bench.timing import PeakMemory, Reps, count_flops, time_interleaved
from liverlib.labels import NUM_CLASSES
from liverlib.model.hybrid import build_model
from liverlib.runtime import amp_settings
from liverlib.training.loop import make_optimizer
from liverlib.training.losses import CombinedLoss
from liverlib.training.step import train_step

PATH_NAMES = ("naive", "fast fp32", "fast", "fast, compiled", "fast, big batch")
"""Model-step paths: ``naive`` is the paper's (fp32, NCHW, explicit attention, no_grad); ``fast`` adds fused SDPA,
channels_last, inference_mode and autocast where it pays (CUDA; a CPU with native bf16); ``fast fp32`` is the
fast path without autocast (measured only where ``fast`` uses autocast on a CPU: bf16 vs fp32 side by side);
``fast, compiled`` is ``fast`` under ``torch.compile`` (inductor; only with ``compiled=True``: its compilation
takes minutes on a small CPU and is reported as the warm-up time); ``fast, big batch`` is ``fast`` at the large
batch."""


@dataclass
class _Path:
    """One model on one path, ready to step: closures over its model, optimizer and a fixed random batch."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    train_step: Callable[[], None]
    infer_step: Callable[[], None]
    precision: str
    batch_size: int
    losses: list[float]


def _build_path(name: str, size: int, batch_size: int, device: torch.device, fast: bool,
                amp_dtype: torch.dtype | None, compiled: bool = False) -> _Path:  # fmt: skip
    """A path of :data:`PATH_NAMES` with the training loop's own step (:func:`liverlib.training.step.train_step`:
    CombinedLoss, grad clip 1.0, AdamW); every path starts from the same weights and the same batch."""
    torch.manual_seed(0)
    fmt = torch.channels_last if fast else torch.contiguous_format
    model = build_model(name, image_size=size, fused_attention=fast).to(device).to(memory_format=fmt)
    # the fast path steps AdamW as training does (fused); the paper path keeps the per-parameter loop
    opt = make_optimizer(model, 1e-4, 1e-5, device) if fast else torch.optim.AdamW(model.parameters(), lr=1e-4,
                                                                                  weight_decay=1e-5)  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = CombinedLoss()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, size, size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch_size, size, size), generator=g).to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    losses: list[float] = []
    run = torch.compile(model) if compiled else model  # shares the module: train()/eval() apply to both

    def step() -> None:
        loss = train_step(run, x, y, opt, loss_fn, scaler, grad_clip=1.0, amp_dtype=amp_dtype, channels_last=fast)
        losses.append(float(loss))

    def infer_step() -> None:
        with torch.inference_mode() if fast else torch.no_grad(), autocast():
            run(x.contiguous(memory_format=fmt))

    precision = str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32"
    return _Path(model, opt, step, infer_step, precision, batch_size, losses)


def build_paths(name: str, size: int, *, batch_size: int, device: torch.device, cpu_bf16: bool | None,
                big_batch: int | None, compiled: bool = False) -> dict[str, _Path]:  # fmt: skip
    """The paths of :data:`PATH_NAMES` that apply on this device (``cpu_bf16``: None = where native;
    ``compiled``: also ``fast, compiled``)."""
    use, dtype, _ = amp_settings(device, True, cpu_bf16=cpu_bf16 is not False)
    if device.type == "cpu" and cpu_bf16:  # forced (tests): bf16 even where it is emulated
        use, dtype = True, torch.bfloat16
    dtype = dtype if use else None
    paths = {"naive": _build_path(name, size, batch_size, device, False, None)}
    if dtype is not None and device.type == "cpu":
        paths["fast fp32"] = _build_path(name, size, batch_size, device, True, None)
    paths["fast"] = _build_path(name, size, batch_size, device, True, dtype)
    if compiled:
        paths["fast, compiled"] = _build_path(name, size, batch_size, device, True, dtype, compiled=True)
    if big_batch:
        paths["fast, big batch"] = _build_path(name, size, big_batch, device, True, dtype)
    return paths


def measure_model(name: str, size: int, *, batch_size: int, device: torch.device, reps: Reps,
                  profile: bool = False, cpu_bf16: bool | None = None, big_batch: int | None = None,
                  compiled: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:  # fmt: skip
    """Training and inference slices/s, peak memory and the loss reached, of each path of one model side by side.

    Every path starts from the same weights and trains on the same fixed random batch (the big-batch path on
    a larger one), so ``loss_last`` after the same number of steps compares the precisions' accuracy; each is
    warmed up (``max(1, reps.warmup)`` calls, its peak memory measured there), then the timed calls alternate
    and the median call time counts.

    Args:
        name: "hybrid" or "unet_smp".
        size: square input side; inputs are random float32 (B, 1, size, size) in [0, 1], labels random in {0, 1, 2}.
        batch_size: slices per step (8 in the paper).
        device: where it runs.
        reps: repetitions.
        profile: also profile one (warm) training step of the fast path.
        cpu_bf16: None: bf16 on a CPU with native support; True: also where emulated (tests); False: never.
        big_batch: also time the fast path at this batch (None: not).
        compiled: also time ``fast, compiled`` (``torch.compile``).

    Returns:
        (a row per path with ``train_slices_s``, ``infer_slices_s``, median step seconds, timed step counts,
        peak memory in MiB, warm-up seconds (compilation included), ``loss_first``/``loss_last``/``loss_steps``;
        the profile of :func:`profile_step` or None).
    """
    paths = build_paths(name, size, batch_size=batch_size, device=device, cpu_bf16=cpu_bf16, big_batch=big_batch,
                        compiled=compiled)  # fmt: skip
    peak: dict[tuple[str, str], float | None] = {}
    warm_s: dict[tuple[str, str], float] = {}

    def warm(phase: str) -> None:
        for key, p in paths.items():
            t0 = time.perf_counter()
            with PeakMemory(device) as mem:
                for _ in range(max(1, reps.warmup)):
                    getattr(p, f"{phase}_step")()
            peak[key, phase], warm_s[key, phase] = mem.mib, time.perf_counter() - t0

    for p in paths.values():
        p.model.train()
    warm("train")
    train = time_interleaved({k: p.train_step for k, p in paths.items()}, device, reps)
    prof = profile_step(paths["fast"].train_step, device) if profile else None
    for p in paths.values():
        p.opt.zero_grad(set_to_none=True)
        p.opt.state.clear()  # inference memory: weights and activations only
        p.model.eval()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    warm("infer")
    infer = time_interleaved({k: p.infer_step for k, p in paths.items()}, device, reps)
    rows = [{"model": name, "size": size, "path": k, "precision": p.precision, "batch": p.batch_size,
             "train_slices_s": p.batch_size / train[k][0], "infer_slices_s": p.batch_size / infer[k][0],
             "train_step_s": train[k][0], "infer_step_s": infer[k][0], "train_steps": train[k][1],
             "infer_steps": infer[k][1], "train_peak_mib": peak[k, "train"], "infer_peak_mib": peak[k, "infer"],
             "train_warm_s": warm_s[k, "train"], "infer_warm_s": warm_s[k, "infer"], "loss_first": p.losses[0],
             "loss_last": p.losses[-1], "loss_steps": len(p.losses)}
            for k, p in paths.items()]  # fmt: skip
    return rows, prof


def measure_models(names: tuple[str, ...] | list[str], sizes: list[int], *, batch_size: int, device: torch.device,
                   reps: Reps, profile_size: int | None = None, cpu_bf16: bool | None = None,
                   big_batch: int | None = None, compiled: bool = False,
                   log: Callable[[str], None] = print) -> tuple[pd.DataFrame, dict | None]:  # fmt: skip
    """:func:`measure_model` for every model × size, with FLOPs and achieved GFLOP/s per row.

    Returns:
        (one row per model, size and path; the profile of the paper model's fast training step at
        ``profile_size``, or None).
    """
    rows, prof = [], None
    for size in sizes:
        for name in names:
            flops = count_flops(name, size)
            log(f"bench: {name} {size}², paper and fast paths in turn, batch {batch_size} ...")
            got, p = measure_model(name, size, batch_size=batch_size, device=device, reps=reps,
                                   profile=name == "hybrid" and size == profile_size, cpu_bf16=cpu_bf16,
                                   big_batch=big_batch if size == max(sizes) else None, compiled=compiled)  # fmt: skip
            prof = p or prof
            for r in got:
                r |= {"gflop_fwd_per_slice": flops["forward"] / 1e9, "gflop_train_per_slice": flops["train"] / 1e9,
                      "train_gflops": r["train_slices_s"] * flops["train"] / 1e9,
                      "infer_gflops": r["infer_slices_s"] * flops["forward"] / 1e9,
                      "flop_share_conv": flops["convolution"], "flop_share_linear": flops["linear"],
                      "flop_share_attention": flops["attention"]}  # fmt: skip
                log(
                    f"bench:   {r['path']}: train {r['train_slices_s']:.3g} slices/s, inference {r['infer_slices_s']:.3g} slices/s"
                )
                rows.append(r)
    return pd.DataFrame(rows), prof
