"""Where and how the model runs: device choice, mixed precision, the torchrun process group.

Shared by training, evaluation, ``segment`` and the benchmark, so inference never imports the training loop.
"""

from __future__ import annotations

import os

import torch

from liverlib.run import RunError


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


def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype | None, bool]:
    """(use autocast, dtype, use grad scaler): bf16 where supported, fp16 + scaler otherwise (T4); off on CPU."""
    if not enabled or device.type != "cuda":
        return False, None, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


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
