"""DrainFit, the default policy: the most accurate subnet when idle, a drain under a backlog, never worse than
SlackFit's attainment on the benchmark's kinds of workload, and the same decisions on both simulator engines."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def edge_profile(fastest_per_item_ms: float) -> ServingProfile:
    """torch's shape on the overload benchmark: four subnets, batches 1-16; how slow the fastest subnet's batch of
    16 is decides on which side of SlackFit's first bucket edge it falls (0.16 ms an item: above it)."""
    return ServingProfile(synthetic_profile(
        [0.944, 0.947, 0.958, 0.972], [0.5, 0.7, 0.9, 1.0], [fastest_per_item_ms, 0.3, 0.5, 0.8],
        batch_sizes=(1, 2, 4, 8, 16)))


def late_head_choice(policy: Any, profile: ServingProfile, slack_fraction: float, queued: int) -> tuple[int, int]:
    """The policy's choice for a head with `slack_fraction` of what SlackFit's lowest bucket's choice needs for the
    requests it would take (so the head is late whatever SlackFit runs), `queued` requests due 0.1 ms apart."""
    subnet, batch = SlackFit(profile, slo_ms=50).choices[0]
    slack = slack_fraction * profile.lat[subnet][profile.batch_slot[min(queued, batch)]]
    deadlines = [slack + 0.1 * k for k in range(queued)]
    view = QueueView(sorted_deadlines=deadlines, busy=lambda _: [])
    view.head, view.tail = 0, len(deadlines)
    policy.view = view
    return policy.choose(0.0, deadlines[0], queued, queued, 1)


def test_slackfits_lowest_bucket_can_hold_half_a_batch_of_the_fastest_subnet() -> None:
    """The live server's bad state under a 3x torch burst (batches of 8 for the whole burst, ~half the goodput): a
    profile whose fastest batch of 16 lies just above the first bucket's edge makes SlackFit's answer to a late head
    a batch of 8; DrainFit runs the batch of 16 whichever side of the edge it falls."""
    above, below = edge_profile(0.16), edge_profile(0.10)
    assert SlackFit(above, slo_ms=50).choices[0] == (0, 8)
    assert SlackFit(below, slo_ms=50).choices[0] == (0, 16)
    for profile in (above, below):
        assert late_head_choice(DrainFit(profile, slo_ms=50), profile, 0.5, 100) == (0, 16)
    assert late_head_choice(SlackFit(above, slo_ms=50), above, 0.5, 100) == (0, 8)


@settings(max_examples=60, deadline=None)
@given(per_item=st.floats(0.05, 0.3), slack_fraction=st.floats(0.0, 0.99), queued=st.integers(1, 300))
def test_a_late_head_under_a_backlog_gets_the_fastest_full_batch(per_item: float, slack_fraction: float, queued: int) -> None:
    """The head is late whatever runs, so the batch decides only how fast the rest drains: with requests waiting
    behind SlackFit's batch DrainFit runs the fastest subnet's largest batch the queue fills; without, SlackFit's."""
    profile = edge_profile(per_item)
    slackfit_choice = late_head_choice(SlackFit(profile, slo_ms=50), profile, slack_fraction, queued)
    choice = late_head_choice(DrainFit(profile, slo_ms=50), profile, slack_fraction, queued)
    if queued > slackfit_choice[1]:
        assert choice == (0, min(queued, 16))
    else:
        assert choice == (slackfit_choice[0], queued)
