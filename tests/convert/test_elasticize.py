"""elasticize on torchvision-style models: weights kept, activated == extracted, MACs fall with width."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from user_models import ZOO, make_user_model

import tailor
from model_helpers import macs
from tailor.convert import ChannelGroup, ElasticizedModel, elasticize
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticGroupNorm, ElasticLinear, ElasticOp
from tailor.space import Subnet

MODELS = sorted(ZOO)
MODES = ("per_group", "uniform")
WIDTHS = (0.25, 0.5, 0.75, 1.0)
TOLERANCE = 1e-5


def inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def convert(name: str, **kwargs: object) -> tuple[nn.Module, ElasticizedModel]:
    user = make_user_model(name)
    return user, elasticize(user, (inputs(),), **kwargs).eval()  # type: ignore[arg-type]


def layers_of(model: ElasticizedModel) -> dict[str, nn.Module]:
    """Elastic layers by the user's names (they live under `net.` in the elasticized model)."""
    return {name.removeprefix("net."): module for name, module in model.elastic_layers()}


def is_plain_torch(module: nn.Module) -> bool:
    return not any(isinstance(m, (ElasticOp, ElasticizedModel)) for m in module.modules())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_full_width_equals_original_and_widths_agree(name: str, mode: str) -> None:
    user, model = convert(name, mode=mode)
    x = inputs(seed=2)
    with torch.no_grad():
        expected = user(x)
        assert torch.allclose(model(x), expected, atol=TOLERANCE, rtol=0)
        assert torch.allclose(model.extract(model.space.largest())(x), expected, atol=TOLERANCE, rtol=0)
    previous = None
    for width in sorted(WIDTHS, reverse=True):
        sub = model.space.uniform(width)
        static = model.extract(sub)
        assert is_plain_torch(static)
        with torch.no_grad(), model.activated(sub):
            activated = model(x)
            assert torch.allclose(activated, static(x), atol=TOLERANCE, rtol=0), width
        cost = macs(static, x)
        if previous is not None:
            assert cost < previous, f"{name} at width {width}: {cost} MACs, not fewer than {previous}"
        previous = cost
        assert activated.shape == expected.shape


#: Converted models reused across hypothesis examples (each example restores the active subnet).
CONVERTED: dict[str, ElasticizedModel] = {}


