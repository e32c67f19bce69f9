"""Plans and activation (SubNetAct's actuation): per subnet, the configuration of every op that runs.

A plan is computed once per subnet (every op's `configure`, every stage's kept blocks) and cached under
the subnet and its canonical form; activating a subnet then only assigns those configurations, one
attribute store per op, which is why a switch costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from tailor.errors import InvalidSubnetError
from tailor.ops.layer_index import IndexedLayer, index_layers
from tailor.ops.norm import ElasticBatchNorm2d
from tailor.ops.select import ElasticStage
from tailor.space import Subnet

if TYPE_CHECKING:
    from tailor.ops.network import ElasticModel

#: Plans kept per model before the oldest are dropped (a plan is a tuple of small configs).
PLAN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Plan:
    """What a subnet runs: its canonical form, each running op's configuration, its SubnetNorm layers."""

    subnet: Subnet
    assignments: tuple[tuple[nn.Module, Any], ...]
    norms: tuple[tuple[str, ElasticBatchNorm2d], ...]


class Plans:
    """A model's layer index and plan cache, and the plan it runs (`active`)."""

    def __init__(self, model: ElasticModel) -> None:
        self.model = model
        self.cache: dict[Subnet, Plan] = {}
        self.active: Plan | None = None
        self._layers: tuple[IndexedLayer, ...] | None = None

    def layers(self) -> tuple[IndexedLayer, ...]:
        """The model's elastic ops and stages (indexed and checked on first use)."""
        if self._layers is None:
            self._layers = index_layers(self.model)
        return self._layers

    def invalidate(self) -> None:
        """Forget the plans, the index and the active plan (after layers were replaced)."""
        self.cache.clear()
        self._layers = None
        self.active = None

    def plan(self, sub: Subnet) -> Plan:
        """The plan of `sub` (validated against the space; built on first use)."""
        plan = self.cache.get(sub)
        if plan is not None:
            return plan
        space = self.model.space
        space.validate(sub)
        canonical = space.canonical(sub)
        plan = self.cache.get(canonical)
        if plan is None:
            plan = self._build(canonical)
        if len(self.cache) >= PLAN_CACHE_SIZE:
            self.cache.clear()
        self.cache[canonical] = plan
        self.cache[sub] = plan
        return plan

    def _build(self, canonical: Subnet) -> Plan:
        channels = self.model._op_channels(canonical)
        depths = canonical.depths
        key = canonical.id
        assignments: list[tuple[nn.Module, Any]] = []
        norms: list[tuple[str, ElasticBatchNorm2d]] = []
        for layer in self.layers():
            if not layer.runs(depths):
                continue  # inside a skipped block: never runs in this subnet
            module = layer.module
            try:
                config = (
                    module.configure(depths) if isinstance(module, ElasticStage) else module.configure(channels, key)
                )
            except InvalidSubnetError as exc:
                raise InvalidSubnetError(f"layer {layer.name!r}: {exc}") from None
            assignments.append((module, config))
            if isinstance(module, ElasticBatchNorm2d):
                norms.append((layer.name, module))
        return Plan(canonical, tuple(assignments), tuple(norms))

    def activate(self, sub: Subnet) -> Plan:
        """Assign `sub`'s configurations to its ops (in place; nothing is copied) and return its plan."""
        plan = self.cache.get(sub)
        if plan is None:
            plan = self.plan(sub)
        assign = object.__setattr__
        for module, config in plan.assignments:
            assign(module, "_active", config)
        self.active = plan
        return plan


__all__ = ["PLAN_CACHE_SIZE", "Plan", "Plans"]
