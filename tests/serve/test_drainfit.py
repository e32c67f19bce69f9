"""DrainFit, the default policy: the most accurate subnet when idle, a drain under a backlog, never worse than
SlackFit's attainment on the benchmark's kinds of workload, and the same decisions on both simulator engines."""

from __future__ import annotations

import pytest

from tailor.serve import DEFAULT_POLICY, DrainFit, QueueView, ServingProfile, SlackFit, simulate, traces
from tailor.serve.profile import ofa_like_profile, synthetic_profile


def outlier_profile() -> ServingProfile:
    """Three subnets; the least accurate one at batch 32 was measured 10x too slow (a busy machine), so it owns
    SlackFit's top bucket."""
    profile = synthetic_profile([0.90, 0.94, 0.98], [1.0, 2.0, 3.0], [0.1, 0.2, 0.4], batch_sizes=(1, 8, 32))
    entry = profile.subnets[0]
    slow = entry.latency_ms[32]
    entry.latency_ms[32] = type(slow)(slow.p50 * 10, slow.p90 * 10, slow.p99 * 10)
    return ServingProfile(profile)


def test_an_idle_server_serves_the_most_accurate_subnet_that_fits() -> None:
    p = outlier_profile()
    slackfit = SlackFit(p, slo_ms=50)
    drainfit = DrainFit(p, slo_ms=50)
    assert slackfit.choose(0.0, 50.0, 1, 1, 1) == (0, 32)  # the outlier owns the top bucket
    assert drainfit.choose(0.0, 50.0, 1, 1, 1) == (2, 1)  # one request: the most accurate subnet, it fits
    trace = traces.poisson(20, 30, seed=1)
    low_sf = simulate(p, trace, policy="slackfit", slo_ms=50)
    low_df = simulate(p, trace, policy="drainfit", slo_ms=50)
    assert low_df.attainment == low_sf.attainment == 1.0
    assert low_df.mean_accuracy == pytest.approx(0.98)
    assert low_sf.mean_accuracy == pytest.approx(0.90)


def test_low_load_on_an_ofa_like_profile_is_within_a_tenth_of_a_point_of_the_largest() -> None:
    p = ServingProfile(ofa_like_profile())
    largest = p.acc[-1]
    rate = 0.25 * 32 / p.lat[-1][p.batch_slot[32]] * 1000  # a quarter of what the largest subnet sustains
    trace = traces.poisson(rate, 60, seed=3)
    for workers in (1, 4):
        r = simulate(p, trace.scaled(workers), policy="drainfit", slo_ms=36, workers=workers)
        assert r.attainment == 1.0 and largest - r.mean_accuracy <= 0.001
        assert simulate(p, trace.scaled(workers), policy="slackfit", slo_ms=36, workers=workers).mean_accuracy < (
            r.mean_accuracy
        )


def test_a_backlog_is_drained_instead_of_served_slowly() -> None:
    """Fresh requests have a whole SLO of slack, so SlackFit runs a slow accurate batch; with 60 more waiting,
    that leaves requests behind it that the fastest drain would have saved."""
    p = ServingProfile(ofa_like_profile())
    slackfit, drainfit = SlackFit(p, slo_ms=36), DrainFit(p, slo_ms=36)
    now = 0.0
    deadlines = [now + 35.0 - 0.05 * k for k in range(64)][::-1]  # 64 requests arrived in the last 3 ms
    view = QueueView(sorted_deadlines=deadlines, busy=lambda _: [])
    view.head, view.tail = 0, len(deadlines)
    drainfit.view = view
    s_sf, b_sf = slackfit.choose(now, deadlines[0], 64, 64, 1)
    s_df, b_df = drainfit.choose(now, deadlines[0], 64, 64, 1)
    assert p.lat[s_sf][p.batch_slot[b_sf]] > p.lat[s_df][p.batch_slot[b_df]]  # a faster batch
    assert b_df >= b_sf
    missed_after = drainfit._drain_misses(deadlines, b_df, [now + p.lat[s_df][p.batch_slot[b_df]]])
    missed_sf = drainfit._drain_misses(deadlines, b_sf, [now + p.lat[s_sf][p.batch_slot[b_sf]]])
    assert missed_after < missed_sf


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("cv2", [2, 8])
def test_bursts_never_cost_attainment_against_slackfit(workers: int, cv2: int) -> None:
    p = ServingProfile(ofa_like_profile())
    fastest = 32 / p.lat[0][p.batch_slot[32]] * 1000
    rate = 0.85 * fastest * workers
    trace = traces.bursty(0.25 * rate, 0.75 * rate, cv2, 15_000 / rate, seed=cv2)
    sf = simulate(p, trace, policy="slackfit", slo_ms=36, workers=workers)
    df = simulate(p, trace, policy="drainfit", slo_ms=36, workers=workers)
    assert df.attainment >= sf.attainment - 0.001
    assert df.mean_accuracy >= sf.mean_accuracy - 0.0005


def test_drainfit_is_the_default_and_checks_its_options() -> None:
    p = ServingProfile(ofa_like_profile())
    assert DEFAULT_POLICY == "drainfit"
    assert simulate(p, traces.poisson(100, 1, seed=0), slo_ms=36).policy.startswith("drainfit")
    with pytest.raises(ValueError, match="lookahead must be a positive integer, got 0"):
        DrainFit(p, slo_ms=36, lookahead=0)
    with pytest.raises(ValueError, match=r"arrival_reserve must be a number in \[0, 4\]"):
        DrainFit(p, slo_ms=36, arrival_reserve=-1)
