"""tailor.serve.traces: seeded generators with the rates and burstiness they promise, CSV files, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve import traces
from tailor.serve.traces import Trace, TraceError


def cv2_of_gaps(trace: Trace) -> float:
    gaps = np.diff(trace.arrivals_s)
    return float(gaps.var() / gaps.mean() ** 2)


def test_poisson_rate_and_reproducibility() -> None:
    trace = traces.poisson(2000, 50, seed=3)
    expected = 2000 * 50
    assert abs(len(trace) - expected) < 5 * expected**0.5
    assert np.all(np.diff(trace.arrivals_s) >= 0) and trace.arrivals_s[-1] <= 50
    assert trace.duration_s == 50 and trace.mean_rate == pytest.approx(len(trace) / 50)
    assert np.array_equal(trace.arrivals_s, traces.poisson(2000, 50, seed=3).arrivals_s)
    assert not np.array_equal(trace.arrivals_s[:100], traces.poisson(2000, 50, seed=4).arrivals_s[:100])
    assert cv2_of_gaps(trace) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("cv2", [0.5, 2.0, 8.0])
def test_gamma_arrivals_have_the_requested_burstiness(cv2: float) -> None:
    trace = traces.gamma(1000, cv2, 200, seed=1)
    assert len(trace) == pytest.approx(200_000, rel=0.05 * max(1, cv2**0.5))
    assert cv2_of_gaps(trace) == pytest.approx(cv2, rel=0.1)


def test_bursty_is_base_plus_gamma() -> None:
    trace = traces.bursty(500, 1500, 8, 100, seed=2)
    assert trace.mean_rate == pytest.approx(2000, rel=0.05)
    # index of dispersion of per-second counts: 1 for Poisson; for the sum, (cv2 * 1500 + 500) / 2000 = 6.25
    per_second = trace.rates(1.0)
    assert 4.0 < per_second.var() / per_second.mean() < 9.0
    smooth = traces.poisson(2000, 100, seed=2).rates(1.0)
    assert 0.6 < smooth.var() / smooth.mean() < 1.5
    with pytest.raises(TraceError, match="base_rate \\+ burst_rate must be positive"):
        traces.bursty(0, 0, 2, 10)


def test_ramp_rises_at_the_given_acceleration() -> None:
    trace = traces.ramp(100, 1100, 50, seed=0, hold_s=10)  # 20 s of ramp, then 10 s at 1100/s
    assert trace.duration_s == pytest.approx(30)
    rates = trace.rates(1.0)
    assert rates[:2].mean() == pytest.approx(100 + 50, rel=0.25)  # mean over the first two seconds: 150/s
    assert rates[18:20].mean() == pytest.approx(100 + 50 * 19, rel=0.1)
    assert rates[20:].mean() == pytest.approx(1100, rel=0.05)
    expected = 100 * 20 + 50 * 20**2 / 2 + 1100 * 10
    assert abs(len(trace) - expected) < 5 * expected**0.5
    falling = traces.ramp(1000, 0, 100, seed=0)
    assert falling.rates(1.0)[0] > 5 * falling.rates(1.0)[-1]


@given(st.lists(st.sampled_from([0.0, 0.0, 50.0, 400.0]), min_size=1, max_size=12), st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_from_rates_puts_no_arrival_in_a_zero_rate_bin(rates: list[float], seed: int) -> None:
    if sum(rates) == 0:
        assert len(Trace.from_rates(rates, 0.5, seed)) == 0
        return
    trace = Trace.from_rates(rates, 0.5, seed)
    counts = np.bincount((trace.arrivals_s / 0.5).astype(int), minlength=len(rates))
    for count, rate in zip(counts, rates):
        if rate == 0:
            assert count == 0
    assert trace.duration_s == pytest.approx(0.5 * len(rates))


def test_rates_csv_formats_and_errors(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("rate\n# per second\n1000\n0\n3000\n", encoding="utf-8")
    trace = Trace.from_rates_csv(one, seed=1)
    per_second = trace.rates(1.0)
    assert (
        per_second[1] == 0
        and per_second[0] == pytest.approx(1000, rel=0.15)
        and per_second[2] == pytest.approx(3000, rel=0.1)
    )
    two = tmp_path / "two.csv"
    two.write_text("start_s,rate\n10,1000\n12,0\n13,500\n", encoding="utf-8")
    trace = Trace.from_rates_csv(two, seed=1)
    assert trace.duration_s == pytest.approx(4.0)  # last rate lasts the previous spacing (1 s)
    assert np.all((trace.arrivals_s < 2) | (trace.arrivals_s >= 3))
    bad = tmp_path / "bad.csv"
    bad.write_text("1000\nmany\n", encoding="utf-8")
    with pytest.raises(TraceError, match="line 2: expected numbers"):
        Trace.from_rates_csv(bad)
    bad.write_text("1000\n-5\n", encoding="utf-8")
    with pytest.raises(TraceError, match="rate #1 is -5.0"):
        Trace.from_rates_csv(bad)
    bad.write_text("0,10\n0,20\n", encoding="utf-8")
    with pytest.raises(TraceError, match="start times must increase"):
        Trace.from_rates_csv(bad)
    with pytest.raises(TraceError, match="cannot read"):
        Trace.from_rates_csv(tmp_path / "missing.csv")


def test_arrivals_csv_round_trip_is_exact(tmp_path: Path) -> None:
    trace = traces.bursty(100, 300, 4, 5, seed=9).with_deadlines(25.0)
    loaded = Trace.load_csv(trace.save_csv(tmp_path / "t.csv"))
    assert np.array_equal(loaded.arrivals_s, trace.arrivals_s)
    assert np.array_equal(loaded.deadlines_ms, trace.deadlines_ms)  # type: ignore[arg-type]


def test_azure_like_rates_have_the_mean_a_daily_cycle_and_spikes() -> None:
    rates = traces.azure_like_rates(3600, 800, seed=5, noise=0.0, spikes_per_minute=0.0)
    assert rates.mean() == pytest.approx(800)
    assert rates[:60].mean() < 0.5 * rates[1740:1860].mean()  # trough at the start, peak mid-"day"
    spiky = traces.azure_like_rates(3600, 800, seed=5, spikes_per_minute=2.0, spike_height=6.0)
    assert spiky.max() > 2.5 * np.median(spiky)
    assert np.array_equal(spiky, traces.azure_like_rates(3600, 800, seed=5, spikes_per_minute=2.0, spike_height=6.0))
    trace = traces.azure_like(120, 500, seed=1)
    assert trace.mean_rate == pytest.approx(500, rel=0.05)


def test_trace_validation_and_transforms() -> None:
    with pytest.raises(TraceError, match="arrivals must be sorted"):
        Trace(np.array([0.0, 2.0, 1.0]))
    with pytest.raises(TraceError, match=">= 0"):
        Trace(np.array([-1.0, 2.0]))
    with pytest.raises(TraceError, match="2 deadlines for 3 arrivals"):
        Trace(np.array([0.0, 1.0, 2.0]), np.array([5.0, 5.0]))
    with pytest.raises(TraceError, match="positive finite"):
        Trace(np.array([0.0]), np.array([0.0]))
    with pytest.raises(TraceError, match="rate"):
        traces.poisson(-1, 10)
    trace = traces.poisson(1000, 10, seed=0)
    fast = trace.scaled(2.0)
    assert fast.duration_s == 5 and fast.mean_rate == pytest.approx(2 * trace.mean_rate)
    part = trace.window(2.0, 4.0)
    assert part.duration_s == 2.0 and len(part) == int(((trace.arrivals_s >= 2) & (trace.arrivals_s < 4)).sum())
    assert part.arrivals_s.min() >= 0
    with pytest.raises(ValueError):
        trace.arrivals_s[0] = 5.0  # read-only
