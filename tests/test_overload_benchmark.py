"""`benchmarks/overload.py`'s recovery time, on synthetic client results: a cluster of misses sets it, a miss in
the run's last fraction of a window does not (it used to read as a recovery reaching to the end of the run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.server.loadgen import LoadResult

END_S, RUN_S, RATE = 5.0, 10.0, 1000


@pytest.fixture(scope="module")
def overload() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "overload.py"
    spec = importlib.util.spec_from_file_location("overload_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(missed_at_s: list[float], count: int = 20) -> LoadResult:
    """Requests every 1 ms for RUN_S, answered in 10 ms, except `count` late ones from each of `missed_at_s`."""
    scheduled = np.arange(0, RUN_S, 1 / RATE)
    done = scheduled + 0.010
    for at in missed_at_s:
        first = round(at * RATE)
        done[first:first + count] = scheduled[first:first + count] + 0.080  # past the 50 ms SLO
    n = len(scheduled)
    return LoadResult(scheduled, scheduled.copy(), done, np.full(n, 200), np.ones(n), np.zeros(n, dtype=int), ["s"],
                      0.0, RUN_S, 1)


def test_no_misses_recover_at_once_and_a_miss_at_the_very_end_does_not_count(overload: ModuleType) -> None:
    assert overload.recovery_s(results([]), 50.0, END_S) == 0.0
    # two late requests 50 ms before the last: 2 of 500 in a whole 0.5 s window (0.996 on time), but 2 of the
    # ~100 of a window that begins 0.1 s before the end and reaches past it
    assert overload.recovery_s(results([RUN_S - 0.05], count=2), 50.0, END_S) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, RUN_S - END_S - 0.6))
def test_a_cluster_of_misses_sets_the_recovery_time(overload: ModuleType, after_s: float) -> None:
    recovery = overload.recovery_s(results([END_S + after_s]), 50.0, END_S)
    # the last window holding enough of the 20 ms cluster (windows start every 0.1 s and last 0.5 s) begins at
    # most 0.1 s before the cluster ends, and no later than that end
    assert after_s + 0.4 - 0.02 - 1e-9 <= recovery <= after_s + 0.02 + 0.5 + 1e-9
