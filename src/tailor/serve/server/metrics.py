"""The server's metrics, exposed at `GET /metrics` in Prometheus' text format by `prometheus_client`.

Each server owns one `CollectorRegistry` (nothing global, so tests and several servers in one process do not
share counters). Outcome and rejection counts are plain integers, exposed by a collector (a prometheus_client
`Counter` takes a lock per increment, and under overload there are 10,000 a second); the engine also reads them
for the SLO attainment gauge and the end-of-run summary. For the same reason the latency histogram by outcome
(observed once per request, refusals included) is kept in plain lists and exposed by a collector in the
histogram format prometheus_client writes (its `Histogram.observe` costs ~0.6 us to this one's ~0.1 us).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("on_time", "late", "expired", "rejected", "failed", "invalid")
# why a request was turned away with 503 (each also counts as outcome "rejected")
REJECTIONS = ("queue_full", "admission", "connections", "not_accepting")
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.005, 0.01, 0.05)


class ServingMetrics:
    """The metrics one server reports; gauges read the queue, the workers and the margin from callbacks."""

    def __init__(
        self,
        max_batch_size: int,
        queue_length: Callable[[], int] = lambda: 0,
        workers: Callable[[], dict[str, int]] = dict,
        running: Callable[[], int] = lambda: 0,
        restarts: Callable[[], int] = lambda: 0,
        margin_ms: Callable[[], float] = lambda: 0.0,
        connections: Callable[[], int] = lambda: 0,
        loop_lag_ms: Callable[[], float] = lambda: 0.0,
        slowdown: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.rejections: dict[str, int] = dict.fromkeys(REJECTIONS, 0)
        self.subnet_counts: dict[str, int] = {}
        self.retry_count = 0
        self.handler_rejections = 0  # admission rejections made in a request's handler (see `rejected_in_handler`)
        # the two counters under overload (10,000 requests a second) are exposed from the plain integers: a
        # prometheus_client Counter takes a lock per increment
        registry.register(_LabelledCallbackCounter(
            "tailor_requests", "Inference requests by outcome (each request has exactly one).", "outcome",
            self.counts))
        registry.register(_LabelledCallbackCounter(
            "tailor_rejections", "Requests answered 503 + Retry-After, by reason.", "reason", self.rejections))
        # every label exists from the start
        self._latency = _LabelledPlainHistogram(
            "tailor_request_latency_seconds",
            "Server time of inference requests, arrival (first byte read) to answer, by outcome.", "outcome",
            OUTCOMES, LATENCY_BUCKETS_S)
        registry.register(self._latency)
        Gauge("tailor_queue_length", "Requests waiting in the deadline queue.",
              registry=registry).set_function(lambda: float(queue_length()))
        Gauge("tailor_requests_running", "Requests in batches sent to workers, not yet answered.",
              registry=registry).set_function(lambda: float(running()))
        Gauge("tailor_connections", "Open client connections.", registry=registry).set_function(
            lambda: float(connections()))
        batch_buckets = sorted({2**k for k in range(max(1, max_batch_size).bit_length() + 1)} | {max_batch_size})
        self._batch_size = Histogram("tailor_batch_size", "Samples per batch run on a worker.",
                                     buckets=[float(b) for b in batch_buckets], registry=registry)
        self._subnet_requests = Counter("tailor_subnet_requests", "Requests served, by the subnet that ran them.",
                                        ["subnet"], registry=registry)
        self._subnet_batches = Counter("tailor_subnet_batches", "Batches run, by subnet.", ["subnet"],
                                       registry=registry)
        Gauge("tailor_slo_attainment", "Requests answered within their deadline / requests that reached an "
              "outcome (invalid requests excluded).", registry=registry).set_function(self.slo_attainment)
        self._compute = Histogram("tailor_compute_seconds", "Model compute per batch inside a worker.",
                                  buckets=LATENCY_BUCKETS_S, registry=registry)
        self._overhead = Histogram("tailor_server_overhead_seconds",
                                   "Per served request: server time minus queueing and model compute.",
                                   buckets=OVERHEAD_BUCKETS_S, registry=registry)
        worker_gauge = Gauge("tailor_workers", "Worker processes by state.", ["state"], registry=registry)
        for state in ("starting", "idle", "busy", "dead", "spare"):
            worker_gauge.labels(state).set_function(lambda state=state: float(workers().get(state, 0)))
        registry.register(_CallbackCounter("tailor_worker_restarts", "Worker processes restarted after dying.",
                                           restarts))
        registry.register(_CallbackCounter(
            "tailor_handler_rejections", "Admission rejections (also in tailor_rejections_total) made in a request's "
            "handler after its body was read, where the protocol's check at its headers had let it through: each "
            "cost a full ASGI cycle.", lambda: self.handler_rejections))
        Gauge("tailor_planning_margin_seconds", "Non-compute time per batch the policy plans for (dispatch, pipe, "
              "wake-ups).", registry=registry).set_function(lambda: margin_ms() / 1e3)
        Gauge("tailor_planning_slowdown", "Factor the policy multiplies the profile's latencies by: the workers' "
              "measured compute time over the profile's (median of recent batches, 1 when not slower).",
              registry=registry).set_function(lambda: float(slowdown()))
        Gauge("tailor_event_loop_lag_seconds", "How long what becomes readable waits for the front end's event loop (smoothed): "
              "the wait before a request's first byte is read, which arrival stamps are moved back by.",
              registry=registry).set_function(lambda: loop_lag_ms() / 1e3)
        self._retries = Counter("tailor_request_retries", "Requests re-queued after their worker died.",
                                registry=registry)

    # -- recording -------------------------------------------------------------------------------------------
    def outcome(self, outcome: str, latency_s: float | None = None) -> None:
        """Count one request's outcome (and its server time, when known)."""
        self.counts[outcome] += 1
        if latency_s is not None:
            self._latency.observe(outcome, latency_s)

    def answered_late(self, counted_s: float, answered_s: float) -> None:
        """A request counted on time when its batch finished (server time `counted_s`) whose answer was written only
        after its deadline (`answered_s`, e.g. its handler resumed late on a busy event loop): it moves from outcome
        `on_time` to `late`, in the counts and the latency histogram, so that each request still has one outcome."""
        self.counts["on_time"] -= 1
        self.counts["late"] += 1
        self._latency.move("on_time", counted_s, "late", answered_s)

    def rejected(self, reason: str, latency_s: float | None = None) -> None:
        """Count a 503 (outcome `rejected`) and why."""
        self.rejections[reason] += 1
        self.outcome("rejected", latency_s)

    def rejected_in_handler(self) -> None:
        """Note that an admission rejection (counted by `rejected`) was made in the request's handler."""
        self.handler_rejections += 1

    def watch_garbage_collection(self) -> Callable[[], None]:
        """Time every collection of the interpreter's cyclic garbage collector into `tailor_gc_pause_seconds`
        (by generation): a collection stops the event loop, and a full one walks every live object. Returns the
        function that stops watching (`gc.callbacks` is process-wide)."""
        histogram = Histogram("tailor_gc_pause_seconds", "Pauses of Python's cyclic garbage collector in the "
                              "server process, by generation.", ["generation"], buckets=LATENCY_BUCKETS_S,
                              registry=self.registry)  # fmt: skip
        children = [histogram.labels(str(g)) for g in range(3)]
        started = [0.0]

        def on_collection(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                children[info["generation"]].observe(time.perf_counter() - started[0])

        gc.callbacks.append(on_collection)
        return lambda: gc.callbacks.remove(on_collection) if on_collection in gc.callbacks else None

    def batch(self, subnet_id: str, samples: int, requests: int, compute_s: float) -> None:
        """Count a completed batch: its subnet, size and compute time."""
        self._batch_size.observe(samples)
        self._subnet_batches.labels(subnet_id).inc()
        self._subnet_requests.labels(subnet_id).inc(requests)
        self.subnet_counts[subnet_id] = self.subnet_counts.get(subnet_id, 0) + requests
        self._compute.observe(compute_s)

    def overhead(self, seconds: float) -> None:
        self._overhead.observe(seconds)

    def retry(self) -> None:
        self.retry_count += 1
        self._retries.inc()

    # -- reading ---------------------------------------------------------------------------------------------
    def slo_attainment(self) -> float:
        """On-time answers over requests with an outcome other than invalid; 1.0 before any."""
        done = sum(v for k, v in self.counts.items() if k != "invalid")
        return 1.0 if done == 0 else self.counts["on_time"] / done

    def render(self) -> bytes:
        """The exposition (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)


class _CallbackCounter(Collector):
    """A counter whose value another object keeps (the worker pool counts its restarts)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self):  # type: ignore[no-untyped-def]
        yield CounterMetricFamily(self.name, self.documentation, value=float(self.read()))


