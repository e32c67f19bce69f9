"""`benchmarks/refusal_cost.py`: its floor protocol must answer each request exactly once however the bytes arrive
(or the floor would be per read, not per request), perf's report must be grouped right, and a burst's share of the
core follows from C, the factor and the cost."""

from __future__ import annotations

import itertools
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark_helpers import load_benchmark
from tailor.serve.server.loadgen import http_request


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    return load_benchmark("refusal_cost")


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=20000), max_size=12))
def test_the_floor_answers_every_request_once_however_its_bytes_are_split(cost: ModuleType, bodies: list[bytes],
                                                                        cuts: list[int]) -> None:
    stream = b"".join(http_request("/v2/models/m/infer", body, {"X-Seq": str(i)}) for i, body in enumerate(bodies))
    protocol = cost.FloorProtocol(b"ANSWER")
    transport = cost.CountingTransport()
    protocol.connection_made(transport)
    edges = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for lo, hi in itertools.pairwise(edges):
        protocol.data_received(stream[lo:hi])
    assert transport.writes == len(bodies) and not transport.closed


def test_perf_report_is_grouped_by_where_the_time_went(cost: ModuleType) -> None:
    report = """# Samples: 5K of event 'cpu-clock'
#
    54.95%  [kernel.kallsyms]
    34.99%  libpython3.11.so.1.0
     5.28%  loop.cpython-311-x86_64-linux-gnu.so
     3.35%  libc.so.6
     1.07%  [vdso]
     0.25%  _bisect.cpython-311-x86_64-linux-gnu.so
"""
    assert cost.group_dsos(report) == pytest.approx(
        {"kernel": 54.95, "cpython": 34.99, "uvloop": 5.28, "libc": 3.35, "other": 1.32})
    assert cost.group_dsos("# nothing sampled\n") == dict.fromkeys(("kernel", "cpython", "uvloop", "libc", "other"), 0.0)


def test_a_bursts_refusals_take_their_share_of_the_core(cost: ModuleType) -> None:
    # at 3,000 req/s, a 10x burst refuses 27,000 a second: at 8.3 us each, 0.224 of a core
    assert cost.burst_share(3000.0, 10.0, 8.3e-6) == pytest.approx(0.2241)
    assert cost.burst_share(3000.0, 1.0, 8.3e-6) == 0.0


def test_the_highest_capacity_leaves_exactly_the_target_after_the_refusals(cost: ModuleType) -> None:
    highest = cost.highest_capacity(10.0, 0.8, 9e-6, 320e-6)
    # at that C the refusals and the answered requests fill the core exactly
    assert 9 * highest * 9e-6 + 0.8 * highest * 320e-6 == pytest.approx(1.0)
    assert highest == pytest.approx(2_967, abs=1)
    assert cost.highest_capacity(10.0, 0.8, 0.0, 320e-6) == pytest.approx(1 / (0.8 * 320e-6))
