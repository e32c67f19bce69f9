"""SubnetNorm (`ElasticBatchNorm2d`) and Model Slicing's sliced group norm (`ElasticGroupNorm`).

A subnet's activations have their own mean and variance: sharing one set of BatchNorm running
statistics across subnets (what a plain slimmable BN does) ruins the accuracy of every subnet but
the one trained last. `ElasticBatchNorm2d` shares the affine parameters but keeps running
statistics per subnet, as registered buffers named `subnet_mean_<id>` / `subnet_var_<id>` (so they
are saved in `state_dict`, moved by `.to()`, and hold only the subnet's active channels). A subnet
with no statistics of its own falls back to the shared running statistics; `has_subnet_stats`
tells which, and `ElasticModel.uses_shared_norm_stats` reports it for the active subnet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import CheckpointError, InvalidSubnetError
from tailor.ops.base import ElasticOp, channel_count

MEAN_PREFIX = "subnet_mean_"
VAR_PREFIX = "subnet_var_"


class ElasticBatchNorm2d(ElasticOp, nn.BatchNorm2d):
    """BatchNorm over a prefix of channels, with per-subnet running statistics (SubnetNorm).

    Training mode normalises with batch statistics and updates the shared running statistics
    (first `c` channels). Eval mode uses the active subnet's own statistics when it has them.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        *,
        dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.BatchNorm2d.__init__(self, num_features, eps, momentum, affine, True, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self.dim = dim
        object.__setattr__(self, "_subnet_stats", {})  # subnet key -> (mean buffer name, var buffer name)
        object.__setattr__(self, "_calibration", None)
        self._active = (num_features, "", (num_features, ""))

    # -- configuration ------------------------------------------------------------------------------
    def width_dims(self) -> dict[str, tuple[int, int]]:
        return {} if self.dim is None else {self.dim: (self.num_features, 1)}

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, str, tuple[int, str]]:
        c = channel_count("ElasticBatchNorm2d", channels, self.dim, self.num_features)
        return (c, stats_key, (c, stats_key))

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
        return self._buffers[names[0]], self._buffers[names[1]]  # type: ignore[return-value]

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
        names = (MEAN_PREFIX + key, VAR_PREFIX + key)
        self.register_buffer(names[0], mean.detach().to(ref.device, ref.dtype).clone())
        self.register_buffer(names[1], var.detach().to(ref.device, ref.dtype).clone())
        self._subnet_stats[key] = names
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
        object.__setattr__(self, "_calibration", [0, None, None])

    def finish_calibration(self, key: str) -> bool:
        """Store the accumulated statistics under `key`; False (nothing stored) if no input was seen."""
        state = self._calibration
        object.__setattr__(self, "_calibration", None)
        if state is None or state[0] == 0:
            return False
        count, mean, m2 = state
        var = m2 / max(count - 1, 1)  # unbiased, as BatchNorm's running_var
        self.set_subnet_stats(key, mean, var)
        return True

    def cancel_calibration(self) -> None:
        """Stop calibrating without storing anything."""
        object.__setattr__(self, "_calibration", None)

    def _calibrate_forward(self, x: torch.Tensor, c: int) -> torch.Tensor:
        state = self._calibration
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=0)
            n = x.numel() // x.shape[1]
            mean, var = mean.double(), var.double()
            if state[0] == 0:
                state[0], state[1], state[2] = n, mean, var * n
            else:
                total = state[0] + n
                delta = mean - state[1]
                state[1] = state[1] + delta * (n / total)
                state[2] = state[2] + var * n + delta.square() * (state[0] * n / total)
                state[0] = total
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, key, cache_key = self._active
        if self._calibration is not None:
            return self._calibrate_forward(x, c)
        if self.training:
            return self._train_forward(x, c)
        if torch.is_grad_enabled():
            mean, var, weight, bias = self._eval_tensors(c, key)
        else:
            cached = self._eval_cache.get(cache_key)
            if cached is None:
                cached = self._remember(cache_key, self._eval_tensors(c, key))
            mean, var, weight, bias = cached
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _train_forward(self, x: torch.Tensor, c: int) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        if c == self.num_features:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], weight, bias, True, factor, self.eps)

    def _eval_tensors(
        self, c: int, key: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        own = self.subnet_stats(key)
        if own is not None:
            mean, var = own
            if mean.numel() != c:
                raise InvalidSubnetError(
                    f"ElasticBatchNorm2d: statistics of {key!r} cover {mean.numel()} channels, the subnet runs {c}"
                )
        elif c == self.num_features:
            mean, var = self.running_mean, self.running_var
        else:
            mean, var = self.running_mean[:c], self.running_var[:c]
        if c == self.num_features:
            return mean, var, self.weight, self.bias
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return mean, var, weight, bias

    # -- extraction and state -----------------------------------------------------------------------
    @torch.no_grad()
    def to_static(self) -> nn.BatchNorm2d:
        c, key, _ = self._active
        mean, var, weight, bias = self._eval_tensors(c, key)
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
        return f"{super().extra_repr()}, dim={self.dim!r}, subnet_stats={len(self._subnet_stats)}"


class ElasticGroupNorm(ElasticOp, nn.GroupNorm):
    """Model Slicing's group norm: channels per group stay fixed, whole groups are dropped.

    At `c` active channels it normalises `c / (num_channels / num_groups)` groups, so a narrower
    subnet computes exactly the statistics its channels would get in the full layer's groups.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.GroupNorm.__init__(self, num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self.dim = dim
        self.channels_per_group = num_channels // num_groups
        self._active = (num_channels, num_groups)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return {} if self.dim is None else {self.dim: (self.num_channels, self.channels_per_group)}

    def configure(self, channels: Mapping[str, int], stats_key: str) -> tuple[int, int]:
        c = channel_count("ElasticGroupNorm", channels, self.dim, self.num_channels)
        if c % self.channels_per_group:
            raise InvalidSubnetError(
                f"ElasticGroupNorm: {c} channels is not a whole number of groups of {self.channels_per_group}"
            )
        return (c, c // self.channels_per_group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, groups = self._active
        if c == self.num_channels:
            return F.group_norm(x, groups, self.weight, self.bias, self.eps)
        if torch.is_grad_enabled() or not self.affine:
            weight = self.weight[:c] if self.weight is not None else None
            bias = self.bias[:c] if self.bias is not None else None
        else:
            cached = self._eval_cache.get(c)
            if cached is None:
                cached = self._remember(c, (self.weight[:c], self.bias[:c]))
            weight, bias = cached
        return F.group_norm(x, groups, weight, bias, self.eps)

    @torch.no_grad()
    def to_static(self) -> nn.GroupNorm:
        c, groups = self._active
        ref = self.weight if self.weight is not None else None
        gn = nn.GroupNorm(
            groups,
            c,
            self.eps,
            self.affine,
            device=None if ref is None else ref.device,
            dtype=None if ref is None else ref.dtype,
        )
        if self.affine:
            gn.weight.copy_(self.weight[:c])
            gn.bias.copy_(self.bias[:c])
        return gn

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim!r}"
