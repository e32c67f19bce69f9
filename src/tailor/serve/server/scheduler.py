"""Scheduling for the live server: one earliest-deadline-first queue, a policy, and the loop feeding workers.

Two layers, neither of which knows HTTP:

- `Scheduler` is pure bookkeeping (no clock, no I/O): it admits requests into the bounded `EDFQueue`,
  drops the expired ones, and turns the policy's `Decision(subnet, batch_size)` into a `Batch` of the
  earliest-deadline requests. Its clock is whatever the caller passes (milliseconds).
- `Engine` is the asyncio side: `submit(inputs, deadline_ms)` queues a request and awaits its `Served`
  result (or raises `Overloaded`, `DeadlineExceeded`, `RequestFailed`), while one task asks the
  scheduler for batches whenever a worker is idle and hands them to an `Executor` (the local
  `WorkerPool`, or Ray actors). Every request gets exactly one outcome: on time, late (answered 504 at its
  deadline while its batch still runs), expired (504, never computed), rejected (503) or failed (500).

Deadlines count from a request's arrival (the first byte the server read), so time spent waiting to be
parsed is not hidden. `Engine.admits(deadline_ms)` sheds early: a request that the queue cannot drain in
time is refused before its body is parsed. How fast the queue drains is measured on the requests that
waited behind a long one (the profile's fastest subnet alone would admit what a front end sharing the
cores with the workers then has no time to serve: every admitted request expires and goodput falls to 0).
And the profile, measured on an idle core, is scaled by the slowdown the workers show under load (their
compute time over the profile's, `Engine._observe_slowdown`): the policy plans with what batches really take.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tailor.errors import ProfileError, TailorError
from tailor.serve.policies import Policy, QueueView
from tailor.serve.profile import ServingProfile
from tailor.serve.queue import EDFQueue, Request
from tailor.serve.server.metrics import ServingMetrics
from tailor.serve.server.worker import RunResult, WorkerCrashed

logger = logging.getLogger("tailor.serve")


def monotonic_ms() -> float:
    """The server's clock: `time.monotonic()` in milliseconds."""
    return time.monotonic() * 1e3


class Overloaded(TailorError):
    """Refused with 503: the queue is full, the deadline cannot be met behind the queue, or the server is not
    accepting; try again after `retry_after_s` seconds. `reason` is one of `metrics.REJECTIONS`."""

    def __init__(self, message: str, retry_after_s: int, reason: str = "queue_full") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason


class DeadlineExceeded(TailorError):
    """The request's deadline passed before a worker could start it; it was not computed."""


class RequestFailed(TailorError):
    """The request could not be computed: its worker crashed (after the one retry) or the model raised."""


