"""Prometheus metrics in the text exposition format (version 0.0.4), written without a client library.

`MetricsRegistry` holds counters, gauges and histograms (with labels) and renders them for `GET /metrics`.
`ServingMetrics` is the set the server reports: requests by outcome, latency, queue length, batch size,
subnet chosen, SLO attainment, workers and their restarts, and the server's own overhead per request.
Everything runs on the event loop's thread, so no locks are needed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("on_time", "late", "expired", "rejected", "failed", "invalid")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        key = labels if type(labels) is tuple and all(type(v) is str for v in labels) else tuple(map(str, labels))
        if len(key) != len(self.label_names):
            raise ValueError(f"metric {self.name}: expected labels {self.label_names}, got {key}")
        return key

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help.replace(chr(10), ' ')}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), initial: Iterable[Sequence[str]] = (),
        read: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[tuple[str, ...], float] = {self._key(k): 0.0 for k in initial}
        if not self.label_names:
            self.values[()] = 0.0
        self.read = read  # a count kept elsewhere (e.g. worker restarts), read when rendered

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, *labels: str) -> float:
        values = self.read() if self.read is not None else self.values
        return values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        values = self.read() if self.read is not None else self.values
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(values.items())]


class Gauge(_Metric):
    """A value that goes up and down; either set directly or read from a function when rendered."""

    kind = "gauge"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (),
        read: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[tuple[str, ...], float] = {}
        self.read = read

    def set(self, value: float, *labels: str) -> None:
        self.values[self._key(labels)] = float(value)

    def samples(self) -> list[str]:
        values = self.read() if self.read is not None else self.values
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(values.items())]


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label set (upper bounds ascending; +Inf is added)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name}: buckets must be distinct and non-empty")
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (+Inf last), then sum

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def count(self, *labels: str) -> int:
        series = self.series.get(self._key(labels))
        return 0 if series is None else int(sum(series[:-1]))

    def samples(self) -> list[str]:
        lines = []
        for key, series in sorted(self.series.items()):
            running = 0.0
            for bound, count in zip([*self.bounds, math.inf], series[:-1]):
                running += count
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {_number(running)}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-1])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(running)}")
        return lines


class MetricsRegistry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self.metrics):
            raise ValueError(f"metric {metric.name} is registered twice")
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.005, 0.01, 0.05)


class ServingMetrics:
    """The metrics one server reports; `queue_length` and `workers` are read from callbacks when rendered."""

    def __init__(
        self,
        max_batch_size: int,
        queue_length: Callable[[], int] = lambda: 0,
        workers: Callable[[], dict[str, int]] = dict,
        running: Callable[[], int] = lambda: 0,
        restarts: Callable[[], int] = lambda: 0,
        margin_ms: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.registry = MetricsRegistry()
        add = self.registry.add
        self.requests = add(Counter("tailor_requests_total", "Inference requests by outcome (each request has one).",
                                    ("outcome",), [(o,) for o in OUTCOMES]))
        self.latency = add(Histogram("tailor_request_latency_seconds",
                                     "Server time of answered inference requests, arrival to answer.",
                                     LATENCY_BUCKETS_S, ("outcome",)))
        self.queue_gauge = add(Gauge("tailor_queue_length", "Requests waiting in the deadline queue.",
                                     read=lambda: {(): float(queue_length())}))
        self.running = add(Gauge("tailor_requests_running", "Requests in batches sent to workers, not yet answered.",
                                 read=lambda: {(): float(running())}))
        batch_buckets = sorted({2**k for k in range(max(1, max_batch_size).bit_length() + 1)} | {max_batch_size})
        self.batch_size = add(Histogram("tailor_batch_size", "Samples per batch run on a worker.", batch_buckets))
        self.subnet_requests = add(Counter("tailor_subnet_requests_total", "Requests served, by the subnet that ran them.",
                                           ("subnet",)))
        self.subnet_batches = add(Counter("tailor_subnet_batches_total", "Batches run, by subnet.", ("subnet",)))
        self.attainment = add(Gauge("tailor_slo_attainment",
                                    "Requests answered within their deadline / requests that reached an outcome "
                                    "(invalid requests excluded).", read=lambda: {(): self.slo_attainment()}))
        self.compute = add(Histogram("tailor_compute_seconds", "Model compute per batch inside a worker.",
                                     LATENCY_BUCKETS_S))
        self.overhead = add(Histogram("tailor_server_overhead_seconds",
                                      "Per served request: server time minus queueing and model compute.",
                                      OVERHEAD_BUCKETS_S))
        self.workers = add(Gauge("tailor_workers", "Worker processes by state.", ("state",),
                                 read=lambda: {(k,): float(v) for k, v in workers().items()}))
        self.restarts = add(Counter("tailor_worker_restarts_total", "Worker processes restarted after dying.",
                                    read=lambda: {(): float(restarts())}))
        self.margin = add(Gauge("tailor_planning_margin_seconds",
                                "Non-compute time per batch the policy plans for (dispatch, pipe, wake-ups).",
                                read=lambda: {(): margin_ms() / 1e3}))
        self.retries = add(Counter("tailor_request_retries_total", "Requests re-queued after their worker died."))

    def slo_attainment(self) -> float:
        """On-time answers over requests with an outcome other than invalid; 1.0 before any."""
        done = sum(self.requests.get(o) for o in OUTCOMES if o != "invalid")
        return 1.0 if done == 0 else self.requests.get("on_time") / done

    def render(self) -> str:
        return self.registry.render()
