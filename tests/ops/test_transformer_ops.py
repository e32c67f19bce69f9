"""Transformer ops: whole-head attention (qkv Linear and nn.MultiheadAttention forms), LayerNorm, MLP, depth rules."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tailor
from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import (
    ElasticLayerNorm,
    ElasticMlp,
    ElasticModel,
    ElasticMultiheadAttention,
    ElasticQKVLinear,
    ElasticSelfAttention,
    ElasticStage,
    kept_blocks,
)
from tailor.space import DepthDim, SearchSpace, WidthDim


def _activate(module: nn.Module, channels: dict[str, int]) -> None:
    """Configure every elastic op inside `module` for the given channel counts (what a plan does)."""
    for op in module.modules():
        if hasattr(op, "configure") and not isinstance(op, ElasticStage):
            op._active = op.configure(channels, "k")


# -- depth rules --------------------------------------------------------------------------------------


def test_every_other_rule_matches_dynabert() -> None:
    assert kept_blocks(12, 6, "every_other") == (0, 2, 4, 6, 8, 10)  # r = 2: every other block
    assert kept_blocks(12, 9, "every_other") == (0, 1, 2, 4, 5, 6, 8, 9, 10)  # r = 4: drops 3, 7, 11
    assert kept_blocks(12, 8, "every_other") == (0, 1, 3, 4, 6, 7, 9, 10)  # r = 3: drops 2, 5, 8, 11
    assert kept_blocks(12, 3, "every_other") == (0, 4, 8)  # below L/2: evenly spread from block 0
    assert kept_blocks(12, 5, "first") == (0, 1, 2, 3, 4)
    with pytest.raises(InvalidSubnetError, match="depth rule"):
        kept_blocks(4, 2, "last")
    with pytest.raises(InvalidSubnetError, match=r"depth 5 is outside \[1, 4\]"):
        kept_blocks(4, 5, "every_other")


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 32), data=st.data())
def test_every_other_keeps_depth_distinct_blocks_from_block_zero(total: int, data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, total))
    kept = kept_blocks(total, depth, "every_other")
    assert len(kept) == depth and list(kept) == sorted(set(kept)) and kept[0] == 0 and kept[-1] < total
    if depth < total and 2 * depth >= total and total % (total - depth) == 0:
        r = total // (total - depth)  # DynaBERT: drop block n when (n + 1) mod r == 0
        assert kept == tuple(n for n in range(total) if (n + 1) % r)
    if 2 * depth <= total:  # kept blocks spread: no two adjacent ones
        assert all(b - a >= 2 for a, b in itertools.pairwise(kept))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class _Deep(ElasticModel):
    def __init__(self, rule: str, blocks: int = 8) -> None:
        super().__init__(SearchSpace([], [DepthDim("depth", tuple(range(1, blocks + 1)))]))
        self.stages = nn.ModuleList([ElasticStage([_Block() for _ in range(blocks)], "depth", rule=rule)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages[0](x)


@pytest.mark.parametrize("rule", ["first", "every_other"])
def test_stage_runs_and_extracts_exactly_the_rules_blocks(rule: str) -> None:
    model = _Deep(rule).eval()
    ran: list[int] = []
    for position, block in enumerate(model.stages[0].blocks):
        block.register_forward_hook(lambda *_, position=position: ran.append(position))
    x = torch.randn(2, 4)
    for depth in range(1, 9):
        sub = model.space.largest().replace(depths={"depth": depth})
        ran.clear()
        with torch.no_grad(), model.activated(sub):
            out = model(x)
            assert tuple(ran) == kept_blocks(8, depth, rule)
            static = model.extract()
        names = sorted(int(n.split(".")[3]) for n, _ in static.named_modules() if n.startswith("stages.0.blocks."))
        names = sorted(set(names))
        assert tuple(names) == kept_blocks(8, depth, rule)
        with torch.no_grad():
            torch.testing.assert_close(static(x), out)


def test_unknown_depth_rule_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="depth rule must be one of"):
        ElasticStage([_Block()], "depth", rule="random")


# -- attention ----------------------------------------------------------------------------------------


def test_qkv_linear_runs_the_first_heads_of_q_k_and_v() -> None:
    torch.manual_seed(0)
    heads, head_dim = 4, 3
    qkv = ElasticQKVLinear(6, heads, head_dim, in_dim="in", out_dim="heads")
    assert qkv.width_dims() == {"in": (6, 1), "heads": (12, 3)}
    x = torch.randn(2, 5, 6)
    full = F.linear(x, qkv.weight, qkv.bias).view(2, 5, 3, heads, head_dim)
    for h in (1, 2, 3):
        qkv._active = qkv.configure({"in": 6, "heads": h * head_dim}, "k")
        assert qkv.active_heads == h
        expected = full[:, :, :, :h].flatten(2)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                torch.testing.assert_close(qkv(x), expected)
        static = qkv.to_static()
        assert type(static) is nn.Linear and static.out_features == 3 * h * head_dim
        torch.testing.assert_close(static(x), expected)
    with pytest.raises(InvalidSubnetError, match="not whole heads"):
        qkv.configure({"in": 6, "heads": 4}, "k")


def test_qkv_linear_training_sends_gradients_only_to_active_heads() -> None:
    qkv = ElasticQKVLinear(4, 2, 2, out_dim="heads")
    qkv._active = qkv.configure({"heads": 2}, "k")
    qkv(torch.randn(3, 4)).sum().backward()
    rows = qkv.weight.grad.abs().sum(1).view(3, 2, 2)  # [q|k|v, head, feature]
    assert torch.all(rows[:, 0] > 0) and torch.all(rows[:, 1] == 0)


def _zeroed_heads_reference(attn: nn.Module, proj: nn.Linear, heads: int, head_dim: int) -> None:
    """Zero the output projection's columns of every head past `heads` (heads are summed by the projection)."""
    with torch.no_grad():
        proj.weight[:, heads * head_dim :] = 0


