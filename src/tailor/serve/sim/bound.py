"""The offline upper bound: no online policy can serve more requests on time, or more accurately, than this.

`upper_bound(profile, trace, slo_ms, workers, latency_noise)` knows every arrival in advance and solves a
relaxation (fluid work on one machine of speed `workers`; see README.md for the proof sketch). It is a true
bound but not always reachable. `simulate(..., policy="upper_bound")` returns it as a `SimResult`.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tailor.cost.profile import Profile
from tailor.serve.profile import ServingProfile, load_profile
from tailor.serve.sim.simulate import SimResult, _deadlines, noise_floor
from tailor.serve.traces import Trace


# -- the offline upper bound ------------------------------------------------------------------------------
def _accuracy_hull(costs: Sequence[float], accs: Sequence[float], bonus: float) -> list[tuple[float, float]]:
    """Vertices of the least concave majorant through (0, 0) of w -> max{acc_s + bonus : cost_s <= w}."""
    points = sorted(zip(costs, accs))
    frontier: list[tuple[float, float]] = []
    for c, a in points:
        if a + bonus > (frontier[-1][1] if frontier else 0.0):
            if frontier and frontier[-1][0] == c:
                frontier[-1] = (c, a + bonus)
            else:
                frontier.append((c, a + bonus))
    hull = [(0.0, 0.0)]
    for point in frontier:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            # drop the middle point if it lies on or below the chord from hull[-2] to point
            if (y1 - y0) * (point[0] - x0) <= (point[1] - y0) * (x1 - x0):
                hull.pop()
            else:
                break
        hull.append(point)
    return hull


def fluid_count(arrivals_ms: np.ndarray, deadlines_ms: np.ndarray, job_ms: float, workers: int) -> int:
    """Most jobs of `job_ms` worker-ms that a rate-`workers` fluid machine finishes in their windows.

    Windows must be agreeable (deadlines non-decreasing in arrival order). FIFO (= EDF here), rejecting a
    job that would miss: optimal, since rejecting the newest job leaves no more backlog than any other choice.
    """
    step = job_ms / workers
    free = -math.inf
    count = 0
    for a, d in zip(arrivals_ms.tolist(), deadlines_ms.tolist()):
        begin = a if a > free else free
        end = begin + step
        if end <= d:
            free = end
            count += 1
    return count


def fluid_work(arrivals_ms: np.ndarray, deadlines_ms: np.ndarray, cap_ms: float, workers: int) -> float:
    """Most total work (worker-ms) done inside the windows when each job may receive at most `cap_ms`.

    Agreeable windows: EDF (= FIFO) that works whenever work is pending and drops what is left at a
    deadline; its total is the rank of the scheduling polymatroid truncated at `cap_ms` per job.
    """
    free = -math.inf
    total = 0.0
    for a, d in zip(arrivals_ms.tolist(), deadlines_ms.tolist()):
        begin = a if a > free else free
        if begin >= d:
            continue
        work = workers * (d - begin)
        if work > cap_ms:
            work = cap_ms
        total += work
        free = begin + work / workers
    return total


@dataclass
class UpperBound:
    """An offline relaxation that upper-bounds every policy on one trace (see README: 'The upper bound').

    `max_on_time`: no schedule has more on-time responses. `accuracy_sum_bound(m)`: no schedule with at
    least m on-time responses has a larger sum of their accuracies; `mean_accuracy_bound(m)` divides by m.
    """

    requests: int
    eligible: int
    max_on_time: int
    per_request_ms: list[float]
    accuracies: list[float]
    fastest_ms: float
    work: dict[float, float]
    duration_s: float
    slo_ms: float | None
    workers: int
    wall_s: float = 0.0

    def _value(self, bonus: float) -> float:
        hull = _accuracy_hull(self.per_request_ms, self.accuracies, bonus)
        total = 0.0
        previous = 0.0
        for (c0, a0), (c1, a1) in itertools.pairwise(hull):
            rank = self.work[c1]
            total += (a1 - a0) / (c1 - c0) * (rank - previous)
            previous = rank
        return total

    def accuracy_sum_bound(self, on_time: int) -> float:
        """min over μ >= 0 of V(μ) - μ·on_time, where V(μ) is the relaxation's best value with μ added per response."""
        if on_time <= 0:
            return self._value(0.0)
        top = max(self.accuracies)
        best = self._value(0.0)
        for mu in [top * 2.0 ** (k / 4.0) for k in range(-40, 41)]:
            best = min(best, self._value(mu) - mu * on_time)
        return max(best, 0.0)

    def mean_accuracy_bound(self, on_time: int) -> float:
        """No schedule with at least `on_time` on-time responses has a higher mean accuracy over them."""
        top = max(self.accuracies)
        if on_time <= 0:
            return top
        return min(top, self.accuracy_sum_bound(on_time) / on_time)

    def attainment_bound_at_accuracy(self, accuracy: float) -> float:
        """No schedule whose on-time responses average >= `accuracy` attains more than this."""
        lo, hi = 0, self.max_on_time
        if self.mean_accuracy_bound(hi) >= accuracy:
            return hi / self.requests if self.requests else 1.0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.mean_accuracy_bound(mid) >= accuracy:
                lo = mid
            else:
                hi = mid
        return lo / self.requests if self.requests else 1.0

    def result(self) -> SimResult:
        """The bound as a `SimResult` (attainment = max_on_time / requests; accuracy = the bound at that attainment)."""
        m = self.max_on_time
        return SimResult(
            policy="upper_bound",
            requests=self.requests,
            outcomes={"on_time": m, "late": 0, "expired": self.requests - m, "rejected": 0},
            attainment=m / self.requests if self.requests else 1.0,
            mean_accuracy=self.mean_accuracy_bound(m) if m else None,
            goodput=m / self.duration_s if self.duration_s > 0 else 0.0,
            duration_s=self.duration_s,
            slo_ms=self.slo_ms,
            workers=self.workers,
            wall_s=self.wall_s,
            engine="relaxation",
            bound=True,
            extras={
                "accuracy_sum_bound": self.accuracy_sum_bound(m),
                "eligible": self.eligible,
                "per_request_ms": min(self.per_request_ms),
                "fastest_ms": self.fastest_ms,
                "upper_bound": self,
            },
        )


