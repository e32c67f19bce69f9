"""Latency without measuring every subnet: a per-block lookup table and a least-squares predictor.

There are far more subnets than can be timed, so search needs a cheap latency estimate. Two tools,
both fitted to measurements and reporting their error on held-out subnets (never a bare guess):

- `LatencyTable`: Once-for-All's lookup table. The extracted graph is cut into blocks (see
  `subnet_blocks`); each distinct block (same ops, configurations and shapes) is timed once per batch
  size on the target runtime, as a model of its own; a subnet's estimate is the sum over its blocks.
  Blocks recur across subnets, so the table stays small (about 150 blocks cover ResNet-20's space).
- `LatencyPredictor`: a linear model `latency ~ w . x + b` at one batch size, fitted by least squares
  on measured subnets, weighted for relative error. `x`: MACs, activation elements written (memory
  traffic), weight elements, number of ops and, with a table, the table's sum and the number of blocks
  (each standalone block pays call overhead and layout conversions that the whole graph does not; the
  fit learns that correction). `error_report` gives MAPE and worst error on held-out subnets.

Why the table matters: runtimes do not cost MACs linearly. ONNX Runtime on AVX-512 pads channels to
blocks of 16, so ResNet-20's first stage costs the same at 4 and 16 channels; MACs alone predict its
latency with ~14% error, the fitted table with ~2% (`benchmarks/runtimes.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from tailor.checks import non_negative_int, positive_float
from tailor.cost.measure import CLOCKS, prepare_module
from tailor.cost.runtimes.base import PreparedModel, Runtime, check_device, get_runtime, runtime_argument
from tailor.errors import ProfileError, UnsupportedModelError
from tailor.export._common import check_positive_int, input_shape_of, static_subnet
from tailor.export.fold import fold_batchnorm
from tailor.graph import attribute, cut_points, output_shape, propagate_shapes, subgraph
from tailor.ops import ElasticModel
from tailor.space import Subnet

FEATURES = ("macs", "activations", "weights", "ops")
TABLE_FEATURES = ("table_ms", "blocks")


def features(
    model: ElasticModel, sub: Subnet, batch_size: int = 1, input_shape: Sequence[int] | None = None
) -> dict[str, float]:
    """`{macs, activations, weights, ops}` of one batch through the extracted subnet (see module docstring)."""
    batch_size = check_positive_int("batch_size", batch_size)
    shape = input_shape_of(model, input_shape)
    static = propagate_shapes(static_subnet(model, sub), torch.zeros((batch_size, *shape)))
    total = dict.fromkeys(FEATURES, 0.0)
    for node in static.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        out = output_shape(node)
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


# -- blocks ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A single-input, single-output piece of an extracted subnet, and a key equal for blocks that cost the same.

    `key` holds the block's per-sample input shape and, for each op, its kind, configuration
    (`extra_repr` and parameter shapes), wiring and output shape; weights values do not matter.
    """

    key: tuple
    module: fx.GraphModule = field(compare=False, hash=False, repr=False)
    input_shape: tuple[int, ...] = field(compare=False, hash=False)


def _signature(gm: fx.GraphModule, node: fx.Node, index: Mapping[fx.Node, Any]) -> tuple:
    def arg(value: Any) -> Any:
        if isinstance(value, fx.Node):
            if value.op == "get_attr" and value not in index:  # a constant read inside the block: its shape
                return ("attr", tuple(getattr(attribute(gm, str(value.target)), "shape", ())))
            return index[value]
        if isinstance(value, (list, tuple)):
            return tuple(arg(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, arg(v)) for k, v in value.items()))
        if isinstance(value, (torch.dtype, torch.device, slice)):
            return repr(value)
        return value

    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        params = tuple((name, tuple(p.shape)) for name, p in module.named_parameters(recurse=True))
        what: tuple = (type(module).__qualname__, module.extra_repr(), params)
    else:
        what = (getattr(node.target, "__qualname__", None) or str(node.target),)
    out = output_shape(node)
    return (node.op, what, arg(node.args), arg(dict(node.kwargs)), out[1:] if out else None)


def _has_weights(gm: fx.GraphModule, nodes: Sequence[fx.Node]) -> bool:
    return any(n.op == "call_module" and any(True for _ in gm.get_submodule(str(n.target)).parameters()) for n in nodes)


