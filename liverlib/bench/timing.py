"""Timing, memory and arithmetic ceilings of the benchmark: how long a call takes, what it allocates, and what the
machine could do at most (its measured matmul rate; on CUDA also the card's dense peak from a table)."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from liverlib.model.hybrid import build_model
from liverlib.runtime import amp_settings, cpu_bf16_supported

PAPER_SIZE = 256
"""Image side of the paper (docs/study.md §2), at which the targets are defined."""


@dataclass(frozen=True)
class Reps:
    """How long each measurement runs: ``warmup`` untimed calls, then at least ``min_steps`` timed calls and
    until ``min_seconds`` have passed (at most ``max_steps``). ``loop_slices`` slices are timed for the
    slice-at-a-time loops (None: the whole volume; otherwise the per-slice time is scaled to the volume);
    ``e2e_steps`` timed end-to-end training steps per path (after one untimed)."""

    warmup: int = 1
    min_steps: int = 3
    min_seconds: float = 10.0
    max_steps: int = 200
    matmul_seconds: float = 2.0
    cache_reads: int = 20_000
    aug_samples: int = 400
    loader_batches: int = 100
    loop_slices: int | None = None
    e2e_steps: int = 3

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> Reps:
        """Defaults: CPU full (≈ 3 timed 256² steps), CPU quick (one), CUDA (≥ 5 steps and 2–5 s each; 60–200
        end-to-end steps)."""
        if device.type == "cuda":
            return cls(warmup=3, min_steps=5, min_seconds=2.0 if quick else 5.0, max_steps=500, matmul_seconds=1.0,
                       e2e_steps=60 if quick else 200)  # fmt: skip
        if quick:
            return cls(min_steps=1, min_seconds=5.0, matmul_seconds=1.0, cache_reads=5_000, aug_samples=120,
                       loader_batches=40, loop_slices=24, e2e_steps=1)  # fmt: skip
        return cls()


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, reps: Reps) -> tuple[float, int]:
    """Seconds per call of ``fn`` (after ``reps.warmup`` untimed calls) and the number of timed calls."""
    for _ in range(reps.warmup):
        fn()
    sync_device(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        sync_device(device)
        n += 1
        elapsed = time.perf_counter() - t0
        if n >= reps.max_steps or (n >= reps.min_steps and elapsed >= reps.min_seconds):
            return elapsed / n, n


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: Reps
) -> dict[str, tuple[float, int]]:
    """Median seconds per call and number of timed calls of each function, called in turn (a, b, a, b, …) so that
    all see the same machine load; at least ``reps.min_steps`` rounds and ``reps.min_seconds`` each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    while True:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync_device(device)
            times[k].append(time.perf_counter() - t)
        n, spent = len(times[k]), min(sum(v) for v in times.values())
        if n >= reps.max_steps or (n >= reps.min_steps and spent >= reps.min_seconds):
            return {k: (float(np.median(v)), len(v)) for k, v in times.items()}


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so an RSS increase measures this step, not earlier ones."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory a block adds, in MiB: on CUDA ``max_memory_allocated`` minus the allocation at entry; on CPU
    the process RSS peak (sampled every 5 ms with psutil; ``None`` without it) minus the RSS at entry."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync_device(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import psutil
        except ImportError:
            return self
        _trim_heap()
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._base = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync_device(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.mib = (self._peak - self._base) / 2**20


def matmul_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0
) -> float:
    """Measured GFLOP/s of an n×n matmul (2n³ FLOPs) in ``dtype``: this machine's arithmetic ceiling."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    per_call, _ = time_calls(lambda: a @ b, device, Reps(warmup=2, min_steps=3, min_seconds=seconds))
    return 2 * n**3 / per_call / 1e9


DENSE_PEAK_TFLOPS: dict[str, float] = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                                        "A10G": 70.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}  # fmt: skip
"""Dense (no 2:4 sparsity) tensor-core peak in TFLOP/s for bf16, or fp16 where the card has no bf16 (V100,
T4), from the vendors' data sheets (SXM parts; PCIe H100/A100 are ≈ 10–20 % lower). Keyed by a name fragment."""


