"""Pair search: the (little, big, threshold) cascade, checked against brute force over every threshold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from search_helpers import AnalyticEvaluator, analytic_space

from tailor.search import BaseEvaluator, SearchError, cascade_table, pair_search
from tailor.space import SearchSpace, Subnet, WidthDim


class TableEvaluator(BaseEvaluator):
    """Given per-sample confidences/correctness and a latency per subnet (one width dimension `w`)."""

    def __init__(self, table: dict[float, tuple[np.ndarray, np.ndarray, float]]) -> None:
        super().__init__(SearchSpace([WidthDim("w", 100, tuple(table))]))
        self.table = {Subnet({"w": w}): v for w, v in table.items()}

    def _accuracy(self, sub: Subnet) -> float:
        return float(self.table[sub][1].mean())

    def _cost(self, sub: Subnet, metric: str) -> float:
        return self.table[sub][2]

    def _predictions(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        return self.table[sub][0], self.table[sub][1]


def brute_force(table, budget: float) -> float:
    """Best accuracy over every candidate alone and every ordered pair at every threshold."""
    best = max((ok.mean() for _, ok, lat in table.values() if lat <= budget), default=None)
    for (_, (conf, ok_l, lat_l)), (_, (_, ok_b, lat_b)) in itertools.permutations(table.items(), 2):
        for t in [0.0, *sorted(set(conf.tolist()))]:
            escalate = conf < t
            if lat_l + escalate.mean() * lat_b <= budget:
                acc = np.where(escalate, ok_b, ok_l).mean()
                best = acc if best is None else max(best, acc)
    return best


samples = st.integers(3, 12)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_pair_search_equals_brute_force(data) -> None:
    n = data.draw(samples)
    table = {}
    for w in (0.25, 0.5, 1.0):
        conf = np.array(data.draw(st.lists(st.sampled_from([0.2, 0.4, 0.6, 0.8, 1.0]), min_size=n, max_size=n)))
        ok = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        table[w] = (conf, ok, data.draw(st.floats(0.5, 5.0)))
    budget = data.draw(st.floats(0.5, 12.0))
    evaluator = TableEvaluator(table)
    expected = brute_force(table, budget)
    if expected is None:
        with pytest.raises(SearchError, match="no cascade fits"):
            pair_search(evaluator, list(evaluator.table), budget)
        return
    choice = pair_search(evaluator, list(evaluator.table), budget)
    assert choice.accuracy == pytest.approx(expected)
    assert choice.expected_latency_ms <= budget * (1 + 1e-9)
    # the reported figures are those of the reported cascade
    conf, ok_l, lat_l = evaluator.table[choice.little]
    if choice.big is None:
        assert choice.escalation_rate == 0 and choice.accuracy == ok_l.mean()
    else:
        _, ok_b, lat_b = evaluator.table[choice.big]
        escalate = conf < choice.threshold
        assert choice.escalation_rate == escalate.mean()
        assert choice.accuracy == pytest.approx(np.where(escalate, ok_b, ok_l).mean())
        assert choice.expected_latency_ms == pytest.approx(lat_l + escalate.mean() * lat_b)


def test_cascade_table_rows() -> None:
    conf = np.array([0.9, 0.3, 0.3, 0.6])
    little = np.array([1, 0, 1, 0])
    big = np.array([1, 1, 0, 1])
    thresholds, rates, accuracy = cascade_table(conf, little, big)
    assert thresholds.tolist() == [0.0, 0.6, 0.9]  # escalate none; both 0.3s; the 0.3s and the 0.6
    assert rates.tolist() == [0.0, 0.5, 0.75]
    assert accuracy.tolist() == [0.5, 0.5, 0.75]
    with pytest.raises(SearchError, match="equal non-empty"):
        cascade_table(conf, little, big[:2])


def test_a_cascade_beats_every_single_subnet_at_its_expected_latency() -> None:
    ev = AnalyticEvaluator(analytic_space(widths=2, depths=1))
    subs = list(
        dict.fromkeys(ev.canonical(s) for s in [ev.space.largest(), ev.space.smallest(), ev.space.uniform(0.5)])
    )
    lat = {s: ev.metrics(s, ("latency", "accuracy")) for s in subs}
    small, big = ev.space.smallest(), ev.space.largest()
    budget = lat[small]["latency"] + 0.5 * lat[big]["latency"]
    choice = pair_search(ev, subs, budget, test_evaluator=AnalyticEvaluator(ev.space))
    singles = max(m["accuracy"] for m in lat.values() if m["latency"] <= budget)
    assert choice.big is not None and choice.accuracy > singles
    assert choice.test is not None and choice.test["accuracy"] == pytest.approx(choice.accuracy)
    assert choice.to_dict()["little_id"] == choice.little.id
    with pytest.raises(SearchError, match="latency_budget_ms"):
        pair_search(ev, subs, -1.0)
    with pytest.raises(SearchError, match="no candidate"):
        pair_search(ev, [], 1.0)