def _block(gm: fx.GraphModule, source: fx.Node, body: Sequence[fx.Node]) -> Block:
    """`body` (fed only by `source`, plus constants) as a module of its own, with its key."""
    shape = output_shape(source)[1:]  # type: ignore[index]
    index: dict[fx.Node, Any] = {source: "in"}
    key: list[Any] = [shape]
    for i, node in enumerate(body):
        key.append(_signature(gm, node, index))
        index[node] = i
    return Block(tuple(key), subgraph(gm, source, body), shape)


def subnet_blocks(
    model: ElasticModel,
    sub: Subnet,
    input_shape: Sequence[int] | None = None,
    fold: bool = True,
) -> list[Block]:
    """The extracted subnet (BatchNorm folded when `fold`, as ONNX Runtime runs it) cut into blocks, in order.

    A cut falls wherever exactly one tensor is live, so a residual block (its input stays live until the
    add) is one block and a conv-ReLU chain one block per conv; a piece without weights (an activation,
    pooling, flatten) joins the block before it. Blocks are thus found from the dataflow, for any model
    family, without knowing its module names.
    """
    shape = input_shape_of(model, input_shape)
    static = static_subnet(model, sub)
    gm = propagate_shapes(fold_batchnorm(static)[0] if fold else static, torch.zeros((1, *shape)))
    nodes = [n for n in gm.graph.nodes if n.op not in ("get_attr", "output")]
    if sum(n.op == "placeholder" for n in nodes) != 1 or nodes[0].op != "placeholder":
        raise UnsupportedModelError(f"latency tables need a single-input model, {type(model).__name__} is not")
    pieces: list[tuple[fx.Node, list[fx.Node]]] = []
    start = 0
    for cut in cut_points(nodes):
        body = nodes[start + 1 : cut + 1]
        if pieces and not _has_weights(gm, body):
            pieces[-1][1].extend(body)  # an activation or pooling: part of the block before
        elif pieces and not _has_weights(gm, pieces[-1][1]):
            pieces[-1][1].extend(body)  # the model starts without weights: join the first weighted block
        else:
            pieces.append((nodes[start], list(body)))
        start = cut
    for source, _ in pieces:
        if output_shape(source) is None:
            raise UnsupportedModelError(f"cannot cut {type(model).__name__} into blocks: {source.name} has no shape")
    return [_block(gm, source, body) for source, body in pieces]


