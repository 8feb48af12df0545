"""Batched inference: preprocessed slices → class probabilities → labels at the original in-plane size."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.inference_mode()
def predict_labels(model: torch.nn.Module, images: np.ndarray, *, out_size: tuple[int, int] | None = None,
                   batch_size: int = 16, device: torch.device | str = "cpu", amp: bool = False,
                   channels_last: bool = True, progress: bool = False, desc: str = "predict") -> np.ndarray:  # fmt: skip
    """Segment preprocessed slices in batches.

    Args:
        model: a network mapping (B, 1, S, S) to (B, 3, S, S) logits, in eval mode.
        images: (N, S, S) float16/float32 slices in [0, 1] (the cache's or :func:`preprocess_volume`'s).
        out_size: (rows, cols) to return labels at; probabilities are resized bilinearly before the
            argmax, so labels at the original resolution are not blocky. None keeps (S, S).
        batch_size: slices per forward pass.
        device: where the model runs.
        amp: autocast on CUDA (bf16 where supported, else fp16).
        channels_last: NHWC memory format (faster convolutions on CPU and GPU).

    Returns:
        uint8 labels (N, rows, cols) in {0, 1, 2}.
    """
    device = torch.device(device)
    n = images.shape[0]
    rows, cols = out_size or images.shape[1:]
    out = np.empty((n, rows, cols), np.uint8)
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        x = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32))[:, None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if amp and device.type == "cuda" else nullcontext():
            logits = model(x)
        prob = logits.float().softmax(1)
        if (rows, cols) != tuple(prob.shape[-2:]):
            prob = F.interpolate(prob, size=(rows, cols), mode="bilinear", align_corners=False)
        out[start : start + len(x)] = prob.argmax(1).to(torch.uint8).cpu().numpy()
    return out
