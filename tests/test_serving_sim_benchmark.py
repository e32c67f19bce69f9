"""`benchmarks/serving_sim.py`'s policy summary: the two readings of how much of SlackFit's gap to the upper bound
DrainFit closes must follow from the rows (the README quotes both), and a DrainFit that only copies SlackFit closes
nothing by either."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark_helpers import load_benchmark


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    return load_benchmark("serving_sim")


def _row(gap: float, gain: float, own_gap: float, kind: str = "bursty", delta: float = 0.0,
         to_most_accurate: float | None = None) -> dict[str, Any]:
    return {"gap_pt": gap, "gain_pt": gain, "closed": gain / gap if gap > 0.05 else None, "drainfit_gap_pt": own_gap,
            "attainment_delta": delta, "kind": kind, "to_most_accurate_pt": to_most_accurate}


def test_both_readings_of_the_gap_closed(sim: ModuleType) -> None:
    rows = [_row(0.01, 0.0, 0.01), _row(0.5, 0.1, 0.2, delta=-0.0002), _row(1.0, 0.5, 0.3, delta=0.004),
            _row(0.8, 0.8, 0.0, kind="low", to_most_accurate=0.0)]
    s = sim.policy_summary(rows)
    assert s["workloads"] == 4
    assert s["median_slackfit_gap_pt"] == pytest.approx(0.65)  # of 0.01, 0.5, 0.8, 1.0
    assert s["median_gain_pt"] == pytest.approx(0.3)
    assert s["gap_closed_of_median_gap"] == pytest.approx(0.3 / 0.65)
    assert s["median_gap_closed"] == pytest.approx(0.5)  # per run 0.2, 0.5, 1.0; the 0.01 pt gap left out
    assert s["median_drainfit_gap_pt"] == pytest.approx(0.105)  # of 0.0, 0.01, 0.2, 0.3
    assert s["median_gap_narrowed"] == pytest.approx(1 - 0.105 / 0.65)
    assert s["min_attainment_delta"] == pytest.approx(-0.0002)
    assert s["low_load_to_most_accurate_pt"] == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=40))
def test_a_copy_of_slackfit_closes_nothing(sim: ModuleType, gaps: list[float]) -> None:
    rows = [_row(g, 0.0, g) for g in gaps] + [_row(0.3, 0.0, 0.3, kind="low", to_most_accurate=0.3)]
    s = sim.policy_summary(rows)
    assert s["median_gain_pt"] == 0.0
    assert s["median_gap_closed"] in (None, 0.0)
    assert s["median_drainfit_gap_pt"] == s["median_slackfit_gap_pt"]
    assert s["median_gap_narrowed"] in (None, 0.0)