class LatencyTable:
    """Once-for-All's lookup table: the median latency (ms) of each distinct block, per batch size, on one runtime.

    `estimate(model, sub, batch_size)` sums the table over the subnet's blocks, timing blocks not yet in
    the table (each as a model of its own on `runtime`, a name or a configured `tailor.cost.Runtime`; runtimes
    that run the BN-folded export get BN-folded blocks, like the whole subnet). `table` maps `(block key,
    batch size)` to ms. `clock="cpu"` times the calling thread's CPU time instead of wall time (see
    `tailor.cost.Timings`). `backend=` is the deprecated name of `runtime`.
    """

    def __init__(
        self,
        threads: int | None = 1,
        warmup: int = 5,
        repeats: int = 30,
        *,
        runtime: str | Runtime | None = None,
        clock: str = "wall",
        device: str = "cpu",
        backend: str | None = None,
    ) -> None:
        self.threads = None if threads is None else check_positive_int("threads", threads)
        if clock not in CLOCKS or (clock == "cpu" and self.threads != 1):
            raise ProfileError(f"clock must be 'wall', or 'cpu' with threads=1; got {clock!r} with threads={threads}")
        self.clock = clock
        self.warmup = non_negative_int("warmup", warmup, ProfileError)
        self.repeats = check_positive_int("repeats", repeats)
        self._runtime = get_runtime(runtime_argument(runtime, backend, "torch", "LatencyTable"))
        self.device = str(check_device(device))
        self.table: dict[tuple[tuple, int], float] = {}

    @property
    def runtime(self) -> str:
        """The name of the runtime the table is measured on."""
        return self._runtime.name

    @property
    def backend(self) -> str:
        """Deprecated name of `runtime`."""
        import warnings

        warnings.warn("LatencyTable.backend is deprecated; use .runtime", DeprecationWarning, stacklevel=2)
        return self.runtime

    @property
    def folds_batchnorm(self) -> bool:
        """Whether the runtime runs BN-folded graphs (so blocks are cut from the folded graph)."""
        return self._runtime.folds_batchnorm

    def blocks(self, model: ElasticModel, sub: Subnet, input_shape: Sequence[int] | None = None) -> list[Block]:
        """The subnet's blocks as this table's runtime runs them (BatchNorm folded where the runtime folds it)."""
        return subnet_blocks(model, sub, input_shape, fold=self.folds_batchnorm)

    def _prepare(self, block: Block) -> PreparedModel:
        return prepare_module(block.module, block.input_shape, self._runtime, self.threads, device=self.device)

    def runners(
        self,
        model: ElasticModel,
        subs: Sequence[Subnet],
        batch_sizes: Sequence[int] = (1,),
        input_shape: Sequence[int] | None = None,
    ) -> dict[tuple, PreparedModel]:
        """A prepared runner per distinct block of `subs` that lacks an entry at some of `batch_sizes`.

        For measuring the table in the same interleaved run as whole subnets (`measure_interleaved`), so
        that both see the same machine load; store the results with `record`.
        """
        batches = [check_positive_int("batch_size", b) for b in batch_sizes]
        out: dict[tuple, PreparedModel] = {}
        for sub in subs:
            for block in self.blocks(model, sub, input_shape):
                if block.key not in out and any((block.key, b) not in self.table for b in batches):
                    out[block.key] = self._prepare(block)
        return out

    def record(self, key: tuple, batch_size: int, ms: float) -> None:
        """Store a block's measured latency (ms) at `batch_size`, e.g. the p50 from `measure_interleaved`."""
        ms = positive_float("a table entry (ms)", ms, ProfileError)
        self.table[(key, check_positive_int("batch_size", batch_size))] = ms

    def _measure(self, block: Block, batch_size: int) -> float:
        prepared = self._prepare(block)
        return float(np.median(prepared.samples(batch_size, self.warmup, self.repeats, clock=self.clock)))

    def estimate_blocks(self, blocks: Sequence[Block], batch_size: int = 1) -> float:
        """Sum of the table over `blocks` at `batch_size` (ms), timing blocks not yet in the table."""
        batch_size = check_positive_int("batch_size", batch_size)
        total = 0.0
        for block in blocks:
            entry = (block.key, batch_size)
            if entry not in self.table:
                self.table[entry] = self._measure(block, batch_size)
            total += self.table[entry]
        return total

    def estimate(
        self, model: ElasticModel, sub: Subnet, batch_size: int = 1, input_shape: Sequence[int] | None = None
    ) -> float:
        """Sum of the table's entries over the subnet's blocks (ms), measuring blocks not yet in the table."""
        batch_size = check_positive_int("batch_size", batch_size)
        return self.estimate_blocks(self.blocks(model, sub, input_shape), batch_size)

    def __len__(self) -> int:
        return len(self.table)


LayerTable = LatencyTable  # the earlier name (it timed single layers; blocks predict better)


# -- the predictor ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReport:
    """Prediction error on held-out subnets: mean and worst absolute percentage error, and the count."""

    mape: float
    max_ape: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mape": self.mape, "max_ape": self.max_ape, "n": self.n}


def _aligned(subs: Sequence[Subnet], latencies_ms: Sequence[float] | Mapping[Subnet, float], what: str) -> list[float]:
    if isinstance(latencies_ms, Mapping):
        missing = [s.id for s in subs if s not in latencies_ms]
        if missing:
            raise ProfileError(f"{what}: no measured latency for subnet(s) {missing[:5]}")
        return [float(latencies_ms[s]) for s in subs]
    y = list(latencies_ms)
    if len(y) != len(subs):
        raise ProfileError(f"{what}: {len(subs)} subnets but {len(y)} latencies")
    return [float(v) for v in y]


