"""The earliest-deadline-first request queue shared by the simulator and the HTTP server.

Times are milliseconds on a monotonic clock the caller provides. A request's deadline is absolute
(`arrival_ms + SLO`, the SLO being the server's default or the request's own). The queue never drops
anything on its own: `push` refuses when full (the caller answers "rejected") and `drop_expired` hands
back the requests whose deadline has passed (the caller answers "deadline exceeded"), so every request
leaves through exactly one door. Not thread-safe: the server uses it from its event loop only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any

from tailor.checks import positive_int
from tailor.errors import TailorError


class QueueError(TailorError, ValueError):
    """A malformed request or queue argument (negative capacity, non-finite deadline, ...)."""


@dataclass(slots=True)
class Request:
    """One inference request: its id, arrival and absolute deadline (ms), and what to run it on."""

    id: int
    arrival_ms: float
    deadline_ms: float
    payload: Any = None


class EDFQueue:
    """Requests ordered by deadline (then arrival order); `capacity=None` means unbounded."""

    __slots__ = ("_counter", "_heap", "capacity", "total_pushed", "total_refused")

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = None if capacity is None else positive_int("queue capacity", capacity, QueueError)
        self._heap: list[tuple[float, int, Request]] = []
        self._counter = itertools.count()
        self.total_pushed = 0  # accepted so far
        self.total_refused = 0  # refused: the queue was full, or (`refused`) the server's admission said no

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, request: Request) -> bool:
        """Enqueue; False (and nothing stored) when the queue is full: the caller rejects the request."""
        deadline = request.deadline_ms
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not math.isfinite(deadline):
            raise QueueError(f"request {request.id}: deadline_ms must be a finite number, got {deadline!r:.50}")
        if self.capacity is not None and len(self._heap) >= self.capacity:
            self.total_refused += 1
            return False
        heapq.heappush(self._heap, (float(deadline), next(self._counter), request))
        self.total_pushed += 1
        return True

    @property
    def total_arrived(self) -> int:
        """Requests offered so far, queued or refused: the load a policy planning for arrivals must see (counting
        only the queued ones, a server that refuses requests would look quieter to its policy than it is)."""
        return self.total_pushed + self.total_refused

    def refused(self) -> None:
        """Count a request refused before it reached the queue (admission control)."""
        self.total_refused += 1

    def earliest(self) -> Request | None:
        """The request with the earliest deadline, left in the queue (None when empty)."""
        return self._heap[0][2] if self._heap else None

    def earliest_deadline(self) -> float:
        """Deadline of the earliest request (ms), +inf when empty."""
        return self._heap[0][0] if self._heap else math.inf

    def pop(self, n: int) -> list[Request]:
        """Remove and return up to `n` requests, earliest deadline first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise QueueError(f"pop({n!r}): expected a non-negative integer")
        heap = self._heap
        count = min(n, len(heap))
        return [heapq.heappop(heap)[2] for _ in range(count)]

    def drop_expired(self, now_ms: float) -> list[Request]:
        """Remove and return the requests whose deadline is before `now_ms` (they can no longer be on time)."""
        heap = self._heap
        out = []
        while heap and heap[0][0] < now_ms:
            out.append(heapq.heappop(heap)[2])
        return out

    def earliest_deadlines(self, k: int) -> list[float]:
        """The `k` earliest queued deadlines, earliest first (O(n log k); what queue-aware policies read)."""
        heap = self._heap
        if k >= len(heap):
            return sorted(entry[0] for entry in heap)
        return [entry[0] for entry in heapq.nsmallest(k, heap)]

    def deadlines(self) -> list[float]:
        """All queued deadlines, earliest first (for inspection and tests; O(n log n))."""
        return sorted(entry[0] for entry in self._heap)
