"""Pareto filtering, exact 2-D hypervolume (against brute force) and the ParetoFront result (JSON, SVG)."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.search import Candidate, ParetoFront, SearchError, front_hypervolume, hypervolume_2d, pareto_mask
from tailor.space import Subnet


def brute_force_hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Union area of the boxes [x, ref_x] x [y, ref_y], by coordinate compression: a grid cell is
    dominated when some point lies at or below its lower-left corner."""
    inside = [(x, y) for x, y in points if x < ref[0] and y < ref[1]]
    xs = sorted({x for x, _ in inside} | {ref[0]})
    ys = sorted({y for _, y in inside} | {ref[1]})
    area = 0.0
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            if any(px <= x0 and py <= y0 for px, py in inside):
                area += (x1 - x0) * (y1 - y0)
    return area


coords = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(coords, coords), max_size=25), st.tuples(coords, coords))
def test_hypervolume_equals_brute_force_on_random_points(points, ref) -> None:
    assert hypervolume_2d(points, ref) == pytest.approx(brute_force_hypervolume(points, ref), rel=1e-9, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=30))
def test_hypervolume_counts_dominated_unit_cells(points) -> None:
    ref = (12, 12)
    cells = sum(any(px <= cx and py <= cy for px, py in points) for cx in range(12) for cy in range(12))
    assert hypervolume_2d(points, ref) == cells


def test_hypervolume_known_values_and_reference_handling() -> None:
    assert hypervolume_2d([(1, 1)], (3, 4)) == 6.0
    assert hypervolume_2d([(1, 2), (2, 1)], (3, 3)) == 3.0  # 2 + 2 - overlap 1
    assert hypervolume_2d([(3, 0), (0, 3), (5, 5)], (3, 3)) == 0.0, "points not better than the reference add nothing"
    assert hypervolume_2d([], (1, 1)) == 0.0
    # accuracy maximised, cost minimised: the rectangle from the point to (cost_ref, accuracy_ref)
    assert front_hypervolume([0.9], [10.0], (20.0, 0.5)) == pytest.approx(10 * 0.4)
    with pytest.raises(SearchError, match="reference"):
        hypervolume_2d([(1, 1)], (1, float("nan")))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40))
def test_pareto_mask_keeps_exactly_the_non_dominated(rows) -> None:
    values = np.array(rows, dtype=float)
    maximize = [True, False, False]
    mask = pareto_mask(values, maximize)
    better = values * np.array([-1, 1, 1])  # minimise everything

    def dominates(a: np.ndarray, b: np.ndarray) -> bool:
        return bool((a <= b).all() and (a < b).any())

    for i in range(len(values)):
        dominated = any(dominates(better[j], better[i]) for j in range(len(values)))
        assert mask[i] == (not dominated)


def _sub(i: int) -> Subnet:
    return Subnet({"a": (i % 4 + 1) / 4}, {"s": i // 4 + 1})


def _candidates() -> list[Candidate]:
    table = [(0.70, 10), (0.80, 20), (0.75, 25), (0.90, 40), (0.85, 50), (0.95, 80)]
    return [
        Candidate(_sub(i), {"accuracy": a, "macs": m, "latency": m / 10, "memory": 100 * m, "params": m})
        for i, (a, m) in enumerate(table)
    ]


def test_front_from_candidates_respects_constraints_and_dominance() -> None:
    front = ParetoFront.from_candidates(_candidates(), ("accuracy", "macs"), {"latency": 6.0})
    assert [(e.accuracy, e.macs) for e in front] == [(0.70, 10), (0.80, 20), (0.90, 40)]
    assert len(front.evaluated) == 6
    assert front.best(macs=30) == front[1]
    assert front.best(macs=5) is None
    assert front.hypervolume("macs", (60.0, 0.6)) == pytest.approx(50 * 0.1 + 40 * 0.1 + 20 * 0.1)
    with pytest.raises(SearchError, match="violates"):
        ParetoFront([_candidates()[5]], ("accuracy", "macs"), {"latency": 6.0})


def test_front_json_round_trip(tmp_path: Path) -> None:
    front = ParetoFront.from_candidates(_candidates(), ("accuracy", "latency"), {"memory": 6000}, {"algorithm": "x"})
    path = front.save(tmp_path / "front.json")
    loaded = ParetoFront.load(path)
    assert loaded.to_dict() == front.to_dict()
    assert [e.subnet for e in loaded] == front.subnets
    assert isinstance(loaded[0].macs, int) and loaded.info == {"algorithm": "x"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema="tailor.pareto/0"), "schema"),
        (lambda d: d.update(extra=1), "unknown key 'extra'; known keys: constraints, evaluated, front, info, objectives, schema"),
        (lambda d: d["front"][0]["metrics"].update(accuracy=1.5), r"front\[0\]\.metrics\.accuracy"),
        (lambda d: d["front"][0]["metrics"].update(latency="fast"), r"front\[0\]\.metrics\.latency: expected a number"),
        (lambda d: d["front"][0]["metrics"].update(speed=1), r"front\[0\]\.metrics: unknown key 'speed'; input should be 'accuracy'"),
        (lambda d: d["front"][1].update(id="sn-000000000000"), r"front\[1\]\.id"),
        (lambda d: d["evaluated"][2]["subnet"].update(widths={"a": 2.0}), r"evaluated\[2\]\.subnet"),
        (lambda d: d.update(objectives=["accuracy", "speed"]), r"objectives\[1\]: input should be 'accuracy'.*got 'speed'"),
        (lambda d: d.pop("front"), "missing key 'front'"),
    ],
)
def test_malformed_front_files_name_the_field(tmp_path: Path, edit, message: str) -> None:
    data = ParetoFront.from_candidates(_candidates(), ("accuracy", "macs")).to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SearchError, match=message):
        ParetoFront.load(path)


def test_unreadable_front_files(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cannot read"):
        ParetoFront.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SearchError, match="not valid JSON"):
        ParetoFront.load(tmp_path / "bad.json")


def test_plot_draws_every_evaluated_subnet(tmp_path: Path) -> None:
    front = ParetoFront.from_candidates(_candidates(), ("accuracy", "macs"), {"latency": 6.0})
    root = ET.parse(front.plot(tmp_path / "front.svg")).getroot()
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"evaluated", "outside constraints", "Pareto front", "held-out accuracy"} <= texts
    assert any(text.endswith("%") for text in texts), "accuracy is shown in percent"
    assert "macs (MACs)" in texts
    with pytest.raises(SearchError, match="cost metric"):
        front.plot(tmp_path / "x.svg", x="accuracy")


def test_printing_a_front_shows_a_readable_summary() -> None:
    front = ParetoFront.from_candidates(_candidates(), ("accuracy", "macs"), {"macs": 1e12}, info={"algorithm": "tpe"})
    text = str(front)
    lines = text.splitlines()
    assert lines[0].startswith(f"ParetoFront({len(front)} subnets of {len(front.evaluated)} evaluated; objectives: ")
    assert "constraints: macs<=1e+12" in lines[0] and "found by tpe" in lines[0]
    assert "object at 0x" not in text and "accuracy %" in lines[1] and "MMACs" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == [e.subnet.id for e in front]
    first = lines[2].split()
    assert float(first[1]) == pytest.approx(100 * front[0].accuracy, abs=0.01)
    assert repr(front) == lines[0].removesuffix(", found by tpe")
    empty = ParetoFront([], ("accuracy", "macs"))
    assert "empty" in str(empty)
