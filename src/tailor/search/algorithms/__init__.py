"""Search algorithms, one file each, registered by name: `search(..., algorithm="tpe")` (see `base.py`).

Importing this package registers the built-in ones: `nsga2`, `tpe`, `random` (Optuna's samplers),
`evolution` (predictor-assisted) and `exhaustive` (every subnet, Optuna's `BruteForceSampler` in effect).
"""

from tailor.search.algorithms import evolution, exhaustive, nsga2, random, tpe  # noqa: F401  (registers them)
from tailor.search.algorithms.base import (
    SamplerAlgorithm,
    SearchAlgorithm,
    algorithm_names,
    make_algorithm,
    option_names,
    register_algorithm,
)
from tailor.search.algorithms.evolution import Evolution
from tailor.search.algorithms.exhaustive import Exhaustive
from tailor.search.algorithms.nsga2 import NSGA2
from tailor.search.algorithms.random import RandomSearch
from tailor.search.algorithms.tpe import TPE

#: the built-in algorithms' names (`algorithm_names()` also lists those registered later)
ALGORITHMS = ("nsga2", "tpe", "random", "evolution", "exhaustive")

# `search` used to live in this module's place; `from tailor.search.algorithms import search` keeps working
from tailor.search.runner import search  # noqa: E402

__all__ = [
    "ALGORITHMS",
    "NSGA2",
    "TPE",
    "Evolution",
    "Exhaustive",
    "RandomSearch",
    "SamplerAlgorithm",
    "SearchAlgorithm",
    "algorithm_names",
    "make_algorithm",
    "option_names",
    "register_algorithm",
    "search",
]
