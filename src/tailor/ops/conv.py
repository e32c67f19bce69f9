"""WeightSlice: `ElasticConv2d` and `ElasticLinear` run some channels of full-size weights.

Their output channels are a prefix; their inputs a prefix too, or, described by a `ChannelLayout`, the
columns of several narrowed segments (a concatenation) or of flattened maps. Training (autograd on)
slices weights as views (prefixes) or indexes them, so gradients land in the shared parameters. With
autograd off (eval, serving) the selected weight is copied once into a contiguous tensor and reused by
every later forward of the same configuration, until the weights change (`tailor.ops.base.SlicedWeight`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops.base import ElasticOp, SlicedWeight, channel_count
from tailor.ops.layout import ChannelLayout, Columns, LayoutInput


def expand_channels(in_channels: int, ratio: float, divisor: int = 8) -> int:
    """Hidden width of an inverted-residual block: `in_channels * ratio`, rounded to `divisor`.

    Rounds to the nearest multiple of `divisor` but never more than 10% below the exact product
    (the MobileNet convention).
    """
    if in_channels < 1 or ratio <= 0 or divisor < 1:
        raise InvalidSubnetError(f"expand_channels: bad arguments ({in_channels}, {ratio}, {divisor})")
    exact = in_channels * ratio
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * exact:
        rounded += divisor
    return rounded


class _PrefixSliceInPlaceGrad(torch.autograd.Function):
    """`param[:rows, :cols]` whose backward adds into `param.grad[:rows, :cols]` in place.

    Autograd's own slice backward allocates a zero tensor of the parameter's full size for every
    sliced forward and then adds it to `.grad`; training several subnets per step (the sandwich rule)
    pays that once per subnet and parameter. This function writes the slice of the gradient straight
    into `.grad` instead (created once per step), and returns no gradient to autograd, so parameter
    hooks (e.g. DistributedDataParallel's) do not fire: the trainer all-reduces `.grad` itself.
    """

    @staticmethod
    def forward(ctx: Any, param: torch.Tensor, rows: int, cols: int | None) -> torch.Tensor:  # type: ignore[override]
        ctx.param = param
        ctx.rows, ctx.cols = rows, cols
        return param[:rows] if cols is None else param[:rows, :cols]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:  # type: ignore[override]
        param = ctx.param
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        target = param.grad[: ctx.rows] if ctx.cols is None else param.grad[: ctx.rows, : ctx.cols]
        target.add_(grad)
        return None, None, None


class _WeightSlice(LayoutInput, SlicedWeight):
    """Conv and linear layers: the first `out` rows of the weight and the input columns of an `in_layout`
    (a prefix: a view; other layouts: an index). Configuration keys are `(out, columns)`."""

    out_dim: str | None
    #: Accumulate sliced gradients straight into `.grad` (see `_PrefixSliceInPlaceGrad`); set by the model.
    in_place_grad: bool = False

    @property
    def in_dim(self) -> str | None:
        """The width dimension whose first channels the input is (None: fixed, or not one prefix: `in_layout`)."""
        return self.in_layout.prefix_dim

    def _io_dims(self, in_step: int, out_full: int, out_step: int) -> dict[str, tuple[int, int]]:
        """`width_dims`: the input layout's dimensions, then `out_dim` (a dimension read on both sides keeps one size)."""
        dims = self.in_layout.width_dims(in_step)
        if self.out_dim is not None:
            if self.out_dim in dims and dims[self.out_dim][0] != out_full:
                raise UnsupportedModelError(
                    f"{type(self).__name__}: input and output share dimension {self.out_dim!r} but have "
                    f"{dims[self.out_dim][0]} and {out_full} channels"
                )
            dims[self.out_dim] = (out_full, max(out_step, dims.get(self.out_dim, (0, 1))[1]))
        return dims

    def _select(self, key: tuple[int, Columns]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cout, columns = key
        if type(columns) is int:
            weight = self.weight[:cout, :columns]
        else:
            weight = self.weight[:cout].index_select(
                1, self._feature_index(self.in_layout, columns, self.weight.device)
            )
        return weight, None if self.bias is None else self.bias[:cout]

    def _grad_select(self, key: tuple[int, Columns]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cout, columns = key
        if self.in_place_grad and type(columns) is int and self.weight.requires_grad:
            weight = _PrefixSliceInPlaceGrad.apply(self.weight, cout, columns)
            bias = None if self.bias is None else _PrefixSliceInPlaceGrad.apply(self.bias, cout, None)
            return weight, bias
        return self._select(key)

    def extra_repr(self) -> str:
        layout = self.in_layout
        inputs = f"in_dim={self.in_dim!r}" if layout.is_prefix else f"in_layout={layout.segments}, inner={layout.inner}"
        return f"{super().extra_repr()}, {inputs}, out_dim={self.out_dim!r}"  # type: ignore[misc]


class ConvConfig(NamedTuple):
    """What an `ElasticConv2d` runs: input and output channels, groups, and its weight's key (None: all of it)."""

    in_channels: int
    out_channels: int
    groups: int
    key: tuple[int, Columns] | None


class ElasticConv2d(_WeightSlice, nn.Conv2d):
    """A `Conv2d` whose active input/output channels are chosen by width dimensions.

    `in_dim`/`out_dim` name the width dimensions that drive the input and output channels (None:
    fixed at full size); the active channels are prefixes. An input made of several narrowed segments
    (a concatenation) is described by `in_layout` instead of `in_dim`. Grouped and depthwise convolutions
    (prefix inputs only) keep channels per group constant and drop whole groups, so active channel counts
    must be multiples of the per-group size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        in_dim: str | None = None,
        out_dim: str | None = None,
        in_layout: ChannelLayout | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.Conv2d.__init__(
            self,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            device=device,
            dtype=dtype,
        )
        ElasticOp.__init__(self)
        if isinstance(self.padding, str):
            raise UnsupportedModelError("ElasticConv2d: string padding is not supported; give explicit sizes")
        self._init_layout(in_dim, in_layout, in_channels)
        if self.in_layout.inner != 1:
            raise UnsupportedModelError("ElasticConv2d: a convolution reads whole channels (inner must be 1)")
        self.out_dim = out_dim
        self.in_per_group = in_channels // groups
        self.out_per_group = out_channels // groups
        if groups > 1 and not self.in_layout.is_prefix:
            raise UnsupportedModelError("ElasticConv2d: a grouped conv reads one prefix of channels, not a layout")
        if groups > 1 and self.in_dim != out_dim and (self.in_dim is None or out_dim is None):
            raise UnsupportedModelError("ElasticConv2d: a grouped conv needs both or neither channel side elastic")
        self._active = self._full_config()

    def _full_config(self) -> ConvConfig:
        return ConvConfig(self.in_channels, self.out_channels, self.groups, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        grouped = self.groups > 1
        return self._io_dims(
            self.in_per_group if grouped else 1, self.out_channels, self.out_per_group if grouped else 1
        )

    def configure(self, channels: Mapping[str, int], stats_key: str) -> ConvConfig:
        name = type(self).__name__
        cin, columns = self.in_layout.columns(name, channels)
        cout = channel_count(name, channels, self.out_dim, self.out_channels)
        if cin == self.in_channels and cout == self.out_channels:
            return self._full_config()
        if self.groups == 1:
            return ConvConfig(cin, cout, 1, (cout, columns))
        if (
            cin % self.in_per_group
            or cout % self.out_per_group
            or cin // self.in_per_group != cout // self.out_per_group
        ):
            raise InvalidSubnetError(
                f"{name}: {cin} -> {cout} channels do not keep whole groups of "
                f"{self.in_per_group} -> {self.out_per_group} channels"
            )
        groups = cin // self.in_per_group
        return ConvConfig(cin, cout, groups, (cout, self.in_per_group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self._active
        if config.key is None:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        weight, bias = self._slices(config.key)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, config.groups)

    @torch.no_grad()
    def to_static(self) -> nn.Conv2d:
        cin, cout, groups, key = self._active
        weight, bias = (self.weight, self.bias) if key is None else self._select(key)
        conv = nn.Conv2d(
            cin,
            cout,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            groups,
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        return _holding(conv, weight, bias)


class SlicedLinear(SlicedWeight):
    """Forward and extraction of linear layers running the weight their config's `key` selects (None: all)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._active.key
        if key is None:
            return F.linear(x, self.weight, self.bias)
        weight, bias = self._slices(key)
        return F.linear(x, weight, bias)

    @torch.no_grad()
    def to_static(self) -> nn.Linear:
        key = self._active.key
        return static_linear(*((self.weight, self.bias) if key is None else self._select(key)))


class LinearConfig(NamedTuple):
    """What an `ElasticLinear` runs: input and output features, and its weight's key (None: all of it)."""

    in_features: int
    out_features: int
    key: tuple[int, Columns] | None


class ElasticLinear(SlicedLinear, _WeightSlice, nn.Linear):
    """A `Linear` layer whose active input/output features are chosen by width dimensions.

    `in_dim`/`out_dim` name the dimensions of prefixes of its input and output features (None: fixed);
    `in_layout` instead of `in_dim` describes inputs of several narrowed segments (a concatenation) or
    of `inner` features per channel (a flattened map).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        in_dim: str | None = None,
        out_dim: str | None = None,
        in_layout: ChannelLayout | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self._init_layout(in_dim, in_layout, in_features)
        self.out_dim = out_dim
        self._active = LinearConfig(in_features, out_features, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return self._io_dims(1, self.out_features, 1)

    def configure(self, channels: Mapping[str, int], stats_key: str) -> LinearConfig:
        name = type(self).__name__
        cin, columns = self.in_layout.columns(name, channels)
        cout = channel_count(name, channels, self.out_dim, self.out_features)
        if cin == self.in_features and cout == self.out_features:
            return LinearConfig(cin, cout, None)
        return LinearConfig(cin, cout, (cout, columns))



def set_in_place_grad(ops: Iterable[nn.Module], enabled: bool) -> None:
    """Sliced conv/linear weights among `ops` add their gradient into `.grad` in place (no full-size temporaries)."""
    for module in ops:
        if isinstance(module, _WeightSlice):
            module.in_place_grad = bool(enabled)


def static_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A plain `nn.Linear` holding copies of `weight` [out, in] and `bias`."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias is not None, device=weight.device, dtype=weight.dtype)
    return _holding(linear, weight, bias)


@torch.no_grad()
def _holding(layer: nn.Conv2d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer
