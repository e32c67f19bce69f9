"""DrainFit, tailor's default policy: SlackFit's batches, drained under a backlog, upgraded when slack is spare.

SlackFit looks at one number, the head's slack, and runs a precomputed bucket. Two blind spots follow: at
low load a bucket's choice can be a fast subnet at a batch far larger than the queue (an outlier in the
profile can own the top bucket), so an idle server answers with a worse subnet than fits; and under a
burst it ignores how many requests wait behind the head, so fresh requests (lots of slack) get slow,
accurate batches while the backlog grows. DrainFit reads the queue (its first `lookahead` deadlines and the
busy workers' finish times, through the `QueueView` the simulator or server binds) and starts from
SlackFit's choice (s0, b0), which takes n = min(queue, b0) requests:

1. **Drain.** When requests wait behind the batch, a fastest-drain plan (each worker, when free, runs the
   largest batch of the fastest subnet that meets the deadline of the earliest request it takes) counts
   how many queued requests would be missed after SlackFit's choice, and after the fastest drain starting
   now. If SlackFit's choice misses more, DrainFit runs instead the most accurate batch of at least n
   requests that misses no more than the fastest drain (ties: the larger batch).
2. **Upgrade.** Otherwise the most accurate subnet for the same n requests that meets the head's deadline
   and passes a rollout: the rest of the queue and the arrivals expected over the next SLO (at
   `arrival_reserve` x the rate measured over `rate_window_ms`) served by SlackFit's rule must miss no more
   requests than after SlackFit's own choice; and if it keeps the worker longer than SlackFit planned for
   its full batch b0, the rollout must miss none at all (a quiet server).

3. **A late head.** When even SlackFit's choice misses the head's deadline and requests wait behind it, the
   fastest subnet runs the largest batch the queue fills: the head is late either way, so the batch decides
   only how fast the rest drains, and SlackFit's answer there (its lowest bucket's choice) is the fastest
   subnet's full batch or half of one, depending on which side of the bucket's edge the full batch's measured
   latency falls. (On the half side, a live 3x torch burst ran batches of 8 throughout, at half the goodput.)

So at low load it serves the most accurate subnet that fits, under a burst it drains like SlackFit or
faster, and every departure from SlackFit is checked against the rest of the queue. A head with less slack
than SlackFit's lowest bucket is given up, as SlackFit does (`min_latency_ms`). Written here because no
library schedules deadline-bound batches over a latency/accuracy table.
"""

from __future__ import annotations

import bisect
import collections
import heapq
from typing import Any

from tailor.checks import number, positive_float, positive_int
from tailor.serve.policies.base import Policy, PolicyError, register_policy
from tailor.serve.policies.slackfit import SlackFit


