"""Prometheus text exposition written by `tailor.serve.server.metrics`: format, histogram invariants, attainment."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.server.metrics import Counter, Gauge, Histogram, MetricsRegistry, ServingMetrics

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse(text: str) -> dict[str, dict[str, float]]:
    """Exposition text -> {metric name: {label string: value}}; asserts every line is well formed."""
    out: dict[str, dict[str, float]] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in types
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"sample {name} has no TYPE line"
        out.setdefault(name, {})[labels] = math.inf if value == "+Inf" else float(value)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 20, allow_nan=False), max_size=80))
def test_histogram_buckets_are_cumulative_and_count_everything(values: list[float]) -> None:
    registry = MetricsRegistry()
    histogram = registry.add(Histogram("h_seconds", "help", [0.01, 0.1, 1.0, 5.0], labels=("kind",)))
    for value in values:
        histogram.observe(value, "a")
    samples = parse(registry.render())
    if not values:
        assert "h_seconds_bucket" not in samples
        return
    buckets = samples["h_seconds_bucket"]
    bounds = [0.01, 0.1, 1.0, 5.0, math.inf]
    counts = [buckets[f'{{kind="a",le="{le}"}}'] for le in ("0.01", "0.1", "1", "5", "+Inf")]
    assert counts == sorted(counts)
    for bound, count in zip(bounds, counts):
        assert count == sum(1 for v in values if v <= bound)
    assert samples["h_seconds_count"]['{kind="a"}'] == len(values)
    assert samples["h_seconds_sum"]['{kind="a"}'] == pytest.approx(sum(values))


def test_label_values_are_escaped_and_names_unique() -> None:
    registry = MetricsRegistry()
    counter = registry.add(Counter("c_total", "help", labels=("subnet",)))
    counter.inc('we"ird\\id\nx', amount=2)
    text = registry.render()
    assert 'c_total{subnet="we\\"ird\\\\id\\nx"} 2' in text
    assert parse(text)["c_total"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(Gauge("c_total", "again"))
    with pytest.raises(ValueError, match="cannot decrease"):
        counter.inc("x", amount=-1)
    with pytest.raises(ValueError, match="expected labels"):
        counter.inc()


def test_serving_metrics_render_and_attainment() -> None:
    queue = [3]
    metrics = ServingMetrics(8, queue_length=lambda: queue[0], workers=lambda: {"idle": 1, "busy": 2},
                             running=lambda: 5, restarts=lambda: 4)
    assert metrics.slo_attainment() == 1.0  # nothing has happened yet
    for outcome, count in {"on_time": 6, "late": 1, "expired": 2, "rejected": 1, "invalid": 7}.items():
        metrics.requests.inc(outcome, amount=count)
    metrics.batch_size.observe(3)
    metrics.subnet_requests.inc("s0", amount=3)
    samples = parse(metrics.render())
    assert samples["tailor_slo_attainment"][""] == pytest.approx(0.6)  # invalid requests are not counted
    assert samples["tailor_requests_total"]['{outcome="invalid"}'] == 7
    assert samples["tailor_requests_total"]['{outcome="failed"}'] == 0  # every outcome is always present
    assert samples["tailor_queue_length"][""] == 3
    assert samples["tailor_workers"] == {'{state="busy"}': 2, '{state="idle"}': 1}
    assert samples["tailor_requests_running"][""] == 5
    assert samples["tailor_worker_restarts_total"][""] == 4
    assert samples["tailor_batch_size_bucket"]['{le="4"}'] == 1 and samples["tailor_batch_size_bucket"]['{le="2"}'] == 0
    assert samples["tailor_subnet_requests_total"]['{subnet="s0"}'] == 3
    queue[0] = 9
    assert parse(metrics.render())["tailor_queue_length"][""] == 9
