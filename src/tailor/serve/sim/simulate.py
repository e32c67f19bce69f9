"""Discrete-event simulation of serving a trace with a policy, and an offline upper bound on what any policy can do.

The simulator has two engines that give identical results (a test checks it):

- `fast` (default when every request's deadline is arrival + the same SLO, or deadlines are otherwise in
  arrival order, and the queue is unbounded): the EDF queue is a range [head, tail) of the arrival
  arrays, admissions and expirations are `bisect` calls, a batch's late/on-time split is one `bisect`
  (deadlines are sorted), and the policy is asked through `Policy.choose` with plain numbers. No object
  per request, no heap for the queue (a heap of worker-free times only when workers > 1).
- `reference`: the contract's `EDFQueue` of `Request`s and `Policy.decide`, one request at a time; handles
  any deadlines and a bounded queue (`queue_capacity`: arrivals that find it full are rejected).

Events: a worker becomes free, or a request arrives while a worker is idle. At each decision time the
arrivals so far are admitted, requests whose deadline has passed are answered "deadline exceeded"
(`expired`; with `expire_hopeless=True`, also those with less time left than the policy's fastest
possible answer: no choice can make them on time), then the policy picks (subnet, batch) for the
earliest deadlines. A batch of n requests on subnet s takes the profile's latency for the smallest
measured batch size >= n, times a noise factor 1 + latency_noise * N(0, 1) clipped to
[max(0.05, 1 - 3 latency_noise), 1 + 3 latency_noise]. Each request ends in exactly one outcome:
`on_time` (finished by its deadline), `late`, `expired` or `rejected`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tailor.checks import non_negative_float, positive_float, positive_int
from tailor.cost.profile import Profile
from tailor.errors import TailorError
from tailor.serve.policies import DEFAULT_POLICY, Policy, PolicyError, QueueView, make_policy
from tailor.serve.profile import ServingProfile, load_profile
from tailor.serve.queue import EDFQueue, Request
from tailor.serve.traces import Trace

ON_TIME, LATE, EXPIRED, REJECTED = 0, 1, 2, 3
OUTCOMES = ("on_time", "late", "expired", "rejected")


class SimulationError(TailorError, ValueError):
    """Bad simulation arguments (no SLO, unknown engine, a policy decision outside the profile, ...)."""


@dataclass
class SimResult:
    """What a simulation (or the upper bound) reports. `outcomes` counts sum to `requests`."""

    policy: str
    requests: int
    outcomes: dict[str, int]
    attainment: float
    mean_accuracy: float | None
    goodput: float
    duration_s: float
    slo_ms: float | None
    workers: int
    subnet_requests: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    mean_batch: float = 0.0
    latency_ms: dict[str, float] | None = None
    series: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    engine: str = ""
    bound: bool = False
    outcome: np.ndarray | None = field(default=None, repr=False)
    finish_ms: np.ndarray | None = field(default=None, repr=False)
    # one row per batch in dispatch order: start (ms), subnet index (into the profile's subnets), batch size
    batch_log: np.ndarray | None = field(default=None, repr=False)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_wall_second(self) -> float:
        """Simulated requests per second of simulator wall time."""
        return self.requests / self.wall_s if self.wall_s > 0 else math.inf

    def to_dict(self, series: bool = True) -> dict[str, Any]:
        out = {
            "policy": self.policy,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "attainment": self.attainment,
            "mean_accuracy": self.mean_accuracy,
            "goodput": self.goodput,
            "duration_s": self.duration_s,
            "slo_ms": self.slo_ms,
            "workers": self.workers,
            "subnet_requests": dict(self.subnet_requests),
            "batches": self.batches,
            "mean_batch": self.mean_batch,
            "latency_ms": self.latency_ms,
            "wall_s": self.wall_s,
            "engine": self.engine,
            "bound": self.bound,
        }
        out.update({k: v for k, v in self.extras.items() if isinstance(v, (int, float, str, list, dict, type(None)))})
        if series:
            out["series"] = self.series
        return out


def noise_floor(latency_noise: float) -> float:
    """The smallest factor the latency noise can draw (1 without noise)."""
    return max(0.05, 1 - 3 * latency_noise) if latency_noise else 1.0


def _noise_factors(latency_noise: float, count: int, seed: int) -> tuple[list[float] | None, float]:
    if latency_noise == 0:
        return None, 1.0
    lo, hi = noise_floor(latency_noise), 1 + 3 * latency_noise
    rng = np.random.default_rng(seed)
    return np.clip(1 + latency_noise * rng.standard_normal(count), lo, hi).tolist(), lo


def _deadlines(trace: Trace, slo_ms: float | None) -> np.ndarray:
    arrivals_ms = trace.arrivals_s * 1000.0
    if trace.deadlines_ms is not None:
        return arrivals_ms + trace.deadlines_ms
    if slo_ms is None:
        raise SimulationError("slo_ms is required (the trace has no per-request deadlines)")
    return arrivals_ms + slo_ms


def _check_profile_match(policy: Policy, profile: ServingProfile) -> None:
    p = policy.profile
    if p is profile:
        return
    if p.subnet_ids != profile.subnet_ids or p.batch_sizes != profile.batch_sizes or p.lat != profile.lat:
        raise SimulationError(
            "the policy was built on a different profile (or percentile) than the one simulated: "
            "pass the policy's own profile, or the policy by name"
        )


def simulate(
    profile: ServingProfile | Profile | str | os.PathLike[str],
    trace: Trace,
    policy: str | Policy = DEFAULT_POLICY,
    slo_ms: float | None = None,
    workers: int = 1,
    latency_noise: float = 0.0,
    seed: int = 0,
    queue_capacity: int | None = None,
    expire_hopeless: bool = True,
    percentile: str = "p99",
    engine: str = "auto",
    series_bins: int = 200,
    **policy_options: Any,
) -> SimResult:
    """Serve `trace` with `policy` on `workers` workers; return attainment, accuracy, outcomes and time series.

    `policy` is a name (`slackfit`, `maxacc`, `maxbatch`, `fixed:<id>`, `infaas`, `upper_bound`) built with
    `policy_options`, or a `Policy`. `slo_ms` is the default deadline (arrival + slo_ms); a trace's own
    `deadlines_ms` override it per request. `engine`: `auto`, `fast` or `reference`.
    """
    if not isinstance(trace, Trace):
        raise SimulationError(f"trace: expected a tailor.serve.traces.Trace, got {type(trace).__name__}")
    if slo_ms is not None:
        positive_float("slo_ms", slo_ms, SimulationError)
    positive_int("workers", workers, SimulationError)
    non_negative_float("latency_noise", latency_noise, SimulationError)
    if queue_capacity is not None:
        positive_int("queue_capacity", queue_capacity, SimulationError)
    positive_int("series_bins", series_bins, SimulationError)
    serving = load_profile(profile, percentile)
    deadlines = _deadlines(trace, slo_ms)
    policy_slo = slo_ms if slo_ms is not None else (float(np.median(trace.deadlines_ms)) if len(trace) else None)
    if isinstance(policy, str) and policy == "upper_bound":
        if policy_options:
            raise PolicyError(f"upper_bound takes no policy options, got {sorted(policy_options)}")
        from tailor.serve.sim.bound import upper_bound  # the bound builds SimResults: imported here, not at the top

        return upper_bound(serving, trace, slo_ms=slo_ms, workers=workers, latency_noise=latency_noise).result()
    if isinstance(policy, str):
        policy = make_policy(policy, serving, slo_ms=policy_slo, workers=workers, **policy_options)
    elif isinstance(policy, Policy):
        if policy_options:
            raise PolicyError("policy options apply to a policy given by name, not to a Policy instance")
        _check_profile_match(policy, serving)
    else:
        raise PolicyError(f"policy: expected a name or a Policy, got {type(policy).__name__}")
    ordered = len(trace) < 2 or bool(np.all(np.diff(deadlines) >= 0))
    if engine == "auto":
        engine = "fast" if ordered and queue_capacity is None else "reference"
    if engine == "fast" and (not ordered or queue_capacity is not None):
        raise SimulationError(
            "the fast engine needs deadlines in arrival order and an unbounded queue; use 'reference'"
        )
    if engine not in ("fast", "reference"):
        raise SimulationError(f"engine {engine!r}: expected 'auto', 'fast' or 'reference'")
    noise, noise_lo = _noise_factors(float(latency_noise), len(trace), seed)
    hopeless_ms = policy.min_latency_ms * noise_lo if expire_hopeless else 0.0
    start = time.perf_counter()
    run = _run_fast if engine == "fast" else _run_reference
    outcome, finish, records = run(
        serving, policy, trace.arrivals_s * 1000.0, deadlines, workers, noise, hopeless_ms, queue_capacity
    )
    wall = time.perf_counter() - start
    return _summarise(
        serving, policy, trace, deadlines, slo_ms, workers, outcome, finish, records, wall, engine, series_bins
    )


def _run_fast(
    p: ServingProfile,
    policy: Policy,
    arrivals_ms: np.ndarray,
    deadlines_ms: np.ndarray,
    workers: int,
    noise: list[float] | None,
    hopeless_ms: float,
    capacity: int | None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, int, int, int, int]]]:
    A = arrivals_ms.tolist()
    D = deadlines_ms.tolist()
    n_total = len(A)
    outcome = np.full(n_total, -1, dtype=np.int8)
    finish = np.full(n_total, np.nan)
    records: list[tuple[float, int, int, int, int]] = []  # (time, queue length, subnet, batch, on time)
    record = records.append
    lat, slot, max_batch, n_subnets = p.lat, p.batch_slot, p.max_batch, len(p)
    choose = policy.choose
    bisect_left, bisect_right = bisect.bisect_left, bisect.bisect_right
    free = [0.0] * workers
    view = None
    if policy.lookahead:  # the queue is D[head:tail]; busy workers are those free later than now
        view = policy.view = QueueView(sorted_deadlines=D, busy=lambda now: [x for x in free if x > now])
    single = workers == 1
    now = 0.0
    head = tail = 0
    batch_index = 0
    while True:
        wt = free[0]
        if head == tail:
            if tail >= n_total:
                break
            t = A[tail]
            if wt > t:
                t = wt
        else:
            t = wt
        if t < now:
            t = now
        now = t
        if tail < n_total and A[tail] <= t:
            tail = bisect_right(A, t, tail)
        cutoff = t + hopeless_ms
        if D[head] < cutoff:
            new_head = bisect_left(D, cutoff, head, tail)
            outcome[head:new_head] = EXPIRED
            head = new_head
            if head == tail:
                continue
        queued = tail - head
        idle = 1 if single else sum(1 for x in free if x <= t)
        if view is not None:
            view.head, view.tail = head, tail
        choice = choose(t, D[head], queued, tail, idle)
        if choice is None:
            if tail >= n_total:  # nothing more will arrive: the rest expire at their deadlines
                outcome[head:tail] = EXPIRED
                head = tail
                break
            if single:
                free[0] = A[tail]
            else:
                heapq.heapreplace(free, A[tail])
            continue
        s, b = choice
        if not (0 < b <= max_batch and 0 <= s < n_subnets):
            raise PolicyError(f"{policy.describe()} chose subnet #{s}, batch {b}: outside the profile")
        n = queued if queued < b else b
        latency = lat[s][slot[n]]
        if noise is not None:
            latency *= noise[batch_index]
        batch_index += 1
        done = t + latency
        end = head + n
        first_on_time = bisect_left(D, done, head, end)
        if first_on_time > head:
            outcome[head:first_on_time] = LATE
        outcome[first_on_time:end] = ON_TIME
        finish[head:end] = done
        record((t, queued, s, n, end - first_on_time))
        head = end
        if single:
            free[0] = done
        else:
            heapq.heapreplace(free, done)
    return outcome, finish, records


def _run_reference(
    p: ServingProfile,
    policy: Policy,
    arrivals_ms: np.ndarray,
    deadlines_ms: np.ndarray,
    workers: int,
    noise: list[float] | None,
    hopeless_ms: float,
    capacity: int | None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, int, int, int, int]]]:
    A = arrivals_ms.tolist()
    D = deadlines_ms.tolist()
    n_total = len(A)
    outcome = np.full(n_total, -1, dtype=np.int8)
    finish = np.full(n_total, np.nan)
    records: list[tuple[float, int, int, int, int]] = []
    queue = EDFQueue(capacity)
    free = [0.0] * workers
    if policy.lookahead:
        policy.view = QueueView(queue, busy=lambda now: [x for x in free if x > now])
    now = 0.0
    i = 0
    batch_index = 0
    while True:
        wt = free[0]
        if not queue:
            if i >= n_total:
                break
            t = max(wt, A[i])
        else:
            t = wt
        t = max(t, now)
        now = t
        while i < n_total and A[i] <= t:
            request = Request(i, A[i], D[i])
            if capacity is not None and len(queue) >= capacity:
                for gone in queue.drop_expired(A[i] + hopeless_ms):
                    outcome[gone.id] = EXPIRED
            if not queue.push(request):
                outcome[i] = REJECTED
            i += 1
        for gone in queue.drop_expired(t + hopeless_ms):
            outcome[gone.id] = EXPIRED
        if not queue:
            continue
        queued = len(queue)
        decision = policy.decide(t, queue, sum(1 for x in free if x <= t))
        if decision is None:
            if i >= n_total:
                for gone in queue.pop(len(queue)):
                    outcome[gone.id] = EXPIRED
                break
            heapq.heapreplace(free, A[i])
            continue
        s = p.index(decision.subnet_id)
        if not 0 < decision.batch_size <= p.max_batch:
            raise PolicyError(f"{policy.describe()} chose batch {decision.batch_size}: outside 1..{p.max_batch}")
        batch = queue.pop(decision.batch_size)
        n = len(batch)
        latency = p.lat[s][p.batch_slot[n]]
        if noise is not None:
            latency *= noise[batch_index]
        batch_index += 1
        done = t + latency
        on_time = 0
        for request in batch:
            ok = done <= request.deadline_ms
            outcome[request.id] = ON_TIME if ok else LATE
            finish[request.id] = done
            on_time += ok
        records.append((t, queued, s, n, on_time))
        heapq.heapreplace(free, done)
    return outcome, finish, records


def _summarise(
    p: ServingProfile,
    policy: Policy,
    trace: Trace,
    deadlines: np.ndarray,
    slo_ms: float | None,
    workers: int,
    outcome: np.ndarray,
    finish: np.ndarray,
    records: list[tuple[float, int, int, int, int]],
    wall: float,
    engine: str,
    series_bins: int,
) -> SimResult:
    n = len(trace)
    if n and outcome.min() < 0:
        raise SimulationError(f"internal error: {int((outcome < 0).sum())} requests ended without an outcome")
    counts = np.bincount(outcome.astype(np.int64), minlength=4) if n else np.zeros(4, dtype=np.int64)
    outcomes = {name: int(c) for name, c in zip(OUTCOMES, counts)}
    if records:
        rec = np.asarray(records, dtype=np.float64)
        t_ms, queued, subnet, size, on_time = rec.T
        subnet = subnet.astype(np.int64)
    else:
        t_ms = queued = size = on_time = np.empty(0)
        subnet = np.empty(0, dtype=np.int64)
    acc = np.asarray(p.acc)
    accuracy_sum = float((on_time * acc[subnet]).sum()) if records else 0.0
    served_per = np.bincount(subnet, weights=size, minlength=len(p)) if records else np.zeros(len(p))
    duration = max(
        trace.duration_s, float(finish[np.isfinite(finish)].max() / 1000.0) if np.isfinite(finish).any() else 0.0
    )
    served_mask = np.isfinite(finish)
    latency_ms = None
    if served_mask.any():
        response = finish[served_mask] - trace.arrivals_s[served_mask] * 1000.0
        latency_ms = {f"p{q}": float(np.percentile(response, q)) for q in (50, 90, 99)} | {"max": float(response.max())}
    series = _series(p, trace, outcome, t_ms, queued, subnet, size, on_time, duration, series_bins)
    return SimResult(
        policy=policy.describe(),
        requests=n,
        outcomes=outcomes,
        attainment=outcomes["on_time"] / n if n else 1.0,
        mean_accuracy=accuracy_sum / outcomes["on_time"] if outcomes["on_time"] else None,
        goodput=outcomes["on_time"] / trace.duration_s if trace.duration_s > 0 else 0.0,
        duration_s=trace.duration_s,
        slo_ms=slo_ms,
        workers=workers,
        subnet_requests={sid: int(c) for sid, c in zip(p.subnet_ids, served_per)},
        batches=len(records),
        mean_batch=float(size.mean()) if records else 0.0,
        latency_ms=latency_ms,
        series=series,
        wall_s=wall,
        engine=engine,
        outcome=outcome,
        finish_ms=finish,
        batch_log=np.column_stack([t_ms, subnet, size]) if records else np.empty((0, 3)),
        extras={"accuracy_sum": accuracy_sum, "switches": getattr(policy, "switches", None)},
    )


def _series(
    p: ServingProfile,
    trace: Trace,
    outcome: np.ndarray,
    t_ms: np.ndarray,
    queued: np.ndarray,
    subnet: np.ndarray,
    size: np.ndarray,
    on_time: np.ndarray,
    duration_s: float,
    bins: int,
) -> dict[str, list[float]]:
    """Per time bin: arrivals/s, misses by arrival time, max queue length, requests served, accuracy, main subnet."""
    if duration_s <= 0:
        return {}
    width = duration_s / bins
    edges = np.arange(bins) * width
    by_arrival = np.minimum((trace.arrivals_s / width).astype(np.int64), bins - 1)
    arrivals = np.bincount(by_arrival, minlength=bins)
    missed = np.bincount(by_arrival, weights=(outcome != ON_TIME), minlength=bins) if len(trace) else np.zeros(bins)
    which = np.minimum((t_ms / 1000.0 / width).astype(np.int64), bins - 1)
    queue_max = np.zeros(bins)
    np.maximum.at(queue_max, which, queued)
    served = np.bincount(which, weights=size, minlength=bins)
    good = np.bincount(which, weights=on_time, minlength=bins)
    acc = np.asarray(p.acc)
    acc_sum = np.bincount(which, weights=on_time * acc[subnet] if subnet.size else on_time, minlength=bins)
    k = len(p)
    per = np.bincount(which * k + subnet, weights=size, minlength=bins * k).reshape(bins, k)
    main = np.where(per.sum(1) > 0, per.argmax(1), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(good > 0, acc_sum / np.maximum(good, 1), np.nan)
    return {
        "t_s": edges.tolist(),
        "arrival_rate": (arrivals / width).tolist(),
        "missed": missed.tolist(),
        "queue_max": queue_max.tolist(),
        "served": served.tolist(),
        "on_time": good.tolist(),
        "accuracy": [None if math.isnan(a) else float(a) for a in accuracy],
        "subnet": main.tolist(),
    }
