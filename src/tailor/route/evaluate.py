"""Evaluating cascades fairly: stage costs, threshold sweeps, and the static Pareto baseline at equal cost.

- `stage_costs(model, stages, metric="latency" | "macs")`: what each stage costs *as it runs in the
  cascade* (a resumed early exit only its increment), per input: `tailor.cost.latency` of the stage's
  extracted network at `batch_size`, divided by the batch size (ms per image), or `tailor.cost.macs`.
- `sweep(outputs, policy, costs, thresholds)`: accuracy and expected cost of a policy at many thresholds,
  simulated from each stage's outputs (see `Cascade.simulate`); `threshold_grid` spreads thresholds by
  quantiles of the held-out scores so that every policy gets points across the escalation range.
- `pareto_front(points)`: the static subnets no other subnet beats on both cost and accuracy;
  `accuracy_at_cost(points, budget)` the best accuracy within a budget, either one configuration
  (`hull=False`) or a random mix of two (`hull=True`, the upper concave envelope), which is the fair
  static baseline "at equal latency" a router has to beat.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from tailor.checks import integer
from tailor.cost import latency, macs
from tailor.cost.runtimes.base import runtime_argument
from tailor.errors import SubnetNormFallbackWarning, TailorError
from tailor.ops import ElasticModel
from tailor.route.cascade import Stage, as_stage, ensemble_outputs, resume_flags, simulate_cascade
from tailor.route.exits import FINAL, EarlyExitModel
from tailor.route.policies import RoutingPolicy, StageOutput

METRICS = ("latency", "macs")
T = TypeVar("T")


def stage_costs(
    model: ElasticModel,
    stages: Sequence[Stage | Any],
    metric: str = "latency",
    *,
    batch_size: int = 32,
    threads: int | None = 1,
    warmup: int = 5,
    repeats: int = 30,
    runtime: str | None = None,
    backend: str | None = None,
) -> list[float]:
    """Per-input cost of each stage as the cascade runs it: ms per image (latency) or MACs per image.

    Latency is `tailor.cost.latency`'s median (p50) for a batch of `batch_size`, divided by `batch_size`, on
    `runtime` (default "torch"; `backend=` is its deprecated name).
    """
    runtime = runtime_argument(runtime, backend, "torch", "stage_costs")
    if metric not in METRICS:
        raise TailorError(f"unknown cost metric {metric!r}; choose one of {', '.join(METRICS)}")
    items = [as_stage(s) for s in stages]
    resumes = resume_flags(model, items)
    out = []
    previous, was_training = model.active_subnet, model.training
    try:
        with warnings.catch_warnings():  # timing does not depend on normalisation statistics
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            for index, stage in enumerate(items):
                view, shape = _stage_network(model, items, index, resumes[index])
                if metric == "macs":
                    out.append(float(macs(view, stage.subnet, input_shape=shape)))
                else:
                    stats = latency(
                        view,
                        stage.subnet,
                        batch_size=batch_size,
                        runtime=runtime,
                        threads=threads,
                        warmup=warmup,
                        repeats=repeats,
                        input_shape=shape,
                    )
                    out.append(stats.p50 / batch_size)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.train(was_training)
            model.activate(previous)  # views share the model's layers: put its mode and active subnet back
    return out


def _stage_network(
    model: ElasticModel, stages: Sequence[Stage], index: int, resumes: bool
) -> tuple[ElasticModel, tuple[int, ...] | None]:
    """The extractable network a stage runs, and its per-sample input shape (None: the model's input)."""
    stage = stages[index]
    if not isinstance(model, EarlyExitModel):
        return model, None
    if not resumes:
        if stage.exit == FINAL:
            return model, None
        return model.exit_view(stage.exit), None
    previous = stages[index - 1].exit
    return model.exit_view(stage.exit, start=previous), model.boundary_shape(previous, stage.subnet)


@dataclass(frozen=True)
class SweepPoint:
    """One operating point of a cascade: its thresholds, accuracy, expected cost and stage shares."""

    thresholds: tuple[float, ...]
    accuracy: float
    cost: float
    reached: tuple[float, ...]  # fraction of inputs that ran each stage
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def escalation(self) -> float:
        """Fraction of inputs that went past the first stage."""
        return self.reached[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "accuracy": self.accuracy,
            "cost": self.cost,
            "reached": list(self.reached),
            **self.extra,
        }


def sweep(
    outputs: Sequence[StageOutput],
    labels: torch.Tensor,
    policy: RoutingPolicy,
    costs: Sequence[float],
    thresholds: Iterable[float | Sequence[float]],
    temperatures: Sequence[float] | None = None,
    combine: str = "last",
) -> list[SweepPoint]:
    """Accuracy, mean cost and stage shares of `policy` at each threshold (one number, or one per transition);
    `combine` as in `Cascade` ("mean": answers are the running ensemble of the stages run)."""
    if combine == "mean":  # combine once, not per threshold
        outputs, temperatures, combine = ensemble_outputs(outputs, temperatures), None, "last"
    points = []
    for value in thresholds:
        policy_t = policy.with_thresholds(value if isinstance(value, (int, float)) else tuple(value))
        result = simulate_cascade(outputs, policy_t, costs, temperatures, combine=combine)
        transitions = len(outputs) - 1
        ts = (float(value),) * transitions if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        points.append(SweepPoint(ts, result.accuracy(labels), result.mean_cost, tuple(result.reached())))
    return points


def threshold_grid(scores: torch.Tensor, points: int = 41) -> list[float]:
    """Thresholds at evenly spaced quantiles of `scores`, plus one escalating nothing and one escalating all.

    With "escalate if score < threshold", the smallest threshold (0 or below every score) escalates no
    input and the largest (above every score) escalates all of them.
    """
    integer("threshold_grid: points", points, TailorError, low=2)
    values = scores.double().flatten()
    if values.numel() == 0 or not torch.isfinite(values).all():
        raise TailorError("threshold_grid: scores must be a non-empty finite tensor")
    qs = torch.linspace(0, 1, points, dtype=torch.float64)
    grid = {float(v) for v in torch.quantile(values, qs)}
    grid.add(min(0.0, float(values.min())))
    grid.add(float(values.max()) + 1e-6)
    return sorted(grid)


def multi_threshold_grid(per_transition: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """Every combination of per-transition thresholds (for cascades of 3+ stages)."""
    if not per_transition or any(len(t) == 0 for t in per_transition):
        raise TailorError("multi_threshold_grid: give at least one threshold per transition")
    return [tuple(c) for c in itertools.product(*per_transition)]


def pareto_front(
    items: Iterable[T],
    cost: Callable[[T], float] = lambda p: p.cost,
    accuracy: Callable[[T], float] = lambda p: p.accuracy,  # type: ignore[attr-defined]
) -> list[T]:
    """The items that no other item beats on both cost (lower) and accuracy (higher), cheapest first."""
    ordered = sorted(items, key=lambda p: (cost(p), -accuracy(p)))
    front: list[T] = []
    best = -math.inf
    for item in ordered:
        if accuracy(item) > best:
            front.append(item)
            best = accuracy(item)
    return front


def upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave envelope of (cost, accuracy) points: what random mixing of configurations reaches."""
    pts = sorted(set(points))
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] lies on or below the chord
                hull.pop()
            else:
                break
        hull.append(p)
    # keep the rising part only: beyond the most accurate point, more cost buys nothing
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0]))
    return hull[: peak + 1]


def accuracy_at_cost(points: Sequence[tuple[float, float]], budget: float, hull: bool = False) -> float | None:
    """Best accuracy at mean cost <= `budget` from (cost, accuracy) points; None if nothing fits.

    `hull=True` also allows a random mix of two points (linear between hull vertices).
    """
    if not points:
        raise TailorError("accuracy_at_cost: no points")
    if not hull:
        fitting = [acc for c, acc in points if c <= budget]
        return max(fitting) if fitting else None
    envelope = upper_hull(points)
    if budget < envelope[0][0]:
        return None
    if budget >= envelope[-1][0]:
        return envelope[-1][1]
    for (x1, y1), (x2, y2) in itertools.pairwise(envelope):
        if x1 <= budget <= x2:
            return y1 + (y2 - y1) * (budget - x1) / (x2 - x1) if x2 > x1 else max(y1, y2)
    return envelope[-1][1]  # pragma: no cover - the loop covers [first, last]


def cheapest_reaching(points: Sequence[SweepPoint], accuracy: float) -> SweepPoint | None:
    """The cheapest point whose accuracy is at least `accuracy` (None if none reaches it)."""
    reaching = [p for p in points if p.accuracy >= accuracy]
    return min(reaching, key=lambda p: (p.cost, -p.accuracy)) if reaching else None
