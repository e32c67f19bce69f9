"""`ElasticizedModel`: a user's network, converted in place of its layers, behind the `ElasticModel` API.

The converted network (`model.net`) keeps the user's module tree and forward code; its convolutions,
linear and norm layers are elastic ops reading *channel groups* (one per independent set of channels
found by the analysis, named after the first layer writing them). The space's width dimensions drive
those groups: in `per_group` mode one dimension per group (groups linked by a grouped convolution
with different input and output counts share one), in `uniform` mode one dimension, `width`, for all
of them (Model Slicing's single slice rate). A group follows its dimension's multiplier `w` with
`ceil(w * channels)` channels rounded up to its step, exactly as a `WidthDim` of its own would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from tailor.convert.trace import ConvertTracer
from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import ElasticModel
from tailor.ops.width_protocol import WidthProtocol
from tailor.space import SearchSpace, Subnet, WidthDim, active_channels


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must shrink together (tied by residual adds, gates, depthwise convs, ...).

    `name` is the first layer writing them (for the network input, `input 'x'`); `dimension` is the
    width dimension of `model.space` driving them, None when `frozen` says why they stay at full width.
    `step`: active counts are multiples of it (whole groups of grouped convs and group norms).
    `layers`: the converted layers reading or writing these channels.
    """

    name: str
    channels: int
    step: int
    dimension: str | None
    frozen: str | None
    layers: tuple[str, ...]

    @property
    def elastic(self) -> bool:
        return self.frozen is None


@dataclass(frozen=True)
class GroupDim:
    """How one channel group follows its space dimension `knob`: at multiplier w it runs
    `active_channels(w, channels, step)` channels (what a `WidthDim` of its own would select)."""

    knob: str
    channels: int
    step: int

    def count(self, width: float) -> int:
        return active_channels(width, self.channels, self.step)


class GroupWidthProtocol(WidthProtocol):
    """The width protocol where ops read channel groups that space dimensions (knobs) drive: counts per
    dimension become counts per group (the same in per_group mode, where a dimension is its group's own)."""

    tied = "channel group"
    model: ElasticizedModel

    def knob(self, op_dim: str) -> str:
        return self.model._group_dims[op_dim].knob

    def layer_count(self, op_dim: str, counts: dict[str, int]) -> int:
        group = self.model._group_dims[op_dim]
        return group.count(counts[group.knob] / self.model.space.width_dim(group.knob).channels)

    def width_for(self, dim: WidthDim, wanted: dict[str, int]) -> float:
        groups = self.model._group_dims
        choice = next(
            (w for w in dim.choices or () if all(groups[n].count(w) == c for n, c in wanted.items())),
            None,
        )
        if choice is None:
            raise InvalidSubnetError(f"set_real_ch: dimension {dim.name!r} cannot run the counts {wanted}")
        return choice


class ElasticizedModel(ElasticModel):
    """A user's model made elastic by `tailor.elasticize`: `space`, `activate`, `activated`, `extract`.

    `net` is the converted copy of the user's model (the original is untouched); `channel_groups` lists
    what the analysis found, `mode` and `norm` how it was converted.
    """

    width_protocol = GroupWidthProtocol

    def __init__(
        self,
        net: nn.Module,
        space: SearchSpace,
        channel_groups: Sequence[ChannelGroup],
        group_dims: Mapping[str, GroupDim],
        *,
        mode: str,
        norm: str,
        input_size: tuple[int, ...],
        example_inputs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(space)
        self.net = net
        # kept (not as buffers: not saved) for extraction, whose trace takes sizes from them
        self.example_inputs = tuple(x.detach().clone() if isinstance(x, torch.Tensor) else x for x in example_inputs)
        self.mode = mode
        self.norm = norm
        self.default_input_size = tuple(input_size)  # type: ignore[assignment]
        self.channel_groups: tuple[ChannelGroup, ...] = tuple(channel_groups)
        self._group_dims = dict(group_dims)
        self._op_dims = {
            name: WidthDim(name, g.channels, choices=space.width_dim(g.knob).choices or (1.0,), step=g.step)
            for name, g in self._group_dims.items()
        }

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    # -- ElasticModel hooks ---------------------------------------------------------------------------
    def _op_width_dim(self, layer: str, name: str) -> WidthDim:
        try:
            return self._op_dims[name]
        except KeyError:
            raise UnsupportedModelError(f"layer {layer!r}: channel group {name!r} is not in the model") from None

    def _op_channels(self, canonical: Subnet) -> dict[str, int]:
        return {name: g.count(canonical.width(g.knob)) for name, g in self._group_dims.items()}

    def _traced_for_extraction(self) -> tuple[nn.Module, fx.Graph]:
        """`net` traced with every size of a non-batch axis a constant taken from the example inputs (the
        extracted network holds no `size()` calls for them: ONNX needs static pooling kernels, for one);
        without example inputs, sizes stay symbolic."""
        if not self.example_inputs:
            return self.net, ConvertTracer().trace(self.net)
        reference = next(iter(self.parameters()), None)
        inputs = tuple(
            x.to(reference.device) if isinstance(x, torch.Tensor) and reference is not None else x
            for x in self.example_inputs
        )
        return self.net, ConvertTracer(example_inputs=inputs, specialise_sizes=True).trace(self.net)

    # -- inspection ------------------------------------------------------------------------------------
    @property
    def frozen_groups(self) -> tuple[ChannelGroup, ...]:
        """Channel groups that stay at full width (with the reason in `frozen`)."""
        return tuple(g for g in self.channel_groups if g.frozen is not None)

    def group_channels(self, sub: Subnet | None = None) -> dict[str, int]:
        """Active channels of every elastic channel group under `sub` (default: the active subnet)."""
        sub = self.active_subnet if sub is None else sub
        return self._op_channels(self.space.canonical(sub))

    def summary(self) -> str:
        """A table of the channel groups: name, channels, step, dimension or why frozen, layers."""
        lines = [f"{type(self).__name__}: mode={self.mode}, norm={self.norm}, {self.space!r}"]
        for g in self.channel_groups:
            status = f"dimension {g.dimension!r}" if g.frozen is None else f"frozen: {g.frozen}"
            step = f", step {g.step}" if g.step > 1 else ""
            lines.append(f"  {g.name}: {g.channels} channels{step}, {status}; layers: {', '.join(g.layers)}")
        return "\n".join(lines)
