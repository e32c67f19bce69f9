"""The ViT family: DeiT sizes, the search space, every-other depth, heads, position embeddings, ONNX export."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from model_helpers import macs
from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.export import run_onnx, to_onnx
from tailor.ops import ElasticQKVLinear, kept_blocks

# DeiT at 224x224 with 1000 classes: (parameters, MACs). DeiT's paper: Tiny 5.7 M / 1.3 GFLOPs (fvcore counts
# a multiply-add as one FLOP: 1.26 G MACs), Small 22.1 M / 4.6 G.
PUBLISHED = {"vit_tiny": (5.7e6, 1.26e9), "vit_small": (22.1e6, 4.6e9)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_matches_deit_within_3_percent(name: str) -> None:
    params, published_macs = PUBLISHED[name]
    model = tailor.create_model(name).eval()
    assert model.default_input_size == (3, 224, 224)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.03
    measured = macs(model.extract(model.space.largest()), torch.randn(1, 3, 224, 224))
    assert abs(measured - published_macs) / published_macs < 0.03


def test_space_is_heads_mlp_ratio_per_block_and_depth() -> None:
    model = tailor.create_model("vit_small")
    space = model.space
    assert [d.name for d in space.widths[:4]] == ["block0.heads", "block0.mlp", "block1.heads", "block1.mlp"]
    heads = space.width_dim("block3.heads")
    assert (heads.channels, heads.step) == (384, 64)  # 6 heads of 64 features
    assert [heads.channels_at(w) // 64 for w in heads.choices] == [1, 2, 3, 4, 5, 6]
    mlp = space.width_dim("block3.mlp")
    assert mlp.channels == 1536 and [mlp.channels_at(w) / 384 for w in mlp.choices] == [1, 2, 3, 4]
    assert space.depth_dim("depth").choices == (6, 9, 12)
    custom = tailor.create_model("vit_tiny", head_choices=(2, 3), mlp_ratios=(3, 4), depth_choices=(8, 12))
    assert custom.space.width_dim("block0.heads").choices == (2 / 3, 1.0)
    assert custom.space.width_dim("block0.mlp").choices == (0.75, 1.0)
    assert custom.space.depth_dim("depth").choices == (8, 12)
    with pytest.raises(InvalidSubnetError, match="head count 4 is not in"):
        tailor.create_model("vit_tiny", head_choices=(1, 4))
    with pytest.raises(InvalidSubnetError, match="depth choices"):
        tailor.create_model("vit_tiny", depth_choices=(6, 9))
    with pytest.raises(UnsupportedModelError, match="multiple of patch_size"):
        tailor.create_model("vit_tiny", img_size=30, patch_size=4)


def test_depth_runs_every_other_block_by_default_and_the_first_on_request() -> None:
    for rule, expected in (("every_other", kept_blocks(12, 6, "every_other")), ("first", tuple(range(6)))):
        model = tailor.create_model("vit_tiny", img_size=32, patch_size=8, depth_rule=rule).eval()
        calls: list[int] = []
        for j, block in enumerate(model.stages[0].blocks):
            block.register_forward_hook(lambda *_, j=j, calls=calls: calls.append(j))
        sub = model.space.largest().replace(depths={"depth": 6})
        with torch.no_grad(), model.activated(sub):
            model(torch.randn(1, 3, 32, 32))
            assert tuple(calls) == expected
            static = model.extract()
        kept = {int(n.split(".")[3]) for n, _ in static.named_modules() if n.startswith("stages.0.blocks.")}
        assert tuple(sorted(kept)) == expected
    assert expected != kept_blocks(12, 6, "every_other")  # the two rules differ


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_heads_run_are_the_first_of_each_block(seed: int) -> None:
    model = tailor.create_model("vit_micro", num_classes=5).eval()
    sub = model.space.sample(random.Random(seed))
    model.activate(sub)
    for j in kept_blocks(6, sub.depth("depth"), "every_other"):  # skipped blocks keep whatever they had
        qkv: ElasticQKVLinear = model.stages[0].blocks[j].attn.qkv
        expected = model.space.channels(sub)[f"block{j}.heads"] // qkv.head_dim
        assert qkv.active_heads == expected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(model.extract(sub)(x), out, rtol=1e-4, atol=1e-5)


def test_patch_size_32x32_inputs_and_position_embedding_resampling() -> None:
    torch.manual_seed(0)
    model = tailor.create_model("vit_tiny", num_classes=10, img_size=32, patch_size=4).eval()
    assert model.default_input_size == (3, 32, 32) and tuple(model.pos_embed.shape) == (1, 192, 8, 8)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        patches = model.patch_embed(x) + model.pos_embed  # at the built size the resampling is the identity
        tokens = torch.cat([model.cls_token.expand(2, -1, -1), patches.flatten(2).transpose(1, 2)], 1)
        for block in model.stages[0].blocks:
            tokens = block(tokens)
        torch.testing.assert_close(model.forward_features(x), model.norm(tokens))
        assert model(torch.randn(2, 3, 48, 48)).shape == (2, 10)  # another size: a resampled 12x12 grid


def test_training_reaches_only_the_active_heads_and_mlp_features() -> None:
    model = tailor.create_model("vit_micro", num_classes=4).train()
    sub = model.space.smallest()  # 1 of 3 heads, MLP ratio 1 of 4, 3 of 6 blocks (every other)
    model.activate(sub)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    block = model.stages[0].blocks[0]
    rows = block.attn.qkv.weight.grad.abs().sum(1).view(3, 3, 32)  # [q|k|v, head, feature]
    assert torch.all(rows[:, 0] > 0) and torch.all(rows[:, 1:] == 0)
    assert block.mlp.fc1.weight.grad[96:].abs().sum() == 0 and block.mlp.fc1.weight.grad[:96].abs().sum() > 0
    skipped = model.stages[0].blocks[1]  # depth 3 of 6 runs blocks 0, 2, 4
    assert all(p.grad is None for p in skipped.parameters())


@pytest.mark.parametrize("which", ["smallest", "random"])
def test_subnets_export_to_onnx_and_match(tmp_path: Path, which: str) -> None:
    model = tailor.create_model("vit_micro", num_classes=10).eval()
    sub = model.space.smallest() if which == "smallest" else model.space.sample(random.Random(4))
    result = to_onnx(model, sub, tmp_path / "vit.onnx")
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-4
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's: the batch axis is dynamic
    with torch.no_grad():
        expected = model.extract(sub)(x).numpy()
    np.testing.assert_allclose(run_onnx(result.path, x), expected, rtol=1e-4, atol=1e-4)
