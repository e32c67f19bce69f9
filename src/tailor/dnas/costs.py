"""Cost models for DNAS: what one alternative (a branch at its real input shape) costs.

A `CostModel` prices a module run on given inputs (one sample, batch axis 1). `SuperNet` calls it for every
branch of every `SuperNetModule` on the tensors that shape propagation delivered to that module, and, with
`full_cost=True`, for the rest of the network (`fixed`). Built in, counted the way `tailor.cost` counts:

- `ParamsCost` ("params"): parameters of the module (weights, biases, norm affine; no buffers), as
  `tailor.cost.params`. Independent of the input, so a module called twice is counted once.
- `MacsCost` ("macs"): `FlopCounterMode` FLOPs / 2 of one forward pass, as `tailor.cost.macs` (convolutions
  and matrix products; elementwise ops, norms and pooling count 0). Summed over calls.
- `LatencyCost` ("latency"): measured latency in ms on a runtime of `tailor.cost.runtimes` (eager PyTorch by
  default; any registered runtime, e.g. "onnxruntime"; median of `repeats` timed calls after `warmup`, fixed
  intra-op threads, on the inputs' device, synchronised), the measurement `tailor.cost.LatencyTable` makes for
  a block, here made for a whole branch at its input shape. Results are cached by the branch's structure, input
  shape and runtime, in the cost model or in a shared `LatencyTable`'s table. Summed over calls.

`resolve_costs` turns what `SuperNet(cost=...)` accepts into named cost models: a `CostModel`, the names
"params" / "macs" / "latency", the functions `tailor.cost.params` / `macs` / `latency` (PLiNIO passes the cost
function), a callable `fn(module, x) -> float`, or a dict / list of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tailor.cost as tailor_cost
from tailor.checks import non_negative_int, positive_int
from tailor.cost import LayerTable
from tailor.dnas.module import SuperNetError, SuperNetModule
from tailor.errors import ProfileError

__all__ = [
    "CostModel",
    "CostSpec",
    "FunctionCost",
    "LatencyCost",
    "MacsCost",
    "ParamsCost",
    "resolve_costs",
]


def unique_parameters(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The parameters of `modules`, each once (a shared parameter is not counted twice)."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


class CostModel:
    """What running a module costs, for one input sample. Subclass and override `measure` (and `fixed`)."""

    name: str = "cost"
    # True: the cost is paid on every call (MACs, latency); False: once per module however often it runs (params)
    per_call: bool = True

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        """Cost of `module(*inputs)`; `inputs` hold one sample (batch axis 1) and the module is in eval mode."""
        raise NotImplementedError

    def fixed(self, model: nn.Module, inputs: Sequence[torch.Tensor], searchable: Sequence[SuperNetModule]) -> float:
        """Cost of the network outside the searchable modules.

        `SuperNet` calls this while each searchable module is a stand-in that returns zeros of the right
        shape at no cost, so by default it is `measure(model, *inputs)`.
        """
        return self.measure(model, *inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ParamsCost(CostModel):
    """Number of parameters (weights, biases and norm affine; no buffers), as `tailor.cost.params`."""

    name = "params"
    per_call = False

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        return float(sum(p.numel() for p in unique_parameters([module])))

    def fixed(self, model: nn.Module, inputs: Sequence[torch.Tensor], searchable: Sequence[SuperNetModule]) -> float:
        inside = {id(p) for p in unique_parameters(searchable)}
        return float(sum(p.numel() for p in unique_parameters([model]) if id(p) not in inside))


class MacsCost(CostModel):
    """Multiply-accumulates of one forward pass: `FlopCounterMode` FLOPs / 2, as `tailor.cost.macs`."""

    name = "macs"

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module(*inputs)
        return float(counter.get_total_flops() // 2)


def structure_key(module: nn.Module) -> tuple:
    """A hashable description of a module's computation: class, repr, and parameter/buffer shapes and dtypes."""
    tensors = tuple(
        (name, tuple(t.shape), str(t.dtype), str(t.device))
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    )
    return (type(module).__module__, type(module).__qualname__, repr(module), tensors)


