"""The scheduler and engine without HTTP or processes: a fake executor and a fake clock drive every path.

Checks: batches take the earliest deadlines up to the policy's batch size in samples; a full queue
rejects; expired and hopeless requests are answered without being computed; a crashed batch is retried
once; shutdown drains; and, under random interleavings, every request gets exactly one outcome and its
own output rows.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.policies import Decision, make_policy
from tailor.serve.profile import ServingProfile, synthetic_profile
from tailor.serve.queue import Request
from tailor.serve.server.scheduler import (
    DeadlineExceeded,
    Engine,
    Job,
    Overloaded,
    RequestFailed,
    Scheduler,
    Served,
)
from tailor.serve.server.worker import RunResult, WorkerCrashed, WorkerError

PROFILE = ServingProfile(synthetic_profile([0.6, 0.7, 0.8], [1.0, 2.0, 4.0], [0.25, 0.5, 1.0], batch_sizes=(1, 2, 4, 8)))


class FixedPolicy:
    """Always the same decision (or None = wait); the fastest answer takes `min_latency_ms`."""

    def __init__(self, subnet: str = "s1", batch: int = 4, min_latency_ms: float = 1.0) -> None:
        self.decision: Decision | None = Decision(subnet, batch)
        self.min_latency_ms = min_latency_ms

    def decide(self, now_ms: float, queue: Any, idle_workers: int) -> Decision | None:
        return self.decision


class FakeExecutor:
    """Batches wait in `pending` until the test completes, crashes or fails them."""

    def __init__(self, workers: int = 1) -> None:
        self.on_change = lambda: None
        self.workers = workers
        self.pending: list[tuple[asyncio.Future, str, np.ndarray]] = []
        self.dispatched: list[tuple[str, np.ndarray]] = []
        self.crashed: list[np.ndarray] = []
        self.closed = False

    async def start(self) -> None:
        pass

    async def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True
        for future, _, _ in self.pending:
            if not future.done():
                future.set_exception(WorkerCrashed("closed"))

    def busy(self) -> int:
        return sum(1 for f, _, _ in self.pending if not f.done())

    def idle_workers(self) -> int:
        return self.workers - self.busy()

    def ready_workers(self) -> int:
        return self.workers

    def dispatch(self, subnet_id: str, inputs: np.ndarray, timeout_s: float = 60.0) -> asyncio.Future:
        assert self.idle_workers() > 0, "dispatched to a busy executor"
        future = asyncio.get_running_loop().create_future()
        self.pending.append((future, subnet_id, inputs))
        self.dispatched.append((subnet_id, inputs))
        return future

    def oldest(self) -> tuple[asyncio.Future, str, np.ndarray]:
        return next(p for p in self.pending if not p[0].done())

    def complete(self, compute_ms: float = 0.5) -> None:
        future, _, inputs = self.oldest()
        future.set_result(RunResult(model(inputs), compute_ms=compute_ms, worker=0))

    def crash(self) -> None:
        future, _, inputs = self.oldest()
        self.crashed.append(inputs)
        future.set_exception(WorkerCrashed("worker 0 died"))

    def fail(self) -> None:
        self.oldest()[0].set_exception(WorkerError("model raised"))


def model(inputs: np.ndarray) -> np.ndarray:
    """The fake model: each output row is (sum, first value) of its input row, so rows can be told apart."""
    flat = inputs.reshape(len(inputs), -1)
    return np.stack([flat.sum(1), flat[:, 0]], axis=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_engine(policy: Any = None, workers: int = 1, queue_limit: int | None = 64,
                expire_hopeless: bool = True) -> tuple[Engine, FakeExecutor, Clock]:
    clock = Clock()
    executor = FakeExecutor(workers)
    scheduler = Scheduler(PROFILE, policy or FixedPolicy(), queue_limit, expire_hopeless)
    return Engine(scheduler, executor, slo_ms=100.0, clock=clock), executor, clock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def images(n: int, value: float) -> np.ndarray:
    return np.full((n, 2, 2), value, np.float32)


def test_next_batch_counts_samples_and_takes_earliest_deadlines() -> None:
    scheduler = Scheduler(PROFILE, FixedPolicy(batch=4), queue_limit=None)
    for rid, (samples, deadline) in enumerate([(3, 50), (2, 10), (1, 30), (3, 20)]):
        scheduler.admit(Request(rid, 0.0, deadline, Job(images(samples, rid), None, 0.0)))
    batch = scheduler.next_batch(0.0, idle_workers=1)
    assert [r.id for r in batch.requests] == [1]  # 2 samples; the next earliest (3 samples) would make 5 > 4
    assert batch.samples == 2 and batch.planned_ms == PROFILE.latency_ms("s1", 2)
    batch = scheduler.next_batch(0.0, idle_workers=1)
    assert [r.id for r in batch.requests] == [3, 2]  # 3 + 1 = 4
    scheduler.policy.decision = Decision("s0", 1)
    batch = scheduler.next_batch(0.0, idle_workers=1)
    assert [r.id for r in batch.requests] == [0] and batch.samples == 3  # larger than the limit: runs alone
    assert scheduler.next_batch(0.0, idle_workers=1) is None
    scheduler.admit(Request(9, 0.0, 5.0, Job(images(1, 0), None, 0.0)))
    assert scheduler.next_batch(0.0, idle_workers=0) is None
    scheduler.policy.decision = Decision("nope", 1)
    with pytest.raises(ValueError, match="policy chose subnet 'nope', which is not served"):
        scheduler.next_batch(0.0, idle_workers=1)


def test_batches_carry_each_request_its_own_rows() -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=8))
        await engine.start()
        first = asyncio.ensure_future(engine.submit(images(1, 1.0)))
        await settle()
        assert len(executor.dispatched) == 1  # the only request runs at once, alone
        waiting = [asyncio.ensure_future(engine.submit(images(n, 10.0 * n), deadline_ms=50 + n)) for n in (1, 2, 3)]
        await settle()
        assert len(executor.dispatched) == 1  # the worker is busy: they queue
        executor.complete()
        await settle()
        assert (await first).batch_size == 1
        assert executor.dispatched[1][1].shape[0] == 6  # one batch of the three requests
        clock.now += 3.0
        executor.complete()
        results = [await w for w in waiting]
        for n, served in zip((1, 2, 3), results):
            assert isinstance(served, Served)
            np.testing.assert_array_equal(served.outputs, model(images(n, 10.0 * n)))
            assert served.batch_size == 6 and served.on_time and served.subnet_id == "s1"
            assert served.accuracy == PROFILE.accuracy("s1")
        assert engine.metrics.counts["on_time"] == 4
        await engine.close(0.1)

    asyncio.run(scenario())


def test_a_full_queue_rejects_with_retry_after() -> None:
    async def scenario() -> None:
        engine, executor, _ = make_engine(queue_limit=2)
        await engine.start()
        running = asyncio.ensure_future(engine.submit(images(1, 0)))
        await settle()  # dispatched; the worker is now busy
        queued = [asyncio.ensure_future(engine.submit(images(1, 0))) for _ in range(2)]
        await settle()
        with pytest.raises(Overloaded, match="queue holds its limit of 2") as info:
            await engine.submit(images(1, 0))
        assert info.value.retry_after_s >= 1
        assert engine.metrics.counts["rejected"] == 1
        executor.complete()
        await settle()
        await running
        executor.complete()  # the two queued requests ran as one batch
        assert len(executor.dispatched) == 2
        await asyncio.gather(*queued)
        await engine.close(0.1)

    asyncio.run(scenario())


def test_expired_and_hopeless_requests_are_answered_without_computing() -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=1, min_latency_ms=2.0))
        await engine.start()
        blocker = asyncio.ensure_future(engine.submit(images(1, 0)))
        await settle()
        late = asyncio.ensure_future(engine.submit(images(1, 7.0), deadline_ms=10.0))
        await settle()
        clock.now += 8.5  # 1.5 ms left: less than the 2 ms the fastest answer needs
        engine.wake()
        with pytest.raises(DeadlineExceeded, match="deadline cannot be met.*not computed"):
            await late
        gone = asyncio.ensure_future(engine.submit(images(1, 8.0), deadline_ms=10.0))
        await settle()
        clock.now += 20.0
        engine.wake()
        with pytest.raises(DeadlineExceeded, match="deadline exceeded: the request waited 20 ms, its deadline was 10 ms"):
            await gone
        executor.complete()
        await blocker
        assert len(executor.dispatched) == 1  # neither expired request reached a worker
        assert engine.metrics.counts["expired"] == 2
        await engine.close(0.1)

    asyncio.run(scenario())


def test_a_crashed_batch_is_retried_once_then_fails() -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine()
        await engine.start()
        retried = asyncio.ensure_future(engine.submit(images(1, 3.0)))
        await settle()
        executor.crash()
        await settle()
        assert len(executor.dispatched) == 2  # queued again and sent again
        executor.complete()
        served = await retried
        assert served.attempts == 1
        np.testing.assert_array_equal(served.outputs, model(images(1, 3.0)))
        doomed = asyncio.ensure_future(engine.submit(images(1, 4.0)))
        await settle()
        executor.crash()
        await settle()
        executor.crash()
        with pytest.raises(RequestFailed, match=r"worker 0 died \(attempt 2\)"):
            await doomed
        too_late = asyncio.ensure_future(engine.submit(images(1, 5.0), deadline_ms=10.0))
        await settle()
        clock.now += 11.0
        executor.crash()  # its deadline has passed: no retry, and a 504 rather than a 500
        with pytest.raises(DeadlineExceeded, match=r"worker 0 died, and the request's deadline of 10 ms has passed"):
            await too_late
        broken = asyncio.ensure_future(engine.submit(images(1, 6.0)))
        await settle()
        executor.fail()  # the model raised: retrying would not help
        with pytest.raises(RequestFailed, match="model raised"):
            await broken
        assert engine.metrics.retry_count == 2 and engine.metrics.counts["failed"] == 2
        assert engine.metrics.counts["late"] == 1
        await engine.close(0.1)

    asyncio.run(scenario())


def test_close_drains_queued_requests_then_refuses() -> None:
    async def scenario() -> None:
        engine, executor, _ = make_engine(FixedPolicy(batch=1))
        await engine.start()
        futures = [asyncio.ensure_future(engine.submit(images(1, float(i)))) for i in range(3)]
        await settle()

        async def worker() -> None:
            while not all(f.done() for f in futures):
                if executor.busy():
                    executor.complete()
                await asyncio.sleep(0.001)

        answering = asyncio.ensure_future(worker())
        await engine.close(drain_timeout_s=5.0)
        await answering
        assert all(f.result().on_time for f in futures)  # drained: all served, none dropped
        assert executor.closed
        with pytest.raises(Overloaded, match="not accepting"):
            await engine.submit(images(1, 0))

    asyncio.run(scenario())


def test_close_answers_what_cannot_drain_in_time() -> None:
    async def scenario() -> None:
        engine, executor, _ = make_engine(FixedPolicy(batch=1))
        await engine.start()
        futures = [asyncio.ensure_future(engine.submit(images(1, float(i)))) for i in range(3)]
        await settle()
        assert executor.busy() == 1
        await engine.close(drain_timeout_s=0.05)  # nobody answers the executor
        await settle()
        errors = [f.exception() for f in futures]
        assert all(isinstance(e, RequestFailed) for e in errors)
        assert sum("shut down" in str(e) for e in errors) == 2  # queued ones
        assert engine.metrics.counts["failed"] == 3

    asyncio.run(scenario())


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 3), st.sampled_from([None, 5.0, 30.0, 500.0])),
        st.tuples(st.just("advance"), st.floats(0.0, 20.0)),
        st.tuples(st.sampled_from(["complete", "crash", "fail"])),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(1, 3), st.sampled_from([1, 2, 4, 8]), st.sampled_from([2, 64]))
def test_every_request_gets_exactly_one_outcome(ops: list[tuple], workers: int, batch: int, limit: int) -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=batch), workers=workers, queue_limit=limit)
        await engine.start()
        submitted: list[tuple[asyncio.Future, np.ndarray]] = []
        for index, op in enumerate(ops):
            if op[0] == "submit":
                x = images(op[1], float(index))
                submitted.append((asyncio.ensure_future(engine.submit(x, deadline_ms=op[2])), x))
            elif op[0] == "advance":
                clock.now += op[1]
                engine.wake()
            elif executor.busy():
                getattr(executor, op[0])()
            await settle()
        await engine.close(drain_timeout_s=0.01)
        await settle()
        outcomes = {"on_time": 0, "late": 0, "expired": 0, "rejected": 0, "failed": 0}
        for future, x in submitted:
            assert future.done()
            error = future.exception()
            if error is None:
                served = future.result()
                np.testing.assert_array_equal(served.outputs, model(x))  # its own rows, whatever the batch
                outcomes["on_time" if served.on_time else "late"] += 1
            elif isinstance(error, DeadlineExceeded):  # never computed, or answered at its deadline while running
                outcomes["expired" if "not computed" in str(error) else "late"] += 1
            else:
                kind = {Overloaded: "rejected", RequestFailed: "failed"}[type(error)]
                outcomes[kind] += 1
        counted = {k: engine.metrics.counts[k] for k in outcomes}
        assert counted == outcomes and sum(outcomes.values()) == len(submitted)
        # an expired request was never sent to a worker (unless a worker died under it before it expired)
        def firsts(batches: list[np.ndarray]) -> set[float]:
            return {float(v) for inputs in batches for v in inputs.reshape(len(inputs), -1)[:, 0]}

        expired = {float(x.flat[0]) for f, x in submitted
                   if isinstance(f.exception(), DeadlineExceeded) and "not computed" in str(f.exception())}
        assert not expired & (firsts([inputs for _, inputs in executor.dispatched]) - firsts(executor.crashed))

    asyncio.run(scenario())


def test_a_broken_policy_or_worker_answer_fails_requests_instead_of_hanging() -> None:
    class Broken(FixedPolicy):
        def decide(self, now_ms: float, queue: Any, idle_workers: int) -> Decision | None:
            raise RuntimeError("policy bug")

    async def scenario() -> None:
        engine, executor, _ = make_engine(Broken())
        await engine.start()
        with pytest.raises(RequestFailed, match="internal scheduling error: policy bug"):
            await engine.submit(images(1, 0))
        engine.scheduler.policy = FixedPolicy()
        short = asyncio.ensure_future(engine.submit(images(2, 1.0)))
        await settle()
        future, _, _ = executor.oldest()
        future.set_result(RunResult(np.zeros((1, 2), np.float32), compute_ms=0.1, worker=3))  # one row for two
        with pytest.raises(RequestFailed, match="worker 3 returned 1 output rows for a batch of 2"):
            await short
        served = await asyncio.gather(engine.submit(images(1, 2.0)), _answer(executor))
        assert served[0].on_time  # the engine keeps working afterwards
        await engine.close(0.1)

    asyncio.run(scenario())


async def _answer(executor: FakeExecutor) -> None:
    while not executor.busy():
        await asyncio.sleep(0)
    executor.complete()


def test_without_hopeless_expiry_a_tight_deadline_is_still_run() -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=1, min_latency_ms=2.0), expire_hopeless=False)
        await engine.start()
        tight = asyncio.ensure_future(engine.submit(images(1, 1.0), deadline_ms=1.0))  # < the 2 ms it needs
        await settle()
        assert len(executor.dispatched) == 1
        clock.now += 3.0
        executor.complete()
        served = await tight
        assert served.on_time is False and engine.metrics.counts["late"] == 1
        await engine.close(0.1)

    asyncio.run(scenario())


class RecordingPolicy(FixedPolicy):
    def __init__(self) -> None:
        super().__init__(batch=1)
        self.seen: list[float] = []

    def decide(self, now_ms: float, queue: Any, idle_workers: int) -> Decision | None:
        self.seen.append(now_ms)
        return self.decision


def test_the_policy_plans_with_the_measured_non_compute_time() -> None:
    async def scenario() -> None:
        policy = RecordingPolicy()
        engine, executor, clock = make_engine(policy)
        await engine.start()
        for _ in range(3):  # each batch: 5 ms from dispatch to answer, of which 0.5 ms compute
            pending = asyncio.ensure_future(engine.submit(images(1, 0)))
            await settle()
            clock.now += 5.0
            executor.complete()
            await pending
        assert engine.margin_ms == pytest.approx(4.5)
        assert b"tailor_planning_margin_seconds 0.0045" in engine.metrics.render()
        for ms in [0.5] * 8 + [2.0] * 2:  # answers took this long to leave: the 90th percentile (2 ms) is added
            engine.observe_delivery(ms)
        assert engine.margin_ms == pytest.approx(4.5 + 2.0)
        pending = asyncio.ensure_future(engine.submit(images(1, 0)))
        await settle()
        assert policy.seen[-1] == pytest.approx(clock.now + 6.5)  # slack as the policy sees it is 6.5 ms less
        executor.complete()
        await pending
        await engine.close(0.1)

    asyncio.run(scenario())
    clock_engine, _, _ = make_engine()
    fixed = Engine(clock_engine.scheduler, FakeExecutor(), slo_ms=100.0, overhead_margin_ms=2.0)
    assert fixed.margin_ms == 2.0
    with pytest.raises(ValueError, match="overhead_margin_ms must be in"):
        Engine(clock_engine.scheduler, FakeExecutor(), slo_ms=100.0, overhead_margin_ms=150.0)


@pytest.mark.parametrize("percentile, margin", [(None, 3.0), (99.0, 3.0), (90.0, 0.5), (50.0, 0.5)])
def test_the_margin_is_taken_at_the_configured_percentile_of_the_tail(percentile, margin) -> None:
    """Two answers in 112 left slowly: the default and the 99th percentile plan for them, the 90th does not."""
    engine, _, _ = make_engine()
    if percentile is not None:
        engine = Engine(engine.scheduler, FakeExecutor(), slo_ms=100.0, margin_percentile=percentile)
    for ms in [0.5] * 110 + [3.0] * 2:  # (re-estimated every 16)
        engine.observe_delivery(ms)
    assert engine.margin_ms == pytest.approx(margin)


@pytest.mark.parametrize("percentile, margin", [(None, 3.0), (99.9, 3.0), (99.0, 0.5)])
def test_by_default_the_margin_plans_for_the_slowest_of_the_last_256(percentile, margin) -> None:
    """One answer in 256 left slowly: the default (99.9th percentile, the largest of the window) plans for it,
    the 99th does not (a batch past the margin ends late with the requests queued behind it)."""
    engine, _, _ = make_engine()
    if percentile is not None:
        engine = Engine(engine.scheduler, FakeExecutor(), slo_ms=100.0, margin_percentile=percentile)
    for ms in [0.5] * 200 + [3.0] + [0.5] * 55:  # the slow one in the middle of the window
        engine.observe_delivery(ms)
    assert engine.margin_ms == pytest.approx(margin)


def test_a_margin_percentile_outside_50_to_100_is_refused() -> None:
    engine, _, _ = make_engine()
    with pytest.raises(ValueError, match="margin_percentile must be in"):
        Engine(engine.scheduler, FakeExecutor(), slo_ms=100.0, margin_percentile=101)
    from tailor.serve.server.app import ServerConfig, ServerConfigError

    for bad in (49.9, 120, True, "99"):
        with pytest.raises(ServerConfigError, match="margin_percentile"):
            ServerConfig("ck", "p.json", margin_percentile=bad).check()
    assert ServerConfig("ck", "p.json").margin_percentile == 99.9


def test_a_slow_subnet_that_runs_as_planned_does_not_close_admission() -> None:
    """A policy serving the slowest subnet while the queue allows it (batches of 8 in 12 ms, exactly as planned)
    drains 4x slower than the fastest subnet would; that is the policy's choice, not the server's capacity, so
    admission keeps the profile's fastest rate. (Measured as wait per sample ahead, it had closed admission to
    requests the policy could serve by switching to a faster subnet: the live server then refused 10% of a load
    the simulator served entirely.)"""

    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(subnet="s2", batch=8), queue_limit=None)
        profiled = engine.drain_ms_per_sample()
        planned = engine.scheduler.profile.latency_ms("s2", 8)
        assert planned / 8 > 3 * profiled
        await engine.start()
        pending = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(41)]
        await settle()
        while executor.busy():
            clock.now += planned
            executor.complete()
            await settle()
        await asyncio.gather(*pending)
        assert engine.drain_ms_per_sample() == pytest.approx(profiled)
        # and half as fast as planned: the slowdown, not the chosen subnet's rate, is what admission applies
        pending = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(41)]
        await settle()
        while executor.busy():
            clock.now += 2 * planned
            executor.complete()
            await settle()
        await asyncio.gather(*pending)
        # an exponential average moving from the profile's rate towards 2x it
        assert 1.5 * profiled < engine.drain_ms_per_sample() <= 2 * profiled + 1e-9
        await engine.close(0.0)

    asyncio.run(scenario())


def test_admission_uses_the_drain_slowdown_measured_behind_a_long_queue_and_forgets_it() -> None:
    """Batches planned at 6 ms that take 30 ms (a queue draining 5x slower than planned) are measured on the
    requests that waited behind them; admission then drains at 5x the profile's fastest rate, refusing what
    only the profile's rate could drain in time, and the measurement fades back once no long queue is seen."""

    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=8), queue_limit=None)
        profiled = engine.drain_ms_per_sample()
        assert profiled == pytest.approx(engine.scheduler.fastest_ms_per_sample)
        await engine.start()
        pending = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(41)]
        await settle()
        while executor.busy():
            clock.now += 30.0
            executor.complete()
            await settle()
        await asyncio.gather(*pending)
        measured = engine.drain_ms_per_sample()
        planned = engine.scheduler.profile.latency_ms("s1", 8)
        slowdown = 30.0 / planned  # 5x slower than planned, applied to the fastest rate (fading a little meanwhile)
        assert 0.8 * slowdown * profiled < measured <= slowdown * profiled + 1e-9
        queued = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(31)]
        await settle()  # one batch runs, 23 samples wait
        waiting = engine.scheduler.queued_samples
        deadline = clock.now + waiting * (profiled + measured) / 2 + engine.scheduler.hopeless_ms
        assert not engine.admits(deadline)  # the profile's rate would have admitted it
        clock.now += 10_000.0  # ten time constants without a long queue: back to the profile
        assert engine.drain_ms_per_sample() == pytest.approx(profiled, rel=1e-3)
        assert engine.admits(clock.now + waiting * (profiled + measured) / 2 + engine.scheduler.hopeless_ms)
        assert engine.refuse("admission", "x").retry_after_s >= 1
        stalled = Request(0, clock.now - 60_000.0, clock.now + 1.0, Job(images(1, 0), None, clock.now - 60_000.0,
                                                                         ahead=8))
        engine._observe_drain([stalled], clock.now)  # waited a minute behind 8 samples: a stall, not a rate
        assert engine.drain_ms_per_sample() <= engine.slo_ms / engine.scheduler.max_batch_size
        assert engine.admits(clock.now + engine.slo_ms)  # a batch's worth can still queue
        engine.admission = False
        assert engine.admits(clock.now)  # admission control off: everything is queued
        for future in queued:
            future.cancel()
        await engine.close(0.0)

    asyncio.run(scenario())