def upper_bound(
    profile: ServingProfile | Profile | str | os.PathLike[str],
    trace: Trace,
    slo_ms: float | None = None,
    workers: int = 1,
    latency_noise: float = 0.0,
    percentile: str = "p99",
) -> UpperBound:
    """Compute the offline relaxation bound for `trace` (knows every arrival; see `UpperBound`)."""
    start = time.perf_counter()
    p = load_profile(profile, percentile)
    deadlines = _deadlines(trace, slo_ms)
    arrivals = trace.arrivals_s * 1000.0
    noise_lo = noise_floor(float(latency_noise))
    fastest = p.min_latency_ms * noise_lo
    eligible = arrivals + fastest <= deadlines  # as the simulator judges on time: finish <= deadline
    a, d = arrivals[eligible], np.maximum.accumulate(deadlines[eligible]) if eligible.any() else deadlines[eligible]
    costs = [p.per_request_ms(s) * noise_lo for s in range(len(p))]
    work = {c: fluid_work(a, d, c, workers) for c in sorted(set(costs))}
    return UpperBound(
        requests=len(trace),
        eligible=int(eligible.sum()),
        max_on_time=fluid_count(a, d, min(costs), workers),
        per_request_ms=costs,
        accuracies=list(p.acc),
        fastest_ms=fastest,
        work=work,
        duration_s=trace.duration_s,
        slo_ms=slo_ms,
        workers=workers,
        wall_s=time.perf_counter() - start,
    )
