"""WeightSlice: `ElasticConv2d` and `ElasticLinear` run the first k channels of full-size weights.

Training (autograd on) slices weights as views, so gradients land in the shared parameters. With
autograd off (eval, serving) the sliced weight is copied once into a contiguous tensor and reused
by every later forward of the same configuration, until the weights change (tracked through the
parameter's version counter, which optimiser steps and `load_state_dict` bump).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops.base import ElasticOp, channel_count


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


class _WeightSlice(ElasticOp):
    """Shared forward logic of ops whose weight is [out, in, ...]: views with autograd, cached copies without."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    #: Accumulate sliced gradients straight into `.grad` (see `_PrefixSliceInPlaceGrad`); set by the model.
    in_place_grad: bool = False

    def _slices(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) for the first `key = (out, in)` channels."""
        if torch.is_grad_enabled():
            cout, cin = key
            if self.in_place_grad and self.weight.requires_grad:
                weight = _PrefixSliceInPlaceGrad.apply(self.weight, cout, cin)
                bias = None if self.bias is None else _PrefixSliceInPlaceGrad.apply(self.bias, cout, None)
                return weight, bias
            return self.weight[:cout, :cin], None if self.bias is None else self.bias[:cout]
        cached = self._eval_cache.get(key)
        if cached is None or cached[0] != self.weight._version:
            cached = self._prepare(key)
        return cached[1], cached[2]

    @torch.no_grad()
    def _prepare(self, key: tuple[int, int]) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        cout, cin = key
        weight = self.weight[:cout, :cin].contiguous()
        bias = None if self.bias is None else self.bias[:cout]
        return self._remember(key, (self.weight._version, weight, bias))


class ElasticConv2d(_WeightSlice, nn.Conv2d):
    """A `Conv2d` whose active input/output channels are prefixes chosen by width dimensions.

    `in_dim`/`out_dim` name the width dimensions that drive the input and output channels (None:
    fixed at full size). Grouped and depthwise convolutions keep channels per group constant and
    drop whole groups, so active channel counts must be multiples of the per-group size.
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
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.in_per_group = in_channels // groups
        self.out_per_group = out_channels // groups
        if groups > 1 and in_dim != out_dim and (in_dim is None or out_dim is None):
            raise UnsupportedModelError("ElasticConv2d: a grouped conv needs both or neither channel side elastic")
        self._active = self._full_config()

    def _full_config(self) -> tuple[int, int, int, tuple[int, int] | None]:
        return (self.in_channels, self.out_channels, self.groups, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        dims: dict[str, tuple[int, int]] = {}
        if self.in_dim is not None:
            dims[self.in_dim] = (self.in_channels, self.in_per_group if self.groups > 1 else 1)
        if self.out_dim is not None:
            step = self.out_per_group if self.groups > 1 else 1
            if self.out_dim in dims and dims[self.out_dim][0] != self.out_channels:
                raise UnsupportedModelError(
                    f"ElasticConv2d: in and out share dimension {self.out_dim!r} but have "
                    f"{self.in_channels} and {self.out_channels} channels"
                )
            dims[self.out_dim] = (self.out_channels, max(step, dims.get(self.out_dim, (0, 1))[1]))
        return dims

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, int, int, tuple[int, int] | None]:
        name = type(self).__name__
        cin = channel_count(name, channels, self.in_dim, self.in_channels)
        cout = channel_count(name, channels, self.out_dim, self.out_channels)
        if cin == self.in_channels and cout == self.out_channels:
            return self._full_config()
        if self.groups == 1:
            return (cin, cout, 1, (cout, cin))
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
        return (cin, cout, groups, (cout, self.in_per_group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, groups, key = self._active
        if key is None:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        weight, bias = self._slices(key)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    @torch.no_grad()
    def to_static(self) -> nn.Conv2d:
        cin, cout, groups, _ = self._active
        weight_in = cin if self.groups == 1 else self.in_per_group
        conv = nn.Conv2d(
            cin,
            cout,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(self.weight[:cout, :weight_in])
        if self.bias is not None:
            conv.bias.copy_(self.bias[:cout])
        return conv

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in_dim={self.in_dim!r}, out_dim={self.out_dim!r}"


class ElasticLinear(_WeightSlice, nn.Linear):
    """A `Linear` layer whose active input/output features are prefixes chosen by width dimensions."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        in_dim: str | None = None,
        out_dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self._active = (in_features, out_features, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        dims: dict[str, tuple[int, int]] = {}
        if self.in_dim is not None:
            dims[self.in_dim] = (self.in_features, 1)
        if self.out_dim is not None:
            if self.out_dim in dims and self.in_features != self.out_features:
                raise UnsupportedModelError(
                    f"ElasticLinear: in and out share dimension {self.out_dim!r} with different sizes"
                )
            dims[self.out_dim] = (self.out_features, 1)
        return dims

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, int, tuple[int, int] | None]:
        cin = channel_count("ElasticLinear", channels, self.in_dim, self.in_features)
        cout = channel_count("ElasticLinear", channels, self.out_dim, self.out_features)
        if cin == self.in_features and cout == self.out_features:
            return (cin, cout, None)
        return (cin, cout, (cout, cin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._active[2]
        if key is None:
            return F.linear(x, self.weight, self.bias)
        weight, bias = self._slices(key)
        return F.linear(x, weight, bias)

    @torch.no_grad()
    def to_static(self) -> nn.Linear:
        cin, cout, _ = self._active
        linear = nn.Linear(cin, cout, self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(self.weight[:cout, :cin])
        if self.bias is not None:
            linear.bias.copy_(self.bias[:cout])
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in_dim={self.in_dim!r}, out_dim={self.out_dim!r}"