@register_policy("drainfit")
class DrainFit(Policy):
    """SlackFit's choice, drained under a backlog and upgraded when the rest of the queue can afford it.

    `lookahead`: how many queued deadlines the checks read (and at most how many expected arrivals the
    rollout adds); `arrival_reserve`: multiple of the measured arrival rate the rollout expects (2: room for
    bursts; 0 plans with the queue alone); `rate_window_ms`: the window of that measurement (default 2 x SLO);
    `buckets`: SlackFit's.
    """

    name = "drainfit"

    def __init__(
        self,
        profile: Any,
        *,
        lookahead: int = 512,
        arrival_reserve: float = 2.0,
        rate_window_ms: float | None = None,
        buckets: int = 8,
        **common: Any,
    ) -> None:
        super().__init__(profile, **common)
        self.lookahead = positive_int("lookahead", lookahead, PolicyError)
        self._slackfit = SlackFit(self.profile, buckets=buckets, slo_ms=self.slo_ms, workers=self.workers)
        self.arrival_reserve = number("arrival_reserve", arrival_reserve, PolicyError, low=0, high=4)
        slo = self.slo_ms
        window = rate_window_ms if rate_window_ms is not None else (2 * slo if slo is not None else 100.0)
        self.rate_window_ms = positive_float("rate_window_ms", window, PolicyError)
        p = self.profile
        sizes = p.batch_sizes
        n_subnets = len(p)
        # the fastest subnet (and its latency) at every measured batch size, and, by latency, the largest batch it allows
        self._fastest = [min(range(n_subnets), key=lambda s: p.lat[s][j]) for j in range(len(sizes))]
        self._fast = [p.lat[self._fastest[j]][j] for j in range(len(sizes))]
        pairs = sorted(zip(self._fast, sizes))
        self._drain_lat = [lat for lat, _ in pairs]
        self._drain_batch: list[int] = []
        best = 0
        for _, b in pairs:
            best = max(best, b)
            self._drain_batch.append(best)
        self._rates: collections.deque[tuple[float, int]] = collections.deque()
        self._thresholds = self._slackfit._thresholds
        self._choices = self._slackfit.choices
        # as SlackFit: a head with less slack than its lowest bucket's choice is given up ("deadline exceeded")
        self.min_latency_ms = self._slackfit.min_latency_ms

    def take_over_from(self, previous: Policy) -> None:
        super().take_over_from(previous)
        if isinstance(previous, DrainFit):
            self._rates = previous._rates  # the arrival rate measured so far

    # -- the arrival rate ------------------------------------------------------------------------------------
    def _record_arrivals(self, now_ms: float, arrivals: int) -> None:
        """Keep (time, arrivals so far) points covering the last `rate_window_ms`."""
        points = self._rates
        if points and points[-1][0] >= now_ms:
            points[-1] = (now_ms, arrivals)
        else:
            points.append((now_ms, arrivals))
        horizon = now_ms - self.rate_window_ms
        while len(points) > 2 and points[1][0] <= horizon:
            points.popleft()

    def _rate_per_ms(self, now_ms: float, arrivals: int) -> float:
        """Requests per ms over the last `rate_window_ms` (at least a quarter of it, so a quiet start is not 0/0)."""
        t0, a0 = self._rates[0]
        span = now_ms - t0
        if span <= 0:
            return 0.0
        return (arrivals - a0) / max(span, self.rate_window_ms / 4)

    def _drain_misses(self, deadlines: list[float], start: int, free: list[float]) -> int:
        """Queued requests `deadlines[start:]` that even the fastest drain misses: each worker, when free, runs the
        largest batch of the fastest subnet that meets the deadline of the earliest request it takes."""
        heap = list(free)
        heapq.heapify(heap)
        drain_lat, drain_batch, fast, slot = self._drain_lat, self._drain_batch, self._fast, self.profile.batch_slot
        floor = self.min_latency_ms
        misses, i, n = 0, start, len(deadlines)
        while i < n:
            tau = heap[0]
            slack = deadlines[i] - tau
            k = bisect.bisect_right(drain_lat, slack) - 1
            if k < 0 or slack < floor:
                misses += 1
                i += 1
                continue
            b = drain_batch[k]
            if n - i < b:
                b = n - i
            heapq.heapreplace(heap, tau + fast[slot[b]])
            i += b
        return misses

    # -- the rollout ------------------------------------------------------------------------------------------
    def _rollout(
        self, deadlines: list[float], start: int, free: list[float], future: list[tuple[float, float]]
    ) -> tuple[int, float]:
        """Serve `deadlines[start:]`, then `future` (arrival, deadline) with SlackFit's rule from the workers' `free`
        times; return (requests not on time, accuracy sum of those on time)."""
        heap = list(free)
        heapq.heapify(heap)
        thresholds, choices = self._thresholds, self._choices
        lat, acc, slot, floor = self.profile.lat, self.profile.acc, self.profile.batch_slot, self.min_latency_ms
        misses, value = 0, 0.0
        i, n = start, len(deadlines)
        j, m = 0, len(future)
        while i < n or j < m:
            tau = heap[0]
            if i < n:
                head = deadlines[i]
            else:
                if future[j][0] > tau:
                    tau = future[j][0]
                head = future[j][1]
            slack = head - tau
            if slack < floor:
                misses += 1
                if i < n:
                    i += 1
                else:
                    j += 1
                continue
            k = bisect.bisect_right(thresholds, slack) - 1
            s, b = choices[k] if k >= 0 else choices[0]
            # take up to b: the queued ones first, then the expected arrivals that are in by tau
            taken = n - i if n - i < b else b
            first = i
            i += taken
            if taken < b and i >= n:
                stop = j
                while stop < m and stop - j < b - taken and future[stop][0] <= tau:
                    stop += 1
                future_taken = stop - j
            else:
                future_taken = 0
            size = taken + future_taken
            done = tau + lat[s][slot[size]]
            on_time = 0
            for q in range(first, first + taken):
                if deadlines[q] >= done:
                    on_time += 1
            for q in range(j, j + future_taken):
                if future[q][1] >= done:
                    on_time += 1
            j += future_taken
            misses += size - on_time
            value += on_time * acc[s]
            heapq.heapreplace(heap, done)
        return misses, value

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        p = self.profile
        self._record_arrivals(now_ms, arrivals)
        base_choice = self._slackfit.choose(now_ms, earliest_deadline_ms, queue_len, arrivals, idle_workers)
        assert base_choice is not None
        s0, b0 = base_choice
        n = queue_len if queue_len < b0 else b0
        j = p.batch_slot[n]
        slack = earliest_deadline_ms - now_ms
        own = p.lat[s0][j]
        if own > slack:  # the head is late whatever runs: how fast the rest drains is what matters
            if queue_len > n:  # a backlog: the fastest subnet's full batch, not SlackFit's lowest bucket (maybe half of one)
                limit = queue_len if queue_len < p.max_batch else p.max_batch
                return self._fastest[p.batch_slot[limit]], limit
            return s0, n
        view = self.view
        if view is not None:
            deadlines = list(view.deadlines(self.lookahead))
            busy = view.busy_until(now_ms)
        else:  # without a view, pessimistically: everyone queued is due with the head
            deadlines = [earliest_deadline_ms] * min(queue_len, self.lookahead)
            busy = []
        others = [now_ms] * max(0, idle_workers - 1) + busy
        future: list[tuple[float, float]] = []
        rest = n if n < len(deadlines) else len(deadlines)
        if queue_len > n:  # a backlog behind the batch: drain it at least as well as the fastest drain would
            target = self._drain_misses(deadlines, 0, [now_ms, *others])
            if self._drain_misses(deadlines, rest, [now_ms + own, *others]) > target:
                return self._downgrade(now_ms, slack, n, queue_len, deadlines, others, target)
        # never occupy the worker longer than SlackFit planned to (its choice at its full batch), nor past the head
        planned = p.lat[s0][p.batch_slot[b0]]
        cap = planned if planned < slack else slack
        upgrades = [s for s in range(len(p)) if p.acc[s] > p.acc[s0] and p.lat[s][j] <= slack]
        if not upgrades:
            return s0, n
        rate = self._rate_per_ms(now_ms, arrivals) * self.arrival_reserve
        if rate > 0 and self.slo_ms is not None:
            # expected arrivals over the next SLO, evenly spaced, each due an SLO after it arrives
            count = min(int(rate * self.slo_ms), self.lookahead)
            gap = 1.0 / rate
            future = [(now_ms + (k + 1) * gap, now_ms + (k + 1) * gap + self.slo_ms) for k in range(count)]
        base_misses, _ = self._rollout(deadlines, rest, [now_ms + own, *others], future)
        # the most accurate upgrade first; the first the rollout accepts wins
        for s in sorted(upgrades, key=lambda s: (-p.acc[s], p.lat[s][j])):
            latency = p.lat[s][j]
            misses, _ = self._rollout(deadlines, rest, [now_ms + latency, *others], future)
            # beyond the time SlackFit planned, only when the rollout expects no miss at all (a quiet server)
            if misses <= base_misses if latency <= cap else misses == 0:
                return s, n
        return s0, n

    def _downgrade(
        self, now_ms: float, slack: float, n: int, queue_len: int, deadlines: list[float], others: list[float], target: int
    ) -> tuple[int, int]:
        """The most accurate batch of at least `n` requests after which the fastest drain misses no more than `target`
        (ties: the larger batch, then the faster); if none, the fastest drain's own first batch."""
        p = self.profile
        limit = queue_len if queue_len < p.max_batch else p.max_batch
        best: tuple[float, int, float] | None = None
        pick: tuple[int, int] | None = None
        for size in [b for b in p.batch_sizes if n < b < limit] + [n, limit]:
            j = p.batch_slot[size]
            rest = size if size < len(deadlines) else len(deadlines)
            for s in range(len(p)):
                lat = p.lat[s][j]
                if lat > slack or (best is not None and (p.acc[s], size, -lat) <= best):
                    continue
                if self._drain_misses(deadlines, rest, [now_ms + lat, *others]) <= target:
                    best, pick = (p.acc[s], size, -lat), (s, size)
        if pick is not None:
            return pick
        k = bisect.bisect_right(self._drain_lat, slack) - 1
        b = min(self._drain_batch[k] if k >= 0 else 1, limit)
        j = p.batch_slot[b]
        return min(range(len(p)), key=lambda s: p.lat[s][j]), b

    def describe(self) -> str:
        return f"drainfit(lookahead {self.lookahead}, arrival reserve {self.arrival_reserve:g})"
