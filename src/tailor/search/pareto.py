"""Pareto fronts: non-dominated filtering, exact 2-D hypervolume, and the `ParetoFront` result (JSON, SVG).

`ParetoFront` holds the non-dominated feasible subnets of a search (each with accuracy, latency, MACs,
memory and params), every distinct subnet the search evaluated, and how it was run. It saves to versioned
JSON (`"tailor.pareto/1"`) and loads back with every field checked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tailor.errors import InvalidSubnetError
from tailor.jsonio import read_json, write_json_atomic
from tailor.search.metrics import (
    ACCURACY,
    METRICS,
    UNITS,
    SearchError,
    check_constraints,
    check_objectives,
    feasible,
    maximize,
)
from tailor.space import SearchSpace, Subnet
from tailor.space.notation import SubnetSchema
from tailor.validation import validate

SCHEMA = "tailor.pareto/1"
_INTEGER_METRICS = frozenset({"macs", "memory", "params"})

MetricName = Literal["accuracy", "latency", "macs", "memory", "params"]
_Number = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class CandidateSchema(BaseModel):
    """One evaluated subnet in a front file: its id, the subnet, and its metrics."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[
        str | None, Field(strict=True, description="the subnet's id (sn-...), checked against the subnet")
    ] = None
    subnet: SubnetSchema
    metrics: Annotated[
        dict[MetricName, _Number],
        Field(description="accuracy (fraction), latency (ms), macs, memory (bytes), params; each >= 0"),
    ]


class FrontSchema(BaseModel):
    """A search front file (`ParetoFront.save`, `tailor search --out`): schema "tailor.pareto/1"."""

    model_config = ConfigDict(extra="forbid", title="tailor Pareto front", populate_by_name=True)
    schema_: Annotated[Literal["tailor.pareto/1"], Field(alias="schema")]
    objectives: Annotated[list[MetricName], Field(min_length=1, description="what the search optimised")]
    constraints: Annotated[dict[MetricName, _Number], Field(description="upper bounds (lower for accuracy)")] = {}
    info: Annotated[dict[str, Any], Field(description="how the search ran (algorithm, budget, study, timings)")] = {}
    front: Annotated[list[CandidateSchema], Field(description="the non-dominated feasible subnets, cheapest first")]
    evaluated: Annotated[list[CandidateSchema], Field(description="every distinct subnet the search evaluated")] = []


