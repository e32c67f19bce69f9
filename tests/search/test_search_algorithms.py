"""search(): every algorithm on an analytic problem whose exhaustive front is known."""

from __future__ import annotations

import numpy as np
import pytest
from search_helpers import AnalyticEvaluator, analytic_space

import tailor.search
from tailor.search import METRICS, ParetoFront, SearchError, pareto_mask, search

OBJECTIVES = ("accuracy", "macs")


@pytest.fixture(scope="module")
def exhaustive() -> ParetoFront:
    return search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="exhaustive", budget=None)


def _reference(front: ParetoFront) -> tuple[float, float]:
    macs = [c.macs for c in front.evaluated]
    accuracy = [c.accuracy for c in front.evaluated]
    return float(max(macs)), float(min(accuracy))


def test_exhaustive_front_is_the_brute_force_front(exhaustive: ParetoFront) -> None:
    space = analytic_space()
    assert len(exhaustive.evaluated) == space.size == 1024 == exhaustive.info["evaluated"]
    values = np.array([[c.accuracy, c.macs] for c in exhaustive.evaluated])
    expected = {c.subnet for c, keep in zip(exhaustive.evaluated, pareto_mask(values, [True, False])) if keep}
    assert set(exhaustive.subnets) == expected
    macs = [e.macs for e in exhaustive]
    assert macs == sorted(macs), "entries run from cheapest to most expensive"


@pytest.mark.parametrize(
    ("algorithm", "target"), [("nsga2", 0.93), ("tpe", 0.97), ("random", 0.9), ("evolution", 0.97)]
)
def test_algorithms_spend_exactly_the_budget_and_approach_the_front(
    exhaustive: ParetoFront, algorithm: str, target: float
) -> None:
    ev = AnalyticEvaluator()
    front = search(None, ev, OBJECTIVES, algorithm=algorithm, budget=60, seed=0)
    assert front.info["evaluated"] == 60 == ev.evaluations == len(ev.calls)
    assert max(ev.calls.values()) == 1, "no subnet is evaluated twice"
    space = ev.space
    assert {space.largest(), space.smallest()} <= set(ev.calls), "the extremes anchor every search"
    for entry in front:
        assert set(entry.metrics) == set(METRICS), "front entries carry every metric"
    # the front is exactly the non-dominated part of what was evaluated
    values = np.array([[c.accuracy, c.macs] for c in front.evaluated])
    mask = pareto_mask(values, [True, False])
    assert set(front.subnets) == {c.subnet for c, keep in zip(front.evaluated, mask) if keep}
    ref = _reference(exhaustive)
    ratio = front.hypervolume("macs", ref) / exhaustive.hypervolume("macs", ref)
    assert target <= ratio <= 1.0 + 1e-12


def test_constraints_bound_the_front() -> None:
    ev = AnalyticEvaluator()
    limits = {"latency": 0.9, "accuracy": 0.8}
    front = search(None, ev, OBJECTIVES, limits, algorithm="nsga2", budget=80, seed=1)
    assert len(front) > 0
    for entry in front:
        assert entry.latency_ms <= 0.9 and entry.accuracy >= 0.8
    evaluated = [c for c in front.evaluated if c.metrics["latency"] <= 0.9 and c.accuracy >= 0.8]
    assert max(c.accuracy for c in evaluated) == max(e.accuracy for e in front)
    assert any(c.metrics["latency"] > 0.9 for c in front.evaluated), "infeasible subnets were seen and left out"


def test_single_objective_and_other_cost_objectives() -> None:
    ev = AnalyticEvaluator()
    front = search(None, ev, ("accuracy",), {"memory": 5000}, algorithm="tpe", budget=30)
    assert len({e.accuracy for e in front}) == 1
    best = max(c.accuracy for c in front.evaluated if c.metrics["memory"] <= 5000)
    assert front[0].accuracy == best
    three = search(None, AnalyticEvaluator(), ("accuracy", "latency", "memory"), algorithm="random", budget=25)
    assert all({"latency", "memory"} <= set(c.metrics) for c in three.evaluated)


def test_the_package_is_callable_as_search() -> None:
    a = tailor.search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="random", budget=12, seed=3)
    b = search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="random", budget=12, seed=3)
    assert a.to_dict()["front"] == b.to_dict()["front"]


def test_trial_cap_stops_with_a_warning() -> None:
    ev = AnalyticEvaluator(analytic_space(widths=1, choices=(0.5, 1.0), depths=1))  # 4 subnets
    with pytest.warns(RuntimeWarning, match="trial"):
        front = search(None, ev, OBJECTIVES, algorithm="random", budget=4, seed=0, max_trials=1)
    assert front.info["stopped"] == "trial cap" and front.info["evaluated"] < 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "annealing"}, "unknown algorithm"),
        ({"budget": 0}, "budget must be a positive integer"),
        ({"budget": 5000}, "exceeds the 1024 subnets"),
        ({"algorithm": "exhaustive", "budget": 10}, "budget=None"),
        ({"objectives": ("accuracy", "speed")}, "unknown metric 'speed'"),
        ({"objectives": ("macs", "macs")}, "twice"),
        ({"constraints": {"latency": -1}}, "upper bound > 0"),
        ({"constraints": {"accuracy": 2}}, r"lower bound in \[0, 1\]"),
        ({"algorithm": "evolution", "predictor": "forest"}, "unknown predictor 'forest'"),
        ({"algorithm": "nsga2", "population": 0}, "population must be a positive integer"),
        ({"algorithm": "evolution", "batch": -1}, "batch must be a positive integer"),
        ({"predictor": "mlp"}, r"algorithm 'random' takes no option 'predictor' \(its options: none\)"),
        ({"algorithm": "tpe", "population": 20}, "algorithm 'tpe' takes no option 'population'"),
        ({"algorithm": "nsga2", "batch": 4}, r"takes no option 'batch' \(its options: population\)"),
        ({"max_trials": 0}, "max_trials must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    args = {"objectives": OBJECTIVES, "algorithm": "random", "budget": 10, **kwargs}
    with pytest.raises(SearchError, match=message):
        search(None, AnalyticEvaluator(), **args)


def test_model_must_match_the_evaluator() -> None:
    from tailor import create_model

    with pytest.raises(SearchError, match="search space differs"):
        search(create_model("small_cnn"), AnalyticEvaluator(), OBJECTIVES, algorithm="random", budget=5)
