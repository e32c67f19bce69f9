"""Ops reading a `ChannelLayout`: concatenated, separately narrowed segments or flattened channel maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import ChannelLayout, ElasticBatchNorm2d, ElasticConv2d, ElasticGroupNorm, ElasticLinear

LAYOUT = ChannelLayout((("a", 4), (None, 2), ("b", 6)))
ACTIVE = {"a": 2, "b": 3, "out": 5}
ACTIVE_INDEX = torch.tensor([0, 1, 4, 5, 6, 7, 8])  # a: 0..1, fixed: 4..5, b: 6..8


def test_layout_selects_each_segments_prefix() -> None:
    assert LAYOUT.channels == 12 and LAYOUT.width_dims() == {"a": (4, 1), "b": (6, 1)}
    ranges = LAYOUT.select("op", ACTIVE)
    assert ranges == ((0, 2), (4, 2), (6, 3))
    assert torch.equal(LAYOUT.indices(ranges), ACTIVE_INDEX)
    assert LAYOUT.select("op", {"a": 4, "b": 6}) is None
    flat = ChannelLayout((("a", 2), ("b", 1)), inner=3)
    assert flat.features == 9 and flat.indices(((0, 1), (2, 1))).tolist() == [0, 1, 2, 6, 7, 8]
    with pytest.raises(InvalidSubnetError, match="outside"):
        LAYOUT.select("op", {"a": 5, "b": 6})
    with pytest.raises(UnsupportedModelError, match="has 4 and 2 channels"):
        ChannelLayout((("a", 4), ("a", 2)))


def test_indexed_conv_matches_the_selected_weights() -> None:
    conv = ElasticConv2d(12, 8, 3, padding=1, bias=True, in_layout=LAYOUT, out_dim="out")
    conv._active = conv.configure(ACTIVE, "")
    x = torch.randn(2, 7, 5, 5)
    expected = F.conv2d(x, conv.weight[:5, ACTIVE_INDEX], conv.bias[:5], padding=1)
    with torch.no_grad():
        assert torch.allclose(conv(x), expected, atol=1e-6)
        assert torch.allclose(conv.to_static()(x), expected, atol=1e-6)
    conv(x).sum().backward()  # autograd path: gradients only on the selected columns
    mask = torch.zeros(12, dtype=torch.bool)
    mask[ACTIVE_INDEX] = True
    assert conv.weight.grad[:, ~mask].abs().sum() == 0 and conv.weight.grad[5:].abs().sum() == 0
    assert conv.weight.grad[:5, mask].abs().sum() > 0


def test_indexed_conv_eval_cache_sees_optimiser_steps() -> None:
    conv = ElasticConv2d(12, 8, 1, in_layout=LAYOUT, out_dim="out")
    conv._active = conv.configure(ACTIVE, "")
    x = torch.randn(1, 7, 2, 2)
    with torch.no_grad():
        before = conv(x)
    with torch.no_grad():
        conv.weight.add_(1.0)  # an in-place update bumps the version counter
        after = conv(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, F.conv2d(x, conv.weight[:5, ACTIVE_INDEX]), atol=1e-5)


def test_indexed_linear_reads_blocks_of_flattened_channels() -> None:
    layout = ChannelLayout((("a", 3),), inner=4)
    linear = ElasticLinear(12, 5, in_layout=layout)
    linear._active = linear.configure({"a": 2}, "")
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.allclose(linear(x), F.linear(x, linear.weight[:, :8], linear.bias), atol=1e-6)
        assert linear.to_static().in_features == 8


def test_indexed_batch_norm_uses_and_updates_the_selected_statistics() -> None:
    bn = ElasticBatchNorm2d(12, layout=LAYOUT)
    with torch.no_grad():
        bn.running_mean.copy_(torch.arange(12.0))
        bn.running_var.fill_(2.0)
        bn.weight.copy_(torch.linspace(0.5, 1.5, 12))
    bn._active = bn.configure(ACTIVE, "key")
    x = torch.randn(4, 7, 3, 3)
    bn.eval()
    expected = F.batch_norm(
        x, bn.running_mean[ACTIVE_INDEX], bn.running_var[ACTIVE_INDEX], bn.weight[ACTIVE_INDEX], bn.bias[ACTIVE_INDEX]
    )
    with torch.no_grad():
        assert torch.allclose(bn(x), expected, atol=1e-6)
        assert torch.allclose(bn.to_static().eval()(x), expected, atol=1e-6)
    bn.train()
    untouched = bn.running_mean[[2, 3, 9, 10, 11]].clone()
    bn(x)
    assert torch.equal(bn.running_mean[[2, 3, 9, 10, 11]], untouched)
    assert not torch.equal(bn.running_mean[ACTIVE_INDEX], torch.arange(12.0)[ACTIVE_INDEX])
    bn.eval()
    bn.begin_calibration()
    with torch.no_grad():
        bn(x)
    assert bn.finish_calibration("key")
    mean, _ = bn.subnet_stats("key")
    assert torch.allclose(mean, x.mean((0, 2, 3)).double().float(), atol=1e-5)


def test_indexed_group_norm_keeps_whole_groups_per_segment() -> None:
    layout = ChannelLayout((("a", 4), ("b", 6)))
    gn = ElasticGroupNorm(5, 10, layout=layout)  # 2 channels per group
    assert gn.width_dims() == {"a": (4, 2), "b": (6, 2)}
    gn._active = gn.configure({"a": 2, "b": 4}, "")
    x = torch.randn(2, 6, 3, 3)
    index = torch.tensor([0, 1, 4, 5, 6, 7])
    expected = F.group_norm(x, 3, gn.weight[index], gn.bias[index])
    with torch.no_grad():
        assert torch.allclose(gn(x), expected, atol=1e-6)
        assert torch.allclose(gn.to_static()(x), expected, atol=1e-6)
    with pytest.raises(InvalidSubnetError, match="whole number of groups"):
        gn.configure({"a": 3, "b": 4}, "")
    with pytest.raises(UnsupportedModelError, match="splits groups"):
        ElasticGroupNorm(3, 6, layout=ChannelLayout((("a", 3), ("b", 3))))


def test_convs_and_norms_read_whole_channels() -> None:
    with pytest.raises(UnsupportedModelError, match="inner must be 1"):
        ElasticConv2d(8, 3, 1, in_layout=ChannelLayout((("a", 2),), inner=4))
    with pytest.raises(UnsupportedModelError, match="inner must be 1"):
        ElasticBatchNorm2d(8, layout=ChannelLayout((("a", 2),), inner=4))
    assert isinstance(ElasticConv2d(12, 3, 1, in_layout=LAYOUT).to_static(), nn.Conv2d)


def test_columns_are_a_count_for_prefixes_and_ranges_otherwise() -> None:
    assert LAYOUT.columns("op", {"a": 4, "b": 6}) == (12, 12)  # full width
    assert LAYOUT.columns("op", {"a": 4, "b": 3}) == (9, 9)  # the first 9: a slice
    assert LAYOUT.columns("op", ACTIVE) == (7, ((0, 2), (4, 2), (6, 3)))  # an index
    flat = ChannelLayout((("a", 2), ("b", 1)), inner=3)
    assert flat.columns("op", {"a": 2, "b": 1}) == (9, 9)
    assert flat.columns("op", {"a": 1, "b": 1}) == (6, ((0, 1), (2, 1)))


def test_a_layout_reading_one_prefix_is_the_plain_prefix_op() -> None:
    conv = ElasticConv2d(8, 4, 1, in_layout=ChannelLayout((("a", 8),)), out_dim="o")
    assert conv.in_dim == "a" and conv.sort_skip_reason is None and conv.width_dims() == {"a": (8, 1), "o": (4, 1)}
    fixed = ElasticBatchNorm2d(6, layout=ChannelLayout(((None, 2), (None, 4))))
    assert fixed.dim is None and fixed.layout.segments == ((None, 6),) and fixed.sort_skip_reason is None
    concatenated = ElasticLinear(12, 3, in_layout=LAYOUT)
    assert concatenated.in_dim is None and concatenated.sort_skip_reason is not None
    with pytest.raises(UnsupportedModelError, match="has 12 features, the layer 10"):
        ElasticLinear(10, 3, in_layout=LAYOUT)
    with pytest.raises(UnsupportedModelError, match="not both"):
        ElasticLinear(12, 3, in_dim="a", in_layout=LAYOUT)
    with pytest.raises(UnsupportedModelError, match="grouped conv reads one prefix"):
        ElasticConv2d(12, 12, 3, groups=2, in_layout=LAYOUT, out_dim="a")


def _random_layout(data: st.DataObject) -> tuple[ChannelLayout, dict[str, int]]:
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    fixed = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    segments = tuple((None if f else f"d{k}", size) for k, (size, f) in enumerate(zip(sizes, fixed)))
    active = {dim: data.draw(st.integers(1, size)) for dim, size in segments if dim is not None}
    return ChannelLayout(segments), active


def _active_index(layout: ChannelLayout, active: dict[str, int]) -> torch.Tensor:
    ranges = layout.select("test", active)
    return torch.arange(layout.channels) if ranges is None else layout.indices(ranges)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), grad=st.booleans(), in_place=st.booleans())
def test_any_layout_runs_exactly_its_columns(data: st.DataObject, grad: bool, in_place: bool) -> None:
    layout, active = _random_layout(data)
    conv = ElasticConv2d(layout.channels, 5, 3, padding=1, bias=True, in_layout=layout, out_dim="out")
    conv.in_place_grad = in_place
    active["out"] = data.draw(st.integers(1, 5))
    conv._active = conv.configure(active, "")
    index = _active_index(layout, active)
    x = torch.randn(2, len(index), 4, 4)
    expected = F.conv2d(x, conv.weight.detach()[: active["out"], index], conv.bias.detach()[: active["out"]], padding=1)
    with torch.set_grad_enabled(grad):
        got, again = conv(x), conv(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(again, expected)
    torch.testing.assert_close(conv.to_static()(x), expected)
    if grad:  # gradients reach exactly the columns that ran, whichever path (slice, in place, index) ran them
        got.sum().backward()
        mask = torch.zeros_like(conv.weight, dtype=torch.bool)
        mask[: active["out"], index] = True
        assert conv.weight.grad[~mask].abs().sum() == 0 and conv.weight.grad[mask].abs().sum() > 0


@settings(max_examples=30, deadline=None)
@given(data=st.data(), grad=st.booleans())
def test_batch_norm_on_any_layout_uses_its_channels(data: st.DataObject, grad: bool) -> None:
    layout, active = _random_layout(data)
    bn = ElasticBatchNorm2d(layout.channels, layout=layout).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(layout.channels))
        bn.weight.copy_(torch.rand(layout.channels) + 0.5)
    bn._active = bn.configure(active, "k")
    index = _active_index(layout, active)
    x = torch.randn(2, len(index), 3, 3)
    expected = F.batch_norm(
        x, bn.running_mean[index], bn.running_var[index], bn.weight.detach()[index], bn.bias.detach()[index]
    )
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(bn(x), expected)
        torch.testing.assert_close(bn(x), expected)
    torch.testing.assert_close(bn.to_static().eval()(x), expected)


def test_layout_norm_state_dict_keys_are_those_of_a_plain_norm() -> None:
    bn = ElasticBatchNorm2d(12, layout=LAYOUT)
    bn.set_subnet_stats("sn-1", torch.zeros(7), torch.ones(7))
    plain = torch.nn.BatchNorm2d(12)
    assert set(bn.state_dict()) == set(plain.state_dict()) | {"subnet_mean_sn-1", "subnet_var_sn-1"}
    again = ElasticBatchNorm2d(12, layout=LAYOUT)
    again.load_state_dict(bn.state_dict())
    assert again.has_subnet_stats("sn-1")


def test_the_indexed_names_are_deprecated_aliases() -> None:
    from tailor.convert import IndexedBatchNorm2d, IndexedConv2d, IndexedGroupNorm, IndexedLinear

    with pytest.warns(DeprecationWarning, match="ElasticConv2d"):
        conv = IndexedConv2d(LAYOUT, 8, 3, padding=1, out_dim="out")
    assert type(conv) is ElasticConv2d and conv.in_layout == LAYOUT and conv.weight.shape == (8, 12, 3, 3)
    with pytest.warns(DeprecationWarning, match="ElasticLinear"):
        assert IndexedLinear(LAYOUT, 3).in_layout == LAYOUT
    with pytest.warns(DeprecationWarning, match="ElasticBatchNorm2d"):
        assert IndexedBatchNorm2d(LAYOUT, 1e-3).eps == 1e-3
    with pytest.warns(DeprecationWarning, match="ElasticGroupNorm"):
        assert IndexedGroupNorm(6, LAYOUT).layout == LAYOUT
