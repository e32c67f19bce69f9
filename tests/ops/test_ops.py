"""Elastic operators: slicing semantics, caches, gradients, SubnetNorm statistics, group norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.errors import CheckpointError, InvalidSubnetError, UnsupportedModelError
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticGroupNorm, ElasticLinear, expand_channels


def conv(cin: int = 8, cout: int = 12, groups: int = 1, **kw: object) -> ElasticConv2d:
    dims = {"in_dim": "a", "out_dim": "a" if groups > 1 else "b"}
    layer = ElasticConv2d(cin, cout, 3, 1, 1, groups=groups, bias=True, **dims, **kw)  # type: ignore[arg-type]
    torch.nn.init.normal_(layer.weight)
    return layer


@settings(max_examples=40, deadline=None)
@given(cin=st.integers(1, 8), cout=st.integers(1, 12), grad=st.booleans())
def test_conv_runs_the_weight_prefix(cin: int, cout: int, grad: bool) -> None:
    layer = conv().eval()
    layer._active = layer.configure({"a": cin, "b": cout}, "k")
    x = torch.randn(2, cin, 5, 5)
    expected = F.conv2d(x, layer.weight[:cout, :cin], layer.bias[:cout], padding=1)
    with torch.set_grad_enabled(grad):
        got = layer(x)
        again = layer(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(again, expected)
    static = layer.to_static()
    assert type(static) is torch.nn.Conv2d and static.weight.shape == (cout, cin, 3, 3)
    torch.testing.assert_close(static(x), expected)


@pytest.mark.parametrize("groups", [4, 16])  # grouped, depthwise
@pytest.mark.parametrize("groups_active", [1, 2, 3])
def test_grouped_conv_keeps_whole_groups(groups: int, groups_active: int) -> None:
    layer = conv(16, 16, groups=groups).eval()
    per_group = 16 // groups
    c = per_group * min(groups_active, groups)
    x = torch.randn(2, 16, 6, 6)
    full = layer(x)
    layer._active = layer.configure({"a": c}, "k")
    with torch.no_grad():
        torch.testing.assert_close(layer(x[:, :c]), full[:, :c])
    static = layer.to_static()
    assert static.groups == c // per_group
    torch.testing.assert_close(static(x[:, :c]), full[:, :c])


def test_grouped_conv_rejects_partial_groups() -> None:
    layer = conv(16, 16, groups=4)
    with pytest.raises(InvalidSubnetError, match="whole groups of 4"):
        layer.configure({"a": 6}, "k")
    assert layer.width_dims() == {"a": (16, 4)}


def test_channel_count_outside_layer_is_rejected() -> None:
    with pytest.raises(InvalidSubnetError, match=r"13 channels for dimension 'b'"):
        conv().configure({"a": 8, "b": 13}, "k")
    with pytest.raises(InvalidSubnetError, match="dimension 'b' has no channel count"):
        conv().configure({"a": 8}, "k")


def test_string_padding_is_unsupported() -> None:
    with pytest.raises(UnsupportedModelError, match="string padding"):
        ElasticConv2d(3, 3, 3, padding="same")


def test_training_gradients_reach_only_the_active_slice() -> None:
    layer = conv().train()
    layer._active = layer.configure({"a": 4, "b": 6}, "k")
    layer(torch.randn(2, 4, 5, 5)).square().sum().backward()
    grad = layer.weight.grad
    assert grad is not None and grad.shape == layer.weight.shape
    assert grad[:6, :4].abs().sum() > 0
    assert grad[6:].abs().sum() == 0 and grad[:, 4:].abs().sum() == 0


def test_eval_cache_reuses_one_copy_and_follows_weight_updates() -> None:
    layer = conv().eval()
    layer._active = layer.configure({"a": 4, "b": 6}, "k")
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        layer(x)
        first = layer._eval_cache[(6, 4)][1]
        layer(x)
        assert layer._eval_cache[(6, 4)][1] is first  # no new copy for a repeated forward
        assert first.is_contiguous() and first.data_ptr() != layer.weight.data_ptr()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer.weight.grad = torch.ones_like(layer.weight)
    optimizer.step()  # bumps the parameter's version counter
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight[:6, :4], layer.bias[:6], padding=1))
    layer.to(torch.float64)  # moving clears the cache
    assert not layer._eval_cache
    with torch.no_grad():
        assert layer(x.double()).dtype == torch.float64


def test_eval_cache_is_bounded_and_can_be_disabled() -> None:
    layer = conv().eval()
    layer.cache_entries = 2
    with torch.no_grad():
        for cout in (3, 4, 5):
            layer._active = layer.configure({"a": 8, "b": cout}, "k")
            layer(torch.randn(1, 8, 4, 4))
    assert list(layer._eval_cache) == [(4, 8), (5, 8)]
    layer.cache_entries = 0
    layer.clear_cache()
    with torch.no_grad():
        out = layer(torch.ones(1, 8, 4, 4))
    assert not layer._eval_cache and out.shape == (1, 5, 4, 4)


@settings(max_examples=30, deadline=None)
@given(cin=st.integers(1, 10), cout=st.integers(1, 7), grad=st.booleans())
def test_linear_runs_the_weight_prefix(cin: int, cout: int, grad: bool) -> None:
    layer = ElasticLinear(10, 7, in_dim="i", out_dim="o")
    layer._active = layer.configure({"i": cin, "o": cout}, "k")
    x = torch.randn(3, cin)
    expected = F.linear(x, layer.weight[:cout, :cin], layer.bias[:cout])
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(layer(x), expected)
        torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.to_static()(x), expected)


def test_expand_channels_follows_the_mobilenet_rounding() -> None:
    assert expand_channels(16, 6) == 96
    assert expand_channels(24, 4.5) == 112  # 108 rounds to 112
    assert expand_channels(10, 1, divisor=8) == 16  # 8 would be > 10% below 10
    assert all(
        expand_channels(c, r) % 8 == 0 and expand_channels(c, r) >= 0.9 * c * r for c in (8, 24, 40) for r in (3, 4, 6)
    )
    with pytest.raises(InvalidSubnetError):
        expand_channels(0, 3)


# -- SubnetNorm ----------------------------------------------------------------------------------------
def bn(channels: int = 8) -> ElasticBatchNorm2d:
    layer = ElasticBatchNorm2d(channels, dim="a")
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    return layer


def test_batchnorm_uses_subnet_stats_and_falls_back_to_shared() -> None:
    layer = bn().eval()
    layer._active = layer.configure({"a": 5}, "sub-a")
    x = torch.randn(4, 5, 3, 3)
    with torch.no_grad():
        shared = layer(x)
    expected_shared = F.batch_norm(
        x, layer.running_mean[:5], layer.running_var[:5], layer.weight[:5], layer.bias[:5], False, 0, 1e-5
    )
    torch.testing.assert_close(shared, expected_shared)
    assert not layer.has_subnet_stats("sub-a")
    mean, var = torch.randn(5), torch.rand(5) + 0.5
    layer.set_subnet_stats("sub-a", mean, var)
    with torch.no_grad():
        own = layer(x)
    torch.testing.assert_close(own, F.batch_norm(x, mean, var, layer.weight[:5], layer.bias[:5], False, 0, 1e-5))
    static = layer.to_static()
    torch.testing.assert_close(static.running_mean, mean)
    torch.testing.assert_close(static.eval()(x), own)
    layer._active = layer.configure({"a": 5}, "sub-b")  # same width, other subnet: shared stats
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected_shared)


def test_batchnorm_stats_of_wrong_length_are_rejected() -> None:
    layer = bn()
    with pytest.raises(InvalidSubnetError, match="equal length"):
        layer.set_subnet_stats("k", torch.zeros(3), torch.zeros(4))
    layer.set_subnet_stats("k", torch.zeros(3), torch.ones(3))
    layer._active = layer.configure({"a": 5}, "k")
    with pytest.raises(InvalidSubnetError, match="cover 3 channels, the subnet runs 5"):
        layer.eval()(torch.randn(1, 5, 2, 2))


def test_batchnorm_subnet_stats_survive_state_dict_and_to() -> None:
    layer = bn()
    layer.set_subnet_stats("sn-1", torch.randn(5), torch.rand(5) + 0.1)
    layer.set_subnet_stats("sn-2", torch.randn(8), torch.rand(8) + 0.1)
    state = layer.state_dict()
    assert {"subnet_mean_sn-1", "subnet_var_sn-2"} <= set(state)
    fresh = ElasticBatchNorm2d(8, dim="a")
    fresh.load_state_dict(state)
    assert sorted(fresh.subnet_stats_keys()) == ["sn-1", "sn-2"]
    for key in ("sn-1", "sn-2"):
        for a, b in zip(fresh.subnet_stats(key), layer.subnet_stats(key)):
            torch.testing.assert_close(a, b)
    fresh.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in fresh.subnet_stats("sn-1"))
    assert fresh.subnet_stats_bytes() == 2 * (5 + 8) * 8
    broken = dict(state)
    del broken["subnet_var_sn-1"]
    with pytest.raises(CheckpointError, match="sn-1"):
        ElasticBatchNorm2d(8, dim="a").load_state_dict(broken)


def test_batchnorm_calibration_is_exact_over_all_batches() -> None:
    layer = bn()
    layer._active = layer.configure({"a": 6}, "k")
    batches = [torch.randn(3, 6, 4, 4) * 2 + 1, torch.randn(5, 6, 2, 2) - 3]
    layer.begin_calibration()
    for x in batches:
        out = layer(x)
        torch.testing.assert_close(out, F.batch_norm(x, None, None, layer.weight[:6], layer.bias[:6], True, 0, 1e-5))
    assert layer.finish_calibration("k")
    values = torch.cat([x.permute(1, 0, 2, 3).reshape(6, -1) for x in batches], dim=1).double()
    mean, var = layer.subnet_stats("k")
    torch.testing.assert_close(mean.double(), values.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var.double(), values.var(1, correction=1), rtol=1e-5, atol=1e-6)
    layer.begin_calibration()
    assert not layer.finish_calibration("unseen")  # nothing seen: nothing stored
    assert not layer.has_subnet_stats("unseen")


def test_batchnorm_training_updates_only_active_shared_stats() -> None:
    layer = bn().train()
    before = layer.running_mean.clone()
    layer._active = layer.configure({"a": 3}, "k")
    layer(torch.randn(4, 3, 2, 2) + 5)
    assert not torch.equal(layer.running_mean[:3], before[:3])
    assert torch.equal(layer.running_mean[3:], before[3:])


# -- sliced group norm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("groups_active", [1, 2, 4])
def test_group_norm_keeps_channels_per_group(groups_active: int) -> None:
    layer = ElasticGroupNorm(4, 12, dim="a")
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, 12, 3, 3)
    full = layer(x)
    c = 3 * groups_active
    layer._active = layer.configure({"a": c}, "k")
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(layer(x[:, :c]), full[:, :c])
    static = layer.to_static()
    assert type(static) is torch.nn.GroupNorm and static.num_groups == groups_active
    torch.testing.assert_close(static(x[:, :c]), full[:, :c])


def test_group_norm_rejects_partial_groups() -> None:
    with pytest.raises(InvalidSubnetError, match="groups of 3"):
        ElasticGroupNorm(4, 12, dim="a").configure({"a": 7}, "k")
