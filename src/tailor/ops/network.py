"""`ElasticModel`: the base class of every supernet (SubNetAct's actuation, once per subnet).

A model built from elastic ops declares, on each op, which width dimension drives which channels,
and puts blocks with elastic depth into `ElasticStage`s. From that the base class does the rest:
`activate(sub)` computes each op's configuration once per subnet (a *plan*, cached) and afterwards
switches by assigning those configurations in place — no weights are copied or sliced then.
`extract(sub)` traces the active network with `torch.fx` and returns a `GraphModule` made only of
ordinary torch modules holding copies of the active weights and statistics.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from tailor.errors import InvalidSubnetError, SubnetNormFallbackWarning, UnsupportedModelError
from tailor.ops.base import ElasticOp
from tailor.ops.conv import _WeightSlice
from tailor.ops.extract import extract_graph, trace_with_ops_as_leaves
from tailor.ops.norm import ElasticBatchNorm2d
from tailor.ops.select import ElasticStage
from tailor.space import SearchSpace, Subnet, WidthDim

#: Plans kept per model before the oldest are dropped (a plan is a tuple of small configs).
PLAN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _IndexEntry:
    name: str
    module: nn.Module
    # (stage, block position) pairs enclosing this module: it runs only if each stage's depth > position
    conditions: tuple[tuple[ElasticStage, int], ...]


@dataclass(frozen=True)
class _Plan:
    subnet: Subnet  # canonical form of the activated subnet
    assignments: tuple[tuple[nn.Module, Any], ...]
    norms: tuple[tuple[str, ElasticBatchNorm2d], ...]  # SubnetNorm layers that run in this subnet


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

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise InvalidSubnetError(f"ElasticModel needs a SearchSpace, got {type(space).__name__}")
        self.space = space
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "_index_cache", None)
        object.__setattr__(self, "_active_plan", None)

    # -- structure ----------------------------------------------------------------------------------
    def _index(self) -> tuple[_IndexEntry, ...]:
        if self._index_cache is None:
            entries: list[_IndexEntry] = []
            self._collect(self, "", (), entries)
            self._check_against_space(entries)
            object.__setattr__(self, "_index_cache", tuple(entries))
        return self._index_cache  # type: ignore[return-value]

    def _collect(self, module: nn.Module, prefix: str, conditions: tuple, out: list[_IndexEntry]) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, ElasticOp):
                out.append(_IndexEntry(name, child, conditions))
            elif isinstance(child, ElasticStage):
                out.append(_IndexEntry(name, child, conditions))
                for position, block in enumerate(child.blocks):
                    self._collect(block, f"{name}.blocks.{position}.", conditions + ((child, position),), out)
                    if isinstance(block, (ElasticOp, ElasticStage)):
                        out.append(_IndexEntry(f"{name}.blocks.{position}", block, conditions + ((child, position),)))
            else:
                self._collect(child, f"{name}.", conditions, out)

    def _check_against_space(self, entries: list[_IndexEntry]) -> None:
        for entry in entries:
            module = entry.module
            if isinstance(module, ElasticStage):
                dim = self._lookup(entry.name, "depth", module.depth_dim)
                if dim.max > len(module.blocks):
                    raise UnsupportedModelError(
                        f"layer {entry.name!r}: depth dimension {dim.name!r} allows {dim.max} blocks, the stage has {len(module.blocks)}"
                    )
                self._check_skippable(entry.name, module, dim.min)
                continue
            for dim_name, (channels, step) in module.width_dims().items():
                dim = self._op_width_dim(entry.name, dim_name)
                if dim.channels != channels:
                    raise UnsupportedModelError(
                        f"layer {entry.name!r}: width dimension {dim_name!r} has {dim.channels} channels, the layer {channels}"
                    )
                if dim.step % step:
                    raise UnsupportedModelError(
                        f"layer {entry.name!r}: width dimension {dim_name!r} has step {dim.step}, the layer needs a multiple of {step}"
                    )

    @staticmethod
    def _check_skippable(name: str, stage: ElasticStage, min_depth: int) -> None:
        """Blocks that a subnet may skip must keep the stage's resolution (no strided conv or pooling)."""
        for position in stage.skippable_positions(min_depth):
            for sub_name, sub in stage.blocks[position].named_modules():
                strided = isinstance(sub, nn.Conv2d) and sub.stride != (1, 1)
                if strided or isinstance(sub, (nn.MaxPool2d, nn.AvgPool2d)):
                    path = ".".join(part for part in (name, "blocks", str(position), sub_name) if part)
                    raise UnsupportedModelError(f"layer {path!r}: a block that depth may skip cannot downsample")

    def _lookup(self, layer: str, kind: str, name: str) -> Any:
        try:
            return self.space.width_dim(name) if kind == "width" else self.space.depth_dim(name)
        except InvalidSubnetError:
            raise UnsupportedModelError(
                f"layer {layer!r}: {kind} dimension {name!r} is not in the model's space"
            ) from None

    # Hooks for models whose ops read internal channel groups that fewer space dimensions drive
    # (`tailor.convert`'s uniform mode): by default an op's width dimension is a space dimension.
    def _op_width_dim(self, layer: str, name: str) -> WidthDim:
        """The width dimension (full channels, step) that an op's dimension `name` refers to."""
        return self._lookup(layer, "width", name)

    def _op_channels(self, canonical: Subnet) -> dict[str, int]:
        """Active channels of every dimension the ops read, under a canonical subnet of the space."""
        return self.space.channels(canonical)

    def _traced_for_extraction(self) -> tuple[nn.Module, fx.Graph]:
        """(root, graph) that `extract` copies into a static module: `self`, traced with ops as leaves."""
        return self, trace_with_ops_as_leaves(self)

    def elastic_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(qualified name, module) of every elastic op and stage, in definition order."""
        for entry in self._index():
            yield entry.name, entry.module

    def invalidate_plans(self) -> None:
        """Forget cached plans and the layer index (call after replacing layers, e.g. a new head)."""
        self._plans.clear()
        object.__setattr__(self, "_index_cache", None)
        object.__setattr__(self, "_active_plan", None)

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

    # -- activation ---------------------------------------------------------------------------------
    def _plan(self, sub: Subnet) -> _Plan:
        plan = self._plans.get(sub)
        if plan is not None:
            return plan
        self.space.validate(sub)
        canonical = self.space.canonical(sub)
        plan = self._plans.get(canonical)
        if plan is None:
            plan = self._build_plan(canonical)
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[canonical] = plan
        self._plans[sub] = plan
        return plan

    def _build_plan(self, canonical: Subnet) -> _Plan:
        channels = self._op_channels(canonical)
        depths = canonical.depths
        key = canonical.id
        assignments: list[tuple[nn.Module, Any]] = []
        norms: list[tuple[str, ElasticBatchNorm2d]] = []
        for entry in self._index():
            if any(not stage.runs(position, depths[stage.depth_dim]) for stage, position in entry.conditions):
                continue  # inside a skipped block: never runs in this subnet
            module = entry.module
            try:
                if isinstance(module, ElasticStage):
                    config = module.configure(depths)
                else:
                    config = module.configure(channels, key)
            except InvalidSubnetError as exc:
                raise InvalidSubnetError(f"layer {entry.name!r}: {exc}") from None
            assignments.append((module, config))
            if isinstance(module, ElasticBatchNorm2d):
                norms.append((entry.name, module))
        return _Plan(canonical, tuple(assignments), tuple(norms))

    def activate(self, sub: Subnet) -> None:
        """Switch the supernet to run `sub` (in place; weights are shared, nothing is copied)."""
        plan = self._plans.get(sub)
        if plan is None:
            plan = self._plan(sub)
        assign = object.__setattr__
        for module, config in plan.assignments:
            assign(module, "_active", config)
        assign(self, "_active_plan", plan)
        if not self.training:
            self._warn_if_shared_stats(plan)

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
        if self._active_plan is None:
            self.activate(self.space.largest())
        return self._active_plan.subnet  # type: ignore[union-attr]

    # -- SubnetNorm statistics ----------------------------------------------------------------------
    def norm_layers(self, sub: Subnet | None = None) -> list[tuple[str, ElasticBatchNorm2d]]:
        """SubnetNorm layers that run in `sub` (default: the active subnet)."""
        plan = self._plan(sub) if sub is not None else self._plan(self.active_subnet)
        return list(plan.norms)

    def stats_key(self, sub: Subnet) -> str:
        """The key under which `sub`'s SubnetNorm statistics are stored (its canonical id)."""
        return self._plan(sub).subnet.id

    def has_norm_stats(self, sub: Subnet) -> bool:
        """Whether every SubnetNorm layer that `sub` runs holds statistics of its own for it."""
        plan = self._plan(sub)
        key = plan.subnet.id
        return all(bn.has_subnet_stats(key) for _, bn in plan.norms)

    @property
    def uses_shared_norm_stats(self) -> bool:
        """True when the active subnet lacks its own statistics in some layer (eval uses shared ones)."""
        return bool(self.norm_layers()) and not self.has_norm_stats(self.active_subnet)

    def calibrated_subnet_keys(self) -> set[str]:
        """Keys of subnets that hold statistics in at least one SubnetNorm layer."""
        keys: set[str] = set()
        for _, module in self.elastic_layers():
            if isinstance(module, ElasticBatchNorm2d):
                keys.update(module.subnet_stats_keys())
        return keys

    def _warn_if_shared_stats(self, plan: _Plan) -> None:
        key = plan.subnet.id
        missing = [name for name, bn in plan.norms if key not in bn._subnet_stats]
        if missing and any(bn._subnet_stats for _, bn in plan.norms):
            warnings.warn(
                f"subnet {key} has no SubnetNorm statistics of its own in {len(missing)} layer(s) "
                f"(first: {missing[0]!r}); eval uses the shared running statistics. "
                "Calibrate it with tailor.calibrate(model, [subnet], loader).",
                SubnetNormFallbackWarning,
                stacklevel=3,
            )

    def norm_stats_bytes(self) -> dict[str, int]:
        """Bytes of per-subnet statistics against bytes of shared weights (parameters + buffers)."""
        stats = 0
        for _, module in self.elastic_layers():
            if isinstance(module, ElasticBatchNorm2d):
                stats += module.subnet_stats_bytes()
        shared = sum(p.numel() * p.element_size() for p in self.parameters())
        shared += sum(
            b.numel() * b.element_size()
            for name, b in self.named_buffers()
            if not name.rsplit(".", 1)[-1].startswith(("subnet_mean_", "subnet_var_"))
        )
        return {"subnet_stats_bytes": stats, "shared_bytes": shared, "subnets": len(self.calibrated_subnet_keys())}

    def train(self, mode: bool = True) -> ElasticModel:
        super().train(mode)
        if not mode and self._active_plan is not None:
            self._warn_if_shared_stats(self._active_plan)
        return self

    def clear_cache(self) -> None:
        """Drop every op's eval-mode weight slices (only needed after editing weights via `.data`)."""
        for _, module in self.elastic_layers():
            if isinstance(module, ElasticOp):
                module.clear_cache()

    def set_weight_cache(self, entries: int) -> None:
        """How many sliced-weight copies each op keeps for no-grad forwards (0: slice on every call)."""
        if entries < 0:
            raise InvalidSubnetError(f"weight cache entries must be >= 0, got {entries}")
        for _, module in self.elastic_layers():
            if isinstance(module, ElasticOp):
                module.cache_entries = entries
                module.clear_cache()

    def set_in_place_grad(self, enabled: bool) -> None:
        """Sliced conv/linear weights add their gradient into `.grad` in place (no full-size temporaries).

        Used by the supernet trainer, which accumulates several subnets' gradients per step and
        all-reduces `.grad` itself: with this on, parameter hooks do not see sliced gradients.
        """
        for _, module in self.elastic_layers():
            if isinstance(module, _WeightSlice):
                module.in_place_grad = bool(enabled)

    # -- the slimmable-models width protocol ---------------------------------------------------------
    # Width dimensions are grouped by the text before their first dot ("stem", "stage2", "head", ...):
    # that grouping is the hierarchy of the seed's `channel_space`, `decode_wm` and `decode_ch`.
    @property
    def search_dim(self) -> int:
        """Number of independent width dimensions (the length of a `wm` vector)."""
        return self.space.search_dim

    @staticmethod
    def _group_of(dim: str) -> str:
        return dim.split(".", 1)[0]

    def _groups(self) -> list[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for dim in self.space.widths:
            groups.setdefault(self._group_of(dim.name), []).append(dim.name)
        return list(groups.items())

    def _nest(self, values: dict[str, Any]) -> list[Any]:
        """Per-dimension values arranged as the hierarchy: a lone undotted dimension is a scalar."""
        return [values[names[0]] if names == [group] else [values[n] for n in names] for group, names in self._groups()]

    def _flatten(self, nested: Any, what: str) -> dict[str, Any]:
        """Inverse of `_nest`: hierarchical values -> {dimension: value}, shape-checked."""
        groups = self._groups()
        if not isinstance(nested, (list, tuple)) or len(nested) != len(groups):
            raise InvalidSubnetError(f"{what}: expected {len(groups)} groups, got {nested!r:.200}")
        flat: dict[str, Any] = {}
        for (group, dims), item in zip(groups, nested):
            items = [item] if dims == [group] else item
            if not isinstance(items, (list, tuple)) or len(items) != len(dims):
                raise InvalidSubnetError(f"{what}: group {group!r} needs {len(dims)} value(s), got {item!r:.200}")
            flat.update(zip(dims, items))
        return flat

    @property
    def channel_space(self) -> list[Any]:
        """Full channel count of every width dimension, grouped per stage (the seed's `channel_space`)."""
        return self._nest({d.name: d.channels for d in self.space.widths})

    def decode_wm(self, wm: Any) -> list[Any]:
        """Flat width multipliers (len `search_dim`) -> hierarchical channel counts, one per dimension.

        Values are read as `space.from_wm` reads them; a wrong length or a value outside [0, 1]
        raises `InvalidSubnetError`.
        """
        sub = self.space.from_wm(list(wm))
        return self._nest(self.space.channels(sub))

    def _layer_dims(self) -> list[tuple[str, str, str]]:
        """(group, layer name, width dimension) of every op whose output channels are elastic."""
        layers = []
        for name, module in self.elastic_layers():
            out_dim = getattr(module, "out_dim", None)
            if out_dim is not None:
                layers.append((self._group_of(out_dim), name, out_dim))
        return layers

    def decode_ch(self, ch: Any) -> list[Any]:
        """Hierarchical per-dimension channel counts (`decode_wm`'s output) -> per-layer output counts.

        Each group lists the output channels of its layers in definition order, so channels tied by a
        residual add or a depthwise conv appear once per layer that produces them.
        """
        counts = self._decode_ch_counts(ch)
        per_group: dict[str, list[int]] = {group: [] for group, _ in self._groups()}
        for group, _, dim in self._layer_dims():
            per_group[group].append(counts[dim])
        return [per_group[group] for group, _ in self._groups()]

    def _decode_ch_counts(self, ch: Any) -> dict[str, int]:
        """`decode_ch`'s input flattened to {dimension: channel count}, each checked against its dimension."""
        counts = self._flatten(ch, "decode_ch")
        for dim in self.space.widths:
            count = counts[dim.name]
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= dim.channels:
                raise InvalidSubnetError(f"decode_ch: dimension {dim.name!r} = {count!r} is not in [1, {dim.channels}]")
        return counts

    def _real_ch_counts(self, real_ch: Any, layers: list[tuple[str, str, str]], tied: str) -> dict[str, int]:
        """Parse `set_real_ch`'s per-group, per-layer counts into {key: count}, checking tied layers agree.

        `layers` lists (group, layer name, key) in `decode_ch`'s order; layers with one key must agree.
        """
        groups = [group for group, _ in self._groups()]
        if not isinstance(real_ch, (list, tuple)) or len(real_ch) != len(groups):
            raise InvalidSubnetError(f"set_real_ch: expected {len(groups)} groups, got {real_ch!r:.200}")
        given = dict(zip(groups, real_ch))
        counts: dict[str, int] = {}
        position = dict.fromkeys(groups, 0)
        for group, name, key in layers:
            values = given[group]
            if not isinstance(values, (list, tuple)) or position[group] >= len(values):
                raise InvalidSubnetError(f"set_real_ch: group {group!r} has too few layer counts (missing {name!r})")
            value = values[position[group]]
            position[group] += 1
            if counts.setdefault(key, value) != value:
                raise InvalidSubnetError(
                    f"set_real_ch: layer {name!r} has {value} channels but {tied} {key!r} is tied to {counts[key]}"
                )
        for group in groups:
            if position[group] != len(given[group]):
                raise InvalidSubnetError(
                    f"set_real_ch: group {group!r} has {len(given[group])} counts for {position[group]} layers"
                )
        return counts

    def set_real_ch(self, real_ch: Any) -> None:
        """Activate the subnet whose layers have the per-layer output counts `real_ch` (`decode_ch`'s form).

        Layers tied to one dimension must agree, and each count must be selectable by its dimension;
        otherwise `InvalidSubnetError` names the layer. Depths stay as they are.
        """
        counts = self._real_ch_counts(real_ch, self._layer_dims(), "dimension")
        widths = {}
        for dim in self.space.widths:
            count = counts[dim.name]
            valid = isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= dim.channels
            width = dim.width_of_channels(count) if valid else None
            if width is None:
                raise InvalidSubnetError(f"set_real_ch: dimension {dim.name!r} cannot run {count!r} channels")
            widths[dim.name] = width
        self.activate(Subnet(widths, self.active_subnet.depths))

    # -- extraction ---------------------------------------------------------------------------------
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
