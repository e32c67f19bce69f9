"""Search algorithms as registered objects: names, instances, per-algorithm options, and a new algorithm
added in one class (the extension point the search README describes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from search_helpers import AnalyticEvaluator, analytic_space

from tailor.search import ALGORITHMS, SearchAlgorithm, SearchError, algorithm_names, search
from tailor.search.algorithms import NSGA2, Evolution, make_algorithm, option_names, register_algorithm
from tailor.search.algorithms import base as registry

OBJECTIVES = ("accuracy", "macs")


def test_every_built_in_algorithm_is_registered_under_its_name() -> None:
    assert set(ALGORITHMS) <= set(algorithm_names())
    for name in ALGORITHMS:
        algorithm = make_algorithm(name)
        assert isinstance(algorithm, SearchAlgorithm) and algorithm.name == name
    assert option_names(NSGA2) == ("population",)
    assert option_names(Evolution) == ("predictor", "batch")
    assert make_algorithm("evolution", predictor="mlp").options() == {"predictor": "mlp", "batch": None}


def test_an_instance_and_its_name_with_the_same_options_give_the_same_front() -> None:
    by_name = search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="nsga2", population=10, budget=30, seed=2)
    by_instance = search(None, AnalyticEvaluator(), OBJECTIVES, algorithm=NSGA2(population=10), budget=30, seed=2)
    assert by_name.to_dict()["front"] == by_instance.to_dict()["front"]
    assert by_instance.info["algorithm"] == "nsga2"


def test_options_go_to_the_instance_not_to_search() -> None:
    with pytest.raises(SearchError, match="pass population to its constructor"):
        search(None, AnalyticEvaluator(), OBJECTIVES, algorithm=NSGA2(), population=10, budget=10)


@settings(max_examples=25, deadline=None)
@given(option=st.text(min_size=1, max_size=12).filter(lambda s: s not in ("predictor", "batch")))
def test_an_option_an_algorithm_does_not_take_is_named(option: str) -> None:
    with pytest.raises(SearchError) as caught:
        make_algorithm("evolution", **{option: 1})
    assert f"takes no option {option!r}" in str(caught.value) and "predictor, batch" in str(caught.value)


README = Path(__file__).resolve().parents[2] / "src" / "tailor" / "search" / "README.md"


def _readme_example() -> str:
    """The README's "Adding an algorithm" example, as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return next(block for block in blocks if "register_algorithm(" in block)


def test_the_readme_example_adds_an_algorithm_in_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the registry as it was
    namespace: dict[str, Any] = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    assert "cheapest_first" in algorithm_names()
    ev = AnalyticEvaluator(analytic_space(widths=2, choices=(0.5, 1.0), depths=1))  # 8 networks
    front = search(None, ev, OBJECTIVES, algorithm="cheapest_first", chunk=3, budget=7, seed=0)
    assert front.info["algorithm"] == "cheapest_first" and front.info["cheapest_first"] == {"chunks": 2}
    assert front.info["evaluated"] == 7 == ev.evaluations, "the anchors, then the algorithm's own choices"
    space = ev.space
    unevaluated = [s for s in space if s not in ev.calls]
    # index sums 1, 1, 1, 2, 2 are taken; of the three with sum 2 the last in the space's order is left
    assert unevaluated == [space.from_wm([1.0, 1.0], {"stage0": 1})]
    with pytest.raises(SearchError, match=r"takes no option 'population' \(its options: chunk\)"):
        search(None, ev, OBJECTIVES, algorithm="cheapest_first", population=3, budget=7)


def test_registration_refuses_what_is_not_an_algorithm_or_a_taken_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(SearchError, match="not a SearchAlgorithm subclass"):
        register_algorithm("thing")(dict)  # type: ignore[type-var]
    with pytest.raises(SearchError, match="must be an identifier"):
        register_algorithm("two words")
    with pytest.raises(SearchError, match="'tpe' is already"):
        register_algorithm("tpe")(Evolution)
