"""SubnetNorm (`ElasticBatchNorm2d`) and Model Slicing's sliced group norm (`ElasticGroupNorm`).

A subnet's activations have their own mean and variance: sharing one set of BatchNorm running
statistics across subnets (what a plain slimmable BN does) ruins the accuracy of every subnet but
the one trained last. `ElasticBatchNorm2d` shares the affine parameters but keeps running
statistics per subnet, as registered buffers named `subnet_mean_<id>` / `subnet_var_<id>` (so they
are saved in `state_dict`, moved by `.to()`, and hold only the subnet's active channels). A subnet
with no statistics of its own falls back to the shared running statistics; `has_subnet_stats`
tells which, and `ElasticModel.uses_shared_norm_stats` reports it for the active subnet.

Both normalise a prefix of their channels (`dim`), or the channels a `ChannelLayout` selects (`layout`:
e.g. after a concatenation of separately narrowed tensors). Prefixes are views of the shared tensors
(cached for eval); a layout's channels are indexed copies, taken at each forward so that training steps
and calibration are always seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import CheckpointError, InvalidSubnetError, UnsupportedModelError
from tailor.ops.base import ElasticOp
from tailor.ops.layout import ChannelLayout, Columns, LayoutInput

MEAN_PREFIX = "subnet_mean_"
VAR_PREFIX = "subnet_var_"


class _LayoutNorm(LayoutInput, ElasticOp):
    """Norm layers over the channels of a layout (a prefix of `dim` in the common case)."""

    @property
    def layout(self) -> ChannelLayout:
        """The channels this layer normalises (its `in_layout`)."""
        return self.in_layout

    @property
    def dim(self) -> str | None:
        """The width dimension whose first channels this layer normalises (None: fixed, or see `layout`)."""
        return self.in_layout.prefix_dim

    def _pick(self, tensor: torch.Tensor | None, columns: Columns) -> Any:
        """The active channels of a per-channel tensor: itself at full width, a view of a prefix, else a copy."""
        if tensor is None:
            return None
        if type(columns) is int:
            return tensor if columns == tensor.shape[0] else tensor[:columns]
        return tensor.index_select(0, self._feature_index(self.in_layout, columns, tensor.device))

    def _layout_repr(self) -> str:
        return f"dim={self.dim!r}" if self.in_layout.is_prefix else f"layout={self.in_layout.segments}"


def _whole_channels(norm: nn.Module, layout: ChannelLayout | None) -> ChannelLayout | None:
    """`layout`, checked to read whole channels (a norm layer has no flattened inputs)."""
    if layout is not None and layout.inner != 1:
        raise UnsupportedModelError(f"{type(norm).__name__}: a norm layer reads whole channels (inner must be 1)")
    return layout


class _Moments:
    """Exact per-channel mean and variance of every value seen, batch by batch (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None  # sum of squared deviations from the mean

    def add(self, n: int, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Fold in `n` values per channel with this `mean` and (biased) `var`."""
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, var * n
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta.square() * (self.count * n / total)
        self.count = total

    def unbiased_var(self) -> torch.Tensor:
        """The unbiased variance, as BatchNorm's `running_var` holds it."""
        return self.m2 / max(self.count - 1, 1)  # type: ignore[operator]


class BatchNormConfig(NamedTuple):
    """What an `ElasticBatchNorm2d` runs: active channels, which ones, and whose statistics."""

    channels: int
    columns: Columns
    stats_key: str
    cache_key: tuple[int, str] | None  # None: indexed copies, taken afresh at every forward (never stale)


class ElasticBatchNorm2d(_LayoutNorm, nn.BatchNorm2d):
    """BatchNorm over the active channels, with per-subnet running statistics (SubnetNorm).

    Training mode normalises with batch statistics and updates the shared running statistics of the
    active channels. Eval mode uses the active subnet's own statistics when it has them (they hold the
    active channels in the order they arrive).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        *,
        dim: str | None = None,
        layout: ChannelLayout | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.BatchNorm2d.__init__(self, num_features, eps, momentum, affine, True, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self._init_layout(dim, _whole_channels(self, layout), num_features)
        object.__setattr__(self, "_subnet_stats", {})  # subnet key -> (mean buffer name, var buffer name)
        object.__setattr__(self, "_calibration", None)
        self._active = BatchNormConfig(num_features, num_features, "", (num_features, ""))

    # -- configuration ------------------------------------------------------------------------------
    def width_dims(self) -> dict[str, tuple[int, int]]:
        return self.in_layout.width_dims()

    def configure(self, channels: Mapping[str, int], stats_key: str) -> BatchNormConfig:
        c, columns = self.in_layout.columns(type(self).__name__, channels)
        return BatchNormConfig(c, columns, stats_key, (c, stats_key) if type(columns) is int else None)

    # -- per-subnet statistics ----------------------------------------------------------------------
    def has_subnet_stats(self, key: str) -> bool:
        """Whether subnet `key` (a canonical subnet id) has statistics of its own here."""
        return key in self._subnet_stats

    def subnet_stats_keys(self) -> list[str]:
        """Keys of all subnets with statistics stored in this layer."""
        return list(self._subnet_stats)

    def subnet_stats(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, var) stored for subnet `key`, or None."""
        names = self._subnet_stats.get(key)
        if names is None:
            return None
        mean_name, var_name = names
        return self._buffers[mean_name], self._buffers[var_name]  # type: ignore[return-value]

    def set_subnet_stats(self, key: str, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Store running statistics of subnet `key` (1-D, one value per active channel)."""
        if not key or "." in key:
            raise InvalidSubnetError(f"ElasticBatchNorm2d: bad statistics key {key!r}")
        if mean.dim() != 1 or mean.shape != var.shape or not 1 <= mean.numel() <= self.num_features:
            raise InvalidSubnetError(
                f"ElasticBatchNorm2d: statistics for {key!r} must be two 1-D tensors of equal length "
                f"<= {self.num_features}, got {tuple(mean.shape)} and {tuple(var.shape)}"
            )
        ref = self.running_mean
        mean_name, var_name = MEAN_PREFIX + key, VAR_PREFIX + key
        self.register_buffer(mean_name, mean.detach().to(ref.device, ref.dtype).clone())
        self.register_buffer(var_name, var.detach().to(ref.device, ref.dtype).clone())
        self._subnet_stats[key] = (mean_name, var_name)
        self.clear_cache()

    def remove_subnet_stats(self, key: str) -> None:
        """Forget subnet `key`'s statistics (it falls back to the shared ones)."""
        names = self._subnet_stats.pop(key, None)
        if names is not None:
            for name in names:
                del self._buffers[name]
        self.clear_cache()

    def subnet_stats_bytes(self) -> int:
        """Bytes held by per-subnet statistics in this layer."""
        return sum(
            self._buffers[n].numel() * self._buffers[n].element_size()
            for names in self._subnet_stats.values()
            for n in names
        )

    # -- exact calibration --------------------------------------------------------------------------
    def begin_calibration(self) -> None:
        """Start accumulating exact statistics of the inputs seen (batch-normalised meanwhile)."""
        object.__setattr__(self, "_calibration", _Moments())

    def finish_calibration(self, key: str) -> bool:
        """Store the accumulated statistics under `key`; False (nothing stored) if no input was seen."""
        moments = self._calibration
        object.__setattr__(self, "_calibration", None)
        if moments is None or moments.count == 0:
            return False
        self.set_subnet_stats(key, moments.mean, moments.unbiased_var())
        return True

    def cancel_calibration(self) -> None:
        """Stop calibrating without storing anything."""
        object.__setattr__(self, "_calibration", None)

    def _calibrate_forward(self, x: torch.Tensor, columns: Columns) -> torch.Tensor:
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=0)
            self._calibration.add(x.numel() // x.shape[1], mean.double(), var.double())
        weight, bias = self._pick(self.weight, columns), self._pick(self.bias, columns)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self._active
        if self._calibration is not None:
            return self._calibrate_forward(x, config.columns)
        if self.training:
            return self._train_forward(x, config.columns)
        cache_key = config.cache_key
        if cache_key is None or torch.is_grad_enabled():
            mean, var, weight, bias = self._eval_tensors(config.channels, config.columns, config.stats_key)
        else:
            cached = self._eval_cache.get(cache_key)
            if cached is None:
                tensors = self._eval_tensors(config.channels, config.columns, config.stats_key)
                cached = self._remember(cache_key, tensors)
            mean, var, weight, bias = cached
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _train_forward(self, x: torch.Tensor, columns: Columns) -> torch.Tensor:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        weight, bias = self._pick(self.weight, columns), self._pick(self.bias, columns)
        if type(columns) is int:  # views: batch_norm updates the shared statistics in place
            mean, var = self._pick(self.running_mean, columns), self._pick(self.running_var, columns)
            return F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)
        index = self._feature_index(self.in_layout, columns, x.device)
        mean, var = self.running_mean.index_select(0, index), self.running_var.index_select(0, index)
        out = F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)  # updates the copies in place
        with torch.no_grad():
            self.running_mean.index_copy_(0, index, mean)
            self.running_var.index_copy_(0, index, var)
        return out

    def _eval_tensors(
        self, c: int, columns: Columns, key: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        own = self.subnet_stats(key)
        if own is not None:
            mean, var = own
            if mean.numel() != c:
                raise InvalidSubnetError(
                    f"{type(self).__name__}: statistics of {key!r} cover {mean.numel()} channels, the subnet runs {c}"
                )
        else:
            mean, var = self._pick(self.running_mean, columns), self._pick(self.running_var, columns)
        return mean, var, self._pick(self.weight, columns), self._pick(self.bias, columns)

    # -- extraction and state -----------------------------------------------------------------------
    @torch.no_grad()
    def to_static(self) -> nn.BatchNorm2d:
        c, columns, key, _ = self._active
        mean, var, weight, bias = self._eval_tensors(c, columns, key)
        ref = self.running_mean
        bn = nn.BatchNorm2d(c, self.eps, self.momentum, self.affine, True, device=ref.device, dtype=ref.dtype)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        if self.affine:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        return bn

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Per-subnet statistics are created on demand: make room for those the state dict carries.
        for name, value in state_dict.items():
            if not name.startswith(prefix + MEAN_PREFIX):
                continue
            key = name[len(prefix + MEAN_PREFIX) :]
            var = state_dict.get(prefix + VAR_PREFIX + key)
            if var is None:
                raise CheckpointError(f"{prefix}: statistics of subnet {key!r} have a mean but no variance")
            if "." in key:
                continue
            if value.shape != var.shape or value.dim() != 1:
                raise CheckpointError(f"{prefix}: statistics of subnet {key!r} have mismatched shapes")
            self.set_subnet_stats(key, torch.zeros_like(value), torch.zeros_like(var))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._layout_repr()}, subnet_stats={len(self._subnet_stats)}"


class GroupNormConfig(NamedTuple):
    """What an `ElasticGroupNorm` runs: active channels, their groups, and which channels."""

    channels: int
    groups: int
    columns: Columns
    cache_key: int | None  # None: full width, or indexed copies taken afresh at every forward


class ElasticGroupNorm(_LayoutNorm, nn.GroupNorm):
    """Model Slicing's group norm: channels per group stay fixed, whole groups are dropped.

    At `c` active channels it normalises `c / (num_channels / num_groups)` groups, so a narrower
    subnet computes exactly the statistics its channels would get in the full layer's groups. With a
    `layout`, every segment holds whole groups and a subnet keeps whole groups of each segment.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dim: str | None = None,
        layout: ChannelLayout | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.GroupNorm.__init__(self, num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self._init_layout(dim, _whole_channels(self, layout), num_channels)
        self.channels_per_group = num_channels // num_groups
        for segment, channels in self.in_layout.segments:
            if channels % self.channels_per_group:
                raise UnsupportedModelError(
                    f"ElasticGroupNorm: segment {segment!r} of {channels} channels splits groups of "
                    f"{self.channels_per_group}"
                )
        self._active = GroupNormConfig(num_channels, num_groups, num_channels, None)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return self.in_layout.width_dims(self.channels_per_group)

    def configure(self, channels: Mapping[str, int], stats_key: str) -> GroupNormConfig:
        name = type(self).__name__
        c, columns = self.in_layout.columns(name, channels)
        parts = ((0, c),) if type(columns) is int else columns
        for start, count in parts:
            if count % self.channels_per_group:
                where = f" from channel {start}" if start else ""
                raise InvalidSubnetError(
                    f"{name}: {count} channels{where} is not a whole number of groups of {self.channels_per_group}"
                )
        sliced = type(columns) is int and c < self.num_channels and self.affine
        return GroupNormConfig(c, c // self.channels_per_group, columns, c if sliced else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, groups, columns, cache_key = self._active
        if c == self.num_channels:
            return F.group_norm(x, groups, self.weight, self.bias, self.eps)
        if cache_key is None or torch.is_grad_enabled():
            weight, bias = self._pick(self.weight, columns), self._pick(self.bias, columns)
        else:
            cached = self._eval_cache.get(cache_key)
            if cached is None:
                cached = self._remember(cache_key, (self.weight[:c], self.bias[:c]))
            weight, bias = cached
        return F.group_norm(x, groups, weight, bias, self.eps)

    @torch.no_grad()
    def to_static(self) -> nn.GroupNorm:
        c, groups, columns, _ = self._active
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
            gn.weight.copy_(self._pick(self.weight, columns))
            gn.bias.copy_(self._pick(self.bias, columns))
        return gn

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._layout_repr()}"