@pytest.mark.parametrize("name", ["resnet18", "densenet", "resnext", "senet", "mobilenet_v2", "vgg_flatten2x2"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_per_group_subnets_activated_equal_extracted(name: str, seed: int) -> None:
    model = CONVERTED.setdefault(name, convert(name)[1])
    sub = model.space.sample(random.Random(seed))
    x = inputs(seed=seed % 1000)
    with torch.no_grad(), model.activated(sub):
        activated = model(x)
    assert torch.allclose(activated, model.extract(sub)(x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_the_user_model_is_left_untouched(name: str) -> None:
    user = make_user_model(name).train()
    before = copy.deepcopy(user.state_dict())
    types = [type(m) for m in user.modules()]
    model = elasticize(user, inputs())
    assert user.training and model.training
    assert [type(m) for m in user.modules()] == types
    after = user.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    shared = {id(p) for p in model.parameters()} & {id(p) for p in user.parameters()}
    assert not shared


@pytest.mark.parametrize("name", MODELS)
def test_group_norm_conversion(name: str) -> None:
    _, model = convert(name, norm="group", groups=4)
    norms = [m for _, m in model.elastic_layers() if isinstance(m, nn.GroupNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = inputs(seed=3)
    for width in WIDTHS:
        sub = model.space.uniform(width)
        channels = model.group_channels(sub)
        for _, module in model.elastic_layers():
            if isinstance(module, ElasticGroupNorm) and module.dim is not None:
                assert channels[module.dim] % module.channels_per_group == 0
        with torch.no_grad(), model.activated(sub):
            activated = model(x)
        static = model.extract(sub)
        assert activated.shape == (2, 10)
        assert torch.allclose(activated, static(x), atol=TOLERANCE, rtol=0)
        assert any(isinstance(m, nn.GroupNorm) for m in static.modules())


@pytest.mark.parametrize("name", ["resnet18", "densenet", "vgg_flatten2x2", "resnext"])
def test_training_reaches_the_shared_weights(name: str) -> None:
    _, model = convert(name)
    model.train()
    sub = model.space.uniform(0.5)
    model.activate(sub)
    model(inputs(batch=4)).square().mean().backward()
    channels = model.group_channels(sub)
    grads = 0
    for layer, module in model.elastic_layers():
        if isinstance(module, ElasticConv2d) and module.groups == 1:
            assert module.weight.grad is not None, layer
            cout = channels.get(module.out_dim, module.out_channels) if module.out_dim else module.out_channels
            ranges = module.in_layout.select("test", channels)
            active = module.in_layout.indices(ranges) if ranges is not None else torch.arange(module.in_channels)
            inactive = torch.ones(module.in_channels, dtype=torch.bool)
            inactive[active] = False
            assert module.weight.grad[cout:].abs().sum() == 0 and module.weight.grad[:, inactive].abs().sum() == 0
            grads += int(module.weight.grad[:cout, active].abs().sum() > 0)
    assert grads > 0
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    optimiser.step()
    model.eval()
    x = inputs(seed=4)
    with torch.no_grad(), model.activated(sub):
        assert torch.allclose(model(x), model.extract(sub)(x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["resnet18", "densenet", "vgg_flatten2x2"])
def test_state_dict_round_trip_with_calibrated_statistics(name: str) -> None:
    _, model = convert(name)
    subs = [model.space.largest(), model.space.uniform(0.5), model.space.sample(7)]
    batches = [inputs(batch=4, seed=s) for s in range(3)]
    keys = tailor.calibrate(model, subs, batches, batches=3)
    assert len(keys) == 3
    state = model.state_dict()
    assert any(".subnet_mean_" in k for k in state)
    fresh = elasticize(make_user_model(name, seed=5), inputs()).eval()
    fresh.load_state_dict(state)
    x = inputs(seed=6)
    for sub in subs:
        with torch.no_grad(), model.activated(sub), fresh.activated(sub):
            assert model.has_norm_stats(sub)
            assert torch.equal(model(x), fresh(x))
            assert torch.allclose(model(x), model.extract(sub)(x), atol=TOLERANCE, rtol=0)


def test_modes_shape_the_space() -> None:
    _, per_group = convert("resnet18")
    _, uniform = convert("resnet18", mode="uniform")
    assert uniform.space.search_dim == 1 and uniform.space.widths[0].name == "width"
    assert uniform.space.size == len(WIDTHS)
    # basic blocks: one residual group per stage plus one hidden group per block
    assert per_group.space.search_dim == 4 + 8
    for width in WIDTHS:
        assert per_group.group_channels(per_group.space.uniform(width)) == uniform.group_channels(
            uniform.space.uniform(width)
        )


def test_resnet_groups_follow_residual_adds() -> None:
    _, model = convert("resnet18")
    groups = {g.name: g for g in model.channel_groups}
    assert all(isinstance(g, ChannelGroup) for g in model.channel_groups)
    stem = groups["conv1"]
    assert stem.elastic and {"layer1.0.conv2", "layer1.1.conv2", "layer1.1.conv1"} <= set(stem.layers)
    stage2 = groups["layer2.0.conv2"]
    assert {"layer2.0.downsample.0", "layer2.1.conv2", "layer3.0.conv1"} <= set(stage2.layers)
    assert groups["input 'x'"].frozen == "network input 'x'" and groups["fc"].frozen == "network output"
    assert {g.name for g in model.frozen_groups} == {"input 'x'", "fc"}
    assert "dimension 'conv1'" in model.summary()


def test_mobilenet_depthwise_shares_its_input_group() -> None:
    _, model = convert("mobilenet_v2")
    groups = {g.name: g for g in model.channel_groups}
    # block 1 (no expansion): its depthwise conv reads the stem's channels, and its add ties its output to them
    assert {"features.1.conv.0.0", "features.1.conv.0.1", "features.1.conv.2"} <= set(groups["features.0.0"].layers)
    # block 2: expand conv, depthwise conv and their norms form one group
    assert {"features.2.conv.1.0", "features.2.conv.1.1", "features.2.conv.2"} <= set(
        groups["features.2.conv.0.0"].layers
    )
    # block 3's residual add ties its projection to block 2's
    assert "features.3.conv.2" in groups["features.2.conv.2"].layers
    assert model.space.search_dim == 8


def test_squeeze_excite_gates_join_the_block_group() -> None:
    _, model = convert("senet")
    group = next(g for g in model.channel_groups if "blocks.0.se.fc2" in g.layers and g.name != "blocks.0.se.fc1")
    assert {"stem.0", "blocks.0.conv2", "blocks.0.se.fc2"} <= set(group.layers)
    linear_gate = next(g for g in model.channel_groups if "blocks.1.se.fc.2" in g.layers and g.elastic)
    assert {"blocks.1.conv2", "blocks.1.shortcut.0", "blocks.2.conv1"} <= set(linear_gate.layers)


def test_densenet_concatenations_use_indexed_inputs() -> None:
    _, model = convert("densenet")
    layers = layers_of(model)
    concatenated = layers["block1.layers.1.conv1"]
    assert isinstance(concatenated, ElasticConv2d) and len(concatenated.in_layout.segments) == 2
    assert concatenated.in_dim is None and concatenated.sort_skip_reason is not None
    assert isinstance(layers["block1.layers.1.norm1"], ElasticBatchNorm2d)
    assert layers["block1.layers.1.norm1"].layout == concatenated.in_layout
    assert layers["block1.layers.0.conv1"].in_dim is not None  # reads a single tensor: a prefix
    assert [dim for dim, _ in layers["trans1.2"].in_layout.segments] == [
        "stem",
        "block1.layers.0.conv2",
        "block1.layers.1.conv2",
        "block1.layers.2.conv2",
    ]
    assert not model.frozen_groups or {g.name for g in model.frozen_groups} == {"input 'x'", "fc"}


def test_flatten_of_a_2x2_map_reads_per_channel_blocks() -> None:
    _, model = convert("vgg_flatten2x2")
    fc = layers_of(model)["classifier.0"]
    assert isinstance(fc, ElasticLinear) and fc.in_layout.inner == 4 and fc.in_dim is None
    _, pooled = convert("vgg")
    assert layers_of(pooled)["classifier.0"].in_layout.inner == 1
    assert layers_of(pooled)["classifier.0"].in_dim is not None


def test_grouped_convs_keep_whole_groups() -> None:
    _, model = convert("resnext")
    groups = {g.name: g for g in model.channel_groups}
    assert groups["layer1.conv1"].step == 4 and groups["layer2.conv1"].step == 8
    linked = groups["dw"]  # depthwise with multiplier 2 shares its input's dimension
    assert linked.dimension == groups["layer2.downsample.0"].dimension and linked.step == 2
    for width in WIDTHS:
        channels = model.group_channels(model.space.uniform(width))
        assert channels["dw"] == 2 * channels["layer2.downsample.0"]


def test_sort_channels_keeps_the_full_network() -> None:
    user, model = convert("resnet18", mode="uniform")
    _, dense = convert("densenet")
    x = inputs(seed=8)
    result = tailor.sort_channels(model)
    assert result.permutations
    with torch.no_grad():
        assert torch.allclose(model(x), user(x), atol=TOLERANCE, rtol=0)
    dense_result = tailor.sort_channels(dense)
    assert any("out of prefix order" in reason for reason in dense_result.skipped.values())
    sub = dense.space.uniform(0.5)
    with torch.no_grad(), dense.activated(sub):
        assert torch.allclose(dense(x), dense.extract(sub)(x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_width_protocol(mode: str) -> None:
    _, model = convert("resnext", mode=mode)
    wm = [0.5] * model.search_dim
    per_layer = model.decode_ch(model.decode_wm(wm))
    model.set_real_ch(per_layer)
    assert model.active_subnet == model.space.canonical(model.space.from_wm(wm))
    flat = [c for group in per_layer for c in (group if isinstance(group, list) else [group])]
    assert min(flat) < max(flat)


def test_widths_and_inputs_are_recorded() -> None:
    model = elasticize(make_user_model("vgg"), inputs(), widths=(0.5, 1.0))
    assert all(dim.choices == (0.5, 1.0) for dim in model.space.widths)
    assert model.default_input_size == (3, 32, 32)
    assert isinstance(model.space.largest(), Subnet)
    bn = [m for _, m in model.elastic_layers() if isinstance(m, ElasticBatchNorm2d)]
    assert bn and all(b.running_var.min() >= 0.5 for b in bn)  # the user's statistics, adopted
