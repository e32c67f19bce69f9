"""`ElasticModel`: the base class of every supernet (SubNetAct's actuation, once per subnet).

A model built from elastic ops declares, on each op, which width dimension drives which channels,
and puts blocks with elastic depth into `ElasticStage`s. From that the base class does the rest:
`activate(sub)` computes each op's configuration once per subnet (a *plan*, cached) and afterwards
switches by assigning those configurations in place — no weights are copied or sliced then.
`extract(sub)` traces the active network with `torch.fx` and returns a `GraphModule` made only of
ordinary torch modules holding copies of the active weights and statistics.

The model keeps its space, its forward and the hooks subclasses override; each other role is a
collaborator it delegates to: the layer index and plans (`plans`, `layer_index`), per-subnet norm
statistics (`norm_stats`), the weight cache (`base`), the slimmable width protocol (`width_protocol`)
and extraction (`extract`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from torch import fx, nn

from tailor.errors import InvalidSubnetError
from tailor.ops.base import clear_caches, set_cache_entries
from tailor.ops.conv import set_in_place_grad
from tailor.ops.extract import extract_graph, trace_with_ops_as_leaves
from tailor.ops.layer_index import lookup_dim
from tailor.ops.norm import ElasticBatchNorm2d
from tailor.ops.norm_stats import calibrated_keys, has_own_stats, stats_bytes, warn_if_shared
from tailor.ops.plans import Plans
from tailor.ops.width_protocol import WidthProtocol
from tailor.space import SearchSpace, Subnet, WidthDim


class ElasticModel(nn.Module):
    """Base class of supernets: a `space`, `activate`/`activated`, `active_subnet`, `extract`.

    Subclasses build their layers from `tailor.ops` after calling `super().__init__(space)`. A new
    model runs its full network until a subnet is activated.
    """

    space: SearchSpace
    #: (channels, height, width) the model was designed for (e.g. 224x224 ImageNet, 32x32 CIFAR).
    default_input_size: tuple[int, int, int] = (3, 224, 224)
    #: {"name": registered model, "kwargs": {...}} when built by `create_model` (checkpoints rebuild from it).
    architecture: dict[str, Any] | None = None
    #: The slimmable width protocol's implementation (models whose ops read other dimensions subclass it).
    width_protocol: ClassVar[type[WidthProtocol]] = WidthProtocol

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise InvalidSubnetError(f"ElasticModel needs a SearchSpace, got {type(space).__name__}")
        self.space = space
        object.__setattr__(self, "_plans", Plans(self))
        object.__setattr__(self, "_widths", self.width_protocol(self))

    # -- hooks: models whose ops read internal channel groups that fewer space dimensions drive
    # (`tailor.convert`'s uniform mode) override these; by default an op's dimension is a space dimension.
    def _op_width_dim(self, layer: str, name: str) -> WidthDim:
        """The width dimension (full channels, step) that an op's dimension `name` refers to."""
        return lookup_dim(self, layer, "width", name)

    def _op_channels(self, canonical: Subnet) -> dict[str, int]:
        """Active channels of every dimension the ops read, under a canonical subnet of the space."""
        return self.space.channels(canonical)

    def _traced_for_extraction(self) -> tuple[nn.Module, fx.Graph]:
        """(root, graph) that `extract` copies into a static module: `self`, traced with ops as leaves."""
        return self, trace_with_ops_as_leaves(self)

    def init_weights(self, module: nn.Module | None = None) -> None:
        """(Re)initialise `module` (default: this model) with this family's scheme.

        Also accepts a network extracted from this model: a subnet trained from scratch then starts as
        its family would build a network of its size (fan-in/fan-out of its own layers). The default
        calls every submodule's `reset_parameters`; families override it with their own scheme.
        """
        target = self if module is None else module
        for child in target.modules():
            reset = getattr(child, "reset_parameters", None)
            if callable(reset):
                reset()

    # -- layers and activation (`tailor.ops.plans`) ---------------------------------------------------
    def elastic_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(qualified name, module) of every elastic op and stage, in definition order."""
        for layer in self._plans.layers():
            yield layer.name, layer.module

    def invalidate_plans(self) -> None:
        """Forget cached plans and the layer index (call after replacing layers, e.g. a new head)."""
        self._plans.invalidate()

    def activate(self, sub: Subnet) -> None:
        """Switch the supernet to run `sub` (in place; weights are shared, nothing is copied)."""
        plan = self._plans.activate(sub)
        if not self.training:
            warn_if_shared(plan, stacklevel=2)

    @contextmanager
    def activated(self, sub: Subnet) -> Iterator[ElasticModel]:
        """Run `sub` inside the block, then restore the previously active subnet."""
        previous = self.active_subnet
        self.activate(sub)
        try:
            yield self
        finally:
            self.activate(previous)

    @property
    def active_subnet(self) -> Subnet:
        """The subnet the model runs now (canonical form); the largest until one is activated."""
        if self._plans.active is None:
            self.activate(self.space.largest())
        return self._plans.active.subnet  # type: ignore[union-attr]

    def train(self, mode: bool = True) -> ElasticModel:
        super().train(mode)
        if not mode and self._plans.active is not None:
            warn_if_shared(self._plans.active, stacklevel=2)
        return self

    # -- SubnetNorm statistics (`tailor.ops.norm_stats`) ----------------------------------------------
    def norm_layers(self, sub: Subnet | None = None) -> list[tuple[str, ElasticBatchNorm2d]]:
        """SubnetNorm layers that run in `sub` (default: the active subnet)."""
        return list(self._plans.plan(self.active_subnet if sub is None else sub).norms)

    def stats_key(self, sub: Subnet) -> str:
        """The key under which `sub`'s SubnetNorm statistics are stored (its canonical id)."""
        return self._plans.plan(sub).subnet.id

    def has_norm_stats(self, sub: Subnet) -> bool:
        """Whether every SubnetNorm layer that `sub` runs holds statistics of its own for it."""
        return has_own_stats(self._plans.plan(sub))

    @property
    def uses_shared_norm_stats(self) -> bool:
        """True when the active subnet lacks its own statistics in some layer (eval uses shared ones)."""
        return bool(self.norm_layers()) and not self.has_norm_stats(self.active_subnet)

    def calibrated_subnet_keys(self) -> set[str]:
        """Keys of subnets that hold statistics in at least one SubnetNorm layer."""
        return calibrated_keys(module for _, module in self.elastic_layers())

    def norm_stats_bytes(self) -> dict[str, int]:
        """Bytes of per-subnet statistics against bytes of shared weights (parameters + buffers)."""
        return stats_bytes(self, (module for _, module in self.elastic_layers()))

    # -- the weight cache (`tailor.ops.base`) ---------------------------------------------------------
    def clear_cache(self) -> None:
        """Drop every op's eval-mode weight slices (only needed after editing weights via `.data`)."""
        clear_caches(module for _, module in self.elastic_layers())

    def set_weight_cache(self, entries: int) -> None:
        """How many sliced-weight copies each op keeps for no-grad forwards (0: slice on every call)."""
        set_cache_entries((module for _, module in self.elastic_layers()), entries)

    def set_in_place_grad(self, enabled: bool) -> None:
        """Sliced conv/linear weights add their gradient into `.grad` in place (no full-size temporaries).

        Used by the supernet trainer, which accumulates several subnets' gradients per step and
        all-reduces `.grad` itself: with this on, parameter hooks do not see sliced gradients.
        """
        set_in_place_grad((module for _, module in self.elastic_layers()), enabled)

    # -- the slimmable width protocol (`tailor.ops.width_protocol`) -------------------------------------
    @property
    def search_dim(self) -> int:
        """Number of independent width dimensions (the length of a `wm` vector)."""
        return self.space.search_dim

    @property
    def channel_space(self) -> list[Any]:
        """Full channel count of every width dimension, grouped per stage (the seed's `channel_space`)."""
        return self._widths.channel_space()

    def decode_wm(self, wm: Any) -> list[Any]:
        """Flat width multipliers (len `search_dim`) -> hierarchical channel counts, one per dimension.

        Values are read as `space.from_wm` reads them; a wrong length or a value outside [0, 1]
        raises `InvalidSubnetError`.
        """
        return self._widths.decode_wm(wm)

    def decode_ch(self, ch: Any) -> list[Any]:
        """Hierarchical per-dimension channel counts (`decode_wm`'s output) -> per-layer output counts.

        Each group lists the output channels of its layers in definition order, so channels tied by a
        residual add or a depthwise conv appear once per layer that produces them.
        """
        return self._widths.decode_ch(ch)

    def set_real_ch(self, real_ch: Any) -> None:
        """Activate the subnet whose layers have the per-layer output counts `real_ch` (`decode_ch`'s form).

        Layers tied to one dimension must agree, and each count must be selectable by its dimension;
        otherwise `InvalidSubnetError` names the layer. Depths stay as they are.
        """
        self._widths.set_real_ch(real_ch)

    # -- extraction (`tailor.ops.extract`) ------------------------------------------------------------
    def extract(self, sub: Subnet | None = None) -> fx.GraphModule:
        """A plain torch module computing `sub` (default: the active subnet) with copied weights.

        The result holds only ordinary `nn.Conv2d`/`nn.Linear`/`nn.BatchNorm2d`/... modules (no
        tailor code), matches the supernet's output in eval mode, and exports to ONNX.
        """
        if sub is not None:
            with self.activated(sub):
                return self.extract()
        self.active_subnet  # noqa: B018 - makes sure some plan is applied
        source, graph = self._traced_for_extraction()
        return extract_graph(source, graph, type(self).__name__, self.training)
