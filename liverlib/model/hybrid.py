"""The hybrid 2D CNN-Transformer of the study and its segmentation-models-pytorch baseline (docs/study.md §4).

:class:`HybridTransUNet` follows paper §II.D and Table 1: a four-stage U-Net encoder, a four-layer
transformer over the 32×32×512 bottleneck (1,024 tokens at a 256×256 input), and a three-stage
U-Net decoder. :func:`layer_table` regenerates Table 1 from a model instance and
:func:`count_parameters` gives the exact parameter count the paper rounds to 20.3M.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from liverlib.labels import NUM_CLASSES
from liverlib.model import dropout as cpu_dropout

MODEL_NAMES: tuple[str, ...] = ("hybrid", "unet_smp")
"""Names :func:`build_model` accepts."""


class DoubleConv(nn.Sequential):
    """(Conv 3×3 → BatchNorm → ReLU) × 2 (paper Eqs. 1–3); convs carry no bias since BN follows."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class PositionalEmbedding(nn.Module):
    """Learnable positional embedding of a ``grid × grid`` token map (paper Table 1, 1,024 × 512).

    For a bottleneck of another size the embedding is resized bilinearly (``align_corners=False``)
    over its grid (docs/study.md §4: other input sizes must work).
    """

    def __init__(self, dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.weight = nn.Parameter(torch.zeros(1, grid * grid, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Add the embedding to ``tokens`` of shape (B, height·width, dim), row-major token order."""
        pos = self.weight
        if (height, width) != (self.grid, self.grid):
            dim = pos.shape[-1]
            pos = pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
            pos = F.interpolate(pos, size=(height, width), mode="bilinear", align_corners=False)
            pos = pos.flatten(2).transpose(1, 2)
        return tokens + pos.to(tokens.dtype)


CPU_EXPLICIT_ATTENTION_MIN_TOKENS = 256
"""From this many tokens on (a 128² input; the paper's 256² has 1,024), a CPU training step with attention dropout
takes the explicit path even when ``fused``: PyTorch's CPU SDPA has no fused kernel with dropout and falls back to a
math path that also runs NaN checks over the whole attention matrix. The explicit path (the same formula and
parameters) trained 1.2–1.3× faster at 256 and 1,024 tokens and not at 64 (``tools/cpu_attention_paths.py``,
docs/training.md §4.1), so the smoke run (64 tokens) keeps SDPA and its numbers. Evaluation (no dropout) and CUDA
keep SDPA's fused kernels."""

CPU_FAST_DROPOUT_MIN_TOKENS = 256
"""From this many tokens on (as the explicit path), a CPU training step of the fast configuration (``fused``) draws
the transformer's dropout masks (attention weights, residual branches, FFN) with :func:`liverlib.model.dropout.dropout`
instead of ``F.dropout``: the same Bernoulli(1 − p) mask and 1 / (1 − p) scale from a faster generator (PyTorch's
serial ``bernoulli_`` was a quarter of the 256² step; the fast masks made the step 1.24× faster at 256² and 1.48× at
128²). Below it (the smoke run's 64 tokens) the masks are cheap and ``F.dropout`` keeps the committed runs' random
stream; CUDA and evaluation are untouched (``tools/cpu_attention_paths.py``, docs/training.md §4.1)."""


def _fast_cpu_dropout(x: torch.Tensor, training: bool, fused: bool) -> bool:
    """Whether a (B, N, d) transformer input takes :data:`CPU_FAST_DROPOUT_MIN_TOKENS`'s path: a CPU training step
    of the fast configuration (``fused``); ``fused=False`` is the paper's plain path and keeps ``F.dropout``, and so
    does ``torch.compile`` (inductor draws its own masks inside the fused kernels; numpy would break the graph)."""
    return (fused and training and x.device.type == "cpu" and x.shape[1] >= CPU_FAST_DROPOUT_MIN_TOKENS
            and not torch.compiler.is_compiling())  # fmt: skip


def _dropout(x: torch.Tensor, p: float, training: bool, fast: bool) -> torch.Tensor:
    """The transformer's one dropout call: :func:`liverlib.model.dropout.dropout` where ``fast`` (see
    :func:`_fast_cpu_dropout`), else ``F.dropout``."""
    return cpu_dropout.dropout(x, p) if fast else F.dropout(x, p=p, training=training)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names and math.

    Parameters: ``in_proj_weight`` (3d, d), ``in_proj_bias`` (3d,), ``out_proj`` (Linear d→d), so a
    state_dict of ``nn.TransformerEncoderLayer`` loads here and back. ``fused=True`` calls
    ``F.scaled_dot_product_attention``; ``fused=False`` forms softmax(QKᵀ/√d_k)V explicitly (Eq. 4), and so
    does a CPU training step from :data:`CPU_EXPLICIT_ATTENTION_MIN_TOKENS` tokens on. Attention dropout applies in
    training only.
    """

    def __init__(self, dim: int, heads: int, dropout: float, fused: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout, self.fused = heads, dropout, fused
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention._reset_parameters
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) → (B, N, d)."""
        b, n, d = x.shape
        fast_dropout = _fast_cpu_dropout(x, self.training, self.fused)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.dropout if self.training else 0.0
        if self.fused and not (p > 0 and x.device.type == "cpu" and n >= CPU_EXPLICIT_ATTENTION_MIN_TOKENS):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            attn = torch.softmax((q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1), dim=-1)
            out = _dropout(attn, p, self.training, fast_dropout) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Post-norm encoder layer, the math of ``nn.TransformerEncoderLayer(batch_first=True,
    activation="gelu", norm_first=False)`` with identical parameter names (paper Eqs. 4–7)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, fused: bool = True):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, dropout, fused)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) → (B, N, d)."""
        fast = _fast_cpu_dropout(x, self.training, self.self_attn.fused)
        d1, d, d2 = self.dropout1.p, self.dropout.p, self.dropout2.p  # the nn.Dropout modules hold p (state_dict)
        x = self.norm1(x + _dropout(self.self_attn(x), d1, self.training, fast))
        h = _dropout(F.gelu(self.linear1(x)), d, self.training, fast)
        return self.norm2(x + _dropout(self.linear2(h), d2, self.training, fast))


class HybridTransUNet(nn.Module):
    """Hybrid 2D CNN-Transformer U-Net of the study (paper §II.D, Table 1; docs/study.md §4).

    Args:
        in_channels: image channels (1: a CT slice).
        num_classes: output classes (3: background, liver, tumor; ``liverlib.labels``).
        base: channels of the first stage; stages have base·(1, 2, 4, 8) = 64, 128, 256, 512.
        depth_layers: transformer encoder layers (4).
        heads: attention heads (8).
        ffn: feed-forward width (2,048, GELU).
        dropout: transformer dropout (0.1): attention weights, residual branches, FFN.
        pos_grid: side of the learnable positional embedding grid (32 → 1,024 × 512 as in Table 1).
            Kept at 32 for every input size, so the parameter count and state_dict do not depend on
            the training resolution; other bottleneck sizes interpolate it.
        fused_attention: the fast configuration (True: ``F.scaled_dot_product_attention``, and in CPU training the
            rules of :data:`CPU_EXPLICIT_ATTENTION_MIN_TOKENS` and :data:`CPU_FAST_DROPOUT_MIN_TOKENS`) or the paper's
            plain path (False: explicit softmax attention, ``F.dropout``); the same parameters and, up to rounding
            and the dropout draws, the same outputs.

    Input: float tensor (B, in_channels, H, W) with H and W divisible by 8 (paper: 1 × 256 × 256,
    preprocessed to [0, 1]). Output: logits (B, num_classes, H, W), no softmax.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        base: int = 64,
        depth_layers: int = 4,
        heads: int = 8,
        ffn: int = 2048,
        dropout: float = 0.1,
        pos_grid: int = 32,
        fused_attention: bool = True,
    ):
        super().__init__()
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        self.enc1, self.enc2 = DoubleConv(in_channels, c1), DoubleConv(c1, c2)
        self.enc3, self.enc4 = DoubleConv(c2, c3), DoubleConv(c3, c4)
        self.pool = nn.MaxPool2d(2)
        self.pos_embed = PositionalEmbedding(c4, pos_grid)
        self.layers = nn.ModuleList(
            TransformerLayer(c4, heads, ffn, dropout, fused_attention) for _ in range(depth_layers)
        )
        self.up1, self.dec1 = nn.ConvTranspose2d(c4, c3, 2, stride=2), DoubleConv(2 * c3, c3)
        self.up2, self.dec2 = nn.ConvTranspose2d(c3, c2, 2, stride=2), DoubleConv(2 * c2, c2)
        self.up3, self.dec3 = nn.ConvTranspose2d(c2, c1, 2, stride=2), DoubleConv(2 * c1, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def set_fused_attention(self, fused: bool) -> None:
        """Switch every transformer layer between the fused and the explicit attention path."""
        for layer in self.layers:
            layer.self_attn.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) float → (B, num_classes, H, W) logits; H, W divisible by 8."""
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"input height and width must be divisible by 8, got {tuple(x.shape[-2:])}")
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        z = self.enc4(self.pool(s3))
        b, c, h, w = z.shape
        t = self.pos_embed(z.flatten(2).transpose(1, 2), h, w)  # (B, h·w, C); no copy if channels_last
        for layer in self.layers:
            t = layer(t)
        z = t.transpose(1, 2).reshape(b, c, h, w)
        y = self.dec1(torch.cat([self.up1(z), s3], dim=1))
        y = self.dec2(torch.cat([self.up2(y), s2], dim=1))
        y = self.dec3(torch.cat([self.up3(y), s1], dim=1))
        return self.head(y)


def build_model(
    name: str,
    *,
    image_size: int,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    fused_attention: bool = True,
) -> nn.Module:
    """Build the study's model or a segmentation-models-pytorch peer baseline (docs/study.md §4).

    Args:
        name: "hybrid" (:class:`HybridTransUNet`, paper defaults) or "unet_smp" (``smp.Unet``).
        image_size: training side length; must be divisible by 8 ("hybrid") or 32 ("unet_smp").
            The hybrid model keeps its 32×32 positional grid at every size (see ``pos_grid``).
        encoder: smp encoder name (ignored for "hybrid").
        encoder_weights: smp pretrained weights, None by default so nothing is downloaded.
        fused_attention: attention path of the hybrid model.

    Returns:
        A module mapping (B, 1, H, W) float to (B, 3, H, W) logits.
    """
    if name == "hybrid":
        if image_size % 8:
            raise ValueError(f"image_size must be divisible by 8 for 'hybrid', got {image_size}")
        return HybridTransUNet(fused_attention=fused_attention)
    if name == "unet_smp":
        if image_size % 32:
            raise ValueError(f"image_size must be divisible by 32 for 'unet_smp', got {image_size}")
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=1, classes=NUM_CLASSES)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts (docs/study.md §4; paper: "about 20.3M").

    For the default :class:`HybridTransUNet`: total 20,832,963 = trainable; positional embedding
    524,288 (1,024 × 512); without it 20,308,675, which is the paper's 20.3M.

    Returns:
        dict with ``total``, ``trainable``, ``positional_embedding`` (0 for models without one) and
        ``without_positional_embedding``.
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pos = sum(m.weight.numel() for m in model.modules() if isinstance(m, PositionalEmbedding))
    return {
        "total": total,
        "trainable": trainable,
        "positional_embedding": pos,
        "without_positional_embedding": total - pos,
    }


def _shape(t: torch.Tensor) -> str:
    """(1, C, H, W) → "H × W × C" as in paper Table 1; (1, N, C) → "N × C"."""
    dims = (t.shape[2], t.shape[3], t.shape[1]) if t.dim() == 4 else tuple(t.shape[1:])
    return " × ".join(str(d) for d in dims)


def _params(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def layer_table(model: HybridTransUNet, image_size: int = 256) -> pd.DataFrame:
    """Paper Table 1 generated from ``model`` by forward hooks on a meta-device copy (no compute).

    Args:
        model: a :class:`HybridTransUNet` (left untouched).
        image_size: side of the square input (256 in the paper).

    Returns:
        DataFrame with columns ``component``, ``layer``, ``output_shape`` ("H × W × C" or "N × C",
        batch omitted) and ``parameters``; the parameters column sums to the model's total.
        Softmax is applied outside the model (it outputs logits) and has its own zero-parameter row.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    rows: list[tuple[str, str, str, int]] = []

    def after(component: str, label: str, module: nn.Module):
        return lambda m, args, out: rows.append((component, label, _shape(out), _params(module)))

    def before(component: str, label: str):
        return lambda m, args: rows.append((component, label, _shape(args[0]), 0))

    pools = iter(range(1, 4))
    hooks = [meta.enc1.register_forward_pre_hook(before("Encoder", "Input Layer"))]
    for i in range(1, 5):
        enc = getattr(meta, f"enc{i}")
        hooks.append(enc.register_forward_hook(after("Encoder", f"Encoder Block {i}", enc)))
    hooks.append(
        meta.pool.register_forward_hook(
            lambda m, a, out: rows.append(("Encoder", f"MaxPool2D ({next(pools)})", _shape(out), 0))
        )
    )
    hooks.append(meta.pos_embed.register_forward_pre_hook(before("Transformer", "Flatten + Permute")))
    hooks.append(meta.pos_embed.register_forward_hook(after("Transformer", "Positional Encoding", meta.pos_embed)))
    for i, layer in enumerate(meta.layers, start=1):
        hooks.append(layer.register_forward_hook(after("Transformer", f"Transformer Encoder L{i}", layer)))
    hooks.append(meta.up1.register_forward_pre_hook(before("Transformer", "Permute + Reshape")))
    for i in range(1, 4):
        up, dec = getattr(meta, f"up{i}"), getattr(meta, f"dec{i}")
        hooks.append(up.register_forward_hook(after("Decoder", f"ConvTranspose2D ({i})", up)))
        hooks.append(dec.register_forward_pre_hook(before("Decoder", f"Concatenate ({i})")))
        hooks.append(dec.register_forward_hook(after("Decoder", f"Decoder Block {i}", dec)))
    hooks.append(meta.head.register_forward_hook(after("Output", "Conv2D 1×1", meta.head)))
    in_channels = meta.enc1[0].in_channels
    with torch.no_grad():
        out = meta(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    for h in hooks:
        h.remove()
    rows.append(("Output", "Softmax", _shape(out), 0))
    return pd.DataFrame(rows, columns=["component", "layer", "output_shape", "parameters"])