def test_the_policy_counts_requests_admission_refused_as_arrivals() -> None:
    """A policy that plans for arrivals (DrainFit's rollout) must see the offered load: a request admission
    refuses is counted in `total_arrived` (and `/metrics`), not only the ones that were queued."""
    seen: list[int] = []

    class Recording(FixedPolicy):
        def decide(self, now_ms: float, queue: Any, idle_workers: int) -> Decision | None:
            seen.append(queue.total_arrived)
            return self.decision

    async def scenario() -> None:
        engine, executor, _ = make_engine(Recording(batch=1))
        await engine.start()
        first = asyncio.ensure_future(engine.submit(images(1, 0)))
        await settle()  # dispatched: the worker is busy for its planned latency
        for _ in range(3):
            with pytest.raises(Overloaded):  # a budget the busy worker cannot meet: refused by admission
                await engine.submit(images(1, 1), deadline_ms=engine.scheduler.hopeless_ms + 0.01)
        queue = engine.scheduler.queue
        assert (queue.total_pushed, queue.total_refused, queue.total_arrived) == (1, 3, 4)
        assert engine.metrics.rejections["admission"] == 3
        second = asyncio.ensure_future(engine.submit(images(1, 2)))
        await settle()
        executor.complete()
        await first
        await settle()
        assert seen[-1] == 5  # the policy deciding for the second request saw all five arrivals
        executor.complete()
        await second
        await engine.close(0.0)

    asyncio.run(scenario())