# -- dominance and hypervolume ---------------------------------------------------------------------------
def pareto_mask(values: np.ndarray | Sequence[Sequence[float]], maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the rows of `values` (n x k) that no other row dominates.

    Column j is maximised where `maximize[j]`, else minimised. Row a dominates row b when it is at least
    as good in every column and better in one; equal rows do not dominate each other (both are kept).
    """
    points = np.asarray(values, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != len(maximize):
        raise SearchError(f"pareto_mask: expected an (n, {len(maximize)}) array, got shape {points.shape}")
    if points.size and not np.isfinite(points).all():
        raise SearchError("pareto_mask: values must be finite")
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    costs = points * signs  # everything minimised
    n = len(costs)
    mask = np.ones(n, dtype=bool)
    for start in range(0, n, 512):
        block = costs[start : start + 512]
        no_worse = (costs[None, :, :] <= block[:, None, :]).all(axis=2)
        better = (costs[None, :, :] < block[:, None, :]).any(axis=2)
        mask[start : start + len(block)] = ~(no_worse & better).any(axis=1)
    return mask


def hypervolume_2d(points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by `points` (both coordinates minimised) and bounded by `reference`.

    Exact: sort by the first coordinate and add one rectangle per improvement of the second. Points
    that are not strictly better than the reference in both coordinates add nothing.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (2,) or not np.isfinite(ref).all():
        raise SearchError(f"hypervolume_2d: reference must be two finite numbers, got {reference!r}")
    if pts.size and not np.isfinite(pts).all():
        raise SearchError("hypervolume_2d: points must be finite")
    pts = pts[(pts[:, 0] < ref[0]) & (pts[:, 1] < ref[1])]
    if not len(pts):
        return 0.0
    order = np.lexsort((pts[:, 1], pts[:, 0]))  # by x, then y
    area, best_y = 0.0, ref[1]
    for x, y in pts[order]:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def front_hypervolume(accuracy: Sequence[float], cost: Sequence[float], reference: tuple[float, float]) -> float:
    """Hypervolume of (cost, accuracy) points, cost minimised and accuracy maximised.

    `reference = (cost_ref, accuracy_ref)`: the area counted lies below `cost_ref` and above `accuracy_ref`.
    """
    cost_ref, acc_ref = reference
    pts = np.column_stack([np.asarray(cost, dtype=np.float64), -np.asarray(accuracy, dtype=np.float64)])
    return hypervolume_2d(pts, (cost_ref, -acc_ref))


# -- results ---------------------------------------------------------------------------------------------
def _metric_value(name: str, value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchError(f"{where}: expected a finite number, got {value!r:.100}")
    if value < 0 or (name == ACCURACY and value > 1):
        raise SearchError(f"{where}: {value!r} is out of range for {name!r}")
    return int(value) if name in _INTEGER_METRICS and float(value).is_integer() else float(value)


@dataclass(frozen=True)
class Candidate:
    """One evaluated subnet and its metrics (`accuracy`, `latency` ms, `macs`, `memory` bytes, `params`)."""

    subnet: Subnet
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.subnet, Subnet):
            raise SearchError(f"Candidate.subnet: expected a Subnet, got {type(self.subnet).__name__}")
        clean = {}
        for name, value in dict(self.metrics).items():
            if name not in METRICS:
                raise SearchError(f"candidate {self.subnet.id}: unknown metric {name!r}; expected {list(METRICS)}")
            clean[name] = _metric_value(name, value, f"candidate {self.subnet.id}.metrics.{name}")
        object.__setattr__(self, "metrics", {k: clean[k] for k in METRICS if k in clean})

    def __getitem__(self, metric: str) -> float:
        try:
            return self.metrics[metric]
        except KeyError:
            raise SearchError(f"candidate {self.subnet.id} has no {metric!r} (known: {sorted(self.metrics)})") from None

    @property
    def accuracy(self) -> float:
        return self["accuracy"]

    @property
    def latency_ms(self) -> float:
        return self["latency"]

    @property
    def macs(self) -> int:
        return int(self["macs"])

    @property
    def memory_bytes(self) -> int:
        return int(self["memory"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.subnet.id, "subnet": self.subnet.to_dict(), "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "candidate") -> Candidate:
        if not isinstance(data, Mapping):
            raise SearchError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = set(data) - {"id", "subnet", "metrics"}
        if unknown:
            raise SearchError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")
        for key in ("subnet", "metrics"):
            if key not in data:
                raise SearchError(f"{where}.{key}: missing")
        try:
            sub = Subnet.from_dict(data["subnet"])
        except InvalidSubnetError as exc:
            raise SearchError(f"{where}.subnet: {exc}") from None
        if "id" in data and data["id"] != sub.id:
            raise SearchError(f"{where}.id: {data['id']!r} does not match its subnet (id {sub.id})")
        metrics = data["metrics"]
        if not isinstance(metrics, Mapping):
            raise SearchError(f"{where}.metrics: expected an object, got {type(metrics).__name__}")
        for name, value in metrics.items():
            if name not in METRICS:
                raise SearchError(f"{where}.metrics: unknown metric {name!r}; expected {list(METRICS)}")
            _metric_value(name, value, f"{where}.metrics.{name}")
        return cls(sub, metrics)


class ParetoFront:
    """The non-dominated feasible subnets of a search, with every evaluated subnet and how it was found.

    `entries` (the front) are sorted by their first cost objective, cheapest first. `evaluated` holds
    every distinct subnet the search measured (with the metrics measured during the search), and `info`
    the algorithm, budget, study, timings and cost sources.
    """

    def __init__(
        self,
        entries: Iterable[Candidate],
        objectives: Sequence[str],
        constraints: Mapping[str, float] | None = None,
        evaluated: Iterable[Candidate] = (),
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.objectives = check_objectives(objectives)
        self.constraints = check_constraints(constraints)
        self.entries: tuple[Candidate, ...] = tuple(entries)
        self.evaluated: tuple[Candidate, ...] = tuple(evaluated)
        self.info: dict[str, Any] = dict(info or {})
        for index, entry in enumerate(self.entries):
            if not isinstance(entry, Candidate):
                raise SearchError(f"entries[{index}]: expected a Candidate, got {type(entry).__name__}")
            for name in (*self.objectives, *self.constraints):
                if name not in entry.metrics:
                    raise SearchError(f"entries[{index}] ({entry.subnet.id}) lacks objective/constraint {name!r}")
            if not feasible(entry.metrics, self.constraints):
                raise SearchError(f"entries[{index}] ({entry.subnet.id}) violates the constraints {self.constraints}")

    @classmethod
    def from_candidates(
        cls,
        candidates: Iterable[Candidate],
        objectives: Sequence[str],
        constraints: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
        space: SearchSpace | None = None,
    ) -> ParetoFront:
        """The front of the feasible `candidates` (one per network; the first occurrence wins).

        With `space`, subnets are put in canonical form first (`SearchSpace.canonical`), so that two names of
        one network (e.g. differing only in the widths of blocks their depths skip) count once.
        """
        objectives = check_objectives(objectives)
        constraints = check_constraints(constraints)
        unique: dict[Subnet, Candidate] = {}
        for cand in candidates:
            if space is not None:
                cand = Candidate(space.canonical(cand.subnet), cand.metrics)
            unique.setdefault(cand.subnet, cand)
        pool = [c for c in unique.values() if feasible(c.metrics, constraints)]
        if pool:
            values = np.array([[c[m] for m in objectives] for c in pool], dtype=np.float64)
            mask = pareto_mask(values, [maximize(m) for m in objectives])
            front = [c for c, keep in zip(pool, mask) if keep]
        else:
            front = []
        front.sort(key=lambda c: cls._sort_key(c, objectives))
        return cls(front, objectives, constraints, unique.values(), info)

    @staticmethod
    def _sort_key(cand: Candidate, objectives: Sequence[str]) -> tuple:
        costs = [m for m in objectives if not maximize(m)]
        primary = cand[costs[0]] if costs else -cand[objectives[0]]
        return (primary, -cand.metrics.get(ACCURACY, 0.0), cand.subnet.id)

    # -- access ------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        constraints = ", ".join(f"{k}<={v:g}" if k != ACCURACY else f"{k}>={v:g}" for k, v in self.constraints.items())
        return (
            f"ParetoFront({len(self.entries)} subnets of {len(self.evaluated)} evaluated; "
            f"objectives: {', '.join(self.objectives)}" + (f"; constraints: {constraints})" if constraints else ")")
        )

    def __str__(self) -> str:
        """A readable summary: how it was found, then one row per front subnet, cheapest first."""
        algorithm = self.info.get("algorithm")
        lines = [repr(self) + (f", found by {algorithm}" if algorithm else "")]
        columns = [m for m in METRICS if any(m in e.metrics for e in self.entries)]
        headers = {
            "accuracy": "accuracy %",
            "latency": "latency ms",
            "macs": "MMACs",
            "memory": "memory MB",
            "params": "params k",
        }
        scale = {"accuracy": 100.0, "latency": 1.0, "macs": 1e-6, "memory": 1e-6, "params": 1e-3}
        lines.append("  " + f"{'id':<16}" + "".join(f"{headers[c]:>12}" for c in columns))
        for entry in self.entries:
            cells = "".join(
                f"{entry.metrics[c] * scale[c]:>12.{2 if c != 'latency' else 3}f}"
                if c in entry.metrics
                else f"{'-':>12}"
                for c in columns
            )
            lines.append(f"  {entry.subnet.id:<16}{cells}")
        if not self.entries:
            lines.append("  (empty: no evaluated subnet met the constraints)")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> Candidate:
        return self.entries[index]

    @property
    def subnets(self) -> list[Subnet]:
        return [e.subnet for e in self.entries]

    def best(self, **budgets: float) -> Candidate | None:
        """The most accurate front entry within `budgets` (e.g. `latency=2.0, memory=4e6`), or None."""
        bounds = check_constraints(budgets)
        fitting = [e for e in self.entries if all(n in e.metrics for n in bounds) and feasible(e.metrics, bounds)]
        if not fitting:
            return None
        return max(fitting, key=lambda e: (e.metrics.get(ACCURACY, 0.0), -sum(e.metrics.get(n, 0.0) for n in bounds)))

    def hypervolume(self, cost: str, reference: tuple[float, float]) -> float:
        """Hypervolume of the front in the (cost, accuracy) plane; `reference = (cost_ref, accuracy_ref)`."""
        if cost == ACCURACY or cost not in METRICS:
            raise SearchError(f"hypervolume: cost must be one of latency, macs, memory, params, got {cost!r}")
        pts = [(e[ACCURACY], e[cost]) for e in self.entries]
        if not pts:
            return 0.0
        acc, costs = zip(*pts)
        return front_hypervolume(acc, costs, reference)

    # -- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "objectives": list(self.objectives),
            "constraints": dict(self.constraints),
            "info": self.info,
            "front": [e.to_dict() for e in self.entries],
            "evaluated": [e.to_dict() for e in self.evaluated],
        }

    @classmethod
    def from_dict(cls, data: Any) -> ParetoFront:
        """Validate (types by `FrontSchema`, then ids and constraints) and rebuild; a `SearchError` names the field."""
        if not isinstance(data, Mapping):
            raise SearchError(f"pareto front: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise SearchError(f"pareto front: schema: expected {SCHEMA!r}, got {data.get('schema')!r:.100}")
        validate(FrontSchema, data, SearchError, "pareto front")
        info = data.get("info", {})
        if not isinstance(info, Mapping):
            raise SearchError(f"info: expected an object, got {type(info).__name__}")
        lists = {}
        for key in ("front", "evaluated"):
            value = data.get(key, [])
            if not isinstance(value, list):
                raise SearchError(f"{key}: expected a list, got {type(value).__name__}")
            lists[key] = [Candidate.from_dict(item, f"{key}[{i}]") for i, item in enumerate(value)]
        return cls(lists["front"], data["objectives"], data.get("constraints") or {}, lists["evaluated"], info)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the front as JSON, atomically (temporary file in the same folder, then rename)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ParetoFront:
        """Read and validate a front written by `save`."""
        return cls.from_dict(read_json(path, "pareto front", SearchError))

    # -- figure ------------------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike[str], x: str | None = None, title: str = "") -> Path:
        """Figure of accuracy against cost `x` (default: the first cost objective): evaluated points and the front.

        PNG, SVG or PDF by the path's suffix (`tailor.plot`).
        """
        from tailor.plot import Axis, xy_plot

        if x is None:
            costs = [m for m in self.objectives if not maximize(m)]
            x = costs[0] if costs else "macs"
        if x == ACCURACY or x not in METRICS:
            raise SearchError(f"plot: x must be a cost metric, got {x!r}")
        series: dict[str, list[tuple[float, float]]] = {}
        inside, outside = [], []
        front_ids = {e.subnet for e in self.entries}
        for cand in self.evaluated:
            if cand.subnet in front_ids or x not in cand.metrics or ACCURACY not in cand.metrics:
                continue
            point = (float(cand[x]), float(cand[ACCURACY]))
            known = all(n in cand.metrics for n in self.constraints)
            (inside if known and feasible(cand.metrics, self.constraints) else outside).append(point)
        if inside:
            series["evaluated"] = inside
        if outside:
            series["outside constraints"] = outside
        front = [(float(e[x]), float(e[ACCURACY])) for e in self.entries if x in e.metrics]
        if front:
            series["Pareto front"] = front
        if not series:
            raise SearchError("plot: nothing to plot (no evaluated subnet has accuracy and the cost)")
        title = title or f"{self.info.get('algorithm', 'search')}: accuracy vs {x}"
        xlabel = f"{x} ({UNITS[x]})"
        return xy_plot(series, path, title=title, x=Axis(xlabel), y=Axis("held-out accuracy", percent=True),
                       lines=["Pareto front"])  # fmt: skip
