"""The server's metrics (`tailor.serve.server.metrics`, on prometheus_client): exposition parsed back with
prometheus_client's own parser, histogram invariants under random observations, attainment, rejections."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tailor.serve.server.metrics import LATENCY_BUCKETS_S, OUTCOMES, REJECTIONS, ServingMetrics


def parse(raw: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Exposition -> {sample name: {sorted labels: value}}, through prometheus_client's parser (strict format)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def reference_latency_histogram() -> tuple[CollectorRegistry, Histogram]:
    """prometheus_client's own `Histogram` with the server's name, buckets and outcome labels, in its own registry."""
    registry = CollectorRegistry()
    reference = Histogram("tailor_request_latency_seconds", "reference", ["outcome"], buckets=LATENCY_BUCKETS_S,
                          registry=registry)
    for outcome in OUTCOMES:
        reference.labels(outcome)
    return registry, reference


def assert_same_latency_histogram(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    """Every bucket, count and sum of the server's latency histogram equals the reference's."""
    ours, theirs = parse(metrics.render()), parse(generate_latest(registry))
    for suffix in ("_bucket", "_count", "_sum"):
        name = "tailor_request_latency_seconds" + suffix
        assert ours[name].keys() == theirs[name].keys()
        for labels, value in theirs[name].items():
            assert math.isclose(ours[name][labels], value, rel_tol=1e-9, abs_tol=1e-9), (name, labels)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OUTCOMES),
                          st.one_of(st.sampled_from(LATENCY_BUCKETS_S), st.floats(0, 20, allow_nan=False))),
                max_size=60))
def test_the_latency_histogram_exposes_what_prometheus_clients_histogram_would(
        observations: list[tuple[str, float]]) -> None:
    """The per-outcome latency histogram is kept in plain lists (no lock per request); exposed, every bucket
    (values on a bound included), count and sum equal prometheus_client's `Histogram` fed the same values."""
    metrics = ServingMetrics(8)
    registry, reference = reference_latency_histogram()
    for outcome, seconds in observations:
        metrics.outcome(outcome, seconds)
        reference.labels(outcome).observe(seconds)
    assert_same_latency_histogram(metrics, registry)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.sampled_from(LATENCY_BUCKETS_S), st.floats(0, 1, allow_nan=False)),
                          st.one_of(st.none(), st.floats(0, 2, allow_nan=False))), max_size=40))
def test_an_answer_written_late_moves_from_on_time_to_late_as_if_counted_late(
        answers: list[tuple[float, float | None]]) -> None:
    """Counted on time at its batch's end (first value), written after the deadline (second, when not None): the
    exposition equals a histogram that counted each such request late, at the time it was written."""
    metrics = ServingMetrics(8)
    registry, reference = reference_latency_histogram()
    for counted, _ in answers:
        metrics.outcome("on_time", counted)
    for counted, written in answers:
        if written is None:
            reference.labels("on_time").observe(counted)
        else:
            metrics.answered_late(counted, max(counted, written))
            reference.labels("late").observe(max(counted, written))
    late = sum(written is not None for _, written in answers)
    assert metrics.counts["on_time"] == len(answers) - late and metrics.counts["late"] == late
    assert_same_latency_histogram(metrics, registry)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 20, allow_nan=False), max_size=80))
def test_histogram_buckets_are_cumulative_and_count_everything(values: list[float]) -> None:
    metrics = ServingMetrics(8)
    for value in values:
        metrics.outcome("on_time", value)
    samples = parse(metrics.render())
    buckets = {dict(k)["le"]: v for k, v in samples["tailor_request_latency_seconds_bucket"].items()
               if dict(k)["outcome"] == "on_time"}
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    counts = [v for _, v in ordered]
    assert counts == sorted(counts)  # cumulative
    assert ordered[-1][0] == "+Inf" and counts[-1] == len(values)
    for le, count in ordered:
        assert count == sum(1 for v in values if v <= float(le))
    total = samples["tailor_request_latency_seconds_sum"][(("outcome", "on_time"),)]
    assert total == pytest.approx(math.fsum(values), abs=1e-9)


def test_serving_metrics_render_attainment_and_rejections() -> None:
    queue = [3]
    metrics = ServingMetrics(8, queue_length=lambda: queue[0], workers=lambda: {"idle": 1, "busy": 2, "spare": 1},
                             running=lambda: 5, restarts=lambda: 4, connections=lambda: 11)
    assert metrics.slo_attainment() == 1.0  # nothing has happened yet
    for outcome, count in {"on_time": 6, "late": 1, "expired": 2, "invalid": 7}.items():
        for _ in range(count):
            metrics.outcome(outcome)
    metrics.rejected("connections")
    metrics.rejected("admission", 0.001)
    metrics.batch("s0", samples=3, requests=2, compute_s=0.004)
    samples = parse(metrics.render())
    assert samples["tailor_slo_attainment"][()] == pytest.approx(6 / 11)  # invalid requests are not counted
    requests = {dict(k)["outcome"]: v for k, v in samples["tailor_requests_total"].items()}
    assert requests == {"on_time": 6, "late": 1, "expired": 2, "rejected": 2, "failed": 0, "invalid": 7}
    assert set(requests) == set(OUTCOMES)  # every outcome is always present
    rejections = {dict(k)["reason"]: v for k, v in samples["tailor_rejections_total"].items()}
    assert set(rejections) == set(REJECTIONS) and rejections["connections"] == 1 and rejections["admission"] == 1
    assert samples["tailor_queue_length"][()] == 3
    assert samples["tailor_connections"][()] == 11
    workers = {dict(k)["state"]: v for k, v in samples["tailor_workers"].items()}
    assert workers == {"starting": 0, "idle": 1, "busy": 2, "dead": 0, "spare": 1}
    assert samples["tailor_requests_running"][()] == 5
    assert samples["tailor_worker_restarts_total"][()] == 4
    batch = {dict(k)["le"]: v for k, v in samples["tailor_batch_size_bucket"].items()}
    assert batch["4.0"] == 1 and batch["2.0"] == 0
    assert samples["tailor_subnet_requests_total"][(("subnet", "s0"),)] == 2
    assert metrics.subnet_counts == {"s0": 2}
    queue[0] = 9
    assert parse(metrics.render())["tailor_queue_length"][()] == 9


