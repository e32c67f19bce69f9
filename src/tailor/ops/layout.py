"""`ChannelLayout`: which input channels of an elastic op a subnet runs, as segments of width dimensions.

A layer reading one tensor runs the first `c'` of its `c` channels: a layout of one segment, the common
case, which the ops serve with plain slices (views, no copies under autograd). A layer reading
`torch.cat([a, b], 1)` of two separately narrowed tensors runs the first `a'` channels of `a` followed by
the first `b'` of `b`, i.e. columns `0..a'` and `A..A+b'` of its weight, not its first `a' + b'`; a
`Linear` reading `flatten(x)` of a `C x H x W` map reads `H * W` consecutive features per channel
(`inner`). Such inputs are several segments (each a width dimension, or fixed), and the ops select their
active columns by index. `columns` tells the two cases apart once per subnet (a plan), so that the
forward only tests which kind of selection it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tailor.errors import UnsupportedModelError
from tailor.ops.base import channel_count

#: (first channel, active channels) of each segment, in segment order.
Ranges = tuple[tuple[int, int], ...]
#: The active input features of an op: an int `n` for the first `n`, else the active `Ranges` of channels.
Columns = int | Ranges

#: Why `sort_channels` leaves alone the dimensions an op reads through a layout that is not one prefix.
SORT_SKIP_REASON = "read out of prefix order (concatenated or flattened input) by"


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

    @classmethod
    def prefix(cls, dim: str | None, channels: int) -> ChannelLayout:
        """The common layout: the first channels of one width dimension (None: all `channels`, fixed)."""
        return cls(((dim, channels),))

    @property
    def channels(self) -> int:
        """Channels at full width."""
        return sum(channels for _, channels in self.segments)

    @property
    def features(self) -> int:
        """Features at full width (`channels * inner`)."""
        return self.channels * self.inner

    @property
    def is_prefix(self) -> bool:
        """Whether every subnet reads the first channels of at most one dimension (what `in_dim` describes):
        one segment of whole channels, or no elastic segment at all."""
        elastic = [dim for dim, _ in self.segments if dim is not None]
        return not elastic or (len(self.segments) == 1 and self.inner == 1)

    @property
    def prefix_dim(self) -> str | None:
        """The dimension a prefix layout reads (None: fixed, or not a prefix layout)."""
        return self.segments[0][0] if self.is_prefix and len(self.segments) == 1 else None

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

    def columns(self, op: str, channels: Mapping[str, int]) -> tuple[int, Columns]:
        """(active features, which ones): the count `n` again when they are the first `n` features (a slice),
        else the active `Ranges` (an index)."""
        ranges = self.select(op, channels)
        if ranges is None:
            return self.features, self.features
        active = sum(count for _, count in ranges) * self.inner
        leading = all(start == sum(count for _, count in ranges[:k]) for k, (start, _) in enumerate(ranges))
        return active, (active if leading else ranges)

    def indices(self, ranges: Ranges, device: torch.device | str | None = None) -> torch.Tensor:
        """Feature indices (into the full input) of the active channels, in the order they arrive."""
        parts = [
            torch.arange(start * self.inner, (start + count) * self.inner, device=device) for start, count in ranges
        ]
        return torch.cat(parts)


def op_layout(op: str, dim: str | None, layout: ChannelLayout | None, features: int) -> ChannelLayout:
    """An op's input layout from its arguments, `dim` (a prefix) or `layout`, checked against its `features`;
    a layout reading one prefix (or nothing elastic) takes the plain prefix form, so ops test one form."""
    if layout is None:
        return ChannelLayout.prefix(dim, features)
    if dim is not None:
        raise UnsupportedModelError(f"{op}: give a dimension or a layout, not both")
    if layout.features != features:
        raise UnsupportedModelError(f"{op}: the input layout has {layout.features} features, the layer {features}")
    return ChannelLayout.prefix(layout.prefix_dim, features) if layout.is_prefix else layout


class LayoutInput:
    """Mixin of the ops whose input channels an `in_layout` describes (a prefix of one dimension, usually)."""

    in_layout: ChannelLayout

    def _init_layout(self, dim: str | None, layout: ChannelLayout | None, features: int) -> None:
        self.in_layout = op_layout(type(self).__name__, dim, layout, features)

    @property
    def sort_skip_reason(self) -> str | None:
        """Why `sort_channels` cannot permute the dimensions read here (None: it can, the input is a prefix)."""
        return None if self.in_layout.is_prefix else SORT_SKIP_REASON


__all__ = ["SORT_SKIP_REASON", "ChannelLayout", "Columns", "LayoutInput", "Ranges", "op_layout"]
