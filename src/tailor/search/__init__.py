"""Subnet search: the accuracy/cost Pareto front of a supernet, and the best little/big cascade (see README.md).

`from tailor.search import search` gives the search function. The package itself is also callable,
`tailor.search(model, evaluator, ...)`, so the name works both as the subpackage and as the function.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from tailor.search.algorithms import (
    ALGORITHMS,
    SamplerAlgorithm,
    SearchAlgorithm,
    algorithm_names,
    register_algorithm,
)
from tailor.search.costs import CostSource, MeasuredCost, PredictedCost, ProfileCost, estimate_memory
from tailor.search.encoding import SpaceEncoding
from tailor.search.evaluator import BaseEvaluator, Evaluator
from tailor.search.metrics import COST_METRICS, METRICS, SearchError
from tailor.search.pair import PairChoice, cascade_table, pair_search
from tailor.search.pareto import Candidate, ParetoFront, front_hypervolume, hypervolume_2d, pareto_mask
from tailor.search.predictor import SurrogateModel
from tailor.search.runner import SearchRun, search
from tailor.search.study import open_storage

__all__ = [
    "ALGORITHMS",
    "COST_METRICS",
    "METRICS",
    "BaseEvaluator",
    "Candidate",
    "CostSource",
    "Evaluator",
    "MeasuredCost",
    "PairChoice",
    "ParetoFront",
    "PredictedCost",
    "ProfileCost",
    "SamplerAlgorithm",
    "SearchAlgorithm",
    "SearchError",
    "SearchRun",
    "SpaceEncoding",
    "SurrogateModel",
    "algorithm_names",
    "cascade_table",
    "estimate_memory",
    "front_hypervolume",
    "hypervolume_2d",
    "open_storage",
    "pair_search",
    "pareto_mask",
    "register_algorithm",
    "search",
]


class _CallableModule(types.ModuleType):
    """This package's module type: calling the module calls `search`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