class LatencyCost(CostModel):
    """Measured latency (ms) of each branch in isolation at its input shape, cached, on one runtime.

    `runtime` is a `tailor.cost.runtimes` name or `Runtime` (default "torch", eager PyTorch; ONNX runtimes
    export each branch). With `table=LatencyTable(...)` the table's runtime, threads, warmup and repeats are
    used and the measurements are stored in (and looked up from) `table.table`, so several supernets and the
    subnet estimator share them. `measurements` counts the timings actually made (cache misses). Runtimes
    time single-input modules: a branch called with several tensors is refused.
    """

    name = "latency"

    def __init__(
        self,
        threads: int | None = None,
        warmup: int | None = None,
        repeats: int | None = None,
        batch_size: int = 1,
        table: LayerTable | None = None,
        *,
        runtime: str | tailor_cost.Runtime | None = None,
    ) -> None:
        if table is not None and not isinstance(table, LayerTable):
            raise SuperNetError(f"table must be a tailor.cost.LatencyTable, got {type(table).__name__}")
        try:
            self._runtime = tailor_cost.get_runtime(runtime if runtime is not None else (table.runtime if table is not None else "torch"))
        except ProfileError as exc:
            raise SuperNetError(f"LatencyCost: {exc}") from None
        if table is not None and self._runtime.name != table.runtime:
            raise SuperNetError(
                f"LatencyCost: runtime {self._runtime.name!r} conflicts with the LatencyTable's runtime {table.runtime!r}"
            )
        defaults = (table.threads, table.warmup, table.repeats) if table is not None else (1, 3, 15)
        chosen = []
        for arg, value, default in zip(("threads", "warmup", "repeats"), (threads, warmup, repeats), defaults):
            if value is not None and table is not None and value != default:
                raise SuperNetError(f"LatencyCost: {arg}={value!r} conflicts with the LayerTable's {arg}={default!r}")
            chosen.append(default if value is None else value)
        self.threads = None if chosen[0] is None else positive_int("threads", chosen[0], SuperNetError)
        self.warmup = non_negative_int("warmup", chosen[1], SuperNetError)
        self.repeats = positive_int("repeats", chosen[2], SuperNetError)
        self.batch_size = positive_int("batch_size", batch_size, SuperNetError)
        self.table: dict[tuple, float] = table.table if table is not None else {}
        self.measurements = 0

    @property
    def runtime(self) -> str:
        return self._runtime.name

    def _time(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
        if len(inputs) != 1:
            raise SuperNetError(
                f"LatencyCost times single-input modules on a runtime; {type(module).__name__} takes {len(inputs)}"
            )
        try:
            prepared = self._runtime.prepare_module(
                module, tuple(inputs[0].shape[1:]), device=inputs[0].device, threads=self.threads
            )
            samples = prepared.samples(self.batch_size, self.warmup, self.repeats)
        except ProfileError as exc:
            raise SuperNetError(f"LatencyCost on {self.runtime}: {exc}") from None
        self.measurements += 1
        return float(np.median(samples))

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        key = (
            "dnas-branch",
            structure_key(module),
            tuple(((self.batch_size, *t.shape[1:]), str(t.dtype)) for t in inputs),
            self.threads,
            self.runtime,
        )
        if key not in self.table:
            self.table[key] = self._time(module, inputs)
        return self.table[key]

    def fixed(self, model: nn.Module, inputs: Sequence[torch.Tensor], searchable: Sequence[SuperNetModule]) -> float:
        return self._time(model, inputs)  # the network with stand-ins: not a reusable entry

    def __repr__(self) -> str:
        return (
            f"LatencyCost(runtime={self.runtime!r}, threads={self.threads}, warmup={self.warmup}, "
            f"repeats={self.repeats}, batch_size={self.batch_size}, cached={len(self.table)})"
        )


class FunctionCost(CostModel):
    """A user function `fn(module, x) -> float` as a per-call cost model named after the function."""

    def __init__(self, fn: Callable[..., float], name: str | None = None, per_call: bool = True) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.per_call = per_call

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        value = self.fn(module, *inputs)
        if isinstance(value, torch.Tensor):
            value = value.item()
        value = float(value)
        if not math.isfinite(value):
            raise SuperNetError(f"cost model {self.name!r} returned {value} for a {type(module).__name__}")
        return value


CostSpec = CostModel | str | Callable[..., float]

_BY_NAME: dict[str, type[CostModel]] = {"params": ParamsCost, "macs": MacsCost, "latency": LatencyCost}


def _resolve_one(spec: object) -> CostModel:
    if isinstance(spec, CostModel):
        return spec
    if isinstance(spec, str):
        if spec not in _BY_NAME:
            from tailor.dnas.cost_specs import PLINIO_COSTS  # PLiNIO's names (ops, params_no_bias, ...)

            if spec in PLINIO_COSTS:
                return PLINIO_COSTS[spec]
            known = sorted({*_BY_NAME, *PLINIO_COSTS})
            raise SuperNetError(f"unknown cost model {spec!r}; expected one of {known} or a CostModel")
        return _BY_NAME[spec]()
    # PLiNIO passes the cost function itself (cost=params): accept tailor.cost's functions the same way
    if spec is tailor_cost.params:
        return ParamsCost()
    if spec is tailor_cost.macs:
        return MacsCost()
    if spec is tailor_cost.latency or spec is tailor_cost.latency_table:
        return LatencyCost()
    if spec is tailor_cost.peak_memory or spec is tailor_cost.energy:
        raise SuperNetError(
            f"{spec.__name__} is not a per-branch cost model; use params, macs, latency or a CostModel"  # type: ignore[attr-defined]
        )
    if isinstance(spec, type) and issubclass(spec, CostModel):
        return spec()
    if callable(spec):
        return FunctionCost(spec)
    raise SuperNetError(
        f"cannot use {spec!r} as a cost model; expected a CostModel, a name {sorted(_BY_NAME)} or a callable"
    )


def resolve_costs(cost: object) -> tuple[dict[str, CostModel], bool]:
    """Named cost models for a `cost=` argument, and whether it named several (PLiNIO's dict form, or a list)."""
    if isinstance(cost, Mapping):
        if not cost:
            raise SuperNetError("cost: an empty mapping; give at least one cost model")
        models = {}
        for name, spec in cost.items():
            if not isinstance(name, str) or not name:
                raise SuperNetError(f"cost names must be non-empty strings, got {name!r}")
            models[name] = _resolve_one(spec)
        return models, True
    if isinstance(cost, (list, tuple)):
        if not cost:
            raise SuperNetError("cost: an empty sequence; give at least one cost model")
        models = {}
        for spec in cost:
            model = _resolve_one(spec)
            if model.name in models:
                raise SuperNetError(f"cost: two cost models are named {model.name!r}; use a dict to name them apart")
            models[model.name] = model
        return models, True
    model = _resolve_one(cost)
    return {model.name: model}, False
