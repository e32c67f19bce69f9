"""tailor.serve.policies: each policy against a brute-force reading of its definition."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_helpers import monotone_profiles, small_profile

from tailor.serve import Decision, EDFQueue, Request, ServingProfile, make_policy
from tailor.serve.policies import INFaaS, MaxAcc, MaxBatch, PolicyError, QueueView, SlackFit, policy_names

slacks = st.floats(-5.0, 80.0, allow_nan=False)


def choices(p: ServingProfile) -> list[tuple[float, int, int]]:
    return [(p.lat[s][j], s, b) for s in range(len(p)) for j, b in enumerate(p.batch_sizes)]


@given(monotone_profiles(), st.integers(1, 12), st.sampled_from(["edge", "choice"]))
@settings(max_examples=80, deadline=None)
def test_slackfit_buckets_hold_the_largest_batch_of_their_latency_range(
    p: ServingProfile, buckets: int, fit: str
) -> None:
    policy = SlackFit(p, buckets=buckets, fit=fit)
    lo, hi = p.min_latency_ms, p.max_latency_ms
    width = (hi - lo) / buckets
    assert policy.edges_ms[-1] == hi and policy.upper_ms == sorted(policy.upper_ms)
    for upper, (s, b), lat in zip(policy.upper_ms, policy.choices, policy.choice_latency_ms):
        k = policy.edges_ms.index(upper)
        low = lo + width * k if k else -1.0
        members = [(lat_, s_, b_) for lat_, s_, b_ in choices(p) if low < lat_ <= upper or (k == 0 and lat_ == lo)]
        assert (lat, s, b) in members
        best = max(members, key=lambda m: (m[2], p.acc[m[1]], -m[0]))
        assert (s, b) == (best[1], best[2])
    # every choice lies in exactly one bucket, so the buckets' members cover the profile
    assert len(policy.choices) <= buckets


@given(
    monotone_profiles(),
    st.integers(1, 12),
    st.sampled_from(["edge", "choice"]),
    st.sampled_from(["drop", "serve"]),
    slacks,
    st.integers(1, 40),
)
@settings(max_examples=150, deadline=None)
def test_slackfit_runs_the_highest_bucket_below_the_slack(
    p: ServingProfile, buckets: int, fit: str, below: str, slack: float, queued: int
) -> None:
    policy = SlackFit(p, buckets=buckets, fit=fit, below=below)
    s, b = policy.choose(100.0, 100.0 + slack, queued, queued, 1)
    thresholds = policy.upper_ms if fit == "edge" else policy.choice_latency_ms
    assert policy.min_latency_ms == (policy.choice_latency_ms[0] if below == "drop" else p.min_latency_ms)
    below_slack = [k for k, t in enumerate(thresholds) if t <= slack]
    if below_slack:
        assert (s, b) == policy.choices[max(below_slack)]
        assert p.latency_ms(p.subnet_ids[s], b) <= slack  # the chosen choice fits
        return
    fitting = [c for c in choices(p) if c[0] <= slack]
    if fitting and below == "serve":  # slack below every bucket: the largest batch that still fits, then accuracy
        best = max(fitting, key=lambda m: (m[2], p.acc[m[1]], -m[0]))
        assert (s, b) == (best[1], best[2])
    else:  # dropped requests should not reach it; if one does, or nothing fits: the lowest bucket's choice
        assert (s, b) == policy.choices[0]


def test_slackfit_below_every_bucket_on_a_known_profile() -> None:
    p = small_profile()
    policy = SlackFit(p, buckets=4, below="serve")
    # fastest choice 1.2 ms (s0, batch 1); slowest 28.6 ms (s3, batch 32); first bucket edge 8.05 ms
    assert policy.upper_ms[0] == pytest.approx(1.2 + (28.6 - 1.2) / 4)
    assert policy.choose(0.0, 2.0, 10, 10, 1) == (0, 4)  # 1.8 ms fits; batch 8 (2.6 ms) does not
    assert policy.choose(0.0, 1.0, 10, 10, 1) == policy.choices[0]  # nothing fits: lowest bucket
    assert policy.choices[0] == (0, 32)  # s0 at batch 32 takes 7.4 ms: the lowest bucket's largest batch
    assert policy.choose(0.0, 100.0, 1, 1, 1) == (3, 32)  # ample slack: the top bucket
    dropping = SlackFit(p, buckets=4)
    assert dropping.below == "drop" and dropping.min_latency_ms == pytest.approx(7.4)  # (s0, 32) still fits
    assert dropping.choose(0.0, 7.5, 10, 10, 1) == (0, 32)  # below the first edge (8.05 ms), above 7.4 ms
    assert dropping.choose(0.0, 2.0, 10, 10, 1) == (0, 32)  # only if asked anyway: the lowest bucket


def brute_maxacc(p: ServingProfile, slack: float, queued: int) -> tuple[int, int]:
    batch = min(queued, p.max_batch)
    ok = [s for s in range(len(p)) if p.latency_ms(p.subnet_ids[s], batch) <= slack]
    if ok:
        return max(ok, key=lambda s: p.acc[s]), batch
    for b in reversed([b for b in p.batch_sizes if b < batch]):
        ok = [s for s in range(len(p)) if p.latency_ms(p.subnet_ids[s], b) <= slack]
        if ok:
            return max(ok, key=lambda s: p.acc[s]), b
    return min(range(len(p)), key=lambda s: p.latency_ms(p.subnet_ids[s], batch)), batch


def brute_maxbatch(p: ServingProfile, slack: float) -> tuple[int, int]:
    for b in reversed(p.batch_sizes):
        ok = [s for s in range(len(p)) if p.latency_ms(p.subnet_ids[s], b) <= slack]
        if ok:
            return max(ok, key=lambda s: p.acc[s]), b
    return min(range(len(p)), key=lambda s: p.lat[s][-1]), p.max_batch


@given(monotone_profiles(), slacks, st.integers(1, 40))
@settings(max_examples=150, deadline=None)
def test_maxacc_and_maxbatch_match_their_definitions(p: ServingProfile, slack: float, queued: int) -> None:
    assert MaxAcc(p).choose(10.0, 10.0 + slack, queued, queued, 1) == brute_maxacc(p, slack, queued)
    assert MaxBatch(p).choose(10.0, 10.0 + slack, queued, queued, 1) == brute_maxbatch(p, slack)


def test_fixed_subnet_batches_up_to_the_slo_cap() -> None:
    p = small_profile()
    policy = make_policy("fixed:s2", p, slo_ms=20.0)  # s2: 2.2 + 0.55 b <= 10 -> b = 8 (6.6 ms), 16 is 11 ms
    assert policy.batch_cap == 8 and policy.min_latency_ms == pytest.approx(2.75)
    assert policy.choose(0.0, 20.0, 3, 3, 1) == (2, 3)
    assert policy.choose(0.0, 20.0, 50, 50, 1) == (2, 8)
    fitted = make_policy("fixed:s2", p, slo_ms=20.0, fit_slack=True)
    assert fitted.choose(0.0, 4.0, 50, 50, 1) == (2, 2)  # batch 2 takes 3.3 ms, batch 4 takes 4.4 ms
    assert fitted.choose(0.0, 1.0, 50, 50, 1) == (2, 1)
    whole = make_policy("fixed:largest", p, slo_ms=40.0, batch_slo_fraction=1.0)
    assert whole.subnet_id == "s3" and whole.batch_cap == 32
    assert make_policy("fixed:smallest", p, slo_ms=5.0).subnet_id == "s0"


def test_infaas_switches_variant_with_the_measured_rate() -> None:
    p = small_profile()
    policy = INFaaS(p, slo_ms=20.0, interval_ms=100.0, headroom=1.0)
    # throughput at the SLO/2 batch cap, requests per ms
    assert policy.batch_caps == [32, 16, 8, 8]
    assert policy.throughput[0] == pytest.approx(32 / 7.4)
    assert policy.choose(0.0, 20.0, 1, 0, 1) == (3, 1)  # starts on the most accurate variant
    # 1 request/ms: s3 sustains only 8 / 9.4 = 0.85 per ms, s2 sustains 8 / 6.6 = 1.2 per ms
    assert policy.choose(100.0, 120.0, 1, 100, 1)[0] == 2
    assert policy.current == 2 and policy.switches == 1
    assert policy.choose(200.0, 220.0, 40, 500, 1) == (0, 32)  # 4 per ms: only s0 (4.3 per ms) keeps up
    assert policy.choose(300.0, 320.0, 1, 505, 1)[0] == 3  # nearly idle: back to the most accurate
    assert policy.switches == 3
    cheap = INFaaS(p, slo_ms=20.0, min_accuracy=0.74)
    assert cheap.select(0.01) == 1  # the cheapest variant at least 74% accurate


def test_make_policy_names_and_errors() -> None:
    p = small_profile()
    assert make_policy("slackfit", p, buckets=5).buckets == 5
    assert isinstance(make_policy("maxbatch", p), MaxBatch)
    with pytest.raises(PolicyError, match="unknown policy 'fastest'"):
        make_policy("fastest", p)
    with pytest.raises(PolicyError, match="upper_bound is an offline bound"):
        make_policy("upper_bound", p)
    with pytest.raises(PolicyError, match="buckets"):
        make_policy("slackfit", p, buckets=0)
    with pytest.raises(PolicyError, match="unexpected keyword argument 'bucket'"):
        make_policy("slackfit", p, bucket=4)
    with pytest.raises(PolicyError, match="no subnet 'zz'"):
        make_policy("fixed:zz", p, slo_ms=10.0)
    with pytest.raises(PolicyError, match="needs slo_ms"):
        make_policy("infaas", p)


def test_decide_reads_the_queue_and_names_the_subnet() -> None:
    p = small_profile()
    policy = make_policy("maxacc", p)
    queue = EDFQueue()
    assert policy.decide(0.0, queue, 1) is None
    for i in range(5):
        queue.push(Request(i, 0.0, 30.0 + i))
    decision = policy.decide(5.0, queue, 1)
    assert decision == Decision("s3", 5) == Decision(*brute_named(p, 25.0, 5))


def brute_named(p: ServingProfile, slack: float, queued: int) -> tuple[str, int]:
    s, b = brute_maxacc(p, slack, queued)
    return p.subnet_ids[s], b


def test_every_policy_file_registers_a_policy_and_a_new_one_plugs_in() -> None:
    import pkgutil

    import tailor.serve.policies as package
    from tailor.serve import Policy, make_policy, policy_names, register_policy, simulate, synthetic_profile, traces
    from tailor.serve.policies import base

    files = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"base"}
    registered = {name.split(":")[0] for name in policy_names()} - {"upper_bound"}
    assert files == registered  # one file, one policy, nothing else to edit

    @register_policy("always-smallest-test")
    class AlwaysSmallest(Policy):
        def choose(self, now_ms, earliest_deadline_ms, queue_len, arrivals, idle_workers):  # type: ignore[override]
            return 0, 1

    try:
        p = synthetic_profile([0.5, 0.9], [1.0, 2.0], [0.1, 0.2])
        assert isinstance(make_policy("always-smallest-test", p, slo_ms=20), AlwaysSmallest)
        r = simulate(p, traces.poisson(50, 2, seed=0), policy="always-smallest-test", slo_ms=20)
        assert r.subnet_requests == {"s0": r.requests - r.outcomes["expired"], "s1": 0}
    finally:
        base._REGISTRY.pop("always-smallest-test")


ONLINE_POLICIES = [name for name in policy_names() if name not in ("upper_bound", "fixed:<id>")] + ["fixed:largest"]


@pytest.mark.parametrize("name", ONLINE_POLICIES)
@given(steps=st.lists(st.tuples(st.sampled_from([0.5, 2.0, 10.0, 400.0, 1500.0]), st.integers(1, 40), st.integers(0, 3000)), min_size=2,
                      max_size=20),
       handover=st.integers(0, 19))
@settings(max_examples=80, deadline=None)
def test_a_policy_that_takes_over_decides_as_the_one_it_replaced(name: str, steps: list, handover: int) -> None:
    """The server swaps a policy for one built over a rescaled profile (`take_over_from`); over the same profile
    the successor must decide exactly as its predecessor would have from then on: every piece of state it
    keeps across decisions (INFaaS's variant and interval, DrainFit's arrival rate) is carried over."""
    p = small_profile()
    queue = EDFQueue(None)
    kept = make_policy(name, p, slo_ms=20.0, workers=2)
    replaced = make_policy(name, p, slo_ms=20.0, workers=2)
    for policy in (kept, replaced):
        if policy.lookahead:
            policy.view = QueueView(queue)
    now, arrivals = 0.0, 0
    for index, (gap, queued, arrived) in enumerate(steps):
        now += gap
        arrivals += arrived
        queue.pop(len(queue))  # a fresh queue each step: deadlines 5-20 ms ahead
        for k in range(queued):
            queue.push(Request(k, now, now + 5.0 + 15.0 * k / queued, None))
        if index == handover:
            successor = make_policy(name, p.scaled(1.0), slo_ms=20.0, workers=2)
            successor.take_over_from(replaced)
            replaced = successor
        head = queue.earliest_deadline()
        assert kept.choose(now, head, queued, arrivals, 1) == replaced.choose(now, head, queued, arrivals, 1)
