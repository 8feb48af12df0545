"""Where and how the model runs: device choice, mixed precision, the torchrun process group, seeds, provenance.

Shared by training, evaluation, ``segment`` and the benchmark, so inference never imports the training loop.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverlib.errors import RunError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else CPU; a requested CUDA device that is missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise RunError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but CUDA is not available")
    return dev


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_trainings(device_name: str, wanted: int, jobs: int) -> tuple[int, int]:
    """How many of ``jobs`` CPU trainings to run at once, and the intra-op threads each gets.

    ``wanted`` is the ``cpu_parallel_trainings`` parameter (1 = one after another). On a CUDA device the trainings
    share one card, so they stay sequential. On a small CPU a 64² step does not keep every thread busy, and each
    training also augments its batches on its own thread: two one-thread trainings at once did 27.2 training
    slices/s together against 23.2 for one training on both threads (2-core Xeon, bf16, fused AdamW;
    ``tools/cpu_parallel_training.py``, docs/training.md §5).

    Returns:
        ``(at_once, threads)``; ``threads`` is 0 when the trainings stay sequential (keep torch's default).
    """
    if wanted <= 1 or jobs <= 1 or resolve_device(device_name).type != "cpu":
        return 1, 0
    at_once = min(wanted, jobs, usable_cores())
    return at_once, max(1, usable_cores() // at_once)


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check: AVX512-BF16 or AMX); without it bf16 is emulated
    and far slower than fp32 (measured on an AVX2-only EPYC: 0.13 vs 21 GFLOP/s for a 2048² matmul)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
"""Values of ``precision`` (``segment --precision``; evaluation and training use ``auto`` or, with amp off, ``fp32``)."""


def autocast_dtype(device: torch.device | str, precision: str = "auto", amp: bool = False,
                   cpu_bf16: bool = True) -> torch.dtype | None:  # fmt: skip
    """The one precision rule: the autocast dtype of a forward pass, or None for plain fp32.

    ``fp32``: None. ``bf16``: bfloat16 on any device. ``auto``: on CUDA autocast only with ``amp`` (bf16 where
    supported, else fp16, which training pairs with a grad scaler: :func:`amp_settings`); on a CPU bf16 where
    ``cpu_bf16`` and :func:`cpu_bf16_supported` (there bf16 is native; elsewhere it is emulated and several times
    slower than fp32), else fp32; on other devices fp32.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16 and cpu_bf16_supported() else None


def amp_settings(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> tuple[bool, torch.dtype | None, bool]:
    """(use autocast, dtype, use grad scaler) of the study's ``amp`` switch: :func:`autocast_dtype` under ``auto``
    when ``enabled``, fp32 otherwise; the scaler goes with fp16 (CUDA without bf16, e.g. a T4).

    On the CPU autocast is off unless ``cpu_bf16`` is asked for and native; callers that pass two arguments keep
    CPU runs in fp32.
    """
    dtype = autocast_dtype(device, "auto", amp=True, cpu_bf16=cpu_bf16) if enabled else None
    return dtype is not None, dtype, dtype == torch.float16


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group once.

    Backend: NCCL on CUDA, gloo on CPU. Without torchrun: (0, 1, 0) and nothing is initialised.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch, ``seed * 1000 + epoch`` (docs/study.md §6): the shuffle, augmentation and dropout of
    every epoch, so a run killed and rerun resumes to the same weights as an uninterrupted one."""
    return seed * 1000 + epoch


def provenance() -> dict[str, Any]:
    """Package versions, machine, CPU model, device with its CUDA runtime and driver, and git commit.

    Never raises and never touches the network; on CPU the CUDA fields are None. ``cuda_driver`` comes
    from ``nvidia-smi`` when it is on PATH (one call, 10 s at most), else None.
    """
    import shutil

    versions = {}
    for pkg in ("torch", "torchvision", "segmentation-models-pytorch", "albumentations", "opencv-python-headless",
                "nibabel", "numpy", "scipy", "pandas", "papermill", "SimpleITK", "pydicom", "monai",
                "jupyterlab", "ipykernel"):  # fmt: skip
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu_model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration, IndexError):
        pass
    cuda = {"cuda_runtime": None, "cuda_driver": None, "cudnn": None, "gpu_count": 0, "gpu_memory_gib": None,
            "gpu_capability": None}  # fmt: skip
    device = f"CPU ({os.cpu_count()} cores)"
    try:
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            device = props.name
            cuda.update(cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        gpu_capability=f"{props.major}.{props.minor}")  # fmt: skip
            if smi := shutil.which("nvidia-smi"):
                out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout.split()  # fmt: skip
                cuda["cuda_driver"] = out[0] if out else None
    except Exception:  # provenance must never fail a run; what was found so far is kept
        pass
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "device": device,
        **cuda,
        "git_commit": commit,
    }