def test_two_servers_do_not_share_counters() -> None:
    a, b = ServingMetrics(4), ServingMetrics(4)
    a.outcome("on_time")
    assert parse(b.render())["tailor_requests_total"][(("outcome", "on_time"),)] == 0
    assert parse(a.render())["tailor_requests_total"][(("outcome", "on_time"),)] == 1


def test_the_loop_lag_is_the_wait_of_what_becomes_ready_and_arrivals_are_moved_back_by_it() -> None:
    """On a clock that moves only when a pass of the loop says it took time (so the machine's load cannot
    change the figures): an idle loop has no lag, passes of 20 ms make what became ready wait 20 ms."""
    import asyncio
    import time

    from tailor.serve.server.app import LoopLag

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    async def scenario() -> tuple[float, float, float]:
        lag = LoopLag(interval_s=0.001, clock=clock)
        lag.start()
        await asyncio.sleep(0.05)
        idle = lag.lag_ms
        for _ in range(10):  # passes of the loop that each take 20 ms on the clock
            time.sleep(0.002)  # (long enough in real time for the probe's timer to come due)
            clock.now += 20.0
            await asyncio.sleep(0)
        busy = lag.lag_ms
        moved_back = clock() - lag.arrival_ms()
        lag.stop()
        return idle, busy, moved_back

    idle, busy, moved_back = asyncio.run(scenario())
    assert idle < 2.0  # an idle loop runs what is ready at once
    assert 10.0 < busy < 200.0  # a pass that blocks 20 ms makes what became ready wait up to that long
    assert moved_back == pytest.approx(busy, abs=1.0)


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_the_loop_lag_counts_the_reads_of_a_pass_ahead_of_a_socket(event_loop: str) -> None:
    """A request's bytes wait for the reads of the sockets the kernel reported ready before its own: ten sockets
    whose reads each take 5 ms on the clock, readable before the probe's byte is written, make it wait 50 ms (a
    probe on the ready queue, run before the pass reads any socket, read ~0 here). The probe is fired by hand
    after the sockets' bytes, so the order does not hang on two timers."""
    import asyncio
    import socket

    import uvloop

    from tailor.serve.server.app import LoopLag

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        pairs = [socket.socketpair() for _ in range(10)]
        for reader, _ in pairs:
            reader.setblocking(False)

            def read(reader: socket.socket = reader) -> None:
                reader.recv(64)
                clock.now += 5.0  # this socket's request takes 5 ms to read and answer

            loop.add_reader(reader.fileno(), read)
        lag = LoopLag(interval_s=3600.0, decay=0.5, clock=clock)  # no timer fires: the test probes
        lag.start()
        seen = []
        try:
            for _ in range(3):
                for _, writer in pairs:  # requests arrive on every socket
                    writer.send(b"r")
                lag._probe()  # then the probe's byte
                await asyncio.sleep(0.02)  # one pass reads all eleven
                seen.append(lag.lag_ms)
            return seen
        finally:
            lag.stop()
            for reader, writer in pairs:
                loop.remove_reader(reader.fileno())
                reader.close()
                writer.close()

    seen = asyncio.run(scenario()) if event_loop == "asyncio" else uvloop.run(scenario())
    assert seen == [50.0, 50.0, 50.0]


def test_garbage_collector_pauses_are_timed_by_generation_until_the_watch_stops() -> None:
    import gc

    metrics = ServingMetrics(4)
    stop = metrics.watch_garbage_collection()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        stop()
    counts = {dict(k)["generation"]: v for k, v in parse(metrics.render())["tailor_gc_pause_seconds_count"].items()}
    assert counts["2"] >= 2 and counts["0"] >= 1  # other threads' collections may add to them, never remove
    total = parse(metrics.render())["tailor_gc_pause_seconds_sum"][(("generation", "2"),)]
    assert 0 < total < 60
    gc.collect(2)  # no longer watched
    after = {dict(k)["generation"]: v for k, v in parse(metrics.render())["tailor_gc_pause_seconds_count"].items()}
    assert after == counts


SETTLED_HEAP_PROBE = """
import gc
from tailor.serve.server.app import SERVING_GC_THRESHOLDS, settle_heap_for_serving
collections = []
def count(phase, info):
    if phase == "start":
        collections.append(info["generation"])
def churn(n):
    keep = [[] for _ in range(n)]  # n young container objects alive at once (requests in flight)
    return len(keep)
gc.callbacks.append(count)
churn(20_000)
before = len(collections)
settle_heap_for_serving()
collections.clear()
churn(20_000)
print(before, len(collections), gc.get_freeze_count() > 0, gc.get_threshold() == SERVING_GC_THRESHOLDS)
"""


def test_a_serving_process_freezes_its_heap_and_collects_young_objects_rarely() -> None:
    """20,000 young objects alive at once: CPython's default collects ~28 times meanwhile (each walking them all),
    a settled serving process not once; what was alive before is frozen out of the collector's reach."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SETTLED_HEAP_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    default, settled, frozen, thresholds = out.stdout.split()
    assert int(default) >= 20 and int(settled) == 0
    assert frozen == "True" and thresholds == "True"
