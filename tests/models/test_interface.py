"""Uniform interface and the seed's width protocol, on every registered model; published sizes."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from model_helpers import MODELS, macs, make, sample_input
from tailor.errors import InvalidSubnetError
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d


@pytest.mark.parametrize("name", MODELS)
def test_forward_is_features_then_head(name: str) -> None:
    model = make(name)
    model.activate(model.space.sample(random.Random(name)))
    x = sample_input(name)
    with torch.no_grad():
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), model(x))
        pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape[0] == 2 and pooled.dim() == 2


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_changes_only_the_head(name: str) -> None:
    model = make(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(3)
    model.activate(model.space.smallest())
    with torch.no_grad():
        assert model(sample_input(name)).shape == (2, 3)
    after = model.state_dict()
    kept = [k for k in before if k in after and before[k].shape == after[k].shape and torch.equal(before[k], after[k])]
    assert len(kept) >= len(before) - 4  # at most the classifier's weight and bias changed (plus a V3 pre-head)
    assert model.num_classes == 3


@pytest.mark.parametrize("name", MODELS)
def test_width_protocol_round_trip(name: str) -> None:
    model = make(name)
    space = model.space
    assert model.search_dim == space.search_dim == len(space.widths)
    full = model.channel_space
    assert model.decode_wm([1.0] * model.search_dim) == full
    wm = [random.Random(name).random() for _ in range(model.search_dim)]
    ch = model.decode_wm(wm)
    real = model.decode_ch(ch)
    assert len(real) == len(full)
    layers = sum(len(group) if isinstance(group, list) else 1 for group in real)
    assert layers == sum(1 for _, m in model.elastic_layers() if getattr(m, "out_dim", None) is not None)
    model.set_real_ch(real)
    assert model.active_subnet == space.canonical(space.from_wm(wm))
    with pytest.raises(InvalidSubnetError, match=f"expected {model.search_dim} width multipliers"):
        model.decode_wm(wm[:-1])
    with pytest.raises(InvalidSubnetError, match=r"= 1\.5 is not in \[0, 1\]"):
        model.decode_wm([1.5] + wm[1:])
    with pytest.raises(InvalidSubnetError, match="expected .* groups"):
        model.decode_ch(ch[:-1])


@settings(max_examples=25, deadline=None)
@given(wm=st.lists(st.floats(0, 1), min_size=12, max_size=12))
def test_resnet20_decode_matches_activation(wm: list[float]) -> None:
    model = tailor.create_model("resnet20")
    ch = model.decode_wm(wm)
    model.set_real_ch(model.decode_ch(ch))
    active = model.active_subnet
    # each conv runs exactly the channels decode_wm promised for its dimension
    flat = {d.name: c for d, c in zip(model.space.widths, [c for group in ch for c in group])}
    for _, module in model.elastic_layers():
        if isinstance(module, ElasticConv2d) and module.out_dim is not None:
            assert module._active[1] == flat[module.out_dim]
    assert active == model.space.canonical(model.space.from_wm(wm))


def test_set_real_ch_rejects_untied_or_impossible_counts() -> None:
    model = tailor.create_model("resnet20")
    real = model.decode_ch(model.channel_space)
    real[0][0] = 8  # the stem writes stage1.out, which the other stage-1 layers keep at 16
    with pytest.raises(InvalidSubnetError, match=r"layer '.*' has 16 channels but dimension 'stage1.out' is tied to 8"):
        model.set_real_ch(real)
    real = model.decode_ch(model.channel_space)
    real[1] = [5] * len(real[1])  # 5 of 32 channels is not a choice (0.25 -> 8)
    with pytest.raises(InvalidSubnetError, match="cannot run 5 channels"):
        model.set_real_ch(real)


@pytest.mark.parametrize("name", MODELS)
def test_sort_channels_keeps_the_full_network_and_orders_by_importance(name: str) -> None:
    model = make(name)
    x = sample_input(name)
    with torch.no_grad():
        before = model(x)
    result = tailor.sort_channels(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    assert result.permutations and not set(result.permutations) & set(result.skipped)
    for _, module in model.elastic_layers():  # after sorting, importance is non-increasing in every dim
        if isinstance(module, ElasticConv2d) and module.out_dim in result.permutations and module.groups == 1:
            dim = module.out_dim
            scores = sum(
                m.weight.abs().flatten(1).sum(1).double()
                for _, m in model.elastic_layers()
                if getattr(m, "out_dim", None) == dim and not isinstance(m, ElasticBatchNorm2d)
            )
            assert torch.all(scores[:-1] >= scores[1:] - 1e-6), dim
            break


def test_sort_channels_refuses_to_invalidate_subnet_statistics() -> None:
    model = tailor.create_model("resnet20")
    tailor.calibrate(model, [model.space.smallest()], [torch.randn(4, 3, 32, 32)], batches=1)
    with pytest.raises(InvalidSubnetError, match="drop_subnet_stats=True"):
        tailor.sort_channels(model)
    tailor.sort_channels(model, drop_subnet_stats=True)
    assert not model.calibrated_subnet_keys()


# published sizes: (parameters, MACs, input side) with 1000 classes for ImageNet models, 10 for CIFAR
PUBLISHED = {
    "resnet18": (11_689_512, 1.82e9, 224),
    "resnet50": (25_557_032, 4.09e9, 224),
    "resnet20": (272_474, 41e6, 32),
    "resnet56": (855_770, 126e6, 32),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_width_matches_the_published_architecture(name: str) -> None:
    params, published_macs, side = PUBLISHED[name]
    model = tailor.create_model(name).eval()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.02
    measured = macs(model.extract(model.space.largest()), torch.randn(1, 3, side, side))
    assert abs(measured - published_macs) / published_macs < 0.02


def test_set_real_ch_maps_rounded_up_counts_back_to_their_choice() -> None:
    model = tailor.create_model("mobilenet_v3_large")
    dim = model.space.width_dim("stage2.block0.expand")  # 64 channels: 2/3 keeps ceil(42.67) = 43
    sub = model.space.largest().replace(widths={dim.name: 2 / 3})
    model.set_real_ch(model.decode_ch(model._widths.nest(model.space.channels(sub))))
    assert model.active_subnet.width(dim.name) == 2 / 3


@pytest.mark.parametrize("name", MODELS)
def test_init_weights_restarts_an_extracted_subnet_reproducibly(name: str) -> None:
    model = make(name)
    net = model.extract(model.space.smallest())
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    for param in net.parameters():  # as if trained: every weight moved away from any init
        param.data.add_(0.5)
    torch.manual_seed(1)
    model.init_weights(net)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(1)
    model.init_weights(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, first[key])  # seeded: the same start twice
    moved = [k for k, p in net.named_parameters() if not torch.equal(p, trained[k] + 0.5)]
    assert len(moved) == len(list(net.parameters()))  # every parameter was re-initialised


def test_resnet_init_uses_the_extracted_layers_own_fan_out() -> None:
    model = tailor.create_model("resnet20")
    net = model.extract(model.space.smallest())
    torch.manual_seed(0)
    model.init_weights(net)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() >= 500]
    assert convs
    for conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = (2.0 / fan_out) ** 0.5  # Kaiming normal, fan-out mode, ReLU gain
        assert abs(float(conv.weight.detach().std()) / expected - 1.0) < 0.25, conv


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_zero_init_residual_makes_every_depth_compute_the_same_function_at_init(name: str) -> None:
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=5, zero_init_residual=True).eval()
    assert model.architecture["kwargs"]["zero_init_residual"] is True  # checkpoints rebuild it
    deep, shallow = model.space.largest(), model.space.uniform(1.0, depth="min")
    x = sample_input(name)
    with torch.no_grad():
        model.activate(deep)
        out_deep = model(x)
        model.activate(shallow)
        out_shallow = model(x)
    torch.testing.assert_close(out_deep, out_shallow)  # the skipped blocks start as identities
    plain = tailor.create_model(name, num_classes=5).eval()
    with torch.no_grad():
        plain.activate(deep)
        a = plain(x)
        plain.activate(shallow)
        assert not torch.allclose(a, plain(x))  # without it they differ: the test can fail
    net = model.extract(shallow)
    for param in net.parameters():
        param.data.fill_(1.0)
    model.init_weights(net)  # extracted nets get the same rule, skipped blocks simply absent
    residual = [n for n in model.residual_norm_names() if _has(net, n)]
    assert residual and all(float(net.get_submodule(n).weight.detach().abs().sum()) == 0.0 for n in residual)


def _has(module: torch.nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True
