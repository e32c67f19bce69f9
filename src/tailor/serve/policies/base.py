"""The policy contract: for the next batch, which subnet and how many requests (SuperServe's policy space).

Every policy answers one question, `decide(now_ms, queue, idle_workers) -> Decision | None`: run up to
`batch_size` of the earliest-deadline requests on `subnet_id` (None = wait). The simulator calls the
same logic through `choose(...)`, which takes plain numbers (the earliest deadline, the queue length,
the number of arrivals so far) and returns (subnet position, batch size): no objects in the hot path.
A policy that needs more than the head of the queue (`lookahead > 0`) reads the first queued deadlines
and the busy workers' finish times through a `QueueView` the caller binds to it (`policy.view`).

"Slack" is the time left before the earliest deadline in the queue: `deadline - now`. A choice fits the
slack when its profiled latency (the serving profile's percentile) is <= the slack.

Policies are registered by name (`@register_policy("name")`); `make_policy(name, profile, **options)`
builds one. Adding a policy is one file in this package plus its test: see README.md. When nothing fits
the slack (the head request will be late whatever runs), each policy runs its fastest-draining choice.
`min_latency_ms` is the fastest a policy can answer a single request: a request with less time left than
that cannot be on time (the simulator and server answer it "deadline exceeded" at once).
"""

from __future__ import annotations

import bisect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from tailor.checks import positive_float, positive_int
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


class QueueView:
    """What a queue-aware policy may read besides the head: the first queued deadlines, the busy workers.

    Engines keep one view per run and update it in place (no object per decision). `deadlines(k)` is
    the k earliest queued deadlines in order (fewer when fewer are queued); `busy_until(now_ms)` the times
    at which the busy workers are expected to finish (ms, one per busy worker).
    """

    __slots__ = ("_busy", "head", "queue", "sorted_deadlines", "tail")

    def __init__(
        self,
        queue: EDFQueue | None = None,
        sorted_deadlines: Sequence[float] | None = None,
        busy: Callable[[float], list[float]] | None = None,
    ) -> None:
        self.queue = queue
        self.sorted_deadlines = sorted_deadlines
        self.head = 0
        self.tail = 0
        self._busy = busy

    def deadlines(self, k: int) -> Sequence[float]:
        """The `k` earliest queued deadlines (ms), earliest first."""
        if self.sorted_deadlines is not None:
            end = self.head + k
            return self.sorted_deadlines[self.head : end if end < self.tail else self.tail]
        if self.queue is None:
            return []
        return self.queue.earliest_deadlines(k)

    def busy_until(self, now_ms: float) -> list[float]:
        """Expected finish times of the busy workers (empty when unknown or none is busy)."""
        return [] if self._busy is None else self._busy(now_ms)


class Policy(ABC):
    """A scheduling policy over one `ServingProfile`; `slo_ms` and `workers` are known to every policy.

    Subclasses implement `choose`; `lookahead` > 0 asks the caller to bind a `QueueView` to `self.view`
    (without one, such a policy sees only the head of the queue).
    """

    name = "policy"
    lookahead = 0

    def __init__(
        self,
        profile: ServingProfile | Profile | str | os.PathLike[str],
        *,
        slo_ms: float | None = None,
        workers: int = 1,
    ) -> None:
        self.profile = load_profile(profile)
        self.slo_ms = None if slo_ms is None else positive_float("slo_ms", slo_ms, PolicyError)
        self.workers = positive_int("workers", workers, PolicyError)
        self.min_latency_ms: float = self.profile.min_latency_ms
        self.view: QueueView | None = None

    def decide(self, now_ms: float, queue: EDFQueue, idle_workers: int) -> Decision | None:
        """The next batch to run (None = wait): the contract's entry point for the server and the reference simulator.

        A queue-aware policy without a bound view reads `queue` itself (busy workers unknown).
        """
        if not len(queue):
            return None
        if self.lookahead and (self.view is None or self.view.queue is not queue):
            self.view = QueueView(queue)
        choice = self.choose(now_ms, queue.earliest_deadline(), len(queue), queue.total_arrived, idle_workers)
        if choice is None:
            return None
        position, batch = choice
        return Decision(self.profile.subnet_ids[position], batch)

    @abstractmethod
    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        """(subnet position, max batch size) for a non-empty queue, or None to wait. `arrivals`: requests that arrived
        so far, queued or refused (`EDFQueue.total_arrived`)."""

    def describe(self) -> str:
        return self.name

    def take_over_from(self, previous: Policy) -> None:
        """Continue where `previous` (the same policy, planned over a differently scaled profile) stopped: its
        queue view and whatever it has measured. The server swaps policies this way when its workers' slowdown
        changes; a policy that keeps state across decisions carries it over here."""
        self.view = previous.view

    def _require_slo(self) -> float:
        if self.slo_ms is None:
            raise PolicyError(f"policy {self.name!r} needs slo_ms (its batch cap is derived from the SLO)")
        return self.slo_ms


_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: make a policy buildable by `make_policy(name, ...)` (and thus by every command)."""

    def add(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise PolicyError(f"policy name {name!r} is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return add


def policy_names() -> list[str]:
    """Registered policy names (`fixed` is spelled `fixed:<id>`), plus the offline `upper_bound`."""
    return [f"{n}:<id>" if n == "fixed" else n for n in _REGISTRY] + ["upper_bound"]


DEFAULT_POLICY = "drainfit"


def make_policy(name: str, profile: ServingProfile | Profile | str | os.PathLike[str], **options: Any) -> Policy:
    """Build a registered policy by name (`default` is `DEFAULT_POLICY`; `fixed:<id>`, also `fixed:smallest`/`largest`).

    `options` go to the policy's constructor (`slo_ms`, `workers`, and e.g. `buckets` for slackfit);
    an option the policy does not take raises PolicyError naming it.
    """
    if not isinstance(name, str):
        raise PolicyError(f"policy name: expected a string, got {type(name).__name__}")
    serving = load_profile(profile)
    if name == "default":
        name = DEFAULT_POLICY
    if name == "upper_bound":
        raise PolicyError(
            "upper_bound is an offline bound, not an online policy: use simulate(..., policy='upper_bound')"
        )
    args: tuple[Any, ...] = ()
    if name.startswith("fixed:"):
        subnet_id = name[len("fixed:") :]
        if subnet_id not in serving.subnet_ids and subnet_id in ("smallest", "largest"):
            subnet_id = serving.subnet_ids[0 if subnet_id == "smallest" else -1]
        cls = _REGISTRY["fixed"]
        args = (subnet_id,)
    elif name in _REGISTRY and name != "fixed":
        cls = _REGISTRY[name]
    else:
        raise PolicyError(f"unknown policy {name!r}; expected one of {policy_names()}")
    try:
        return cls(serving, *args, **options)
    except TypeError as exc:
        raise PolicyError(f"policy {name!r}: {exc}") from None


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