@dataclass(slots=True)
class Job:
    """What a queued request carries: its input batch, the future its answer goes to, retry count."""

    inputs: np.ndarray
    future: asyncio.Future[Served] | None
    enqueued_ms: float
    attempts: int = 0
    answered: bool = False  # an outcome has been counted (exactly once per request)
    ahead: int = 0  # samples queued in front of it when it was admitted (for the measured drain rate)
    planned_before: float = 0.0  # the engine's planned work (ms) done or under way when it was admitted, less what
    # was still to run of the batches on the workers: the planned work it waited for is the difference at dispatch

    @property
    def samples(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class Batch:
    """Requests to run together on one subnet; `planned_ms` is the profile's latency for that batch."""

    subnet_id: str
    requests: list[Request]
    samples: int
    planned_ms: float


@dataclass(frozen=True)
class Served:
    """A computed answer: outputs and how it was served (subnet, batch, time queued and computing)."""

    outputs: np.ndarray
    subnet_id: str
    accuracy: float | None
    batch_size: int
    queue_ms: float
    compute_ms: float
    on_time: bool
    deadline_ms: float
    done_ms: float
    attempts: int
    worker: int
    worker_ms: float = 0.0  # dispatch to answer: compute plus the round trip to the worker process


def _samples(request: Request) -> int:
    payload = request.payload
    return payload.samples if isinstance(payload, Job) else 1


class Scheduler:
    """The EDF queue and the policy: which requests run next, on which subnet (pure; caller supplies time).

    With a `policy_factory` (the policy's constructor for a given profile), `rescale(slowdown)` makes the
    scheduler plan with the profile's latencies times `slowdown` (the policy rebuilt for that profile, cached
    per factor); without one it always plans with `profile` as given.
    """

    def __init__(
        self,
        profile: ServingProfile,
        policy: Policy,
        queue_limit: int | None = 1024,
        expire_hopeless: bool = True,
        policy_factory: Callable[[ServingProfile], Policy] | None = None,
    ) -> None:
        if queue_limit is not None and queue_limit < 1:
            raise ValueError(f"queue_limit must be >= 1 or None, got {queue_limit}")
        self.base_profile = profile
        self.expire_hopeless = expire_hopeless
        self.queue = EDFQueue(queue_limit)
        self.queue_limit = queue_limit
        self.subnet_ids = list(profile.subnet_ids)
        self.max_batch_size = max(profile.batch_sizes)
        self.queued_samples = 0
        self.slowdown = 1.0
        self._policy_factory = policy_factory
        self._plans: dict[float, tuple[ServingProfile, Policy]] = {1.0: (profile, policy)}
        self._plan_with(profile, policy)

    def _plan_with(self, profile: ServingProfile, policy: Policy) -> None:
        self.profile = profile
        self.policy = policy
        # like the simulator: a request with less time left than the policy's fastest answer cannot be on time
        self.hopeless_ms = float(policy.min_latency_ms) if self.expire_hopeless else 0.0
        # the most requests per second any subnet can do: for admission and the Retry-After estimate
        self.fastest_ms_per_sample = min(
            profile.latency_ms(sid, self.max_batch_size) / self.max_batch_size for sid in self.subnet_ids
        )

    def rescale(self, slowdown: float) -> bool:
        """Plan with the profile's latencies x `slowdown` from now on; whether anything changed (False without a
        `policy_factory`, or when it already plans so)."""
        if self._policy_factory is None or slowdown == self.slowdown:
            return False
        plan = self._plans.get(slowdown)
        if plan is None:
            profile = self.base_profile.scaled(slowdown)
            plan = self._plans[slowdown] = (profile, self._policy_factory(profile))
        profile, policy = plan
        policy.take_over_from(self.policy)
        self._plan_with(profile, policy)
        self.slowdown = slowdown
        return True

    def admit(self, request: Request) -> bool:
        """Queue `request`; False when the queue is full (the request is rejected)."""
        if not self.queue.push(request):
            return False
        self.queued_samples += _samples(request)
        return True

    def _taken(self, requests: list[Request]) -> list[Request]:
        self.queued_samples -= sum(_samples(r) for r in requests)
        return requests

    def pop_all(self) -> list[Request]:
        """Remove and return everything queued (shutdown, a broken policy)."""
        return self._taken(self.queue.pop(len(self.queue)))

    def expire(self, now_ms: float) -> list[Request]:
        """Remove and return the queued requests whose deadline has passed (or is closer than `hopeless_ms`)."""
        return self._taken(self.queue.drop_expired(now_ms + self.hopeless_ms))

    def expiry_ms(self, request: Request) -> float:
        """When `expire` will drop `request` if it is still queued."""
        return request.deadline_ms - self.hopeless_ms

    def next_batch(self, now_ms: float, idle_workers: int) -> Batch | None:
        """Ask the policy; pop the earliest-deadline requests up to its batch size (in samples). None = wait."""
        if idle_workers <= 0 or not len(self.queue):
            return None
        decision = self.policy.decide(now_ms, self.queue, idle_workers)
        if decision is None:
            return None
        if decision.subnet_id not in self.subnet_ids:
            raise ProfileError(f"policy chose subnet {decision.subnet_id!r}, which is not served ({self.subnet_ids})")
        limit = max(1, min(int(decision.batch_size), self.max_batch_size))
        taken: list[Request] = []
        samples = 0
        while len(self.queue):
            head = self.queue.earliest()
            assert head is not None
            size = _samples(head)
            if taken and samples + size > limit:
                break
            taken += self._taken(self.queue.pop(1))
            samples += size  # a first request larger than the limit runs alone
            if samples >= limit:
                break
        planned = self.profile.latency_ms(decision.subnet_id, samples)
        return Batch(decision.subnet_id, taken, samples, planned)


class Executor(Protocol):
    """Where batches run: the local `WorkerPool`, or (next) a Ray Serve deployment handle behind the same calls."""

    on_change: Callable[[], None]

    async def start(self) -> None: ...

    async def close(self, timeout_s: float = 5.0) -> None: ...

    def idle_workers(self) -> int: ...

    def ready_workers(self) -> int: ...

    def dispatch(self, subnet_id: str, inputs: np.ndarray, timeout_s: float = 60.0) -> Awaitable[RunResult]: ...


class Engine:
    """Queue, schedule and run requests on an `Executor`; `submit` awaits one request's answer.

    Watchdog: a batch is given `max(timeout_factor x its planned latency, watchdog_slo_factor x SLO)`, at
    most `max_timeout_s`, before its worker is declared hung (killed and replaced by the executor). Its
    requests are answered 504 at their deadlines whatever the worker does, and a request whose worker died
    is retried once if its deadline has not passed (else 504).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        executor: Executor,
        slo_ms: float,
        metrics: ServingMetrics | None = None,
        clock: Callable[[], float] = monotonic_ms,
        poll_ms: float = 1.0,
        timeout_factor: float = 10.0,
        max_timeout_s: float = 10.0,
        watchdog_slo_factor: float = 2.0,
        retry_crashed: bool = True,
        overhead_margin_ms: float | None = None,
        margin_percentile: float = 99.9,
        admission: bool = True,
        drain_memory_s: float = 1.0,
        drain_smoothing: float = 0.05,
        max_slowdown: float = 8.0,
    ) -> None:
        if not slo_ms > 0:
            raise ValueError(f"slo_ms must be > 0, got {slo_ms}")
        self.scheduler = scheduler
        self.executor = executor
        self.slo_ms = float(slo_ms)
        self.metrics = metrics or ServingMetrics(
            scheduler.max_batch_size,
            queue_length=lambda: len(scheduler.queue),
            running=lambda: self.running,
            margin_ms=lambda: self.margin_ms,
            slowdown=lambda: self.scheduler.slowdown,
        )
        self.clock = clock
        self.poll_ms = poll_ms
        self.timeout_factor = timeout_factor
        self.max_timeout_s = max_timeout_s
        self.watchdog_slo_factor = watchdog_slo_factor
        self.retry_crashed = retry_crashed
        self.admission = admission
        self.drain_memory_s = drain_memory_s
        self.drain_smoothing = drain_smoothing
        if not max_slowdown >= 1:
            raise ValueError(f"max_slowdown must be >= 1, got {max_slowdown}")
        if overhead_margin_ms is not None and not 0 <= overhead_margin_ms < self.slo_ms:
            raise ValueError(f"overhead_margin_ms must be in [0, slo_ms), got {overhead_margin_ms}")
        self.fixed_margin_ms = overhead_margin_ms
        if not 50 <= margin_percentile <= 100:
            raise ValueError(f"margin_percentile must be in [50, 100], got {margin_percentile}")
        self.margin_percentile = float(margin_percentile)
        self._round_trips: collections.deque[float] = collections.deque(maxlen=256)
        self._deliveries: collections.deque[float] = collections.deque(maxlen=256)
        self._delivered = 0
        self.max_slowdown = max_slowdown
        self._slowdowns: collections.deque[float] = collections.deque(maxlen=128)  # compute / profiled, per batch
        self._slowdown_count = 0
        self.reserved = 0  # requests admitted by the front end and not yet queued (counted by `admits`)
        self.reservations = 0  # places ever reserved: a reservation's ticket is the count before it
        self._drain_observed_ms: float | None = None  # measured queue drain time per queued sample (EWMA)
        self._planned_work_ms = 0.0  # the profile's latency of every batch dispatched so far, summed
        self._drain_observed_at = 0.0
        self._estimated_margin_ms = 0.0
        self._observed = 0
        self.accepting = False
        self.inflight = 0  # batches on workers
        self.running = 0  # requests in those batches
        self._ids = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._running_batches: dict[int, tuple[Batch, float]] = {}  # id -> (batch, dispatched at)
        self.executor_changes = 0  # how many times the executor said a worker changed state (`admission_horizon_ms`)
        executor.on_change = self._executor_changed
        if getattr(scheduler.policy, "lookahead", 0):  # queue-aware policies read the queue and the busy workers
            scheduler.policy.view = QueueView(scheduler.queue, busy=self.busy_until)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the executor (workers load the model) and the scheduling loop; then accept requests."""
        self._loop = asyncio.get_running_loop()
        await self.executor.start()
        self._task = asyncio.create_task(self._schedule_loop(), name="tailor-scheduler")
        self.accepting = True

    @property
    def ready(self) -> bool:
        return self.accepting and self.executor.ready_workers() > 0

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting, let queued and running requests finish (up to `drain_timeout_s`), stop the workers."""
        self.accepting = False
        deadline = time.monotonic() + drain_timeout_s
        while (len(self.scheduler.queue) or self.inflight) and time.monotonic() < deadline:
            if self._task is None or self._task.done():
                break
            await asyncio.sleep(0.005)
        self._closing = True
        now = self.clock()
        for request in self.scheduler.pop_all():
            self._fail(request, "failed", RequestFailed("the server shut down before this request could run"), now)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.executor.close()
        for _ in range(10):  # batches the executor failed on closing are answered by their callbacks
            if not self._running_batches:
                break
            await asyncio.sleep(0)
        for batch, _ in list(self._running_batches.values()):  # an executor that just dropped them: answer anyway
            for request in batch.requests:
                self._fail(request, "failed", RequestFailed("the server shut down while this request ran"), now)
        self._running_batches.clear()

    def _executor_changed(self) -> None:
        self.executor_changes += 1
        self.wake()

    def wake(self) -> None:
        """Make the scheduling loop look again (a request arrived, a worker became idle, ...)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def busy_until(self, now_ms: float) -> list[float]:
        """When the busy workers are expected to finish: dispatch + planned latency + margin (for the policy)."""
        margin = self.margin_ms
        return [max(now_ms, at + batch.planned_ms + margin) for batch, at in self._running_batches.values()]

    # -- admission ------------------------------------------------------------------------------------------
    def reserve(self) -> int:
        """Hold a place in admission for a request the front end admitted and has not queued yet; its ticket
        (reservations are made in the order requests are read)."""
        ticket = self.reservations
        self.reservations += 1
        self.reserved += 1
        return ticket

    def reserved_after(self, ticket: int) -> int:
        """How many of the places still held were reserved after `ticket`: requests read after it, which queue
        behind it in deadline order (unless one carries a shorter deadline of its own: then it is judged a little
        leniently, and a request that then misses its deadline in the queue is answered 504). Exact while places are given back in the
        order they were taken, as the handlers run; otherwise at most the number taken after it."""
        return max(0, min(self.reserved, self.reservations - ticket - 1))

    def admits(self, deadline_ms: float, samples: int = 1, budget_ms: float | None = None,
               reserved_behind: int = 0) -> bool:
        """Whether a request due at `deadline_ms` could still be answered in time behind the queue and the places
        reserved for requests not queued yet, less `reserved_behind` of them that will queue behind it.

        The queue drains at `drain_ms_per_sample`: the profile's fastest rate (scaled by the workers' measured
        slowdown), slowed by how much slower than planned the queue has really drained under this load (which
        counts what the profile cannot: the front end parsing on the same cores, the pipe, a stalled worker), so
        what is admitted can be served in time. It starts when a busy worker is expected back (its batch's plan
        plus the planning margin), or, with a worker idle and work ahead, after the margin of the batch about
        to be dispatched: counted only while a batch ran, admission took requests in the instant between one
        batch's answer and the next dispatch that their handlers then refused, after a full ASGI cycle each.
        """
        if not self.admission:
            return True
        scheduler = self.scheduler
        now = self.clock()
        if now + scheduler.hopeless_ms > deadline_ms:
            # a budget below the fastest answer is hopeless even on an idle server: queued, it is answered 504 at
            # once (retrying cannot help); one that waited past it to be read is refused (retrying later can)
            return budget_ms is not None and budget_ms < scheduler.hopeless_ms
        return self._finish_ms(now, samples, reserved_behind, now) + scheduler.hopeless_ms <= deadline_ms

    def admission_horizon_ms(self, now_ms: float, within_ms: float = 0.0) -> float:
        """The earliest deadline `admits` takes for a one-sample request with the default budget and no place
        reserved behind it, at any moment from `now_ms` to `now_ms + within_ms` while the queue, the places held,
        the workers' states, the running batches, the planning margin and the measured drain rate stay as they
        are (or only the first two grow): a request due before it is refused then. -inf when admission is off.
        Lets the front end ask once for a run of refusals (`InferenceServer.refusal`) instead of once per
        request."""
        if not self.admission:
            return -math.inf
        # the measured drain rate fades back to the profile's with time: taken at the window's end, the horizon
        # holds throughout it (the start of service and everything else only move later as time passes)
        return self._finish_ms(now_ms, 1, 0, now_ms + within_ms) + self.scheduler.hopeless_ms

    def _finish_ms(self, now: float, samples: int, reserved_behind: int, drain_at: float) -> float:
        """When `samples` more would be done behind the queue and the places held (less `reserved_behind`), the
        queue draining at the measured rate of time `drain_at`."""
        scheduler = self.scheduler
        ahead = scheduler.queued_samples + max(0, self.reserved - reserved_behind)
        if self.executor.idle_workers() <= 0 and self._running_batches:
            start = min(self.busy_until(now))
        else:  # an idle worker takes what is ahead in a batch that costs the margin too (`busy_until` counts it)
            start = now + self.margin_ms if ahead else now
        profiled = scheduler.fastest_ms_per_sample / max(1, self.executor.ready_workers())
        return start + ahead * self._faded_drain_ms(profiled, drain_at) + samples * profiled

    def drain_ms_per_sample(self, now_ms: float | None = None) -> float:
        """Milliseconds the queue needs per queued sample: the profile's fastest rate (the fastest subnet at its
        largest batch on every ready worker), times the slowdown measured on requests that waited behind a long
        queue (if above 1); the measurement fades back to the profile's rate with a time constant of
        `drain_memory_s`."""
        profiled = self.scheduler.fastest_ms_per_sample / max(1, self.executor.ready_workers())
        return self._faded_drain_ms(profiled, self.clock() if now_ms is None else now_ms)

    def _faded_drain_ms(self, profiled: float, now: float) -> float:
        observed = self._drain_observed_ms
        if observed is None or observed <= profiled:
            return profiled
        fade = math.exp(-max(0.0, now - self._drain_observed_at) / (1e3 * self.drain_memory_s))
        return profiled + (observed - profiled) * fade

    def _observe_drain(self, requests: list[Request], now: float) -> None:
        """Per request that waited behind at least `max_batch_size` samples, dispatched or expired: how much
        longer it waited than the profile planned for the batches it waited for (those running when it was
        admitted, what was left of them, and those dispatched since), applied to the profile's fastest rate.
        Not its wait per sample ahead: that is the rate of the subnets the policy chose, and a policy that
        serves an accurate subnet while the queue allows it would then close admission to requests it could
        serve by switching to a faster one. For an expired request the measure is a lower bound. At most
        `slo_ms / max_batch_size` per sample."""
        floor = self.scheduler.max_batch_size
        workers = max(1, self.executor.ready_workers())
        profiled = self.scheduler.fastest_ms_per_sample / workers
        # at most a full batch per SLO: a stall of seconds (a hung worker, a swamped front end) must not close
        # admission for the seconds it takes such a measurement to fade (below it, a batch can still queue)
        cap = self.slo_ms / floor
        samples = []
        for r in requests:
            job: Job = r.payload
            if job.ahead < floor or job.attempts:
                continue
            planned = (self._planned_work_ms - job.planned_before) / workers
            waited = now - job.enqueued_ms
            samples.append(cap if planned <= 0 else min(profiled * waited / planned, cap))
        if not samples:
            return
        # an old measurement counts for what is left of it
        current = None if self._drain_observed_ms is None else self._faded_drain_ms(profiled, now)
        for sample in samples:
            if current is None:
                current = sample
            else:
                base = max(profiled, current)
                current = base + self.drain_smoothing * (sample - base)
        self._drain_observed_ms, self._drain_observed_at = current, now

    def _planned_work_left_ms(self, now: float) -> float:
        """The planned work (ms) not yet done of the batches on the workers."""
        return sum(max(0.0, at + batch.planned_ms - now) for batch, at in self._running_batches.values())

    def retry_after_s(self) -> int:
        """The whole seconds the queue needs to drain at the measured rate (at least 1): a refusal's Retry-After."""
        return max(1, math.ceil(self.scheduler.queued_samples * self.drain_ms_per_sample() / 1e3))

    def count_refusal(self, reason: str, waited_s: float) -> None:
        """Count a request refused (503) for `reason` in `/metrics`; one admission refused also counts as an
        arrival the policy sees (the queue's `total_arrived`, which counts queue-full refusals itself), so that
        a policy planning for the offered load is not shown only what was admitted."""
        self.metrics.rejected(reason, waited_s)
        if reason == "admission":
            self.scheduler.queue.refused()

    def refuse(self, reason: str, message: str) -> Overloaded:
        """An `Overloaded` for a request refused before it was queued (the caller counts it), with `retry_after_s`."""
        return Overloaded(message, self.retry_after_s(), reason)

    # -- requests -------------------------------------------------------------------------------------------
    async def submit(self, inputs: np.ndarray, deadline_ms: float | None = None, arrival_ms: float | None = None,
                     reserved_behind: int = 0) -> Served:
        """Queue one request (`inputs` is its (N, ...) batch) and await its answer.

        `deadline_ms` is the request's budget from `arrival_ms` (default: the server's SLO from now);
        `reserved_behind`: places held for requests read after it (`reserved_after`), not counted against it.
        Raises `Overloaded` (counted as rejected) when it is refused.
        """
        now = self.clock()
        arrival = now if arrival_ms is None else arrival_ms
        budget = self.slo_ms if deadline_ms is None else float(deadline_ms)
        if not self.accepting:
            self.count_refusal("not_accepting", (now - arrival) / 1e3)
            raise self.refuse("not_accepting", "the server is not accepting requests (starting or shutting down)")
        if not self.admits(arrival + budget, int(inputs.shape[0]), budget, reserved_behind):
            self.count_refusal("admission", (now - arrival) / 1e3)
            raise self.refuse("admission", f"overloaded: the {len(self.scheduler.queue)} queued requests cannot be "
                              f"drained within this request's deadline of {budget:.6g} ms")
        assert self._loop is not None
        future: asyncio.Future[Served] = self._loop.create_future()
        request = Request(next(self._ids), arrival, arrival + budget,
                          Job(inputs, future, now, ahead=self.scheduler.queued_samples,
                              planned_before=self._planned_work_ms - self._planned_work_left_ms(now)))
        if not self.scheduler.admit(request):
            self.count_refusal("queue_full", (now - arrival) / 1e3)
            raise self.refuse("queue_full", f"overloaded: the queue holds its limit of {self.scheduler.queue_limit} "
                              "requests")
        self.wake()
        try:
            return await future
        except BaseException:
            # the exception's traceback holds this frame; with the future (which holds the exception) still among
            # its locals that is a reference cycle, which only the cyclic collector frees: under a burst hundreds
            # of them (each with its request's inputs) made collections of generation 1 and 2 take milliseconds
            del future, request
            raise

    def _fail(self, request: Request, outcome: str, error: Exception, now: float) -> None:
        job: Job = request.payload
        if job.answered:
            return
        job.answered = True
        self.metrics.outcome(outcome, (now - request.arrival_ms) / 1e3)
        future = job.future
        if future is not None and not future.done():
            future.set_exception(error)

    # -- the loop -------------------------------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        assert self._loop is not None
        loop = self._loop
        scheduler = self.scheduler
        while True:
            now = self.clock()
            policy_waits = False
            try:
                expired = scheduler.expire(now)
                if expired:
                    self._observe_drain(expired, now)  # waited this long and still not run: a lower bound
                for request in expired:
                    self._fail(request, "expired", self._expired_error(request, now), now)
                for batch, _ in list(self._running_batches.values()):  # deadlines passing while batches run
                    if batch.requests and min(r.deadline_ms for r in batch.requests) <= now:
                        self._answer_late(batch, now)
                while len(scheduler.queue):
                    idle = self.executor.idle_workers()
                    if idle <= 0:
                        break
                    batch = scheduler.next_batch(now + self.margin_ms, idle)
                    if batch is None:
                        policy_waits = True
                        break
                    self._dispatch(batch, now)
                    now = self.clock()
            except Exception as exc:  # a broken policy must not leave requests waiting forever
                logger.exception("scheduling failed; answering the queued requests with an error")
                for request in scheduler.pop_all():
                    self._fail(request, "failed", RequestFailed(f"internal scheduling error: {exc}"), now)
            timeout_ms: float | None = None
            head = scheduler.queue.earliest()
            if head is not None:
                timeout_ms = max(0.0, scheduler.expiry_ms(head) - now)
                if policy_waits:
                    timeout_ms = min(timeout_ms, self.poll_ms)
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_ms / 1e3, self.wake) if timeout_ms is not None else None
            await waiter
            if timer is not None:
                timer.cancel()

    @property
    def margin_ms(self) -> float:
        """Time the policy is told has already passed: what a batch costs besides compute (dispatch, pipe,
        waking the worker and the server, and a worker slowed past its plan) and what an answer then takes to
        leave (`observe_delivery`). Fixed when configured; else the `margin_percentile` (99.9th, i.e. the largest
        of 256) of the last 256 batches' (dispatch-to-answer - min(compute, planned)) plus that of the last 256
        deliveries, capped at half the SLO. Under a burst these times have a long tail (the front end, busy
        refusing, reads an answer late): planned at the 90th, one batch in ten ended late and its work was lost;
        at the 99th, with DrainFit keeping the queue's deadlines full at 80% load, the few batches past it still
        left clusters of late answers (0.3-0.7% of requests; see benchmarks/overload.py)."""
        return self.fixed_margin_ms if self.fixed_margin_ms is not None else self._estimated_margin_ms

    def _observe_slowdown(self, batch: Batch, compute_ms: float) -> None:
        """Record how much slower than profiled a batch computed; every 16 batches, plan with the median of the last
        128 such ratios (1 when not above 1, at most `max_slowdown`), rounded to an eighth of a doubling so that
        the policy is rebuilt only for a real change. The profile was measured on an idle core; under load a
        worker shares it with the front end and runs 2-3x slower than the profile's 99th percentile (torch at 3x
        in benchmarks/overload.py): a policy planning with the idle latencies chooses batches that end late, and
        expects the queue to drain faster than it can."""
        base = self.scheduler.base_profile
        if batch.samples > base.max_batch or compute_ms <= 0:
            return
        self._slowdowns.append(compute_ms / base.latency_ms(batch.subnet_id, batch.samples))
        self._slowdown_count += 1
        if self._slowdown_count % 16:
            return
        median = statistics.median_high(self._slowdowns)
        factor = 1.0 if median <= 1 else min(self.max_slowdown, 2 ** (round(8 * math.log2(median)) / 8))
        self.scheduler.rescale(factor)

    def _observe_round_trip(self, overhead_ms: float) -> None:
        self._observed = self._record_overhead(self._round_trips, overhead_ms, self._observed)

    def observe_delivery(self, ms: float) -> None:
        """How long an on-time answer took from the engine to the client's connection (the handler resuming on
        a busy event loop, encoding, writing). A batch planned to end at the deadline is otherwise on time by
        the server's clock and late by the client's: the policy plans for this too."""
        self._delivered = self._record_overhead(self._deliveries, ms, self._delivered)

    def _record_overhead(self, samples: collections.deque[float], ms: float, count: int) -> int:
        """Add one observation to `samples` (`count` before it) and re-estimate the margin for each of the first
        16, then every 16th; return the new count."""
        samples.append(max(0.0, ms))
        count += 1
        if count % 16 == 0 or count < 16:
            self._estimate_margin()
        return count

    def _estimate_margin(self) -> None:
        margin = 0.0
        for observed in (self._round_trips, self._deliveries):
            if observed:
                ordered = sorted(observed)
                margin += ordered[round(self.margin_percentile / 100 * (len(ordered) - 1))]
        self._estimated_margin_ms = min(margin, self.slo_ms / 2)

    def _expired_error(self, request: Request, now: float) -> DeadlineExceeded:
        waited = now - request.arrival_ms
        budget = request.deadline_ms - request.arrival_ms
        if now <= request.deadline_ms:
            return DeadlineExceeded(
                f"deadline cannot be met: {request.deadline_ms - now:.3g} ms of its {budget:.6g} ms left after waiting "
                f"{waited:.3g} ms, and the fastest subnet needs {self.scheduler.hopeless_ms:.3g} ms; not computed"
            )
        return DeadlineExceeded(
            f"deadline exceeded: the request waited {waited:.3g} ms, its deadline was {budget:.6g} ms; not computed"
        )

    def watchdog_s(self, planned_ms: float) -> float:
        """How long a batch planned at `planned_ms` may run before its worker is declared hung."""
        limit_ms = max(self.timeout_factor * planned_ms, self.watchdog_slo_factor * self.slo_ms)
        return min(self.max_timeout_s, limit_ms / 1e3)

    def _dispatch(self, batch: Batch, now: float) -> None:
        requests = batch.requests
        if len(requests) == 1:
            inputs = requests[0].payload.inputs
        else:
            inputs = np.concatenate([r.payload.inputs for r in requests])
        try:
            pending = asyncio.ensure_future(self.executor.dispatch(batch.subnet_id, inputs, self.watchdog_s(batch.planned_ms)))
        except Exception as exc:  # the executor refused: fail the batch, never lose it
            for request in requests:
                self._fail(request, "failed", RequestFailed(f"could not dispatch: {exc}"), now)
            return
        self.inflight += 1
        self.running += len(requests)
        self._running_batches[id(batch)] = (batch, now)
        self._observe_drain(batch.requests, now)
        self._planned_work_ms += batch.planned_ms
        pending.add_done_callback(lambda done: self._batch_done(batch, now, done))
        self._arm_deadline(batch)

    def _arm_deadline(self, batch: Batch) -> None:
        """Answer 504 (outcome late) at each request's deadline if its batch has not finished by then."""
        assert self._loop is not None
        pending = [r for r in batch.requests if not r.payload.answered]
        if not pending or id(batch) not in self._running_batches:
            return
        first = min(r.deadline_ms for r in pending)
        delay_s = max(0.0, first - self.clock()) / 1e3
        self._loop.call_later(delay_s, self._deadline_passed, batch)

    def _deadline_passed(self, batch: Batch) -> None:
        if id(batch) not in self._running_batches:
            return
        self._answer_late(batch, self.clock())
        self._arm_deadline(batch)

    def _answer_late(self, batch: Batch, now: float) -> None:
        entry = self._running_batches.get(id(batch))
        if entry is None:
            return
        for request in batch.requests:
            if request.deadline_ms <= now and not request.payload.answered:
                budget = request.deadline_ms - request.arrival_ms
                self._fail(request, "late", DeadlineExceeded(
                    f"deadline exceeded: the request's batch was still running at its deadline of {budget:.6g} ms "
                    f"(dispatched {entry[1] - request.arrival_ms:.3g} ms after arrival, planned "
                    f"{batch.planned_ms:.3g} ms)"), now)

    def _batch_done(self, batch: Batch, dispatched_ms: float, done: asyncio.Future[RunResult]) -> None:
        if self._running_batches.pop(id(batch), None) is None:
            return  # already answered by close()
        self.inflight -= 1
        self.running -= len(batch.requests)
        now = self.clock()
        try:
            error = done.exception()
        except asyncio.CancelledError:
            error = RequestFailed("the batch was cancelled")
        if error is None:
            result = done.result()
            rows = int(result.outputs.shape[0]) if result.outputs.ndim else 0
            if rows == batch.samples:
                self._served(batch, dispatched_ms, result, now)
            else:
                for request in batch.requests:
                    self._fail(request, "failed", RequestFailed(
                        f"worker {result.worker} returned {rows} output rows for a batch of {batch.samples}"), now)
        elif isinstance(error, WorkerCrashed):
            for request in batch.requests:
                job: Job = request.payload
                if job.answered:
                    continue
                if now >= request.deadline_ms:
                    budget = request.deadline_ms - request.arrival_ms
                    self._fail(request, "late", DeadlineExceeded(
                        f"deadline exceeded: {error}, and the request's deadline of {budget:.6g} ms has passed"), now)
                    continue
                if self.retry_crashed and not self._closing and job.attempts == 0:
                    job.attempts += 1
                    if self.scheduler.admit(request):
                        self.metrics.retry()
                        continue
                self._fail(request, "failed", RequestFailed(f"{error} (attempt {job.attempts + 1})"), now)
        else:
            for request in batch.requests:
                self._fail(request, "failed", RequestFailed(str(error)), now)
        self.wake()

    def _served(self, batch: Batch, dispatched_ms: float, result: RunResult, now: float) -> None:
        metrics = self.metrics
        subnet = batch.subnet_id
        metrics.batch(subnet, batch.samples, len(batch.requests), result.compute_ms / 1e3)
        # what the batch took beyond its compute, or beyond its plan when a slowed worker took longer than planned
        self._observe_round_trip(now - dispatched_ms - min(result.compute_ms, batch.planned_ms))
        self._observe_slowdown(batch, result.compute_ms)
        accuracy = self.scheduler.profile.accuracy(subnet)
        offset = 0
        for request in batch.requests:
            job: Job = request.payload
            outputs = result.outputs[offset : offset + job.samples]
            offset += job.samples
            if job.answered:
                continue  # answered 504 at its deadline while the batch ran
            job.answered = True
            on_time = now <= request.deadline_ms
            metrics.outcome("on_time" if on_time else "late", (now - request.arrival_ms) / 1e3)
            future = job.future
            if future is not None and not future.done():
                future.set_result(Served(
                    outputs, subnet, accuracy, batch.samples, dispatched_ms - job.enqueued_ms, result.compute_ms,
                    on_time, request.deadline_ms, now, job.attempts, result.worker, now - dispatched_ms,
                ))

    def state(self) -> dict[str, Any]:
        """Queue length, batches in flight, and whether requests are accepted (for health and debugging)."""
        return {"queue": len(self.scheduler.queue), "inflight": self.inflight, "running": self.running,
                "accepting": self.accepting}
