"""Elastic ops whose active input channels are not one prefix: concatenations and flattened maps.

`torch.cat([a, b], 1)` of two separately narrowed tensors holds the first `a'` channels of `a`
followed by the first `b'` channels of `b`: a layer reading the concatenation must use exactly those
channels of its full weight (columns `0..a'` and `A..A+b'`), not its first `a' + b'`. Likewise a
`Linear` reading `flatten(x)` of a `C x H x W` map reads `H * W` features per channel. A
`ChannelLayout` describes such an input as segments (each a width dimension, or fixed) times `inner`
features per channel; the ops here select the active columns of their weights by index.

Under autograd the selected weight is an `index_select` of the shared parameter, so gradients reach
it; without autograd the selection is copied once per configuration and revalidated through the
parameter's version counter, like the prefix ops in `tailor.ops`. `sort_channels` leaves every
dimension these ops read alone (`sort_skip_reason`), since it permutes prefixes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import ElasticBatchNorm2d, ElasticGroupNorm
from tailor.ops.base import ElasticOp, channel_count

#: Why `sort_channels` skips the dimensions read by the ops in this module.
SORT_SKIP_REASON = "read out of prefix order (concatenated or flattened input) by"

#: (first channel, active channels) of each segment, in segment order.
Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ChannelLayout:
    """The channel axis of an op's input: segments (width dimension or None, full channels), in order,
    each channel carrying `inner` consecutive features (a flattened H x W map; 1 for feature maps)."""

    segments: tuple[tuple[str | None, int], ...]
    inner: int = 1

    def __post_init__(self) -> None:
        if not self.segments:
            raise UnsupportedModelError("ChannelLayout: a layout needs at least one segment")
        for dim, channels in self.segments:
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise UnsupportedModelError(f"ChannelLayout: segment {dim!r} has {channels!r} channels")
        if isinstance(self.inner, bool) or not isinstance(self.inner, int) or self.inner < 1:
            raise UnsupportedModelError(f"ChannelLayout: inner must be a positive int, got {self.inner!r}")
        seen: dict[str, int] = {}
        for dim, channels in self.segments:
            if dim is not None and seen.setdefault(dim, channels) != channels:
                raise UnsupportedModelError(f"ChannelLayout: dimension {dim!r} has {seen[dim]} and {channels} channels")

    @property
    def channels(self) -> int:
        """Channels at full width."""
        return sum(channels for _, channels in self.segments)

    @property
    def features(self) -> int:
        """Features at full width (`channels * inner`)."""
        return self.channels * self.inner

    def width_dims(self, step: int = 1) -> dict[str, tuple[int, int]]:
        """{dimension: (full channels, step)} for each elastic segment."""
        return {dim: (channels, step) for dim, channels in self.segments if dim is not None}

    def select(self, op: str, channels: Mapping[str, int]) -> Ranges | None:
        """Active (first channel, count) per segment; None when every segment runs at full width."""
        ranges = []
        offset = 0
        full = True
        for dim, size in self.segments:
            count = channel_count(op, channels, dim, size)
            ranges.append((offset, count))
            full = full and count == size
            offset += size
        return None if full else tuple(ranges)

    def indices(self, ranges: Ranges, device: torch.device | str | None = None) -> torch.Tensor:
        """Feature indices (into the full input) of the active channels, in the order they arrive."""
        parts = [
            torch.arange(start * self.inner, (start + count) * self.inner, device=device) for start, count in ranges
        ]
        return torch.cat(parts)


def _count(ranges: Ranges | None, full: int) -> int:
    return full if ranges is None else sum(count for _, count in ranges)


class _IndexedInput(ElasticOp):
    """Shared logic of ops with a [out, in, ...] weight whose input columns are selected by a layout."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    in_layout: ChannelLayout
    out_dim: str | None
    sort_skip_reason = SORT_SKIP_REASON

    def _init_indexed(self, in_layout: ChannelLayout, out_dim: str | None) -> None:
        ElasticOp.__init__(self)
        object.__setattr__(self, "_indices", {})
        self.in_layout = in_layout
        self.out_dim = out_dim

    def _out_channels(self) -> int:
        raise NotImplementedError

    def width_dims(self) -> dict[str, tuple[int, int]]:
        dims = self.in_layout.width_dims()
        if self.out_dim is not None:
            full = self._out_channels()
            if self.out_dim in dims and dims[self.out_dim][0] != full:
                raise UnsupportedModelError(
                    f"{type(self).__name__}: input and output share dimension {self.out_dim!r} with different sizes"
                )
            dims[self.out_dim] = (full, 1)
        return dims

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, int, tuple | None]:
        name = type(self).__name__
        ranges = self.in_layout.select(name, channels)
        cout = channel_count(name, channels, self.out_dim, self._out_channels())
        cin = _count(ranges, self.in_layout.channels) * self.in_layout.inner
        if ranges is None and cout == self._out_channels():
            return (cin, cout, None)
        return (cin, cout, (cout, ranges))

    def clear_cache(self) -> None:
        super().clear_cache()
        self._indices.clear()

    def _index(self, ranges: Ranges, device: torch.device) -> torch.Tensor:
        key = (ranges, device)
        index = self._indices.get(key)
        if index is None:
            if len(self._indices) >= 4 * max(self.cache_entries, 1):
                self._indices.clear()
            index = self._indices[key] = self.in_layout.indices(ranges, device)
        return index

    def _select(self, key: tuple[int, Ranges | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cout, ranges = key
        weight = self.weight[:cout]
        if ranges is not None:
            weight = weight.index_select(1, self._index(ranges, weight.device))
        return weight, None if self.bias is None else self.bias[:cout]

    def _slices(self, key: tuple[int, Ranges | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if torch.is_grad_enabled():
            return self._select(key)
        cached = self._eval_cache.get(key)
        if cached is None or cached[0] != self.weight._version:
            with torch.no_grad():
                weight, bias = self._select(key)
                cached = self._remember(key, (self.weight._version, weight.contiguous(), bias))
        return cached[1], cached[2]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in_layout={self.in_layout.segments}, inner={self.in_layout.inner}, out_dim={self.out_dim!r}"  # type: ignore[misc]


class IndexedConv2d(_IndexedInput, nn.Conv2d):
    """A (non-grouped) `Conv2d` whose active input channels are given by a `ChannelLayout` and whose
    active outputs are the first channels of `out_dim` (None: fixed)."""

    def __init__(
        self,
        in_layout: ChannelLayout,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        *,
        out_dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if in_layout.inner != 1:
            raise UnsupportedModelError("IndexedConv2d: a convolution reads whole channels (inner must be 1)")
        nn.Conv2d.__init__(
            self,
            in_layout.channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            1,
            bias,
            device=device,
            dtype=dtype,
        )
        if isinstance(self.padding, str):
            raise UnsupportedModelError("IndexedConv2d: string padding is not supported; give explicit sizes")
        self._init_indexed(in_layout, out_dim)
        self._active = (self.in_channels, self.out_channels, None)

    def _out_channels(self) -> int:
        return self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._active[2]
        if key is None:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        weight, bias = self._slices(key)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def to_static(self) -> nn.Conv2d:
        cin, cout, key = self._active
        weight, bias = (self.weight, self.bias) if key is None else self._select(key)
        conv = nn.Conv2d(
            cin,
            cout,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv


class IndexedLinear(_IndexedInput, nn.Linear):
    """A `Linear` layer whose active input features are given by a `ChannelLayout` (concatenated
    segments, `inner` features per channel after a flatten) and whose active outputs are the first
    features of `out_dim` (None: fixed)."""

    def __init__(
        self,
        in_layout: ChannelLayout,
        out_features: int,
        bias: bool = True,
        *,
        out_dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_layout.features, out_features, bias, device=device, dtype=dtype)
        self._init_indexed(in_layout, out_dim)
        self._active = (self.in_features, self.out_features, None)

    def _out_channels(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._active[2]
        if key is None:
            return F.linear(x, self.weight, self.bias)
        weight, bias = self._slices(key)
        return F.linear(x, weight, bias)

    @torch.no_grad()
    def to_static(self) -> nn.Linear:
        cin, cout, key = self._active
        weight, bias = (self.weight, self.bias) if key is None else self._select(key)
        linear = nn.Linear(cin, cout, self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
        return linear


class _Selection(NamedTuple):
    """Active channels of an indexed norm layer: their count and (None: all) their ranges."""

    count: int
    ranges: Ranges | None


class IndexedBatchNorm2d(ElasticBatchNorm2d):
    """SubnetNorm over the active channels of a `ChannelLayout` (e.g. a BatchNorm after `torch.cat`).

    Shared affine parameters and running statistics are indexed by the layout; per-subnet statistics
    hold the active channels in arrival order, as in `ElasticBatchNorm2d`.
    """

    sort_skip_reason = SORT_SKIP_REASON

    def __init__(
        self,
        layout: ChannelLayout,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if layout.inner != 1:
            raise UnsupportedModelError("IndexedBatchNorm2d: a norm layer reads whole channels (inner must be 1)")
        super().__init__(layout.channels, eps, momentum, affine, dim=None, device=device, dtype=dtype)
        object.__setattr__(self, "_indices", {})
        self.layout = layout
        full = _Selection(layout.channels, None)
        self._active = (full, "", (full, ""))

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return self.layout.width_dims()

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[_Selection, str, tuple[_Selection, str]]:
        ranges = self.layout.select("IndexedBatchNorm2d", channels)
        selection = _Selection(_count(ranges, self.num_features), ranges)
        return (selection, stats_key, (selection, stats_key))

    def clear_cache(self) -> None:
        super().clear_cache()
        self._indices.clear()

    def _pick(self, tensor: torch.Tensor | None, ranges: Ranges | None) -> torch.Tensor | None:
        if tensor is None or ranges is None:
            return tensor
        key = (ranges, tensor.device)
        index = self._indices.get(key)
        if index is None:
            index = self._indices[key] = self.layout.indices(ranges, tensor.device)
        return tensor.index_select(0, index)

    def _calibrate_forward(self, x: torch.Tensor, c: Any) -> torch.Tensor:
        # The base class accumulates exact statistics of x's (active) channels; the output it returns
        # uses prefix affine parameters, so normalise again with the selected ones.
        super()._calibrate_forward(x, c.count)
        weight, bias = self._pick(self.weight, c.ranges), self._pick(self.bias, c.ranges)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    def _train_forward(self, x: torch.Tensor, c: Any) -> torch.Tensor:
        if c.ranges is None:
            return super()._train_forward(x, c.count)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        index = self.layout.indices(c.ranges, x.device)
        mean, var = self.running_mean.index_select(0, index), self.running_var.index_select(0, index)
        weight, bias = self._pick(self.weight, c.ranges), self._pick(self.bias, c.ranges)
        out = F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)  # updates mean/var in place
        with torch.no_grad():
            self.running_mean.index_copy_(0, index, mean)
            self.running_var.index_copy_(0, index, var)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Unlike the prefix layer's views, selected statistics are copies: they are not cached, so that
        # training steps and calibration are always seen.
        c, key, _ = self._active
        if self._calibration is not None:
            return self._calibrate_forward(x, c)
        if self.training:
            return self._train_forward(x, c)
        mean, var, weight, bias = self._eval_tensors(c, key)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _eval_tensors(
        self, c: Any, key: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        own = self.subnet_stats(key)
        if own is not None:
            mean, var = own
            if mean.numel() != c.count:
                raise InvalidSubnetError(
                    f"IndexedBatchNorm2d: statistics of {key!r} cover {mean.numel()} channels, the subnet runs {c.count}"
                )
        else:
            mean, var = self._pick(self.running_mean, c.ranges), self._pick(self.running_var, c.ranges)
        return mean, var, self._pick(self.weight, c.ranges), self._pick(self.bias, c.ranges)  # type: ignore[return-value]

    @torch.no_grad()
    def to_static(self) -> nn.BatchNorm2d:
        c, key, _ = self._active
        mean, var, weight, bias = self._eval_tensors(c, key)
        ref = self.running_mean
        bn = nn.BatchNorm2d(c.count, self.eps, self.momentum, self.affine, True, device=ref.device, dtype=ref.dtype)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        if self.affine:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        return bn

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layout={self.layout.segments}"


class IndexedGroupNorm(ElasticGroupNorm):
    """Model Slicing's group norm over a `ChannelLayout`: every segment holds whole groups, and a
    narrower subnet keeps whole groups of each segment, so each group's statistics stay those of the
    same channels."""

    sort_skip_reason = SORT_SKIP_REASON

    def __init__(
        self,
        num_groups: int,
        layout: ChannelLayout,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if layout.inner != 1:
            raise UnsupportedModelError("IndexedGroupNorm: a norm layer reads whole channels (inner must be 1)")
        super().__init__(num_groups, layout.channels, eps, affine, dim=None, device=device, dtype=dtype)
        for dim, channels in layout.segments:
            if channels % self.channels_per_group:
                raise UnsupportedModelError(
                    f"IndexedGroupNorm: segment {dim!r} of {channels} channels splits groups of {self.channels_per_group}"
                )
        object.__setattr__(self, "_indices", {})
        self.layout = layout
        self._active = (self.num_channels, num_groups, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return self.layout.width_dims(self.channels_per_group)

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, int, Ranges | None]:
        ranges = self.layout.select("IndexedGroupNorm", channels)
        for start, count in ranges or ():
            if count % self.channels_per_group:
                raise InvalidSubnetError(
                    f"IndexedGroupNorm: {count} channels from channel {start} is not a whole number of groups "
                    f"of {self.channels_per_group}"
                )
        c = _count(ranges, self.num_channels)
        return (c, c // self.channels_per_group, ranges)

    def clear_cache(self) -> None:
        super().clear_cache()
        self._indices.clear()

    def _affine(self, ranges: Ranges) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.weight is None:
            return None, None
        key = (ranges, self.weight.device)
        index = self._indices.get(key)
        if index is None:
            index = self._indices[key] = self.layout.indices(ranges, self.weight.device)
        return self.weight.index_select(0, index), self.bias.index_select(0, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, groups, ranges = self._active
        if ranges is None:
            return F.group_norm(x, groups, self.weight, self.bias, self.eps)
        weight, bias = self._affine(ranges)
        return F.group_norm(x, groups, weight, bias, self.eps)

    @torch.no_grad()
    def to_static(self) -> nn.GroupNorm:
        c, groups, ranges = self._active
        ref = self.weight
        gn = nn.GroupNorm(
            groups,
            c,
            self.eps,
            self.affine,
            device=None if ref is None else ref.device,
            dtype=None if ref is None else ref.dtype,
        )
        if self.affine:
            weight, bias = (self.weight, self.bias) if ranges is None else self._affine(ranges)
            gn.weight.copy_(weight)
            gn.bias.copy_(bias)
        return gn

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layout={self.layout.segments}"
