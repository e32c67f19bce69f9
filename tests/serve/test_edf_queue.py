"""tailor.serve.queue: earliest-deadline-first order, capacity, expiry, bad input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.queue import EDFQueue, QueueError, Request


@given(st.lists(st.integers(0, 20), max_size=40), st.integers(0, 45))
@settings(max_examples=100, deadline=None)
def test_pop_returns_the_earliest_deadlines_in_order_ties_by_arrival(deadlines: list[int], n: int) -> None:
    queue = EDFQueue()
    for i, d in enumerate(deadlines):
        assert queue.push(Request(i, 0.0, float(d)))
    expected = sorted(range(len(deadlines)), key=lambda i: (deadlines[i], i))
    first = queue.earliest()
    assert (first is None) == (not deadlines)
    if first is not None:
        assert first.id == expected[0] and queue.earliest_deadline() == deadlines[expected[0]]
    popped = queue.pop(n)
    assert [r.id for r in popped] == expected[:n]
    assert len(queue) == max(0, len(deadlines) - n)
    assert [r.id for r in queue.pop(len(queue))] == expected[n:]
    assert queue.earliest_deadline() == math.inf


@given(st.lists(st.floats(0, 100), max_size=30), st.floats(0, 100))
@settings(max_examples=100, deadline=None)
def test_drop_expired_removes_exactly_the_passed_deadlines(deadlines: list[float], now: float) -> None:
    queue = EDFQueue()
    for i, d in enumerate(deadlines):
        queue.push(Request(i, 0.0, d))
    gone = queue.drop_expired(now)
    assert sorted(r.id for r in gone) == sorted(i for i, d in enumerate(deadlines) if d < now)
    assert all(d >= now for d in queue.deadlines())
    assert len(gone) + len(queue) == len(deadlines)


def test_a_full_queue_refuses_and_counts() -> None:
    queue = EDFQueue(capacity=2)
    assert queue.push(Request(0, 0.0, 5.0)) and queue.push(Request(1, 0.0, 3.0))
    assert not queue.push(Request(2, 0.0, 1.0))
    assert len(queue) == 2 and queue.total_pushed == 2 and queue.total_refused == 1
    queue.refused()  # one refused before it reached the queue (admission control)
    assert queue.total_refused == 2 and queue.total_arrived == 4
    assert [r.id for r in queue.pop(1)] == [1]
    assert queue.push(Request(3, 0.0, 4.0))
    assert [r.id for r in queue.pop(5)] == [3, 0]


def test_bad_arguments_are_refused() -> None:
    for capacity in (0, -1, 1.5, True):
        with pytest.raises(QueueError, match="capacity"):
            EDFQueue(capacity)  # type: ignore[arg-type]
    queue = EDFQueue()
    with pytest.raises(QueueError, match="request 7: deadline_ms must be a finite number"):
        queue.push(Request(7, 0.0, math.nan))
    with pytest.raises(QueueError, match="pop"):
        queue.pop(-1)
    assert len(queue) == 0 and not queue
