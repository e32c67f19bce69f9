"""Search algorithms, one file each, registered by name: `search(..., algorithm="tpe")` (see `base.py`).

Built in: `nsga2`, `tpe`, `random` (Optuna's samplers), `evolution` (predictor-assisted) and `exhaustive`
(every subnet, Optuna's `BruteForceSampler` in effect). A new algorithm is one file in this package with a
`@register_algorithm` class, plus its test: every module of the package is imported with it (below), so
nothing else needs editing.
"""

from tailor.plugins import import_modules
from tailor.search.algorithms.base import (
    SamplerAlgorithm,
    SearchAlgorithm,
    algorithm_names,
    make_algorithm,
    option_names,
    register_algorithm,
)

import_modules(__name__, __path__)  # each algorithm file registers its algorithm

from tailor.search.algorithms.evolution import Evolution  # noqa: E402  (registered above)
from tailor.search.algorithms.exhaustive import Exhaustive  # noqa: E402
from tailor.search.algorithms.nsga2 import NSGA2  # noqa: E402
from tailor.search.algorithms.random import RandomSearch  # noqa: E402
from tailor.search.algorithms.tpe import TPE  # noqa: E402

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