class _LabelledCallbackCounter(Collector):
    """A counter with one label whose values a dict of plain integers keeps (label value -> count)."""

    def __init__(self, name: str, documentation: str, label: str, counts: dict[str, int]) -> None:
        self.name, self.documentation, self.label, self.counts = name, documentation, label, counts

    def collect(self):  # type: ignore[no-untyped-def]
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in self.counts.items():
            family.add_metric([value], float(count))
        yield family


class _LabelledPlainHistogram(Collector):
    """A histogram with one label, kept in plain lists (no lock per observation) and exposed in the format
    prometheus_client writes for its `Histogram`: cumulative `_bucket{le=...}` series, `_count` and `_sum`."""

    def __init__(self, name: str, documentation: str, label: str, values: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = [float(b) for b in sorted(buckets)]
        self.counts = {value: [0] * (len(self.bounds) + 1) for value in values}  # the last: above every bound
        self.sums = dict.fromkeys(values, 0.0)

    def observe(self, value: str, amount: float) -> None:
        """Count `amount` under label `value` (in the first bucket whose upper bound is >= it)."""
        self.counts[value][bisect.bisect_left(self.bounds, amount)] += 1
        self.sums[value] += amount

    def move(self, old_value: str, old_amount: float, new_value: str, new_amount: float) -> None:
        """Take back one observation of `old_amount` under `old_value` and count `new_amount` under `new_value`."""
        self.counts[old_value][bisect.bisect_left(self.bounds, old_amount)] -= 1
        self.sums[old_value] -= old_amount
        self.observe(new_value, new_amount)

    def collect(self):  # type: ignore[no-untyped-def]
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, counts in self.counts.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts):
                cumulative += count
                buckets.append((floatToGoString(bound), float(cumulative)))
            family.add_metric([value], buckets, self.sums[value])
        yield family