def test_a_request_answered_with_an_error_leaves_no_reference_cycle() -> None:
    """A 504 (the exception set on the request's future and raised in `submit`) is freed by reference counting:
    a cycle through `submit`'s frame would wait for the cyclic collector, whose pauses stop the event loop."""
    import gc

    caught: list[type] = []

    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=1, min_latency_ms=2.0))
        await engine.start()
        blocker = asyncio.ensure_future(engine.submit(images(1, 0)))
        await settle()
        late: asyncio.Future | None = asyncio.ensure_future(engine.submit(images(1, 7.0), deadline_ms=10.0))
        await settle()
        clock.now += 8.5
        engine.wake()
        try:
            await late
        except DeadlineExceeded as exc:
            caught.append(type(exc))
        late = None  # the task holds the exception; this frame must not
        executor.complete()
        await blocker
        await engine.close(0.1)

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(scenario())
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, DeadlineExceeded)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert caught == [DeadlineExceeded]
    assert leaked == []


def _scaling_engine(workers: int = 1) -> tuple[Engine, FakeExecutor, Clock, list]:
    """An engine whose scheduler may rescale: DrainFit over PROFILE, rebuilt by a factory that records its profiles."""
    built: list[ServingProfile] = []

    def factory(profile: ServingProfile) -> Any:
        built.append(profile)
        return make_policy("drainfit", profile, slo_ms=100.0, workers=workers)

    clock, executor = Clock(), FakeExecutor(workers)
    scheduler = Scheduler(PROFILE, factory(PROFILE), None, policy_factory=factory)
    return Engine(scheduler, executor, slo_ms=100.0, clock=clock), executor, clock, built


