"""Scheduling policies: for the next batch, which subnet and how many requests (SuperServe's policy space).

Every policy answers one question, `decide(now_ms, queue, idle_workers) -> Decision | None`: run up to
`batch_size` of the earliest-deadline requests on `subnet_id` (None = wait). The simulator calls the
same logic through `choose(...)`, which takes plain numbers (the earliest deadline, the queue length,
the number of arrivals so far) and returns (subnet position, batch size): no objects in the hot path.
All lookups are precomputed tables searched with `bisect`.

"Slack" is the time left before the earliest deadline in the queue: `deadline - now`. A choice fits the
slack when its profiled latency (the profile's percentile, default p99) is <= the slack.

- `slackfit` (SuperServe): latency buckets of equal width between the fastest choice (smallest subnet,
  batch 1) and the slowest (largest subnet, largest batch); each bucket keeps, among the (subnet, batch)
  choices whose latency falls in it, the one with the largest batch (ties: the most accurate). SlackFit
  runs the bucket closest below the slack (the highest bucket whose upper edge is <= slack). Default 8
  buckets (`buckets=`); see README for why more is not better, and for `below=` (slack below every
  bucket: drop the request, default, or serve a small batch).
- `maxacc`: the batch is the queue (capped at the largest measured batch size); the most accurate
  subnet whose latency at that batch fits the slack. If none fits, fewer requests (the next measured
  batch size down), again the most accurate that fits.
- `maxbatch`: the largest measured batch size at which some subnet fits the slack (regardless of the
  queue's length), then the most accurate subnet that fits at that batch size.
- `fixed:<id>`: one subnet, Clipper-like adaptive batching: the batch cap is the fixed point AIMD
  reaches, the largest measured batch whose latency is <= `batch_slo_fraction` x SLO (computed from
  the profile), and every batch takes min(queue, cap) requests. `fit_slack=True` also shrinks the
  batch until it fits the head's slack.
- `infaas`: INFaaS-like variant selection: every `interval_ms` it measures the arrival rate and
  switches to the most accurate variant (subnet) whose throughput at its SLO batch cap sustains
  `headroom` x that rate (or, with `min_accuracy`, the cheapest variant at least that accurate that
  sustains it); batches as `fixed`. Switching is instantaneous (generous to INFaaS: separate models
  would have to be loaded).

When nothing fits the slack (the head request will be late whatever runs), each policy runs its
fastest-draining choice; see each class. `min_latency_ms` is the fastest a policy can answer a single
request: a request with less time left than that cannot be on time (the simulator and server may answer
it "deadline exceeded" at once).
"""

from __future__ import annotations

import bisect
import math
import os
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

from tailor.cost.profile import Profile
from tailor.errors import TailorError
from tailor.serve.profile import ServingProfile, load_profile
from tailor.serve.queue import EDFQueue


class PolicyError(TailorError, ValueError):
    """An unknown policy name, a bad option, or a subnet id the profile does not have."""


class Decision(NamedTuple):
    """Run up to `batch_size` of the earliest-deadline requests on subnet `subnet_id`."""

    subnet_id: str
    batch_size: int


