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


def _counted(sid: str, acc: float, repeats: int | None, ms: float = 1.0) -> SubnetProfile:
    stats = {b: LatencyStats(ms * b, ms * b * 1.1, ms * b * 1.2, ms * b, 0.01, repeats) for b in (1, 4)}
    return SubnetProfile(id=sid, macs=1, params=1, latency_ms=stats, accuracy=acc)


@pytest.mark.parametrize(
    ("repeats", "chosen"), [((100, 250), "p99"), ((99, 250), "p90"), ((20, 30), "p90"), ((19, 500), "p50")]
)
def test_auto_percentile_is_the_highest_the_fewest_repeats_support(repeats: tuple[int, int], chosen: str) -> None:
    p = ServingProfile(profile_of(_counted("a", 0.6, repeats[0]), _counted("b", 0.7, repeats[1], 2.0)), "auto")
    assert p.percentile == chosen and p.percentile_requested == "auto"
    assert p.percentile_reason.startswith(f"{chosen}: the fewest timed calls behind a latency entry is {min(repeats)}")
    assert p.latency_ms("b", 4) == getattr(p.profile["b"].latency_ms[4], chosen)
    assert p.summary()[0] == f"latency: {p.percentile_reason}"
    fixed = ServingProfile(profile_of(_counted("a", 0.6, 5)), "p99")
    assert fixed.percentile == "p99" and [i.kind for i in fixed.issues()] == ["thin tail", "thin tail"]


def test_auto_percentile_without_recorded_repeats_plans_with_the_median() -> None:
    p = ServingProfile(profile_of(entry("a", 0.6, {1: 1.0}), _counted("b", 0.7, 500)), percentile="auto")
    assert p.percentile == "p50" and "does not record" in p.percentile_reason
    with pytest.raises(ProfileError, match="'p75'"):
        ServingProfile(profile_of(entry("a", 0.6, {1: 1.0})), percentile="p75")


def test_the_serving_view_says_which_runtime_each_subnet_runs_on() -> None:
    from tailor.cost.runtimes import OutputCheck, RuntimeInfo

    def stats(ms: float) -> dict[int, LatencyStats]:
        return {1: LatencyStats(ms, ms, ms, ms, 0.0, 100), 8: LatencyStats(4 * ms, 4 * ms, 4 * ms, 4 * ms, 0.0, 100)}

    ok = OutputCheck(1.0, 1e-6, 1.0, 64, "random", True)
    entries = (
        SubnetProfile(id="small", macs=1, params=1, accuracy=0.6, runtime="openvino", latency_ms=stats(1.0),
                      alternatives={"onnxruntime": stats(1.5)}, checks={"openvino": ok, "onnxruntime": ok}),
        SubnetProfile(id="big", macs=1, params=1, accuracy=0.8, runtime="onnxruntime", latency_ms=stats(3.0),
                      alternatives={"openvino": stats(3.5)}, checks={"openvino": ok, "onnxruntime": ok}),
    )  # fmt: skip
    infos = {"onnxruntime": RuntimeInfo("onnxruntime", "1.0", "fp32", "cpu", 1),
             "openvino": RuntimeInfo("openvino", "2025", "fp32", "cpu", 1)}  # fmt: skip
    profile = Profile("m", (3, 8, 8), "cpu", "onnxruntime", 1, entries, infos)
    view = ServingProfile(profile, "auto")
    assert view.runtimes == {"small": "openvino", "big": "onnxruntime"} and view.runtime("small") == "openvino"
    assert view.runtime_info("small").precision == "fp32" and view.latency_ms("small", 1) == 1.0
    ort = ServingProfile(profile, "p50", runtimes=["onnxruntime"])
    assert ort.runtimes == {"small": "onnxruntime", "big": "onnxruntime"} and ort.latency_ms("small", 8) == 6.0
    assert "openvino" in " ".join(view.summary()) and "openvino" not in " ".join(ort.summary())
    with pytest.raises(ProfileError, match="no subnet 'medium'"):
        view.runtime("medium")
    with pytest.raises(ProfileError, match="string"):
        ServingProfile(profile, runtimes="onnxruntime")  # type: ignore[arg-type]


@given(monotone_profiles(), st.floats(0.25, 8.0))
@settings(max_examples=60, deadline=None)
def test_a_scaled_profile_multiplies_every_latency_and_leaves_the_original(p: ServingProfile, factor: float) -> None:
    before = [list(row) for row in p.lat]
    scaled = p.scaled(factor)
    assert p.lat == before  # the served profile is not touched
    for sid in p.subnet_ids:
        for b in range(1, p.max_batch + 1):
            assert scaled.latency_ms(sid, b) == pytest.approx(factor * p.latency_ms(sid, b))
        assert scaled.accuracy(sid) == p.accuracy(sid)
    assert scaled.min_latency_ms == pytest.approx(factor * p.min_latency_ms)
    assert scaled.max_latency_ms == pytest.approx(factor * p.max_latency_ms)
    assert scaled.subnet_ids == p.subnet_ids and scaled.batch_sizes == p.batch_sizes


@pytest.mark.parametrize("factor", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_a_scale_factor_that_is_not_a_positive_number_is_refused(factor: object) -> None:
    with pytest.raises(ProfileError, match="scale factor"):
        small_profile().scaled(factor)  # type: ignore[arg-type]