async def _run_batches(engine: Engine, executor: FakeExecutor, clock: Clock, count: int, slowdown: float) -> None:
    """Submit `count` one-sample requests; every batch computes `slowdown` x its profiled latency."""
    pending = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(count)]
    await settle()
    while executor.busy():
        batch, _ = next(iter(engine._running_batches.values()))
        profiled = engine.scheduler.base_profile.latency_ms(batch.subnet_id, batch.samples)
        clock.now += slowdown * profiled
        executor.complete(compute_ms=slowdown * profiled)
        await settle()
    await asyncio.gather(*pending)


def test_the_engine_plans_with_the_slowdown_its_workers_show_and_back() -> None:
    """Batches that compute 3x their profiled latency: after 16 of them the scheduler plans with the profile x 3
    (an eighth of a doubling: 2 ** (13 / 8)), the policy rebuilt over that profile and still reading the queue;
    batches as fast as profiled bring it back to the profile as measured, and to the policy built first."""

    async def scenario() -> None:
        engine, executor, clock, built = _scaling_engine()
        first = engine.scheduler.policy
        first._record_arrivals(clock.now, 5)  # something the rebuilt DrainFit must carry over
        await engine.start()
        for _ in range(17):  # one request at a time: each is its own batch
            await _run_batches(engine, executor, clock, 1, 3.0)
        scheduler = engine.scheduler
        factor = 2 ** (13 / 8)
        assert scheduler.slowdown == pytest.approx(factor) and len(built) == 2
        assert scheduler.profile is built[-1] and scheduler.policy is not first
        for sid in PROFILE.subnet_ids:
            assert scheduler.profile.latency_ms(sid, 4) == pytest.approx(factor * PROFILE.latency_ms(sid, 4))
        assert scheduler.hopeless_ms == scheduler.policy.min_latency_ms > first.min_latency_ms
        assert scheduler.policy.view is first.view and scheduler.policy.view.queue is scheduler.queue
        assert scheduler.policy._rates is first._rates
        assert engine.metrics.render().count(b"tailor_planning_slowdown 3.08") == 1
        # the next batch is planned at the scaled latency (the watchdog, the margin and busy_until use it)
        request = asyncio.ensure_future(engine.submit(images(1, 0), deadline_ms=10_000.0))
        await settle()
        batch, _ = next(iter(engine._running_batches.values()))
        assert batch.planned_ms == pytest.approx(factor * PROFILE.latency_ms(batch.subnet_id, 1))
        executor.complete(compute_ms=factor * PROFILE.latency_ms(batch.subnet_id, 1))
        await request
        for _ in range(128):  # the median of the last 128 batches falls back to the profile's
            await _run_batches(engine, executor, clock, 1, 0.8)
        assert scheduler.slowdown == 1.0 and scheduler.policy is first and scheduler.profile is PROFILE
        assert len(built) == 2  # the policy for each factor is built once
        await engine.close(0.0)

    asyncio.run(scenario())


