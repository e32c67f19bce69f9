"""Latency without measuring every subnet: a per-layer lookup table and a least-squares predictor.

There are far more subnets than can be timed, so search needs a cheap latency estimate. Two tools,
both fitted to measurements and reporting their error on held-out subnets (never a bare guess):

- `LayerTable`: the latency of each distinct layer (conv/linear with its shapes) measured once in
  eager PyTorch; a subnet's estimate is the sum over its layers. Layers recur across subnets, so
  the table stays small.
- `LatencyPredictor`: a linear model `latency ~ w . features(sub) + b`, fitted with numpy least squares
  on measured subnets at one batch size. Features (from the extracted graph and shape propagation):
  MACs, activation elements written (memory traffic), weight elements, number of ops, and, when a
  `LayerTable` is given, its sum. `error_report` gives MAPE and worst error on held-out subnets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from tailor.errors import ProfileError
from tailor.export._common import check_positive_int, input_shape_of, static_subnet
from tailor.ops import ElasticModel
from tailor.space import Subnet

FEATURES = ("macs", "activations", "weights", "ops")


@dataclass(frozen=True)
class LayerInfo:
    """One conv/linear call in an extracted subnet: a hashable key for the lookup table, and its cost."""

    key: tuple
    module: nn.Module = field(compare=False, hash=False, repr=False)
    input_shape: tuple[int, ...] = field(compare=False, hash=False)


def _shaped_graph(model: ElasticModel, sub: Subnet, batch_size: int, shape: Sequence[int]) -> fx.GraphModule:
    static = static_subnet(model, sub)
    with torch.inference_mode():
        ShapeProp(static).propagate(torch.zeros((batch_size, *shape)))
    return static


def _meta_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def subnet_layers(model: ElasticModel, sub: Subnet, batch_size: int = 1, input_shape: Sequence[int] | None = None):
    """The conv/linear layers of the extracted subnet with their input shapes (for `LayerTable`)."""
    shape = input_shape_of(model, input_shape)
    static = _shaped_graph(model, sub, batch_size, shape)
    layers = []
    for node in static.graph.nodes:
        if node.op != "call_module":
            continue
        module = static.get_submodule(str(node.target))
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or not isinstance(node.args[0], fx.Node):
            continue
        in_shape = _meta_shape(node.args[0])
        if in_shape is None:
            continue
        if isinstance(module, nn.Conv2d):
            key = ("conv", module.in_channels, module.out_channels, module.kernel_size, module.stride,
                   module.padding, module.groups, module.bias is not None, in_shape)  # fmt: skip
        else:
            key = ("linear", module.in_features, module.out_features, module.bias is not None, in_shape)
        layers.append(LayerInfo(key, module, in_shape))
    return layers


def features(model: ElasticModel, sub: Subnet, batch_size: int = 1, input_shape: Sequence[int] | None = None):
    """`{macs, activations, weights, ops}` of one batch through the extracted subnet (see module docstring)."""
    shape = input_shape_of(model, input_shape)
    static = _shaped_graph(model, sub, batch_size, shape)
    total = dict.fromkeys(FEATURES, 0.0)
    for node in static.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        out = _meta_shape(node)
        out_elems = float(np.prod(out)) if out else 0.0
        total["ops"] += 1
        total["activations"] += out_elems
        if node.op == "call_module":
            module = static.get_submodule(str(node.target))
            total["weights"] += sum(p.numel() for p in module.parameters(recurse=False))
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                total["macs"] += out_elems * module.in_channels // module.groups * kh * kw
            elif isinstance(module, nn.Linear):
                total["macs"] += out_elems * module.in_features
    return total


class LayerTable:
    """Measured eager-PyTorch latency (ms, median) of each distinct conv/linear layer, and their sums."""

    def __init__(self, threads: int = 1, warmup: int = 3, repeats: int = 15) -> None:
        self.threads = check_positive_int("threads", threads)
        self.warmup = warmup
        self.repeats = check_positive_int("repeats", repeats)
        self.table: dict[tuple, float] = {}

    def _measure(self, layer: LayerInfo) -> float:
        x = torch.randn(layer.input_shape)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for _ in range(self.warmup):
                    layer.module(x)
                samples = []
                for _ in range(self.repeats):
                    start = time.perf_counter_ns()
                    layer.module(x)
                    samples.append((time.perf_counter_ns() - start) / 1e6)
        finally:
            torch.set_num_threads(before)
        return float(np.median(samples))

    def estimate(self, model: ElasticModel, sub: Subnet, batch_size: int = 1, input_shape=None) -> float:
        """Sum of the table's entries over the subnet's layers, measuring layers not yet in the table."""
        total = 0.0
        for layer in subnet_layers(model, sub, batch_size, input_shape):
            if layer.key not in self.table:
                self.table[layer.key] = self._measure(layer)
            total += self.table[layer.key]
        return total

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class ErrorReport:
    """Prediction error on held-out subnets: mean and worst absolute percentage error, and the count."""

    mape: float
    max_ape: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mape": self.mape, "max_ape": self.max_ape, "n": self.n}


class LatencyPredictor:
    """Least-squares linear latency model over subnet features at one batch size (ms).

    `fit(model, subs, latencies_ms)` then `predict(sub)`. With `table=LayerTable(...)` the table's
    estimate is one more feature. Coefficients are in `coef` (feature order `feature_names`, last the bias).
    """

    def __init__(
        self,
        model: ElasticModel,
        batch_size: int = 1,
        input_shape: Sequence[int] | None = None,
        table: LayerTable | None = None,
    ) -> None:
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.input_shape = input_shape_of(model, input_shape)
        self.table = table
        self.feature_names = (*FEATURES, *(("table_ms",) if table is not None else ()), "bias")
        self.coef: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    def _row(self, sub: Subnet) -> list[float]:
        f = features(self.model, sub, self.batch_size, self.input_shape)
        row = [f[k] for k in FEATURES]
        if self.table is not None:
            row.append(self.table.estimate(self.model, sub, self.batch_size, self.input_shape))
        return [*row, 1.0]

    def fit(self, subs: Sequence[Subnet], latencies_ms: Sequence[float] | Mapping[Subnet, float]) -> LatencyPredictor:
        """Fit to measured latencies (ms) of `subs` (a sequence aligned with `subs`, or a mapping)."""
        subs = list(subs)
        y = [latencies_ms[s] for s in subs] if isinstance(latencies_ms, Mapping) else list(latencies_ms)
        if len(y) != len(subs):
            raise ProfileError(f"fit: {len(subs)} subnets but {len(y)} latencies")
        if len(subs) < 2:
            raise ProfileError(f"fit needs at least 2 measured subnets, got {len(subs)}")
        if any(not np.isfinite(v) or v <= 0 for v in y):
            raise ProfileError("fit: latencies must be positive finite milliseconds")
        X = np.asarray([self._row(s) for s in subs], dtype=np.float64)
        scale = np.abs(X).max(axis=0)
        scale[scale == 0] = 1.0
        self._scale = scale
        # relative (percentage) error is what matters across cheap and expensive subnets: weight rows by 1/y
        yv = np.asarray(y, dtype=np.float64)
        coef, *_ = np.linalg.lstsq(X / scale / yv[:, None], np.ones_like(yv), rcond=None)
        self.coef = coef / scale
        return self

    def predict(self, sub: Subnet) -> float:
        """Predicted latency (ms) of `sub` at the fitted batch size."""
        if self.coef is None:
            raise ProfileError("LatencyPredictor.predict called before fit")
        return float(np.dot(self._row(sub), self.coef))

    def error_report(
        self, subs: Sequence[Subnet], latencies_ms: Sequence[float] | Mapping[Subnet, float]
    ) -> ErrorReport:
        """MAPE and worst percentage error of `predict` against measured latencies of held-out subnets."""
        subs = list(subs)
        y = [latencies_ms[s] for s in subs] if isinstance(latencies_ms, Mapping) else list(latencies_ms)
        if not subs or len(y) != len(subs):
            raise ProfileError(f"error_report: {len(subs)} subnets but {len(y)} latencies")
        ape = [abs(self.predict(s) - t) / t * 100 for s, t in zip(subs, y)]
        return ErrorReport(float(np.mean(ape)), float(np.max(ape)), len(ape))
