"""The offline upper bound: exact on its relaxation (brute force, LP), and never below any policy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from serving_helpers import monotone_profiles, small_profile, small_traces

from tailor.serve import ServingProfile, simulate, synthetic_profile, traces, upper_bound
from tailor.serve.sim.bound import _accuracy_hull, fluid_count, fluid_work
from tailor.serve.traces import Trace


@st.composite
def agreeable_jobs(draw: st.DrawFn, max_jobs: int = 7) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, max_jobs))
    arrivals = np.cumsum(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), min_size=n, max_size=n)))
    windows = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 6.0]), min_size=n, max_size=n))
    deadlines = np.maximum.accumulate(arrivals + np.asarray(windows)) if n else arrivals
    return arrivals, deadlines


def fifo_feasible(arrivals: np.ndarray, deadlines: np.ndarray, step: float) -> bool:
    free = -np.inf
    for a, d in zip(arrivals, deadlines):
        free = max(a, free) + step
        if free > d + 1e-12:
            return False
    return True


@given(agreeable_jobs(), st.sampled_from([0.5, 1.0, 1.5]), st.integers(1, 2))
@settings(max_examples=150, deadline=None)
def test_fluid_count_is_the_best_subset(jobs: tuple[np.ndarray, np.ndarray], size: float, workers: int) -> None:
    arrivals, deadlines = jobs
    n = arrivals.size
    best = 0
    for k in range(n, 0, -1):
        if any(
            fifo_feasible(arrivals[list(c)], deadlines[list(c)], size / workers)
            for c in itertools.combinations(range(n), k)
        ):
            best = k
            break
    assert fluid_count(arrivals, deadlines, size, workers) == best


@given(agreeable_jobs(), st.sampled_from([0.5, 1.0, 2.5]), st.integers(1, 2))
@settings(max_examples=100, deadline=None)
def test_fluid_work_is_the_lp_optimum(jobs: tuple[np.ndarray, np.ndarray], cap: float, workers: int) -> None:
    arrivals, deadlines = jobs
    n = arrivals.size
    if n == 0:
        assert fluid_work(arrivals, deadlines, cap, workers) == 0
        return
    rows, bounds = [], []
    for i in range(n):
        for j in range(i, n):
            rows.append([1.0 if i <= k <= j else 0.0 for k in range(n)])
            bounds.append(workers * (deadlines[j] - arrivals[i]))
    lp = linprog(-np.ones(n), A_ub=rows, b_ub=bounds, bounds=[(0, cap)] * n, method="highs")
    assert lp.status == 0
    assert fluid_work(arrivals, deadlines, cap, workers) == pytest.approx(-lp.fun, abs=1e-7)


@given(st.lists(st.tuples(st.floats(0.01, 10), st.floats(0.0, 1.0, allow_subnormal=False)), min_size=1, max_size=8),
       st.floats(0, 5, allow_subnormal=False))  # accuracies are never subnormal: their slopes would underflow to 0
@settings(max_examples=100, deadline=None)
def test_accuracy_hull_is_a_concave_majorant_through_the_origin(
    points: list[tuple[float, float]], bonus: float
) -> None:
    hull = _accuracy_hull([c for c, _ in points], [a for _, a in points], bonus)
    assert hull[0] == (0.0, 0.0)
    slopes = [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in itertools.pairwise(hull)]
    assert all(s1 < s0 + 1e-12 for s0, s1 in itertools.pairwise(slopes))
    assert all(s > 0 for s in slopes)

    def value(w: float) -> float:
        if w >= hull[-1][0]:
            return hull[-1][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(hull):
            if x0 <= w <= x1:
                return y0 + (y1 - y0) * (w - x0) / (x1 - x0)
        raise AssertionError

    for c, a in points:
        assert value(c) >= a + bonus - 1e-9


@given(
    monotone_profiles(),
    small_traces(per_request=True),
    st.integers(1, 2),
    st.sampled_from([0.0, 0.2]),
    st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_no_policy_beats_the_bound(p: ServingProfile, trace: Trace, workers: int, noise: float, hopeless: bool) -> None:
    bound = upper_bound(p, trace, slo_ms=12.0, workers=workers, latency_noise=noise)
    previous = max(p.acc)
    for m in range(0, bound.max_on_time + 1, max(1, bound.max_on_time // 5)):
        now = bound.mean_accuracy_bound(m)
        assert now <= previous + 1e-9  # more on-time responses can only lower the accuracy bound
        previous = now
    for policy in ("slackfit", "maxacc", "maxbatch", "infaas", "fixed:smallest", "fixed:largest"):
        for seed in (0, 1):
            r = simulate(
                p,
                trace,
                policy=policy,
                slo_ms=12.0,
                workers=workers,
                latency_noise=noise,
                seed=seed,
                expire_hopeless=hopeless,
            )
            on_time = r.outcomes["on_time"]
            assert on_time <= bound.max_on_time
            assert r.extras["accuracy_sum"] <= bound.accuracy_sum_bound(on_time) + 1e-9
            if on_time:
                assert r.mean_accuracy <= bound.mean_accuracy_bound(on_time) + 1e-9  # type: ignore[operator]
                assert r.attainment <= bound.attainment_bound_at_accuracy(r.mean_accuracy - 1e-9) + 1e-12  # type: ignore[operator]


def test_the_bound_is_reached_when_there_is_room_for_everyone() -> None:
    p = ServingProfile(synthetic_profile([0.5], [10.0], [0.0], batch_sizes=(1,)))
    trace = Trace(np.arange(20) * 0.010, duration=0.3)  # one request every 10 ms, each takes 10 ms
    ub = simulate(p, trace, policy="upper_bound", slo_ms=25)
    served = simulate(p, trace, policy="fixed:s0", slo_ms=25)
    assert ub.bound and ub.attainment == served.attainment == 1.0
    assert ub.mean_accuracy == pytest.approx(0.5)
    crowd = Trace(np.zeros(10), duration=0.1)  # ten at once, 25 ms to answer, 10 ms each: two make it
    assert upper_bound(p, crowd, slo_ms=25).max_on_time == 2
    assert simulate(p, crowd, policy="fixed:s0", slo_ms=25).outcomes["on_time"] == 2


def test_the_bound_on_an_overloaded_bursty_trace() -> None:
    p = small_profile()
    trace = traces.bursty(1000, 3000, 8, 10, seed=1)  # beyond what even s0 at batch 32 (4.3/ms) sustains
    bound = upper_bound(p, trace, slo_ms=30)
    best = max(simulate(p, trace, policy=name, slo_ms=30).attainment for name in ("slackfit", "maxacc", "maxbatch"))
    assert best <= bound.max_on_time / len(trace) < 1.0
    assert bound.eligible == len(trace)
    assert bound.mean_accuracy_bound(bound.max_on_time) <= max(p.acc)
    result = bound.result()
    assert sum(result.outcomes.values()) == len(trace) and result.engine == "relaxation"


def test_a_request_whose_budget_is_exactly_the_fastest_answer_counts_as_the_simulator_counts_it() -> None:
    """Arrival 3 ms, budget 1.1 ms, fastest answer 1.1 ms: on time in the simulator (finish 4.1 <= deadline 4.1),
    so the bound must count it; `deadline - arrival` in floating point is 1.0999999999999996 < 1.1."""
    p = ServingProfile(synthetic_profile([0.5], [1.0], [0.1], batch_sizes=(1,)))
    trace = Trace(np.array([0.003]), name="edge", deadlines_ms=np.array([1.1]))
    assert simulate(p, trace, policy="slackfit", slo_ms=12.0).outcomes["on_time"] == 1
    assert upper_bound(p, trace, slo_ms=12.0).max_on_time == 1