@given(st.floats(0.1, 20.0))
@settings(max_examples=40, deadline=None)
def test_the_planned_slowdown_is_the_measured_one_rounded_and_bounded(slowdown: float) -> None:
    """Whatever the workers' slowdown, the factor planned with is >= 1, <= max_slowdown, within an eighth of a
    doubling of the measured one when that lies in between, and a power of 2 ** (1 / 8)."""

    async def scenario() -> None:
        engine, executor, clock, _ = _scaling_engine()
        await engine.start()
        for _ in range(16):
            await _run_batches(engine, executor, clock, 1, slowdown)
        factor = engine.scheduler.slowdown
        assert 1.0 <= factor <= engine.max_slowdown
        steps = 8 * math.log2(factor)
        assert steps == pytest.approx(round(steps), abs=1e-9)
        if 1.0 <= slowdown <= engine.max_slowdown:
            assert abs(math.log2(factor) - math.log2(slowdown)) <= 1 / 16 + 1e-9
        await engine.close(0.0)

    asyncio.run(scenario())


def test_without_a_policy_factory_the_profile_is_never_rescaled() -> None:
    async def scenario() -> None:
        engine, executor, clock = make_engine(FixedPolicy(batch=1))
        policy = engine.scheduler.policy
        await engine.start()
        for _ in range(32):
            await _run_batches(engine, executor, clock, 1, 4.0)
        assert engine.scheduler.slowdown == 1.0 and engine.scheduler.policy is policy
        assert engine.scheduler.profile is PROFILE
        await engine.close(0.0)

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="max_slowdown must be >= 1"):
        Engine(make_engine()[0].scheduler, FakeExecutor(), slo_ms=100.0, max_slowdown=0.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1_000)), min_size=1, max_size=60), st.booleans())
