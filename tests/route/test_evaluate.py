"""tailor.route.evaluate: Pareto fronts, the mixing hull, budgets, threshold grids and sweeps."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.errors import ProfileError, TailorError
from tailor.route import (
    Confidence,
    StageOutput,
    accuracy_at_cost,
    ensemble_outputs,
    pareto_front,
    simulate_cascade,
    stage_costs,
    sweep,
    threshold_grid,
    upper_hull,
)

points_strategy = st.lists(
    st.tuples(st.floats(0.01, 100.0), st.floats(0.0, 1.0)).map(lambda p: (round(p[0], 3), round(p[1], 3))),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(points=points_strategy)
def test_the_pareto_front_holds_exactly_the_undominated_points(points: list[tuple[float, float]]) -> None:
    front = pareto_front(points, cost=lambda p: p[0], accuracy=lambda p: p[1])

    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    assert [p[0] for p in front] == sorted(p[0] for p in front)
    assert all(b[1] > a[1] for a, b in itertools.pairwise(front))  # dearer front points are more accurate
    for p in points:
        if p not in front:
            assert dominated(p) or any(q == p for q in front)
        else:
            assert not any(q[0] <= p[0] and q[1] > p[1] for q in points)


@settings(max_examples=60, deadline=None)
@given(points=points_strategy, budget=st.floats(0.0, 120.0))
def test_mixing_two_configurations_never_does_worse_than_one(points: list[tuple[float, float]], budget: float) -> None:
    single = accuracy_at_cost(points, budget)
    mixed = accuracy_at_cost(points, budget, hull=True)
    if single is None:
        assert mixed is None or min(p[0] for p in points) <= budget
    else:
        assert mixed is not None and mixed >= single - 1e-12
    hull = upper_hull(points)
    for (x1, y1), (x2, y2), (x3, y3) in zip(hull, hull[1:], hull[2:]):
        assert (y2 - y1) * (x3 - x2) >= (y3 - y2) * (x2 - x1) - 1e-9  # slopes fall: concave
    assert all(y >= y0 for (_, y0), (_, y) in itertools.pairwise(hull))


def test_accuracy_at_cost_by_hand() -> None:
    points = [(1.0, 0.6), (2.0, 0.75), (4.0, 0.9), (3.0, 0.65)]
    assert accuracy_at_cost(points, 0.5) is None
    assert accuracy_at_cost(points, 3.5) == 0.75
    assert accuracy_at_cost(points, 3.0, hull=True) == pytest.approx(0.825)  # half (2, 0.75), half (4, 0.9)
    assert accuracy_at_cost(points, 10.0, hull=True) == 0.9
    assert upper_hull(points) == [(1.0, 0.6), (2.0, 0.75), (4.0, 0.9)]
    assert upper_hull([(1.0, 0.6), (2.0, 0.7), (3.0, 0.8)]) == [(1.0, 0.6), (3.0, 0.8)]  # collinear: ends only
    with pytest.raises(TailorError, match="no points"):
        accuracy_at_cost([], 1.0)


def two_stage_outputs(n: int, seed: int) -> tuple[list[StageOutput], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=generator)
    first = torch.randn(n, 5, generator=generator) * 2
    second = torch.nn.functional.one_hot(labels, 5).float() * 4 + torch.randn(n, 5, generator=generator)
    return [StageOutput(first), StageOutput(second)], labels


def test_threshold_grids_span_no_escalation_to_full_escalation() -> None:
    outputs, labels = two_stage_outputs(300, 0)
    policy = Confidence(0.5)
    grid = threshold_grid(policy.score(outputs[0], 0), points=21)
    assert grid == sorted(grid)
    points = sweep(outputs, labels, policy, [1.0, 3.0], grid)
    escalation = [p.escalation for p in points]
    assert escalation[0] == 0.0 and escalation[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(escalation))
    costs = [p.cost for p in points]
    assert costs[0] == pytest.approx(1.0) and costs[-1] == pytest.approx(4.0)
    for point in points:
        result = simulate_cascade(outputs, policy.with_thresholds(point.thresholds[0]), [1.0, 3.0])
        assert point.accuracy == result.accuracy(labels)
        assert point.cost == pytest.approx(1.0 + 3.0 * point.escalation)
    with pytest.raises(TailorError, match="points"):
        threshold_grid(torch.rand(10), points=1)


def test_sweeping_the_mean_combination_reads_the_running_ensemble() -> None:
    outputs, labels = two_stage_outputs(300, 1)
    temps = [1.7, 0.9]
    combined = ensemble_outputs(outputs, temps)
    # stage 0 of the ensemble is stage 0 scaled; stage 1 averages both stages' probabilities
    first, second = (torch.softmax(o.logits.double() / t, dim=1) for o, t in zip(outputs, temps))
    assert torch.allclose(combined[0].logits.exp(), first, atol=1e-9)
    both = (first + second) / 2
    assert torch.allclose(combined[1].logits.exp(), both, atol=1e-9)
    policy = Confidence(0.5)
    grid = threshold_grid(policy.score(combined[0], 0), points=11)
    mean = sweep(outputs, labels, policy, [1.0, 3.0], grid, temps, combine="mean")
    by_hand = sweep(combined, labels, policy, [1.0, 3.0], grid)
    assert mean == by_hand
    last = sweep(outputs, labels, policy, [1.0, 3.0], grid, temps)
    # the same decisions at stage 0 (up to one input whose score sits within float32 rounding of a threshold)
    assert all(abs(a.escalation - b.escalation) <= 1 / 300 for a, b in zip(last, mean))
    assert mean[-1].accuracy == float((both.argmax(1) == labels).double().mean())  # all escalated: the ensemble
    with pytest.raises(TailorError, match="combine"):
        simulate_cascade(outputs, policy, [1.0, 3.0], combine="max")


def test_stage_costs_take_runtime_and_the_deprecated_backend_spelling() -> None:
    model = tailor.create_model("small_cnn", channels=(4, 8, 8))
    stages = [model.space.smallest(), model.space.largest()]
    ms = stage_costs(model, stages, "latency", batch_size=2, repeats=2, warmup=0, runtime="onnxruntime")
    assert len(ms) == 2 and all(v > 0 for v in ms)
    with pytest.warns(DeprecationWarning, match="stage_costs: backend= is deprecated; use runtime="):
        assert stage_costs(model, stages, "macs", backend="torch") == stage_costs(model, stages, "macs")
    with pytest.warns(DeprecationWarning), pytest.raises(ProfileError, match="disagree"):
        stage_costs(model, stages, "macs", runtime="torch", backend="onnxruntime")