@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("fused", [False, True])
def test_self_attention_at_h_heads_is_the_full_layer_without_the_other_heads(heads: int, fused: bool) -> None:
    torch.manual_seed(heads)
    attn = ElasticSelfAttention(12, 3, heads_dim="heads", fused=fused).eval()
    x = torch.randn(2, 7, 12)
    _activate(attn, {"heads": heads * 4})
    with torch.no_grad():
        out = attn(x)
    reference = ElasticSelfAttention(12, 3, heads_dim="heads", fused=fused).eval()
    reference.load_state_dict(attn.state_dict())
    _zeroed_heads_reference(reference, reference.proj, heads, 4)
    with torch.no_grad():
        torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)


def _mha(batch_first: bool, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    return mha


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_at_full_width_is_nn_multihead_attention(
    batch_first: bool, need_weights: bool, average: bool
) -> None:
    mha = _mha(batch_first)
    elastic = ElasticMultiheadAttention.from_module(mha, heads_dim="heads")
    assert elastic.in_proj.weight is mha.in_proj_weight and elastic.out_proj.weight is mha.out_proj.weight
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    memory = torch.randn(2, 3, 16) if batch_first else torch.randn(3, 2, 16)
    with torch.no_grad():
        for query, key in ((x, x), (x, memory)):  # self- and cross-attention
            want, want_weights = mha(query, key, key, need_weights=need_weights, average_attn_weights=average)
            got, got_weights = elastic(query, key, key, need_weights=need_weights, average_attn_weights=average)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            if need_weights:
                torch.testing.assert_close(got_weights, want_weights, rtol=1e-5, atol=1e-6)
            else:
                assert got_weights is None


@pytest.mark.parametrize("heads", [1, 3])
def test_multihead_attention_drops_whole_heads(heads: int) -> None:
    mha = _mha(True, seed=heads)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        _, per_head = mha(x, memory, memory, average_attn_weights=False)
    elastic = ElasticMultiheadAttention.from_module(mha, heads_dim="heads").eval()
    _activate(elastic, {"heads": heads * 4})
    with torch.no_grad():
        out, weights = elastic(x, memory, memory, average_attn_weights=False)
    torch.testing.assert_close(weights, per_head[:, :heads], rtol=1e-5, atol=1e-6)  # the first heads, unchanged
    reference = _mha(True, seed=heads)
    _zeroed_heads_reference(reference, reference.out_proj, heads, 4)
    with torch.no_grad():
        torch.testing.assert_close(out, reference(x, memory, memory)[0], rtol=1e-5, atol=1e-5)


def test_multihead_attention_refuses_what_it_cannot_run() -> None:
    with pytest.raises(UnsupportedModelError, match="add_bias_kv"):
        ElasticMultiheadAttention.from_module(nn.MultiheadAttention(8, 2, add_bias_kv=True), heads_dim="h")
    with pytest.raises(UnsupportedModelError, match="kdim/vdim"):
        ElasticMultiheadAttention.from_module(nn.MultiheadAttention(8, 2, kdim=4, vdim=4), heads_dim="h")
    elastic = ElasticMultiheadAttention(8, 2, heads_dim="h", batch_first=True)
    x = torch.randn(1, 3, 8)
    with pytest.raises(UnsupportedModelError, match="masks are not supported"):
        elastic(x, x, x, key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))


# -- LayerNorm and MLP ----------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 10), grad=st.booleans())
def test_layer_norm_normalises_the_active_prefix(c: int, grad: bool) -> None:
    torch.manual_seed(c)
    norm = ElasticLayerNorm(10, dim="d")
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    norm._active = norm.configure({"d": c}, "k")
    x = torch.randn(3, 4, c)
    expected = F.layer_norm(x, (c,), norm.weight[:c], norm.bias[:c], norm.eps)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(norm(x), expected)
    static = norm.to_static()
    assert type(static) is nn.LayerNorm and static.normalized_shape == (c,)
    torch.testing.assert_close(static(x), expected)