def test_places_reserved_after_a_request_are_counted_exactly_when_given_back_in_order(steps, in_order) -> None:
    """`reserved_after(ticket)`: the places still held by requests read after `ticket`. Given back in the order
    they were taken (the handlers run in the order the requests were read) it is exact; in any order it never
    counts fewer than are really behind (a request is then judged with at most the places really ahead of it)."""
    engine, _, _ = make_engine()
    held: list[int] = []
    for take, pick in steps:
        if take or not held:
            ticket = engine.reserve()
            assert not held or ticket > held[-1]
            held.append(ticket)
        else:
            engine.reserved -= 1
            held.pop(0 if in_order else pick % len(held))
        assert engine.reserved == len(held)
        for ticket in held:
            behind = sum(1 for other in held if other > ticket)
            if in_order:
                assert engine.reserved_after(ticket) == behind
            else:
                assert behind <= engine.reserved_after(ticket) <= engine.reserved


def test_admission_does_not_count_places_reserved_behind_the_request() -> None:
    """A request due in time behind the queue alone is admitted whatever is reserved behind it, and refused when
    the same places are ahead of it."""
    engine, _, clock = make_engine(queue_limit=None)
    first = engine.reserve()
    for _ in range(10_000):  # read after it: they queue behind it
        engine.reserve()
    engine.reserved -= 1  # its handler gives its own place back before asking
    deadline = clock.now + engine.slo_ms
    assert engine.reserved_after(first) == 10_000
    assert engine.admits(deadline, reserved_behind=engine.reserved_after(first))
    assert not engine.admits(deadline)  # the same places ahead of it: 10,000 samples cannot drain in 100 ms


