"""tailor.serve.profile: the serving view of a profile (ordering, Pareto filter, lookups, monotonicity report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_helpers import BATCHES, monotone_profiles, small_profile

import tailor.serve as serve
from tailor.cost.measure import LatencyStats
from tailor.cost.profile import Profile, SubnetProfile
from tailor.errors import ProfileError
from tailor.serve import ServingProfile, load_profile, synthetic_profile
from tailor.serve.profile import ofa_like_profile


def entry(sid: str, acc: float | None, table: dict[int, float]) -> SubnetProfile:
    return SubnetProfile(
        id=sid, macs=1, params=1, latency_ms={b: LatencyStats(v, v, v) for b, v in table.items()}, accuracy=acc
    )


def profile_of(*entries: SubnetProfile) -> Profile:
    return Profile("m", (3, 8, 8), "cpu", "torch", 1, tuple(entries))


def test_profile_is_the_cost_profile() -> None:
    assert serve.Profile is Profile


def test_subnets_are_ordered_by_accuracy_and_dominated_ones_are_listed() -> None:
    p = ServingProfile(
        profile_of(
            entry("big", 0.9, {1: 5.0, 4: 9.0}),
            entry("small", 0.6, {1: 1.0, 4: 2.0}),
            entry("worse", 0.55, {1: 2.0, 4: 3.0}),  # slower and less accurate than "small"
            entry("mid", 0.8, {1: 3.0, 4: 6.0}),
        )
    )
    assert p.subnet_ids == ["small", "mid", "big"]
    assert p.dropped_subnets == {"worse": "small"}
    assert p.acc == [0.6, 0.8, 0.9]
    with pytest.raises(ProfileError, match="dominated by 'small'"):
        p.latency_ms("worse", 1)
    kept = ServingProfile(p.profile, pareto=False)
    assert kept.subnet_ids == ["worse", "small", "mid", "big"]


def test_latency_between_measured_batch_sizes_is_the_next_size_up() -> None:
    p = small_profile()
    assert p.latency_ms("s0", 3) == p.latency_ms("s0", 4) == pytest.approx(1.0 + 0.2 * 4)
    assert p.latency_ms("s3", 17) == pytest.approx(3.0 + 0.8 * 32)
    with pytest.raises(ProfileError, match="above the largest measured batch size 32"):
        p.latency_ms("s0", 33)
    with pytest.raises(ProfileError, match="positive integer"):
        p.latency_ms("s0", 0)
    with pytest.raises(ProfileError, match="no subnet 'nope'"):
        p.latency_ms("nope", 1)


@given(monotone_profiles(), st.integers(1, 16))
@settings(max_examples=60, deadline=None)
def test_latency_lookup_matches_the_definition(p: ServingProfile, batch: int) -> None:
    sid = p.subnet_ids[-1]
    if batch > p.max_batch:
        with pytest.raises(ProfileError):
            p.latency_ms(sid, batch)
        return
    measured = min(b for b in p.batch_sizes if b >= batch)
    assert p.latency_ms(sid, batch) == p.profile[sid].latency_ms[measured].p99


def test_percentile_chooses_the_column() -> None:
    prof = synthetic_profile([0.5, 0.6], [1.0, 2.0], [0.1, 0.2], batch_sizes=(1, 2), spread=0.2)
    assert ServingProfile(prof, "p50").latency_ms("s1", 2) == pytest.approx(0.8 * 2.4)
    assert ServingProfile(prof, "p99").latency_ms("s1", 2) == pytest.approx(2.4)
    with pytest.raises(ProfileError, match="percentile 'p95'"):
        ServingProfile(prof, "p95")


def test_missing_accuracy_is_refused_naming_the_subnet() -> None:
    with pytest.raises(ProfileError, match=r"subnets\[1\] \('b'\) has no accuracy"):
        ServingProfile(profile_of(entry("a", 0.5, {1: 1.0}), entry("b", None, {1: 2.0})))


def test_batch_sizes_not_measured_for_every_subnet_are_reported() -> None:
    p = ServingProfile(profile_of(entry("a", 0.5, {1: 1.0, 8: 3.0}), entry("b", 0.7, {1: 2.0, 2: 2.5, 8: 5.0})))
    assert p.batch_sizes == [1, 8]
    assert p.dropped_batch_sizes == {"b": [2]}
    assert any("ignored batch sizes [2] of 'b'" in line for line in p.summary())
    with pytest.raises(ProfileError, match="no batch size is measured for every subnet"):
        ServingProfile(profile_of(entry("a", 0.5, {1: 1.0}), entry("b", 0.7, {2: 2.0})))


def test_check_monotonic_names_each_violation() -> None:
    p = ServingProfile(
        profile_of(
            entry("a", 0.5, {1: 1.0, 2: 0.9, 4: 2.0}),  # batch 2 faster than batch 1
            entry("b", 0.7, {1: 2.0, 2: 2.5, 4: 1.5}),  # faster than 'a' at batch 4, and faster at 4 than at 2
        ),
        pareto=False,
    )
    problems = p.check_monotonic()
    assert any("'a': batch 2 is faster than batch 1" in x for x in problems)
    assert any("'b': batch 4 is faster than batch 2" in x for x in problems)
    assert any(x.startswith("batch 4: 'b' (accuracy 0.7000) is faster than 'a'") for x in problems)
    assert len(problems) == 3


@given(monotone_profiles())
@settings(max_examples=40, deadline=None)
def test_monotone_profiles_have_no_violations(p: ServingProfile) -> None:
    assert p.check_monotonic() == []
    assert p.dropped_subnets == {}
    assert p.min_latency_ms == p.lat[0][0] and p.max_latency_ms == p.lat[-1][-1]


def test_load_profile_from_a_file_and_from_a_broken_file(tmp_path: Path) -> None:
    path = small_profile().profile.save(tmp_path / "p.json")
    loaded = load_profile(path)
    assert loaded.subnet_ids == ["s0", "s1", "s2", "s3"] and loaded.batch_sizes == list(BATCHES)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "tailor.profile/1"}), encoding="utf-8")
    with pytest.raises(ProfileError, match="missing"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="expected a Profile"):
        load_profile(42)  # type: ignore[arg-type]


def test_ofa_like_profile_spans_the_published_accuracy_range() -> None:
    p = ServingProfile(ofa_like_profile())
    assert p.acc[0] == pytest.approx(0.738) and p.acc[-1] == pytest.approx(0.802)
    assert len(p) == 7 and p.check_monotonic() == []
    assert p.latency_ms(p.subnet_ids[-1], 32) == pytest.approx(35.5)
