"""Tests of liverlib.model.hybrid: shapes, attention paths, parameter counts, Table 1 (docs/study.md §4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from liverlib.labels import NUM_CLASSES
from liverlib.model.hybrid import HybridTransUNet, build_model, count_parameters, layer_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> HybridTransUNet:
    torch.manual_seed(0)
    return HybridTransUNet().eval()


def test_forward_shape_and_dtype(model):
    with torch.no_grad():
        y = model(torch.rand(2, 1, 64, 64))
    assert y.shape == (2, NUM_CLASSES, 64, 64)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_non_square_input_interpolates_positional_embedding(model):
    with torch.no_grad():
        y = model(torch.rand(1, 1, 48, 80))
    assert y.shape == (1, NUM_CLASSES, 48, 80)


def test_input_not_divisible_by_8_raises(model):
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 1, 60, 64))


def test_fused_and_naive_attention_agree(model):
    torch.manual_seed(1)
    naive = HybridTransUNet(fused_attention=False).eval()
    naive.load_state_dict(model.state_dict())  # strict: the two paths share every key
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(naive(x), model(x), atol=1e-5, rtol=0)


def test_transformer_layer_matches_torch_encoder_layer(model):
    layer = model.layers[0]
    ref = nn.TransformerEncoderLayer(512, 8, 2048, 0.1, activation="gelu", batch_first=True, norm_first=False).eval()
    ref.load_state_dict(layer.state_dict())
    assert set(ref.state_dict()) == set(layer.state_dict())
    tokens = torch.randn(2, 64, 512)
    with torch.no_grad():
        expected = ref(tokens)
        for fused in (True, False):
            layer.self_attn.fused = fused
            torch.testing.assert_close(layer(tokens), expected, atol=1e-5, rtol=0)
    layer.self_attn.fused = True


def test_train_step_channels_last_reaches_every_parameter():
    torch.manual_seed(0)
    net = HybridTransUNet().train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 64, 64).to(memory_format=torch.channels_last)
    y = net(x)
    y.square().mean().backward()
    assert y.shape == (2, NUM_CLASSES, 64, 64)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_dropout_only_in_training(model):
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        try:
            torch.manual_seed(0)
            a = model(x)
            torch.manual_seed(1)
            b = model(x)
        finally:
            model.eval()
    assert not torch.allclose(a, b)


def test_count_parameters(model):
    counts = count_parameters(model)
    assert counts == {
        "total": 20_832_963,
        "trainable": 20_832_963,
        "positional_embedding": 1024 * 512,
        "without_positional_embedding": 20_308_675,
    }
    assert abs(counts["without_positional_embedding"] / 20.3e6 - 1) < 0.05  # paper: 20.3M


def test_layer_table_reproduces_table1(model):
    table = layer_table(model, image_size=256)
    assert list(table.columns) == ["component", "layer", "output_shape", "parameters"]
    assert table["parameters"].sum() == count_parameters(model)["total"]
    shapes = dict(zip(table["layer"], table["output_shape"], strict=True))
    assert shapes["Input Layer"] == "256 × 256 × 1"
    assert shapes["Encoder Block 1"] == "256 × 256 × 64"
    assert shapes["MaxPool2D (3)"] == "32 × 32 × 256"
    assert shapes["Encoder Block 4"] == "32 × 32 × 512"
    assert (
        shapes["Flatten + Permute"] == shapes["Positional Encoding"] == shapes["Transformer Encoder L4"] == "1024 × 512"
    )
    assert shapes["Permute + Reshape"] == "32 × 32 × 512"
    assert shapes["Concatenate (1)"] == "64 × 64 × 512"
    assert shapes["Concatenate (3)"] == "256 × 256 × 128"
    assert shapes["Decoder Block 3"] == "256 × 256 × 64"
    assert shapes["Softmax"] == "256 × 256 × 3"
    assert len(table) == 26
    assert next(model.parameters()).device.type == "cpu"  # the model itself is left untouched


def test_build_model():
    assert isinstance(build_model("hybrid", image_size=64, fused_attention=False), HybridTransUNet)
    with pytest.raises(ValueError, match="hybrid, unet_smp"):
        build_model("transunet", image_size=64)
    with pytest.raises(ValueError, match="divisible"):
        build_model("hybrid", image_size=100)


def test_build_smp_baseline_without_download():
    net = build_model("unet_smp", image_size=64, encoder="resnet18").eval()
    with torch.no_grad():
        y = net(torch.rand(1, 1, 64, 64))
    assert y.shape == (1, NUM_CLASSES, 64, 64)
    assert count_parameters(net)["positional_embedding"] == 0


def test_cpu_training_takes_the_explicit_attention_path_from_the_threshold(monkeypatch):
    """On the CPU, SDPA with dropout is a slow math fallback: a training step from
    CPU_EXPLICIT_ATTENTION_MIN_TOKENS tokens on takes the explicit path (same formula), below it and in eval SDPA."""
    import liverlib.model.hybrid as H

    calls = []
    real = H.F.scaled_dot_product_attention
    monkeypatch.setattr(
        H.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape[-2]) or real(*a, **k)
    )
    att = H.SelfAttention(16, 2, dropout=0.1, fused=True)
    big, small = torch.randn(2, H.CPU_EXPLICIT_ATTENTION_MIN_TOKENS, 16), torch.randn(2, 64, 16)
    att.train()
    att(big)
    assert calls == []  # explicit from the threshold on, in training
    att(small)
    assert calls == [64]
    att.eval()
    with torch.no_grad():
        out_sdpa = att(big)
        att.fused = False
        out_explicit = att(big)
    assert calls == [64, H.CPU_EXPLICIT_ATTENTION_MIN_TOKENS]  # eval keeps SDPA (no dropout: its fused kernel)
    torch.testing.assert_close(out_sdpa, out_explicit, rtol=1e-4, atol=1e-5)  # the same formula