@settings(max_examples=80, deadline=None)
@given(queued=st.integers(0, 12), reserved=st.integers(0, 40), slowdown=st.floats(1.0, 6.0),
       age_ms=st.floats(0.0, 3000.0), within_ms=st.floats(0.0, 5.0), step=st.floats(0.0, 1.0))
def test_admission_horizon_is_the_earliest_deadline_admitted_and_holds_through_its_window(
        queued: int, reserved: int, slowdown: float, age_ms: float, within_ms: float, step: float) -> None:
    """`admission_horizon_ms(now)`: `admits` takes a one-sample request due at or after it and refuses one due
    before it, whatever the queue, the places held, the running batch and the measured drain rate; taken for a
    window, it is no later, and a request due before it is still refused at any moment of the window (the
    measured rate fading meanwhile)."""

    async def scenario() -> None:
        engine, _, clock = make_engine(FixedPolicy(batch=4), queue_limit=None)
        await engine.start()
        pending = [asyncio.ensure_future(engine.submit(images(1, i), deadline_ms=10_000.0)) for i in range(queued)]
        await settle()  # the first batch runs (when any), the rest wait
        for _ in range(reserved):
            engine.reserve()
        engine._drain_observed_ms = slowdown * engine.scheduler.fastest_ms_per_sample
        engine._drain_observed_at = clock.now - age_ms
        horizon = engine.admission_horizon_ms(clock.now)
        for deadline in (horizon - 5.0, horizon - 1e-6, horizon, horizon + 1e-6, horizon + 5.0):
            assert engine.admits(deadline) == (deadline >= horizon)
        held = engine.admission_horizon_ms(clock.now, within_ms)
        assert held <= horizon
        clock.now += step * within_ms
        assert not engine.admits(held - 1e-6) and not engine.admits(held - 1.0)
        for future in pending:
            future.cancel()
        await engine.close(0.0)

    asyncio.run(scenario())


