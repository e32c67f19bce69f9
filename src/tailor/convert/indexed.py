"""Deprecated names of the indexed layers: `tailor.ops`' elastic layers given a `ChannelLayout` (kept for one release).

A layer reading concatenated, separately narrowed segments or a flattened map is now the ordinary elastic
op with an input layout: `ElasticConv2d(..., in_layout=layout)`, `ElasticLinear(..., in_layout=layout)`,
`ElasticBatchNorm2d(channels, layout=layout)`, `ElasticGroupNorm(groups, channels, layout=layout)`. These
functions build exactly that, with the old signatures, and warn.
"""

from __future__ import annotations

import warnings
from typing import Any

from tailor.ops import ChannelLayout, ElasticBatchNorm2d, ElasticConv2d, ElasticGroupNorm, ElasticLinear


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"tailor.convert.{old} is deprecated: use tailor.ops.{new}", DeprecationWarning, stacklevel=3)


def IndexedConv2d(
    in_layout: ChannelLayout,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    bias: bool = False,
    **kwargs: Any,
) -> ElasticConv2d:
    """Deprecated: `ElasticConv2d(in_layout.channels, out_channels, ..., in_layout=in_layout)`."""
    _deprecated("IndexedConv2d", "ElasticConv2d(..., in_layout=...)")
    channels = in_layout.channels
    return ElasticConv2d(
        channels, out_channels, kernel_size, stride, padding, dilation, 1, bias, in_layout=in_layout, **kwargs
    )


def IndexedLinear(in_layout: ChannelLayout, out_features: int, bias: bool = True, **kwargs: Any) -> ElasticLinear:
    """Deprecated: `ElasticLinear(in_layout.features, out_features, bias, in_layout=in_layout)`."""
    _deprecated("IndexedLinear", "ElasticLinear(..., in_layout=...)")
    return ElasticLinear(in_layout.features, out_features, bias, in_layout=in_layout, **kwargs)


def IndexedBatchNorm2d(layout: ChannelLayout, *args: Any, **kwargs: Any) -> ElasticBatchNorm2d:
    """Deprecated: `ElasticBatchNorm2d(layout.channels, ..., layout=layout)`."""
    _deprecated("IndexedBatchNorm2d", "ElasticBatchNorm2d(..., layout=...)")
    return ElasticBatchNorm2d(layout.channels, *args, layout=layout, **kwargs)


def IndexedGroupNorm(num_groups: int, layout: ChannelLayout, *args: Any, **kwargs: Any) -> ElasticGroupNorm:
    """Deprecated: `ElasticGroupNorm(num_groups, layout.channels, ..., layout=layout)`."""
    _deprecated("IndexedGroupNorm", "ElasticGroupNorm(..., layout=...)")
    return ElasticGroupNorm(num_groups, layout.channels, *args, layout=layout, **kwargs)


__all__ = ["IndexedBatchNorm2d", "IndexedConv2d", "IndexedGroupNorm", "IndexedLinear"]