def test_mlp_runs_its_active_hidden_width() -> None:
    torch.manual_seed(0)
    mlp = ElasticMlp(6, 16, hidden_dim="hidden").eval()
    x = torch.randn(2, 3, 6)
    _activate(mlp, {"hidden": 8})
    with torch.no_grad():
        out = mlp(x)
        hidden = F.gelu(F.linear(x, mlp.fc1.weight[:8], mlp.fc1.bias[:8]))
        torch.testing.assert_close(out, F.linear(hidden, mlp.fc2.weight[:, :8], mlp.fc2.bias))


# -- a small transformer model: activate == extract, sort_channels moves whole heads --------------------


class _TinyBlock(nn.Module):
    def __init__(self, j: int) -> None:
        super().__init__()
        self.norm1 = ElasticLayerNorm(16, dim="embed")
        self.attn = ElasticSelfAttention(16, 4, heads_dim=f"b{j}.heads", embed_dim="embed")
        self.norm2 = ElasticLayerNorm(16, dim="embed")
        self.mlp = ElasticMlp(16, 32, hidden_dim=f"b{j}.mlp", embed_dim="embed")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _TinyTransformer(ElasticModel):
    """Two pre-norm blocks with elastic heads, MLP width, an elastic residual stream, and every-other depth."""

    def __init__(self) -> None:
        widths = [WidthDim("embed", 16, choices=(0.5, 1.0))]
        for j in range(2):
            widths += [
                WidthDim(f"b{j}.heads", 16, choices=(0.25, 0.5, 1.0), step=4),
                WidthDim(f"b{j}.mlp", 32, low=0.25),
            ]
        super().__init__(SearchSpace(widths, [DepthDim("depth", (1, 2))]))
        self.embed = tailor.ops.ElasticLinear(5, 16, out_dim="embed")
        blocks = [_TinyBlock(j) for j in range(2)]
        self.stages = nn.ModuleList([ElasticStage(blocks, "depth", rule="every_other")])
        self.head = tailor.ops.ElasticLinear(16, 3, in_dim="embed")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages[0](self.embed(x)).mean(1))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_tiny_transformer_subnets_match_their_extraction(seed: int) -> None:
    torch.manual_seed(0)
    model = _TinyTransformer().eval()
    sub = model.space.sample(random.Random(seed))
    x = torch.randn(2, 6, 5)
    with torch.no_grad(), model.activated(sub):
        out = model(x)
        static = model.extract()
        torch.testing.assert_close(static(x), out, rtol=1e-5, atol=1e-6)
    assert not [m for m in static.modules() if type(m).__module__.startswith("tailor")]
    assert not [n for n in static.graph.nodes if n.target in ("size", "shape")]


def test_sort_channels_moves_whole_heads_and_keeps_the_function() -> None:
    torch.manual_seed(1)
    model = _TinyTransformer().eval()
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        before = model(x)
    result = tailor.sort_channels(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    perm = result.permutations["b0.heads"]
    heads = [perm[i : i + 4] for i in range(0, 16, 4)]
    assert all(h == list(range(h[0], h[0] + 4)) and h[0] % 4 == 0 for h in heads)  # whole heads, in order inside
    qkv = model.stages[0].blocks[0].attn.qkv
    importance = qkv.weight.abs().view(3, 4, 4, -1).sum((0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # most important head first
    assert {"embed", "b0.mlp", "b1.heads"} <= set(result.permutations)


def test_heads_dimension_must_keep_whole_heads() -> None:
    class Bad(ElasticModel):
        def __init__(self) -> None:
            super().__init__(SearchSpace([WidthDim("heads", 8, choices=(0.5, 1.0), step=2)]))
            self.attn = ElasticSelfAttention(8, 2, heads_dim="heads")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x)

    model = Bad()
    with pytest.raises(UnsupportedModelError, match=r"needs a multiple of 4"):
        model.activate(model.space.largest())


def test_blocks_the_rule_may_skip_must_keep_the_shape() -> None:
    class Strided(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    class Net(ElasticModel):
        def __init__(self, rule: str) -> None:
            super().__init__(SearchSpace([], [DepthDim("depth", (2, 3, 4))]))
            blocks = [nn.Identity(), Strided(), nn.Identity(), nn.Identity()]  # block 1 downsamples
            self.stages = nn.ModuleList([ElasticStage(blocks, "depth", rule=rule)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stages[0](x)

    Net("first").activate(Net("first").space.largest())  # depths >= 2 always run blocks 0 and 1
    assert ElasticStage([nn.Identity()] * 4, "d", rule="every_other").skippable_positions(2) == (1, 3)
    model = Net("every_other")  # depth 2 keeps blocks 0 and 2: block 1 may be skipped
    with pytest.raises(UnsupportedModelError, match=r"'stages.0.blocks.1.conv': a block that depth may skip"):
        model.activate(model.space.largest())