def test_admission_horizon_is_minus_infinity_with_admission_off() -> None:
    engine, _, clock = make_engine()
    engine.admission = False
    assert engine.admission_horizon_ms(clock.now) == -math.inf


def test_admission_counts_the_margin_of_the_batch_an_idle_worker_is_about_to_take() -> None:
    """With a worker idle and work queued, the queue starts draining after the planning margin of the batch that
    is about to be dispatched, as it does behind a running batch (`busy_until`): counted only while a batch
    ran, requests read between one batch's answer and the next dispatch were admitted and then refused by
    their handlers. With nothing ahead, a request is admitted as on an idle server."""
    clock = Clock()
    scheduler = Scheduler(PROFILE, FixedPolicy(), queue_limit=None)
    engine = Engine(scheduler, FakeExecutor(), slo_ms=100.0, clock=clock, overhead_margin_ms=20.0)
    per_sample, hopeless = scheduler.fastest_ms_per_sample, scheduler.hopeless_ms
    assert engine.admits(clock.now + per_sample + hopeless)  # idle, nothing ahead: no margin
    for rid in range(3):  # queued; the worker is still idle (the scheduling loop has not run)
        scheduler.admit(Request(rid, clock.now, clock.now + 100.0, Job(images(1, rid), None, clock.now)))
    finish = clock.now + 20.0 + 4 * per_sample  # the margin, the 3 ahead, then this one
    assert not engine.admits(finish + hopeless - 1.0)
    assert engine.admits(finish + hopeless + 1e-6)
    assert engine.admission_horizon_ms(clock.now) == pytest.approx(finish + hopeless)
    engine.reserve()  # a place held counts as work ahead too
    scheduler.pop_all()
    assert not engine.admits(clock.now + 2 * per_sample + hopeless + 10.0)
    assert engine.admits(clock.now + 20.0 + 2 * per_sample + hopeless + 1e-6)