class LatencyPredictor:
    """Least-squares linear latency model over subnet features at one batch size (ms).

    `fit(subs, latencies_ms)` then `predict(sub)`. With `table=LatencyTable(runtime=...)` (the runtime the
    latencies were measured on) the table's sum and block count are two more features. Coefficients are in
    `coef` (order `feature_names`, last the bias). Graph features and block keys are cached per subnet, and
    table sums are looked up afresh, so `table` may be replaced (or set to None) and the predictor refitted
    without extracting any subnet again.
    """

    def __init__(
        self,
        model: ElasticModel,
        batch_size: int = 1,
        input_shape: Sequence[int] | None = None,
        table: LatencyTable | None = None,
    ) -> None:
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.input_shape = input_shape_of(model, input_shape)
        self.table = table
        self.coef: np.ndarray | None = None
        self._features: dict[Subnet, list[float]] = {}
        self._keys: dict[tuple[Subnet, bool], tuple[tuple, ...]] = {}

    @property
    def table(self) -> LatencyTable | None:
        return self._table

    @table.setter
    def table(self, table: LatencyTable | None) -> None:
        if table is not None and not isinstance(table, LatencyTable):
            raise ProfileError(f"table must be a LatencyTable, got {type(table).__name__}")
        self._table = table
        self.coef = None  # fitted against another feature set

    @property
    def feature_names(self) -> tuple[str, ...]:
        return (*FEATURES, *(TABLE_FEATURES if self.table is not None else ()), "bias")

    def row(self, sub: Subnet) -> list[float]:
        """The feature vector of `sub` (order `feature_names`, ending in the constant 1)."""
        if sub not in self._features:
            f = features(self.model, sub, self.batch_size, self.input_shape)
            self._features[sub] = [f[k] for k in FEATURES]
        row = list(self._features[sub])
        table = self.table
        if table is not None:
            fold = table.folds_batchnorm
            keys = self._keys.get((sub, fold))
            if keys is not None and all((k, self.batch_size) in table.table for k in keys):
                total = sum(table.table[(k, self.batch_size)] for k in keys)
            else:
                blocks = table.blocks(self.model, sub, self.input_shape)
                total = table.estimate_blocks(blocks, self.batch_size)
                keys = self._keys[(sub, fold)] = tuple(b.key for b in blocks)
            row += [total, float(len(keys))]
        return [*row, 1.0]

    def fit(
        self,
        subs: Sequence[Subnet],
        latencies_ms: Sequence[float] | Mapping[Subnet, float],
        progress: Callable[[int, int], None] | None = None,
    ) -> LatencyPredictor:
        """Fit to measured latencies (ms) of `subs` (a sequence aligned with `subs`, or a mapping)."""
        subs = list(subs)
        y = _aligned(subs, latencies_ms, "fit")
        if len(subs) < 2:
            raise ProfileError(f"fit needs at least 2 measured subnets, got {len(subs)}")
        if any(not np.isfinite(v) or v <= 0 for v in y):
            raise ProfileError("fit: latencies must be positive finite milliseconds")
        rows = []
        for i, s in enumerate(subs, start=1):
            rows.append(self.row(s))
            if progress is not None:
                progress(i, len(subs))
        X = np.asarray(rows, dtype=np.float64)
        scale = np.abs(X).max(axis=0)
        scale[scale == 0] = 1.0
        # relative (percentage) error is what matters across cheap and expensive subnets: weight rows by 1/y
        yv = np.asarray(y, dtype=np.float64)
        coef, *_ = np.linalg.lstsq(X / scale / yv[:, None], np.ones_like(yv), rcond=None)
        self.coef = coef / scale
        return self

    def fit_profile(self, profile: Any, percentile: str = "p50") -> LatencyPredictor:
        """Fit to a `Profile`'s subnets (those that record their `Subnet`) at this predictor's batch size."""
        if percentile not in ("p50", "p90", "p99"):
            raise ProfileError(f"percentile must be 'p50', 'p90' or 'p99', got {percentile!r}")
        entries = [e for e in profile.subnets if e.subnet is not None and self.batch_size in e.latency_ms]
        if len(entries) < 2:
            raise ProfileError(
                f"the profile has {len(entries)} subnet(s) with a Subnet and batch size {self.batch_size}; fit needs 2"
            )
        return self.fit(
            [e.subnet for e in entries], [getattr(e.latency_ms[self.batch_size], percentile) for e in entries]
        )

    def predict(self, sub: Subnet) -> float:
        """Predicted latency (ms) of `sub` at the fitted batch size."""
        if self.coef is None:
            raise ProfileError("LatencyPredictor.predict called before fit")
        return float(np.dot(self.row(sub), self.coef))

    def error_report(
        self, subs: Sequence[Subnet], latencies_ms: Sequence[float] | Mapping[Subnet, float]
    ) -> ErrorReport:
        """MAPE and worst percentage error of `predict` against measured latencies of held-out subnets."""
        subs = list(subs)
        y = _aligned(subs, latencies_ms, "error_report")
        if not subs:
            raise ProfileError("error_report: no held-out subnets")
        ape = [abs(self.predict(s) - t) / t * 100 for s, t in zip(subs, y)]
        return ErrorReport(float(np.mean(ape)), float(np.max(ape)), len(ape))
