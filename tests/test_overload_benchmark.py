"""`benchmarks/overload.py`'s recovery time, on synthetic client results: a cluster of misses sets it, a miss in
the run's last fraction of a window does not (it used to read as a recovery reaching to the end of the run)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark_helpers import load_benchmark
from tailor.serve.server.loadgen import LoadResult

END_S, RUN_S, RATE = 5.0, 10.0, 1000


@pytest.fixture(scope="module")
def overload() -> ModuleType:
    return load_benchmark("overload")


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


def test_the_servers_process_counters_see_a_child_sleep_and_spin(overload: ModuleType) -> None:
    """`process_switches` and `process_cpu_s` read a process and its children from /proc: a child that sleeps
    200 times adds at least that many voluntary switches to the children's count, and one that spins ~0.3 s
    adds CPU to the children and nothing to the parent's system time beyond what the parent did itself."""
    import os
    import subprocess
    import sys

    pid = os.getpid()
    before = overload.process_switches(pid)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time\nfor _ in range(200): time.sleep(0.001)\n"
                                "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                                "while time.process_time() < end: pass\nimport sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # both children done with their work, still alive (waiting on stdin) so /proc counts them
            _, workers_cpu = overload.process_cpu_s(pid)
            switches = overload.process_switches(pid)
            if (switches[2] - before[2] >= 200 and workers_cpu >= 0.25) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert switches[2] - before[2] >= 200, "the sleeping child's voluntary switches are counted"
        assert switches[0] - before[0] < switches[2] - before[2] - 100, "and not as this process's own"
        assert workers_cpu >= 0.25, "the spinning child's CPU is counted among the children's"
        assert 0.0 <= overload.system_cpu_s(pid) <= sum(os.times()[:2]) + 0.02
    finally:
        for child in (sleeper, spinner):
            child.communicate(b"", timeout=30)


def test_timeline_rows_report_the_cores_shares_and_switches_per_second(overload: ModuleType) -> None:
    timeline = overload.MetricsTimeline("http://127.0.0.1:1", 0.25, server_pid=1)
    # four samples over 0.75 s of one second: the front end used 0.6 s of CPU (0.15 s of it system time) and
    # slept 300 times, the workers used 0.15 s and were preempted 150 times
    for i in range(4):
        timeline.samples.append((0.25 * i, {"front_end_cpu_s": 0.2 * i, "front_end_system_s": 0.05 * i,
                                            "worker_cpu_s": 0.05 * i, "front_end_sleeps": 100.0 * i,
                                            "front_end_preempted": 2.0 * i, "worker_sleeps": 4.0 * i,
                                            "worker_preempted": 50.0 * i}))
    timeline.samples.append((1.25, {}))  # a sample in the next second: the first one is complete
    (row,) = timeline.rows()
    assert row["front_end_share"] == pytest.approx(0.8)
    assert row["front_end_system_share"] == pytest.approx(0.2)
    assert row["worker_share"] == pytest.approx(0.2)
    assert row["front_end_sleeps_per_s"] == pytest.approx(400.0)
    assert row["worker_preempted_per_s"] == pytest.approx(200.0)
    assert row["front_end_preempted_per_s"] == pytest.approx(8.0)
    assert row["worker_sleeps_per_s"] == pytest.approx(16.0)


def test_capacity_bisects_to_the_highest_rate_that_passed(overload: ModuleType,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def probe(rate: float, step: int) -> dict:
        seen.append(rate)
        return {"attainment": 1.0 if rate <= 2900.0 else 0.95, "p99_ms_200": 40.0}

    args = argparse.Namespace(max_rate=8000.0, probes=7, probe_s=1.0, slo_ms=50.0)
    monkeypatch.setattr(overload.time, "sleep", lambda _s: None)
    cap, probes = overload.capacity(args, "", "", Path("."), "torch", probe=probe)
    assert seen == [8000.0, 4000.0, 2000.0, 3000.0, 2500.0, 2750.0, 2875.0] and cap == 2875.0
    assert [p["attainment"] for p in probes] == [0.95, 0.95, 1.0, 0.95, 1.0, 1.0, 1.0]
