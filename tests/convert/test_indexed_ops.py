"""Indexed ops: layers reading concatenated, separately narrowed segments or flattened channel maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailor.convert import ChannelLayout, IndexedBatchNorm2d, IndexedConv2d, IndexedGroupNorm, IndexedLinear
from tailor.errors import InvalidSubnetError, UnsupportedModelError

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
    conv = IndexedConv2d(LAYOUT, 8, 3, padding=1, bias=True, out_dim="out")
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
    conv = IndexedConv2d(LAYOUT, 8, 1, out_dim="out")
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
    linear = IndexedLinear(layout, 5, out_dim=None)
    linear._active = linear.configure({"a": 2}, "")
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.allclose(linear(x), F.linear(x, linear.weight[:, :8], linear.bias), atol=1e-6)
        assert linear.to_static().in_features == 8


def test_indexed_batch_norm_uses_and_updates_the_selected_statistics() -> None:
    bn = IndexedBatchNorm2d(LAYOUT)
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
    gn = IndexedGroupNorm(5, layout)  # 2 channels per group
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
        IndexedGroupNorm(3, ChannelLayout((("a", 3), ("b", 3))))


def test_indexed_ops_read_whole_channels() -> None:
    with pytest.raises(UnsupportedModelError, match="inner must be 1"):
        IndexedConv2d(ChannelLayout((("a", 2),), inner=4), 3, 1)
    with pytest.raises(UnsupportedModelError, match="inner must be 1"):
        IndexedBatchNorm2d(ChannelLayout((("a", 2),), inner=4))
    assert isinstance(IndexedConv2d(LAYOUT, 3, 1).to_static(), nn.Conv2d)