def _positive(name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise PolicyError(f"{name}: expected a positive finite number, got {value!r:.60}")
    return float(value)


class _Staircase:
    """For one batch size: the best subnet (by a key) among those whose latency is <= a budget, via bisect."""

    __slots__ = ("best", "latencies")

    def __init__(self, entries: list[tuple[float, tuple[Any, ...], int]]) -> None:
        entries = sorted(entries, key=lambda e: e[0])
        self.latencies: list[float] = []
        self.best: list[int] = []
        best_key: tuple[Any, ...] | None = None
        best = -1
        for lat, key, position in entries:
            if best_key is None or key > best_key:
                best_key, best = key, position
            self.latencies.append(lat)
            self.best.append(best)

    def within(self, budget_ms: float) -> int:
        """The best entry with latency <= budget_ms, or -1 if none fits."""
        k = bisect.bisect_right(self.latencies, budget_ms) - 1
        return self.best[k] if k >= 0 else -1


class Policy(ABC):
    """A scheduling policy over one `ServingProfile`; `slo_ms` and `workers` are known to every policy."""

    name = "policy"

    def __init__(
        self,
        profile: ServingProfile | Profile | str | os.PathLike[str],
        *,
        slo_ms: float | None = None,
        workers: int = 1,
    ) -> None:
        self.profile = load_profile(profile)
        self.slo_ms = _positive("slo_ms", slo_ms, allow_none=True)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise PolicyError(f"workers: expected a positive integer, got {workers!r:.60}")
        self.workers = workers
        self.min_latency_ms: float = self.profile.min_latency_ms

    def decide(self, now_ms: float, queue: EDFQueue, idle_workers: int) -> Decision | None:
        """The next batch to run (None = wait): the contract's entry point for the server and the reference simulator."""
        if not len(queue):
            return None
        choice = self.choose(now_ms, queue.earliest_deadline(), len(queue), queue.total_pushed, idle_workers)
        if choice is None:
            return None
        position, batch = choice
        return Decision(self.profile.subnet_ids[position], batch)

    @abstractmethod
    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        """(subnet position, max batch size) for a non-empty queue, or None to wait. `arrivals`: requests accepted so far."""

    def describe(self) -> str:
        return self.name

    def _require_slo(self) -> float:
        if self.slo_ms is None:
            raise PolicyError(f"policy {self.name!r} needs slo_ms (its batch cap is derived from the SLO)")
        return self.slo_ms


class SlackFit(Policy):
    """SuperServe's SlackFit: equal-width latency buckets; run the bucket closest below the head's slack.

    A bucket is "below the slack" when its upper edge is <= slack (`fit="edge"`, default: every choice in
    it fits), or when its chosen choice's latency is (`fit="choice"`). Slack below every bucket:
    `below="drop"` (default) runs the lowest bucket's choice while it still fits, and makes its latency this
    policy's `min_latency_ms`: a request with less slack than that is answered "deadline exceeded" (by the
    simulator's `expire_hopeless`, or a server) instead of forcing a tiny batch; if asked anyway, the lowest
    bucket's choice runs. `below="serve"`: among the choices that still fit (all in the lowest bucket) the
    largest batch, ties the most accurate; if nothing fits, the lowest bucket's choice (the head is late).
    """

    name = "slackfit"

    def __init__(
        self, profile: Any, *, buckets: int = 8, fit: str = "edge", below: str = "drop", **common: Any
    ) -> None:
        super().__init__(profile, **common)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise PolicyError(f"buckets: expected a positive integer, got {buckets!r:.60}")
        if fit not in ("choice", "edge"):
            raise PolicyError(f"fit {fit!r}: expected 'edge' (a bucket's upper edge fits the slack) or 'choice'")
        if below not in ("drop", "serve"):
            raise PolicyError(
                f"below {below!r}: expected 'drop' or 'serve' (what to do when the slack is below every bucket)"
            )
        self.buckets = buckets
        self.fit = fit
        self.below = below
        p = self.profile
        lo, hi = p.min_latency_ms, p.max_latency_ms
        width = (hi - lo) / buckets
        edges = [lo + width * k for k in range(1, buckets + 1)]
        edges[-1] = hi  # exact, whatever the rounding
        self.edges_ms = edges
        members: list[list[tuple[float, int, int]]] = [[] for _ in range(buckets)]  # (latency, subnet, batch)
        for s, row in enumerate(p.lat):
            for j, lat in enumerate(row):
                members[bisect.bisect_left(edges, lat)].append((lat, s, p.batch_sizes[j]))
        self.upper_ms: list[float] = []  # upper edges of the non-empty buckets, ascending
        self.choices: list[tuple[int, int]] = []  # their (subnet, batch)
        self.choice_latency_ms: list[float] = []
        for k, group in enumerate(members):
            if not group:
                continue
            lat, s, b = max(group, key=lambda m: (m[2], p.acc[m[1]], -m[0]))
            self.upper_ms.append(edges[k])
            self.choices.append((s, b))
            self.choice_latency_ms.append(lat)
        self._thresholds = self.choice_latency_ms if fit == "choice" else self.upper_ms
        if below == "drop":  # the least slack at which any bucket's choice is on time
            self.min_latency_ms = self.choice_latency_ms[0]
        # below the lowest bucket ("serve"): the best (largest batch, then accuracy) choice that still fits
        first = sorted(members[0]) if below == "serve" else []
        self._low_lat = [m[0] for m in first]
        self._low_best: list[tuple[int, int]] = []
        best: tuple[int, float, float] | None = None
        pick = (0, 0)
        for lat, s, b in first:
            key = (b, p.acc[s], -lat)
            if best is None or key > best:
                best, pick = key, (s, b)
            self._low_best.append(pick)

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        slack = earliest_deadline_ms - now_ms
        k = bisect.bisect_right(self._thresholds, slack) - 1
        if k >= 0:
            return self.choices[k]
        k = bisect.bisect_right(self._low_lat, slack) - 1
        return self._low_best[k] if k >= 0 else self.choices[0]

    def bucket_table(self) -> list[dict[str, Any]]:
        """The non-empty buckets: upper edge, chosen subnet and batch, that choice's latency and accuracy."""
        p = self.profile
        return [
            {"upper_ms": u, "subnet": p.subnet_ids[s], "batch": b, "latency_ms": lat, "accuracy": p.acc[s]}
            for u, (s, b), lat in zip(self.upper_ms, self.choices, self.choice_latency_ms)
        ]

    def describe(self) -> str:
        return f"slackfit({self.buckets} buckets, {len(self.choices)} non-empty, fit={self.fit}, below={self.below})"


class _PerBatch(Policy):
    """Shared tables: for each measured batch size, the most accurate subnet within a latency budget."""

    def __init__(self, profile: Any, **common: Any) -> None:
        super().__init__(profile, **common)
        p = self.profile
        self._stairs = [
            _Staircase([(p.lat[s][j], (p.acc[s], -p.lat[s][j]), s) for s in range(len(p))])
            for j in range(len(p.batch_sizes))
        ]
        self._fastest = [min(range(len(p)), key=lambda s, j=j: p.lat[s][j]) for j in range(len(p.batch_sizes))]


class MaxAcc(_PerBatch):
    """The most accurate subnet that serves the whole queue (capped at the largest batch) within the slack.

    If none fits, the next measured batch size down (serving the earliest deadlines first), again the most
    accurate that fits. If nothing fits even one request, the fastest subnet for the whole queue (the head is late).
    """

    name = "maxacc"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        p = self.profile
        slack = earliest_deadline_ms - now_ms
        batch = queue_len if queue_len < p.max_batch else p.max_batch
        top = p.batch_slot[batch]
        s = self._stairs[top].within(slack)
        if s >= 0:
            return s, batch
        for j in range(top - 1, -1, -1):
            s = self._stairs[j].within(slack)
            if s >= 0:
                return s, p.batch_sizes[j]
        return self._fastest[top], batch


class MaxBatch(_PerBatch):
    """The largest measured batch size at which any subnet fits the slack, then the most accurate subnet there.

    If nothing fits at any batch size, the fastest subnet at the largest batch size (the head is late).
    """

    name = "maxbatch"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        p = self.profile
        slack = earliest_deadline_ms - now_ms
        for j in range(len(p.batch_sizes) - 1, -1, -1):
            s = self._stairs[j].within(slack)
            if s >= 0:
                return s, p.batch_sizes[j]
        return self._fastest[-1], p.max_batch


class FixedSubnet(Policy):
    """One subnet with Clipper-like adaptive batching (AIMD's fixed point computed from the profile)."""

    name = "fixed"

    def __init__(
        self, profile: Any, subnet_id: str, *, batch_slo_fraction: float = 0.5, fit_slack: bool = False, **common: Any
    ) -> None:
        super().__init__(profile, **common)
        p = self.profile
        try:
            self.position = p.index(subnet_id)
        except TailorError as exc:
            raise PolicyError(str(exc)) from None
        self.subnet_id = subnet_id
        fraction = _positive("batch_slo_fraction", batch_slo_fraction)
        self.batch_slo_fraction = fraction
        self.fit_slack = bool(fit_slack)
        self.batch_cap = max(1, p.max_batch_within(self.position, self._require_slo() * fraction))  # type: ignore[operator]
        self.min_latency_ms = p.lat[self.position][p.batch_slot[1]]
        row = p.lat[self.position]
        self._fit = _Staircase([(row[j], (b,), b) for j, b in enumerate(p.batch_sizes) if b <= self.batch_cap])
        self.name = f"fixed:{subnet_id}"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        cap = self.batch_cap
        if self.fit_slack:
            fitted = self._fit.within(earliest_deadline_ms - now_ms)
            cap = fitted if fitted > 0 else 1
        return self.position, (queue_len if queue_len < cap else cap)

    def describe(self) -> str:
        extra = ", fit_slack" if self.fit_slack else ""
        return f"{self.name}(batch cap {self.batch_cap}{extra})"


class INFaaS(Policy):
    """INFaaS-like: the variant (subnet) is re-chosen every `interval_ms` from the measured arrival rate."""

    name = "infaas"

    def __init__(
        self,
        profile: Any,
        *,
        interval_ms: float = 1000.0,
        headroom: float = 1.1,
        batch_slo_fraction: float = 0.5,
        min_accuracy: float | None = None,
        **common: Any,
    ) -> None:
        super().__init__(profile, **common)
        p = self.profile
        self.interval_ms = _positive("interval_ms", interval_ms)
        self.headroom = _positive("headroom", headroom)
        fraction = _positive("batch_slo_fraction", batch_slo_fraction)
        self.batch_slo_fraction = fraction
        if min_accuracy is not None and not 0 <= min_accuracy <= 1:
            raise PolicyError(f"min_accuracy: expected a number in [0, 1] or None, got {min_accuracy!r:.60}")
        self.min_accuracy = min_accuracy
        budget = self._require_slo() * fraction  # type: ignore[operator]
        self.batch_caps = [max(1, p.max_batch_within(s, budget)) for s in range(len(p))]
        # requests per ms that all workers sustain with each variant at its batch cap
        self.throughput = [self.workers * cap / p.lat[s][p.batch_slot[cap]] for s, cap in enumerate(self.batch_caps)]
        self.current = len(p) - 1
        self.switches = 0
        self._last_ms: float | None = None
        self._last_arrivals = 0

    def select(self, rate_per_ms: float) -> int:
        """The variant for an arrival rate (requests per ms)."""
        p = self.profile
        need = self.headroom * rate_per_ms
        able = [s for s in range(len(p)) if self.throughput[s] >= need]
        if not able:
            return max(range(len(p)), key=lambda s: (self.throughput[s], p.acc[s]))
        if self.min_accuracy is not None:
            accurate = [s for s in able if p.acc[s] >= self.min_accuracy]
            if accurate:
                return min(accurate, key=lambda s: (p.lat[s][0], -p.acc[s]))
        return max(able, key=lambda s: p.acc[s])

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        if self._last_ms is None:
            self._last_ms, self._last_arrivals = now_ms, arrivals
        elif now_ms - self._last_ms >= self.interval_ms:
            rate = (arrivals - self._last_arrivals) / (now_ms - self._last_ms)
            chosen = self.select(rate)
            if chosen != self.current:
                self.current = chosen
                self.switches += 1
            self._last_ms, self._last_arrivals = now_ms, arrivals
        cap = self.batch_caps[self.current]
        return self.current, (queue_len if queue_len < cap else cap)

    def describe(self) -> str:
        return f"infaas(every {self.interval_ms:g} ms, headroom {self.headroom:g})"


POLICY_NAMES = ("slackfit", "maxacc", "maxbatch", "fixed:<id>", "infaas", "upper_bound")


def make_policy(name: str, profile: ServingProfile | Profile | str | os.PathLike[str], **options: Any) -> Policy:
    """Build a policy by name: `slackfit`, `maxacc`, `maxbatch`, `fixed:<id>` (also `fixed:smallest`/`fixed:largest`), `infaas`.

    `options` go to the policy's constructor (`slo_ms`, `workers`, and e.g. `buckets` for slackfit);
    an option the policy does not take raises PolicyError naming it.
    """
    if not isinstance(name, str):
        raise PolicyError(f"policy name: expected a string, got {type(name).__name__}")
    serving = load_profile(profile)
    classes: dict[str, type[Policy]] = {"slackfit": SlackFit, "maxacc": MaxAcc, "maxbatch": MaxBatch, "infaas": INFaaS}
    if name == "upper_bound":
        raise PolicyError(
            "upper_bound is an offline bound, not an online policy: use simulate(..., policy='upper_bound')"
        )
    args: tuple[Any, ...] = ()
    if name.startswith("fixed:"):
        subnet_id = name[len("fixed:") :]
        if subnet_id not in serving.subnet_ids and subnet_id in ("smallest", "largest"):
            subnet_id = serving.subnet_ids[0 if subnet_id == "smallest" else -1]
        cls: type[Policy] = FixedSubnet
        args = (subnet_id,)
    elif name in classes:
        cls = classes[name]
    else:
        raise PolicyError(f"unknown policy {name!r}; expected one of {list(POLICY_NAMES)}")
    try:
        return cls(serving, *args, **options)
    except TypeError as exc:
        raise PolicyError(f"policy {name!r}: {exc}") from None
