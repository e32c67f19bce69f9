"""elasticize on transformers: qkv-Linear attention (timm's ViT) and nn.MultiheadAttention, heads shrink whole."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from user_models import make_more_model

import tailor
from model_helpers import macs
from tailor.convert import ElasticizedModel, FrozenChannelsWarning, elasticize
from tailor.export import run_onnx, to_onnx
from tailor.ops import ElasticLayerNorm, ElasticMultiheadAttention, ElasticOp, ElasticSelfAttention

TOLERANCE = 1e-5


def x32(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


CONVERTED: dict[str, tuple[nn.Module, ElasticizedModel]] = {}


def converted(name: str) -> tuple[nn.Module, ElasticizedModel]:
    """(user model, elasticized model), built once per test session (tests restore the active subnet)."""
    if name not in CONVERTED:
        user = make_more_model(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FrozenChannelsWarning)
            CONVERTED[name] = user, elasticize(user, x32()).eval()
    return CONVERTED[name]


def test_timm_vit_heads_and_mlp_shrink_and_the_class_token_freezes_the_stream_with_a_warning() -> None:
    user = make_more_model("timm_vit")
    with pytest.warns(FrozenChannelsWarning) as record:
        model = elasticize(user, x32())
    message = "\n".join(str(r.message) for r in record)
    assert "node 'cat'" in message and "class token" in message and "torch.cat([self.cls_token" in message
    dims = {d.name: d for d in model.space.widths}
    assert set(dims) == {"blocks.0.attn.heads", "blocks.0.mlp.fc1", "blocks.1.attn.heads", "blocks.1.mlp.fc1"}
    heads = dims["blocks.0.attn.heads"]
    assert (heads.channels, heads.step) == (32, 8)  # 4 heads of 8: widths keep whole heads
    stream = next(g for g in model.channel_groups if g.name == "patch_embed")
    assert stream.frozen is not None and "blocks.1.attn" in stream.layers and "norm" in stream.layers
    attention = model.net.blocks[0].attn
    assert isinstance(attention, ElasticSelfAttention)
    assert torch.equal(attention.qkv.weight, user.blocks[0].attn.qkv.weight)  # the weights kept (in a copy)
    for width, heads_run in ((0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)):
        model.activate(model.space.uniform(width))
        assert attention.qkv.active_heads == heads_run


@pytest.mark.parametrize("name", ["timm_vit", "conv_transformer", "conv_transformer_seq_first", "convnext"])
def test_full_width_is_the_original_and_subnets_match_their_extraction(name: str) -> None:
    user, model = converted(name)
    x = x32(seed=2)
    with torch.no_grad():
        expected = user(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=TOLERANCE)
    previous = None
    for width in (1.0, 0.75, 0.5, 0.25):
        sub = model.space.uniform(width)
        static = model.extract(sub)
        assert not any(isinstance(m, (ElasticOp, ElasticizedModel)) for m in static.modules())
        assert not [m for m in static.modules() if type(m).__module__.startswith("tailor")]
        with torch.no_grad(), model.activated(sub):
            torch.testing.assert_close(static(x), model(x), rtol=0, atol=TOLERANCE)
        cost = macs(static, x)
        assert previous is None or cost < previous
        previous = cost


def test_multihead_attention_models_shrink_their_residual_stream_too() -> None:
    _, model = converted("conv_transformer")
    stream = next(g for g in model.channel_groups if g.name == "stem.0")
    assert stream.elastic and "blocks.0.attn" in stream.layers and "blocks.1.norm2" in stream.layers
    net = model.net
    assert isinstance(net.blocks[0].attn, ElasticMultiheadAttention)
    assert isinstance(net.blocks[0].norm1, ElasticLayerNorm) and isinstance(net.norm, ElasticLayerNorm)
    model.activate(model.space.uniform(0.5))
    assert net.blocks[0].attn.in_proj.active_heads == 2 and net.norm._active[0] == 16


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["timm_vit", "conv_transformer_seq_first"]))
def test_any_per_layer_subnet_matches_its_extraction(seed: int, name: str) -> None:
    _, model = converted(name)
    sub = model.space.sample(random.Random(seed))
    x = x32(seed=3)
    with torch.no_grad(), model.activated(sub):
        out = model(x)
        torch.testing.assert_close(model.extract()(x), out, rtol=0, atol=TOLERANCE)


def test_channels_last_blocks_shrink_their_stream() -> None:
    _, model = converted("convnext")  # permute to (N, H, W, C), LayerNorm and Linear layers, permute back
    assert {d.name for d in model.space.widths} == {"stem", "blocks.0.pw1", "blocks.1.pw1"}
    assert isinstance(model.net.blocks[0].norm, ElasticLayerNorm)


def test_attention_that_is_not_standard_keeps_its_heads_with_a_warning_naming_the_reshape() -> None:
    user = make_more_model("timm_vit_biased")
    with pytest.warns(FrozenChannelsWarning) as record:
        model = elasticize(user, x32())
    message = "\n".join(str(r.message) for r in record)
    assert "blocks.0.attn.qkv" in message and "reshape" in message
    assert not isinstance(model.net.blocks[0].attn, ElasticSelfAttention)  # the user's code, as written
    assert isinstance(model.net.blocks[1].attn, ElasticSelfAttention)
    names = {d.name for d in model.space.widths}
    assert "blocks.1.attn.heads" in names and not any(n.startswith("blocks.0.attn") for n in names)
    with torch.no_grad():
        torch.testing.assert_close(model(x32(seed=4)), user(x32(seed=4)), rtol=0, atol=TOLERANCE)


def test_masked_multihead_attention_stays_whole_with_a_warning() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(6, 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.hidden = nn.Linear(16, 32)
            self.head = nn.Linear(32, 3)
            self.register_buffer("mask", torch.ones(5, 5, dtype=torch.bool).triu(1))  # causal

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            h = self.attn(h, h, h, attn_mask=self.mask)[0].mean(1)
            return self.head(torch.relu(self.hidden(h)))

    with pytest.warns(FrozenChannelsWarning, match=r"node 'attn' \(layer 'attn' \(MultiheadAttention\)\) .* is given an attention mask"):
        model = elasticize(Masked().eval(), torch.randn(2, 5, 6))
    assert type(model.net.attn) is nn.MultiheadAttention
    assert [d.name for d in model.space.widths] == ["hidden"]


def test_sort_channels_keeps_the_converted_transformers_function() -> None:
    user = make_more_model("conv_transformer")
    model = elasticize(user, x32()).eval()
    x = x32(seed=5)
    with torch.no_grad():
        before = model(x)
    result = tailor.sort_channels(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    heads = result.permutations["blocks.0.attn.heads"]
    assert all(heads[i : i + 8] == list(range(heads[i], heads[i] + 8)) for i in range(0, 32, 8))  # whole heads


def test_a_converted_transformer_subnet_exports_to_onnx(tmp_path: Path) -> None:
    _, model = converted("conv_transformer_seq_first")
    sub = model.space.uniform(0.5)
    result = to_onnx(model, sub, tmp_path / "t.onnx")
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-4
    x = x32(batch=3, seed=6)
    with torch.no_grad():
        expected = model.extract(sub)(x).numpy()
    np.testing.assert_allclose(run_onnx(result.path, x), expected, rtol=1e-4, atol=1e-4)