def dense_peak_gflops(device: torch.device) -> float | None:
    """The card's dense bf16/fp16 peak in GFLOP/s from :data:`DENSE_PEAK_TFLOPS` (None: CPU or an unknown card)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    key = next((k for k in sorted(DENSE_PEAK_TFLOPS, key=len, reverse=True) if k in name), None)
    return DENSE_PEAK_TFLOPS[key] * 1e3 if key else None


def cuda_driver() -> str:
    """The NVIDIA driver version from ``nvidia-smi`` ("unknown" without it)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
        return out.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def matmul_rates(device: torch.device, seconds: float) -> dict[str, float]:
    """Measured matmul GFLOP/s per precision: fp32 always; bf16 on CPU (2048² where native, 256² where emulated:
    an emulated 2048² matmul takes minutes); on CUDA the autocast dtype, at 8192²."""
    cuda = device.type == "cuda"
    rates = {"fp32": matmul_gflops(device, torch.float32, 8192 if cuda else 2048, seconds)}
    dtype = amp_settings(device, True)[1] if cuda else torch.bfloat16
    n = 8192 if cuda else 2048 if cpu_bf16_supported() else 256
    rates[str(dtype).replace("torch.", "")] = matmul_gflops(device, dtype, n, seconds)
    return rates


def count_flops(name: str, size: int) -> dict[str, float]:
    """FLOPs per slice of ``build_model(name)`` at ``size``² on the meta device (no compute).

    Counted on the naive attention path, whose QKᵀ and AV products the counter sees as ``bmm``; the fused
    kernel does the same arithmetic. Returns ``forward`` and ``train`` (forward + backward of a scalar),
    and for the forward the shares of ``convolution``, ``linear`` (mm/addmm) and ``attention`` (bmm).
    """
    model = build_model(name, image_size=size, fused_attention=False).to("meta").eval()  # eval: BN at batch 1
    x = torch.empty(1, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as train:
        model(x).sum().backward()
    ops = {str(k).split(".")[-1]: v for k, v in fwd.get_flop_counts()["Global"].items()}
    total = fwd.get_total_flops()
    share = lambda *keys: sum(ops.get(k, 0) for k in keys) / total  # noqa: E731
    return {"forward": total, "train": train.get_total_flops(), "convolution": share("convolution"),
            "linear": share("mm", "addmm"), "attention": share("bmm", "baddbmm")}  # fmt: skip


def cpuinfo_value(key: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The value of the first ``key`` line of ``cpuinfo`` (e.g. "model name", "flags"); None where the file cannot be
    read (not Linux) or has no such line."""
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open(cpuinfo, encoding="utf-8", errors="replace")
                    if ln.startswith(key))  # fmt: skip
    except (OSError, StopIteration):
        return None


def cpu_bf16_instructions(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's bf16 instruction sets by their flags in ``cpuinfo`` (``amx_bf16`` → "AMX-BF16",
    ``avx512_bf16`` → "AVX512-BF16"); empty where none is listed or the file cannot be read (not Linux)."""
    names = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
    flags = (cpuinfo_value("flags", cpuinfo) or "").split()
    return [name for flag, name in names.items() if flag in flags]


def machine_info(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: date, CPU, cores, torch and threads, device, versions, load."""
    from liverlib.runtime import provenance

    prov = provenance()
    cpu = cpuinfo_value("model name") or platform.processor() or platform.machine()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "platform": prov["platform"],
            "CPU": f"{cpu}; {os.cpu_count()} logical cores, {usable} usable by this process"}  # fmt: skip
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    info["python / torch"] = f"{prov['python']} / {torch.__version__}, {torch.get_num_threads()} intra-op threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        amp = amp_settings(device, True)[1]
        peak = dense_peak_gflops(device)
        info["device"] = (f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB), "
                          f"driver {cuda_driver()}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
                          f"fast path autocast {str(amp).replace('torch.', '')}; dense peak "
                          + (f"{peak / 1e3:,.0f} TFLOP/s" if peak else "unknown (not in the table)"))  # fmt: skip
    else:
        native = cpu_bf16_supported()
        isa = " and ".join(cpu_bf16_instructions()) or "oneDNN's check"
        info["device"] = (f"CPU, native bf16 ({isa}; oneDNN): fast path under bf16 autocast" if native else
                          f"CPU without native bf16 (oneDNN; capability {torch.backends.cpu.get_cpu_capability()}): "
                          "fast path in fp32")  # fmt: skip
    v = prov["versions"]
    info["packages"] = ", ".join(f"{k} {v[k]}" for k in ("segmentation-models-pytorch", "albumentations",
                                                          "opencv-python-headless", "numpy") if v.get(k))  # fmt: skip
    info["git commit"] = prov["git_commit"] or "unknown"
    info["load average at start"] = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    return info
