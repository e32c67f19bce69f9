"""tailor.serve.sim.simulate: outcomes by hand, invariants on random workloads, the two engines agree."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_helpers import monotone_profiles, small_profile, small_traces

from tailor.serve import Policy, ServingProfile, make_policy, simulate, synthetic_profile, traces
from tailor.serve.policies import PolicyError
from tailor.serve.sim.simulate import EXPIRED, LATE, ON_TIME, REJECTED, SimulationError
from tailor.serve.traces import Trace

POLICIES = ["drainfit", "slackfit", "maxacc", "maxbatch", "infaas", "fixed:smallest", "fixed:largest"]


def one_subnet(latency_ms: float = 10.0, batches: tuple[int, ...] = (1,)) -> ServingProfile:
    return ServingProfile(synthetic_profile([0.5], [latency_ms], [0.0], batch_sizes=batches))


def test_a_hand_worked_example_on_both_engines() -> None:
    trace = Trace(np.zeros(3), duration=0.1)
    for engine in ("fast", "reference"):
        # one request per 10 ms batch; deadlines at 25 ms: two on time, the third has 5 ms left at t=20
        r = simulate(one_subnet(), trace, policy="fixed:s0", slo_ms=25, engine=engine)
        assert r.outcomes == {"on_time": 2, "late": 0, "expired": 1, "rejected": 0}
        assert r.outcome.tolist() == [ON_TIME, ON_TIME, EXPIRED]  # type: ignore[union-attr]
        assert r.finish_ms[:2].tolist() == [10.0, 20.0] and math.isnan(r.finish_ms[2])  # type: ignore[index]
        assert r.attainment == pytest.approx(2 / 3) and r.mean_accuracy == 0.5 and r.batches == 2
        served_late = simulate(one_subnet(), trace, policy="fixed:s0", slo_ms=25, engine=engine, expire_hopeless=False)
        assert served_late.outcome.tolist() == [ON_TIME, ON_TIME, LATE]  # type: ignore[union-attr]
        assert served_late.latency_ms["max"] == 30.0  # type: ignore[index]


def test_two_workers_serve_in_parallel() -> None:
    trace = Trace(np.array([0.0, 0.0, 0.0, 0.0]), duration=0.1)
    r = simulate(one_subnet(), trace, policy="fixed:s0", slo_ms=25, workers=2)
    assert r.finish_ms.tolist() == [10.0, 10.0, 20.0, 20.0]  # type: ignore[union-attr]
    assert r.outcomes["on_time"] == 4


def test_a_full_queue_rejects() -> None:
    trace = Trace(np.zeros(3), duration=0.1)
    r = simulate(one_subnet(), trace, policy="fixed:s0", slo_ms=25, queue_capacity=1)
    assert r.engine == "reference"
    assert r.outcome.tolist() == [ON_TIME, REJECTED, REJECTED]  # type: ignore[union-attr]


def test_per_request_deadlines_override_the_slo() -> None:
    trace = Trace(np.zeros(3), np.array([50.0, 15.0, 25.0]), duration=0.1)
    r = simulate(one_subnet(), trace, policy="fixed:s0")  # earliest deadline first: 15, 25, then 50
    assert r.engine == "reference"
    assert r.finish_ms.tolist() == [30.0, 10.0, 20.0]  # type: ignore[union-attr]
    assert r.outcomes["on_time"] == 3
    with pytest.raises(SimulationError, match="fast engine needs deadlines in arrival order"):
        simulate(one_subnet(), trace, policy="fixed:s0", engine="fast")


@given(
    monotone_profiles(),
    small_traces(per_request=True),
    st.sampled_from(POLICIES),
    st.integers(1, 3),
    st.sampled_from([0.0, 0.2]),
    st.sampled_from([None, 1, 5]),
    st.booleans(),
)
@settings(max_examples=120, deadline=None)
def test_every_request_ends_in_exactly_one_consistent_outcome(
    p: ServingProfile, trace: Trace, policy: str, workers: int, noise: float, capacity: int | None, hopeless: bool
) -> None:
    r = simulate(
        p,
        trace,
        policy=policy,
        slo_ms=20.0,
        workers=workers,
        latency_noise=noise,
        queue_capacity=capacity,
        expire_hopeless=hopeless,
        seed=1,
    )
    n = len(trace)
    assert sum(r.outcomes.values()) == n == r.requests
    outcome, finish = r.outcome, r.finish_ms
    assert outcome is not None and finish is not None and set(np.unique(outcome)) <= {0, 1, 2, 3}
    deadline = trace.arrivals_s * 1000 + (trace.deadlines_ms if trace.deadlines_ms is not None else 20.0)
    served = np.isfinite(finish)
    assert np.array_equal(served, (outcome == ON_TIME) | (outcome == LATE))
    assert np.all(finish[outcome == ON_TIME] <= deadline[outcome == ON_TIME])
    assert np.all(finish[outcome == LATE] > deadline[outcome == LATE])
    floor = p.min_latency_ms * max(0.05, 1 - 3 * noise) if noise else p.min_latency_ms
    assert np.all(finish[served] >= trace.arrivals_s[served] * 1000 + floor - 1e-9)
    if capacity is None:
        assert r.outcomes["rejected"] == 0
    assert sum(r.subnet_requests.values()) == r.outcomes["on_time"] + r.outcomes["late"]
    if r.series:
        assert sum(r.series["served"]) == pytest.approx(r.outcomes["on_time"] + r.outcomes["late"])
        assert sum(r.series["on_time"]) == pytest.approx(r.outcomes["on_time"])
        assert sum(r.series["missed"]) == pytest.approx(n - r.outcomes["on_time"])
    if r.outcomes["on_time"]:
        assert min(p.acc) - 1e-12 <= r.mean_accuracy <= max(p.acc) + 1e-12  # type: ignore[operator]


@given(monotone_profiles(), small_traces(), st.sampled_from(POLICIES), st.integers(1, 3), st.sampled_from([0.0, 0.3]))
@settings(max_examples=120, deadline=None)
def test_fast_and_reference_engines_agree(
    p: ServingProfile, trace: Trace, policy: str, workers: int, noise: float
) -> None:
    kwargs: dict[str, Any] = {"policy": policy, "slo_ms": 15.0, "workers": workers, "latency_noise": noise, "seed": 3}
    fast = simulate(p, trace, engine="fast", **kwargs)
    ref = simulate(p, trace, engine="reference", **kwargs)
    assert np.array_equal(fast.outcome, ref.outcome)  # type: ignore[arg-type]
    assert np.array_equal(fast.finish_ms, ref.finish_ms, equal_nan=True)  # type: ignore[arg-type]
    assert fast.subnet_requests == ref.subnet_requests and fast.batches == ref.batches


def test_a_long_bursty_trace_on_both_engines() -> None:
    p = small_profile()
    trace = traces.bursty(300, 900, 8, 20, seed=4)
    for policy in ("drainfit", "slackfit", "infaas"):
        fast = simulate(p, trace, policy=policy, slo_ms=30, engine="fast", latency_noise=0.1)
        ref = simulate(p, trace, policy=policy, slo_ms=30, engine="reference", latency_noise=0.1)
        assert fast.outcomes == ref.outcomes and fast.extras["accuracy_sum"] == pytest.approx(
            ref.extras["accuracy_sum"]
        )


def test_overload_favours_adaptive_policies_over_the_largest_subnet() -> None:
    p = small_profile()
    trace = traces.poisson(1500, 10, seed=0)  # s3 sustains ~1 request/ms at its SLO batch cap
    largest = simulate(p, trace, policy="fixed:largest", slo_ms=30)
    slackfit = simulate(p, trace, policy="slackfit", slo_ms=30)
    assert largest.attainment < 0.5 < 0.95 < slackfit.attainment
    assert slackfit.mean_accuracy > p.acc[0]  # type: ignore[operator]


class BadPolicy(Policy):
    name = "bad"

    def choose(self, now_ms: float, earliest: float, queued: int, arrivals: int, idle: int) -> tuple[int, int]:
        return 0, 0


class WaitingPolicy(Policy):
    """Waits until 3 requests are queued."""

    name = "wait3"

    def choose(self, now_ms: float, earliest: float, queued: int, arrivals: int, idle: int) -> tuple[int, int] | None:
        return (0, 4) if queued >= 3 else None


def test_policy_instances_and_their_errors() -> None:
    p = small_profile()
    trace = Trace(np.array([0.0, 0.001, 0.002, 0.003]), duration=0.1)
    with pytest.raises(PolicyError, match="outside the profile"):
        simulate(p, trace, policy=BadPolicy(p), slo_ms=20)
    r = simulate(p, trace, policy=WaitingPolicy(p), slo_ms=20)
    assert r.finish_ms.tolist()[:3] == [2.0 + 1.8] * 3  # type: ignore[union-attr]
    assert r.outcome.tolist()[3] == EXPIRED  # type: ignore[union-attr]  # never three again: expires at the end
    other = ServingProfile(synthetic_profile([0.5], [1.0], [0.1], batch_sizes=(1, 2)))
    with pytest.raises(SimulationError, match="different profile"):
        simulate(other, trace, policy=make_policy("maxacc", p), slo_ms=20)
    with pytest.raises(PolicyError, match="options apply to a policy given by name"):
        simulate(p, trace, policy=make_policy("maxacc", p), slo_ms=20, buckets=3)


def test_bad_simulation_arguments() -> None:
    p = small_profile()
    trace = traces.poisson(100, 1, seed=0)
    with pytest.raises(SimulationError, match="slo_ms is required"):
        simulate(p, trace)
    with pytest.raises(SimulationError, match="engine 'turbo'"):
        simulate(p, trace, slo_ms=10, engine="turbo")
    with pytest.raises(SimulationError, match="workers"):
        simulate(p, trace, slo_ms=10, workers=0)
    with pytest.raises(SimulationError, match="latency_noise"):
        simulate(p, trace, slo_ms=10, latency_noise=-0.1)
    with pytest.raises(SimulationError, match="trace"):
        simulate(p, [0.0, 1.0], slo_ms=10)  # type: ignore[arg-type]
    empty = simulate(p, Trace(np.empty(0), duration=1.0), slo_ms=10)
    assert empty.requests == 0 and empty.attainment == 1.0 and empty.mean_accuracy is None


@given(monotone_profiles(), small_traces(), st.integers(1, 3), st.sampled_from(["slackfit", "drainfit", "maxacc"]))
@settings(max_examples=60, deadline=None)
def test_the_batch_log_holds_every_batch_served_in_dispatch_order(
    p: ServingProfile, trace: Trace, workers: int, policy: str
) -> None:
    """One row per batch (start ms, subnet index, size): the sizes add up to the requests served, the subnets
    to `subnet_requests`, and starts never go back in time."""
    r = simulate(p, trace, policy=policy, slo_ms=12.0, workers=workers)
    log = r.batch_log
    assert log is not None and log.shape == (r.batches, 3)
    assert int(log[:, 2].sum()) == r.outcomes["on_time"] + r.outcomes["late"]
    per_subnet = np.bincount(log[:, 1].astype(int), weights=log[:, 2], minlength=len(p))
    assert [int(v) for v in per_subnet] == [r.subnet_requests[sid] for sid in p.subnet_ids]
    assert np.all(np.diff(log[:, 0]) >= 0)
    assert np.all(log[:, 2] >= 1)
