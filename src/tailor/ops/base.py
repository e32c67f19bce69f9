"""`ElasticOp`: the typed base class of every elastic operator, and its eval-mode weight cache.

An elastic op owns full-size weights and runs some of their channels (a prefix, or the columns a
`ChannelLayout` selects). The model activates a subnet by computing, once per subnet, a small immutable
configuration for each op (`configure`) and then only assigning it (`_active`), so switching subnets
costs one attribute store per op.

`SlicedWeight` is the forward path shared by every op with an [out, in, ...] weight: with autograd on,
the selected weight is a view or an index of the shared parameter (gradients reach it); with autograd
off, it is copied once per configuration into a contiguous tensor and reused by every later forward,
until the weights change (the parameter's version counter, which optimiser steps and `load_state_dict`
bump).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from tailor.errors import InvalidSubnetError

if TYPE_CHECKING:
    from tailor.ops.layout import ChannelLayout, Ranges

#: How many distinct sliced-weight copies an op keeps for eval-mode forwards (oldest evicted first);
#: 0 disables the cache (every forward slices and copies again: least memory, slowest).
DEFAULT_CACHE_ENTRIES = 8


class ElasticOp(nn.Module):
    """Base class: one operator whose active channel counts are chosen per subnet.

    Subclasses declare the width dimensions they read (`width_dims`), build a config with
    `configure`, and return an ordinary `torch.nn` module holding copies of the active weights
    from `to_static`. The active config lives in `self._active`.
    """

    _active: Any
    cache_entries: int = DEFAULT_CACHE_ENTRIES

    def __init__(self) -> None:
        # nn.Module.__init__ must already have run in the concrete class (it subclasses a torch layer).
        object.__setattr__(self, "_eval_cache", {})
        object.__setattr__(self, "_indices", {})  # (layout, ranges, device) -> feature index tensor

    def width_dims(self) -> dict[str, tuple[int, int]]:
        """{dimension name: (full channel count, required channel step)} this op reads."""
        raise NotImplementedError

    def configure(self, channels: Mapping[str, int], stats_key: str) -> Any:
        """Validated config for the given active channel counts (called once per subnet, cached)."""
        raise NotImplementedError

    def to_static(self) -> nn.Module:
        """An ordinary torch module holding copies of the weights this op runs under its active config."""
        raise NotImplementedError

    def clear_cache(self) -> None:
        """Drop eval-mode weight slices (needed only after editing weights through `.data`)."""
        self._eval_cache.clear()

    def _remember(self, key: Any, value: Any) -> Any:
        cache = self._eval_cache
        if self.cache_entries <= 0:
            return value
        if len(cache) >= self.cache_entries:
            cache.pop(next(iter(cache)))
        cache[key] = value
        return value

    def _feature_index(self, layout: ChannelLayout, ranges: Ranges, device: torch.device) -> torch.Tensor:
        """The indices of the features `ranges` of `layout` selects, made once per device (bounded like the cache)."""
        key = (layout, ranges, device)
        index = self._indices.get(key)
        if index is None:
            if len(self._indices) >= 4 * max(self.cache_entries, 1):
                self._indices.clear()
            index = self._indices[key] = layout.indices(ranges, device)
        return index

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:  # .to(), .cuda(), .half(), ...
        self.clear_cache()
        return super()._apply(fn, recurse)  # type: ignore[misc]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]


class CachedWeight(NamedTuple):
    """A selected weight copied for no-grad forwards, and the parameter version it was copied at."""

    version: int
    weight: torch.Tensor
    bias: torch.Tensor | None


class SlicedWeight(ElasticOp):
    """The forward path of ops with an [out, in, ...] `weight` (and an optional `bias`): subclasses say which
    part a configuration key selects (`_select`); this class caches it for no-grad forwards."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def _select(self, key: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) the configuration `key` runs, as views or indexed copies of the parameters."""
        raise NotImplementedError

    def _grad_select(self, key: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_select` under autograd (subclasses may route gradients differently)."""
        return self._select(key)

    def _slices(self, key: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) for `key`: selected afresh under autograd, else a cached contiguous copy."""
        if torch.is_grad_enabled():
            return self._grad_select(key)
        cached = self._eval_cache.get(key)
        if cached is None or cached.version != self.weight._version:
            with torch.no_grad():
                weight, bias = self._select(key)
                cached = self._remember(key, CachedWeight(self.weight._version, weight.contiguous(), bias))
        return cached.weight, cached.bias


def set_cache_entries(ops: Iterable[nn.Module], entries: int) -> None:
    """How many sliced-weight copies each elastic op among `ops` keeps for no-grad forwards (0: none)."""
    if isinstance(entries, bool) or not isinstance(entries, int) or entries < 0:
        raise InvalidSubnetError(f"weight cache entries must be an integer >= 0, got {entries!r}")
    for module in ops:
        if isinstance(module, ElasticOp):
            module.cache_entries = entries
            module.clear_cache()


def clear_caches(ops: Iterable[nn.Module]) -> None:
    """Drop the eval-mode weight copies of every elastic op among `ops`."""
    for module in ops:
        if isinstance(module, ElasticOp):
            module.clear_cache()


def channel_count(op_name: str, channels: Mapping[str, int], dim: str | None, full: int) -> int:
    """Active channels of `dim` (the full count when `dim` is None), checked against the op's size."""
    if dim is None:
        return full
    try:
        count = channels[dim]
    except KeyError:
        raise InvalidSubnetError(f"{op_name}: width dimension {dim!r} has no channel count") from None
    if not 1 <= count <= full:
        raise InvalidSubnetError(f"{op_name}: {count} channels for dimension {dim!r} is outside [1, {full}]")
    return count
