"""Search and the front speak canonical subnets: one network, one id, one row."""

from __future__ import annotations

import itertools

from search_helpers import AnalyticEvaluator

import tailor
from tailor.search import Candidate, ParetoFront, SpaceEncoding
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim

CHOICES = (0.25, 0.5, 1.0)
SPACE = SearchSpace(
    [WidthDim("out", 8, choices=CHOICES), WidthDim("s1.b2", 8, choices=CHOICES, block=("s1", 2)),
     WidthDim("s1.b3", 8, choices=CHOICES, block=("s1", 3))],
    [DepthDim("s1", (1, 2, 3))],
)  # fmt: skip


def test_front_lists_one_network_once() -> None:
    sub = Subnet({"out": 0.5, "s1.b2": 0.25, "s1.b3": 0.25}, {"s1": 1})
    alias = sub.replace(widths={"s1.b2": 1.0, "s1.b3": 0.5})  # same network: blocks 2 and 3 do not run
    other = Subnet({"out": 1.0, "s1.b2": 1.0, "s1.b3": 1.0}, {"s1": 3})
    cands = [Candidate(alias, {"accuracy": 0.6, "macs": 10}), Candidate(sub, {"accuracy": 0.6, "macs": 10}),
             Candidate(other, {"accuracy": 0.9, "macs": 100})]  # fmt: skip
    plain = ParetoFront.from_candidates(cands, ("accuracy", "macs"))
    assert len(plain) == 3, "without the space, names are compared"
    front = ParetoFront.from_candidates(cands, ("accuracy", "macs"), space=SPACE)
    assert [e.subnet for e in front] == [SPACE.canonical(sub), other] and len(front.evaluated) == 2


def test_encoding_counts_networks_not_names() -> None:
    encoding = SpaceEncoding(SPACE)
    names = list(itertools.product(*(d.values for d in encoding.dims)))
    networks = {encoding.from_indices([d.values.index(v) for d, v in zip(encoding.dims, vs)]) for vs in names}
    assert len(names) == 81 and encoding.size == len(networks) == 3 * (1 + 3 + 9)
    assert all(SPACE.canonical(s) == s for s in networks)


def test_exhaustive_search_evaluates_each_network_once_and_fronts_canonical_subnets() -> None:
    evaluator = AnalyticEvaluator(SPACE)
    front = tailor.search(None, evaluator, ("accuracy", "macs"), algorithm="exhaustive", budget=None)
    assert front.info["evaluated"] == SpaceEncoding(SPACE).size == 39
    assert all(count == 1 for count in evaluator.calls.values()) and len(evaluator.calls) == 39
    assert all(SPACE.canonical(e.subnet) == e.subnet for e in (*front.entries, *front.evaluated))
    assert len({e.subnet.id for e in front.evaluated}) == len(front.evaluated) == 39


def test_included_subnets_are_evaluated_first() -> None:
    evaluator = AnalyticEvaluator(SPACE)
    include = [Subnet({"out": 0.25, "s1.b2": 0.5, "s1.b3": 1.0}, {"s1": 3}), Subnet({"out": 0.5, "s1.b2": 1.0, "s1.b3": 1.0}, {"s1": 1})]
    front = tailor.search(None, evaluator, ("accuracy", "macs"), algorithm="random", budget=5, include=include)
    evaluated = {c.subnet for c in front.evaluated}
    assert {SPACE.canonical(s) for s in include} <= evaluated
    assert {SPACE.canonical(SPACE.largest()), SPACE.canonical(SPACE.smallest())} <= evaluated
    assert len(evaluated) == 5
