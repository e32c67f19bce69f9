"""Where a candidate's cost comes from: measurement, a `Profile`, or a fitted `LatencyPredictor`.

A `CostSource` supplies some of the cost metrics (`latency` ms, `macs`, `memory` bytes, `params`) of a
subnet. An `Evaluator` takes a list of sources in priority order and asks the first that supplies a
metric, so a profile or a predictor can stand in for slow measurements while the rest is measured.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from tailor.checks import one_of
from tailor.cost import ErrorReport, LatencyPredictor, Profile, latency, macs, params, peak_memory
from tailor.cost.runtimes.base import runtime_argument
from tailor.errors import InvalidSubnetError, ProfileError, SubnetNormFallbackWarning
from tailor.ops import ElasticModel
from tailor.search.metrics import COST_METRICS, SearchError
from tailor.space import SearchSpace, Subnet

PERCENTILES = ("p50", "p90", "p99")


class CostSource:
    """Supplies `metrics` (a subset of latency, macs, memory, params) of subnets; `describe()` says how."""

    metrics: frozenset[str] = frozenset()

    def value(self, sub: Subnet, metric: str) -> float:
        """The `metric` of `sub` (a subnet of the space, in canonical form)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON description recorded in fronts and used to tell studies apart."""
        return {"source": type(self).__name__, "metrics": sorted(self.metrics)}


def _quiet(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a cost function without the SubnetNorm fallback warning (costs do not depend on statistics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        return call(*args, **kwargs)


class MeasuredCost(CostSource):
    """Costs measured with `tailor.cost`: latency (`percentile` of `repeats` timed calls), MACs, params, memory.

    `memory="measure"` runs `tailor.cost.peak_memory` (a fresh process per subnet: seconds each);
    `memory="estimate"` uses `estimate_memory` (weights plus the peak of live activations, from shapes).
    Latency is measured on `runtime` (`tailor.cost.list_runtimes()`, default "torch"); `backend=` is its
    deprecated name.
    """

    metrics = frozenset(COST_METRICS)

    def __init__(
        self,
        model: ElasticModel,
        input_shape: Sequence[int] | None = None,
        *,
        runtime: str | None = None,
        batch_size: int = 1,
        threads: int = 1,
        warmup: int = 5,
        repeats: int = 30,
        percentile: str = "p50",
        memory: str = "measure",
        backend: str | None = None,
    ) -> None:
        one_of("MeasuredCost: percentile", percentile, PERCENTILES, SearchError)
        one_of("MeasuredCost: memory", memory, ("measure", "estimate"), SearchError)
        self.model = model
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.runtime = runtime_argument(runtime, backend, "torch", "MeasuredCost")
        self.batch_size, self.threads = batch_size, threads
        self.warmup, self.repeats, self.percentile, self.memory = warmup, repeats, percentile, memory

    def value(self, sub: Subnet, metric: str) -> float:
        if metric == "latency":
            stats = _quiet(
                latency, self.model, sub, self.batch_size, self.runtime, self.threads,
                self.warmup, self.repeats, self.input_shape,
            )  # fmt: skip
            return float(getattr(stats, self.percentile))
        if metric == "macs":
            return float(_quiet(macs, self.model, sub, self.input_shape))
        if metric == "params":
            return float(_quiet(params, self.model, sub))
        if metric == "memory":
            if self.memory == "estimate":
                return float(estimate_memory(self.model, sub, self.input_shape, self.batch_size))
            stats = _quiet(peak_memory, self.model, sub, self.input_shape, self.batch_size, threads=self.threads)
            return float(stats.peak_bytes)
        raise SearchError(f"MeasuredCost does not supply {metric!r}")

    @property
    def backend(self) -> str:
        """Deprecated name of `runtime`."""
        warnings.warn("MeasuredCost.backend is deprecated; use .runtime", DeprecationWarning, stacklevel=2)
        return self.runtime

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "latency": f"{self.percentile} of {self.repeats} timed calls, {self.runtime}, batch {self.batch_size}, "
            f"{self.threads} thread(s)",
            "memory": "tailor.cost.peak_memory (measured)" if self.memory == "measure" else "estimate_memory",
            "input_shape": list(self.input_shape) if self.input_shape else None,
        }


class ProfileCost(CostSource):
    """Latency, MACs and params looked up in a `Profile` (only the subnets it lists; others raise)."""

    metrics = frozenset({"latency", "macs", "params"})

    def __init__(
        self,
        profile: Profile | str | os.PathLike[str],
        batch_size: int | None = None,
        percentile: str = "p50",
        space: SearchSpace | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else Profile.load(profile)
        one_of("ProfileCost: percentile", percentile, PERCENTILES, SearchError)
        sizes = self.profile.batch_sizes
        self.batch_size = batch_size if batch_size is not None else (sizes[0] if sizes else None)
        if self.batch_size not in sizes:
            raise ProfileError(f"ProfileCost: batch size {batch_size!r} is not measured for every subnet ({sizes})")
        self.percentile = percentile
        self.table: dict[Subnet, Any] = {}
        for entry in self.profile.subnets:
            if entry.subnet is None:
                continue
            key = entry.subnet
            if space is not None:
                try:
                    key = space.canonical(entry.subnet)
                except InvalidSubnetError as exc:
                    raise ProfileError(f"profile subnet {entry.id!r} is not in the search space: {exc}") from None
            self.table[key] = entry
        if not self.table:
            raise ProfileError("ProfileCost: the profile records no subnets (every entry lacks 'subnet')")

    def value(self, sub: Subnet, metric: str) -> float:
        entry = self.table.get(sub)
        if entry is None:
            raise ProfileError(
                f"subnet {sub.id} is not in the profile ({len(self.table)} subnets from {self.profile.model!r}); "
                "search over profiled subnets only, or add a MeasuredCost/PredictedCost after the ProfileCost"
            )
        if metric == "latency":
            return float(getattr(entry.latency_ms[self.batch_size], self.percentile))
        if metric == "macs":
            return float(entry.macs)
        if metric == "params":
            return float(entry.params)
        raise SearchError(f"ProfileCost does not supply {metric!r}")

    def covers(self, sub: Subnet) -> bool:
        return sub in self.table

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "latency": f"profile {self.profile.runtime} on {self.profile.device}, {self.percentile}, "
            f"batch {self.batch_size}",
            "subnets": len(self.table),
        }


class PredictedCost(CostSource):
    """Latency from a fitted `tailor.cost.LatencyPredictor`; `error` (its held-out `ErrorReport`) is recorded."""

    metrics = frozenset({"latency"})

    def __init__(self, predictor: LatencyPredictor, error: ErrorReport | None = None) -> None:
        if not isinstance(predictor, LatencyPredictor):
            raise SearchError(f"PredictedCost: expected a LatencyPredictor, got {type(predictor).__name__}")
        if predictor.coef is None:
            raise ProfileError("PredictedCost: the LatencyPredictor is not fitted (call fit first)")
        self.predictor = predictor
        self.error = error

    def value(self, sub: Subnet, metric: str) -> float:
        if metric != "latency":
            raise SearchError(f"PredictedCost does not supply {metric!r}")
        # a linear model can dip below zero far outside its training range; latency cannot
        return max(1e-6, _quiet(self.predictor.predict, sub))

    def describe(self) -> dict[str, Any]:
        out = {
            **super().describe(),
            "latency": f"LatencyPredictor on {list(self.predictor.feature_names)}, batch {self.predictor.batch_size}",
        }
        if self.error is not None:
            out["held_out_error"] = self.error.to_dict()
        return out


def make_sources(sources: CostSource | Sequence[CostSource]) -> tuple[CostSource, ...]:
    """A checked, non-empty tuple of cost sources."""
    items = (sources,) if isinstance(sources, CostSource) else tuple(sources)
    if not items:
        raise SearchError("cost: give at least one CostSource")
    for i, item in enumerate(items):
        if not isinstance(item, CostSource):
            raise SearchError(f"cost[{i}]: expected a CostSource, got {type(item).__name__}")
    return items


# -- memory estimate -------------------------------------------------------------------------------------
_VIEW_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "expand", "permute", "transpose"})
_VIEW_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute})


def _out_bytes(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    metas = [meta] if hasattr(meta, "shape") else (meta if isinstance(meta, (list, tuple)) else [])
    total = 0
    for m in metas:
        if m is not None and hasattr(m, "shape"):
            total += int(np.prod(m.shape)) * torch.empty((), dtype=m.dtype).element_size()
    return total


def _aliases_input(node: fx.Node, module: nn.Module | None) -> bool:
    """Whether `node`'s output shares its first input's storage (in-place activations, views)."""
    if node.op == "call_module":
        return bool(getattr(module, "inplace", False)) or isinstance(module, (nn.Identity, nn.Flatten))
    if node.op == "call_method":
        return node.target in _VIEW_METHODS or str(node.target).endswith("_")
    if node.op == "call_function":
        return bool(node.kwargs.get("inplace", False)) or node.target in _VIEW_FUNCTIONS
    return False


def estimate_memory(
    model: ElasticModel, sub: Subnet, input_shape: Sequence[int] | None = None, batch_size: int = 1
) -> int:
    """Bytes of one inference of the extracted subnet: weights and buffers plus the peak of live activations.

    Activations are sized by shape propagation; a tensor is live from the node that writes it to its last
    reader (in-place ops and views share their input's storage). It leaves out allocator overhead and
    kernel workspaces, so it is a lower bound of `tailor.cost.peak_memory`, but needs no process per subnet.
    """
    model.space.validate(sub)
    shape = tuple(input_shape) if input_shape is not None else tuple(getattr(model, "default_input_size", ()))
    if not shape:
        raise ProfileError(f"{type(model).__name__} has no default_input_size: pass input_shape=(C, H, W)")
    was_training = model.training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        model.eval()
        try:
            static = model.extract(sub).eval()
        finally:
            model.train(was_training)
    weight_bytes = sum(t.numel() * t.element_size() for t in (*static.parameters(), *static.buffers()))
    with torch.inference_mode():
        ShapeProp(static).propagate(torch.zeros((batch_size, *shape)))
    nodes = list(static.graph.nodes)
    owner: dict[fx.Node, fx.Node] = {}  # node -> the node that allocated its storage
    size: dict[fx.Node, int] = {}
    for node in nodes:
        module = static.get_submodule(str(node.target)) if node.op == "call_module" else None
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if first is not None and _aliases_input(node, module):
            owner[node] = owner[first]
        else:
            owner[node] = node
            size[node] = _out_bytes(node) if node.op != "get_attr" else 0
    last_use: dict[fx.Node, int] = {}
    for index, node in enumerate(nodes):
        for used in node.all_input_nodes:
            last_use[owner[used]] = index
    freed_after: dict[int, list[fx.Node]] = {}
    for base, end in last_use.items():
        freed_after.setdefault(end, []).append(base)
    live = peak = 0
    for index, node in enumerate(nodes):
        if owner[node] is node:
            live += size[node]
        peak = max(peak, live)
        for base in freed_after.get(index, ()):
            live -= size.get(base, 0)
    return int(weight_bytes + peak)
