"""The metrics a search optimises or bounds: names, directions, units, and checked objectives/constraints.

`accuracy` is maximised; every cost (`latency` ms, `macs`, `memory` bytes, `params`) is minimised.
A constraint bounds a cost from above (`latency <= 2.5`) or accuracy from below (`accuracy >= 0.9`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tailor.checks import finite_float
from tailor.errors import TailorError

ACCURACY = "accuracy"
COST_METRICS: tuple[str, ...] = ("latency", "macs", "memory", "params")
METRICS: tuple[str, ...] = (ACCURACY, *COST_METRICS)
UNITS = {
    "accuracy": "fraction of held-out samples",
    "latency": "ms",
    "macs": "MACs",
    "memory": "bytes",
    "params": "count",
}
#: The metrics every front entry carries (params is cheap and exact, so it is added too).
FRONT_METRICS: tuple[str, ...] = METRICS


class SearchError(TailorError, ValueError):
    """A search argument, study, stored front or pair-search input is wrong; the message names it."""


def maximize(metric: str) -> bool:
    """Whether `metric` is maximised (accuracy) rather than minimised (every cost)."""
    return metric == ACCURACY


def check_metric(name: Any, where: str) -> str:
    """`name` if it is a known metric, else a `SearchError` naming `where` and the known ones."""
    if name not in METRICS:
        raise SearchError(f"{where}: unknown metric {name!r}; expected one of {list(METRICS)}")
    return name


def check_objectives(objectives: Sequence[str] | str) -> tuple[str, ...]:
    """Distinct known metric names, at least one; a bare string is one objective."""
    if isinstance(objectives, str):
        objectives = [objectives]
    names = tuple(check_metric(o, "objectives") for o in objectives)
    if not names:
        raise SearchError("objectives: give at least one metric")
    if len(set(names)) != len(names):
        raise SearchError(f"objectives: {list(names)} names a metric twice")
    return names


def check_constraints(constraints: Mapping[str, float] | None) -> dict[str, float]:
    """Bounds per metric: finite, > 0 for costs, in [0, 1] for accuracy."""
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise SearchError(f"constraints must be a mapping {{metric: bound}}, got {type(constraints).__name__}")
    out: dict[str, float] = {}
    for name, bound in constraints.items():
        check_metric(name, "constraints")
        bound = finite_float(f"constraints[{name!r}]", bound, SearchError)
        if maximize(name) and not 0.0 <= bound <= 1.0:
            raise SearchError(f"constraints['accuracy']: a lower bound in [0, 1], got {bound!r}")
        if not maximize(name) and bound <= 0:
            raise SearchError(f"constraints[{name!r}]: an upper bound > 0 ({UNITS[name]}), got {bound!r}")
        out[name] = float(bound)
    return out


def violations(metrics: Mapping[str, float], constraints: Mapping[str, float]) -> list[float]:
    """One number per constraint, <= 0 when it holds (Optuna's constraint convention)."""
    out = []
    for name, bound in constraints.items():
        value = metrics[name]
        out.append(bound - value if maximize(name) else value - bound)
    return out


def feasible(metrics: Mapping[str, float], constraints: Mapping[str, float]) -> bool:
    """Whether every constraint holds."""
    return all(v <= 0 for v in violations(metrics, constraints))


def needed(objectives: Iterable[str], constraints: Mapping[str, float]) -> tuple[str, ...]:
    """Metrics a candidate must have measured during the search: objectives, then constrained ones."""
    out: list[str] = []
    for name in (*objectives, *constraints):
        if name not in out:
            out.append(name)
    return tuple(out)
