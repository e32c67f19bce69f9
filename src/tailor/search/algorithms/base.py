"""`SearchAlgorithm`: what a search algorithm is, and the registry that names them.

The shape follows Optuna's `BaseSampler`: an algorithm is an object with its own options, handed to the
search (`search(..., algorithm=NSGA2(population=24))`) or named (`algorithm="nsga2"`, options as keywords).
Every algorithm runs inside the Optuna study that `search()` opens: it may give the study a sampler
(`sampler`), and it drives the worker's share of the study through the `SearchRun` it is given (`run`):
`run.optimize(n)` lets the sampler propose, `run.evaluate(subnets)` enqueues chosen subnets. Options are
the keyword arguments of the class's `__init__`; each class checks its own values, and `make_algorithm`
refuses an option the class does not take, naming it.

Adding an algorithm is one file in this package (a subclass decorated with `@register_algorithm("name")`,
imported by the package's `__init__`) plus its test.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tailor.search.metrics import SearchError

if TYPE_CHECKING:
    from tailor.search.runner import SearchRun

A = TypeVar("A", bound=type["SearchAlgorithm"])

_REGISTRY: dict[str, type[SearchAlgorithm]] = {}


class SearchAlgorithm(ABC):
    """A search algorithm: which subnets of the space to evaluate, within the budget, inside an Optuna study.

    Subclasses take their options as keyword arguments of `__init__` (checked there), may override `sampler`
    (the study's Optuna sampler; default: random) and `budget` (how many distinct subnets they evaluate), and
    implement `run`.
    """

    #: the registered name (set by `register_algorithm`); recorded in the front's info and the study's settings
    name: ClassVar[str] = ""

    def budget(self, requested: int | None, space_size: int) -> int | None:
        """The number of distinct subnets this algorithm evaluates when asked for `requested` (default: that)."""
        return requested

    def sampler(self, seed: int, budget: int) -> Any:
        """The study's Optuna sampler (default: random, which algorithms that enqueue their own subnets keep)."""
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)

    @abstractmethod
    def run(self, run: SearchRun) -> dict[str, Any]:
        """Evaluate subnets through `run` until its budget is spent; returns what it did (for the front's info)."""

    def options(self) -> dict[str, Any]:
        """The options this instance was made with (its `__init__` keyword arguments, kept as attributes of the
        same name; one not kept reads None)."""
        return {name: getattr(self, name, None) for name in option_names(type(self))}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({options})"


class SamplerAlgorithm(SearchAlgorithm):
    """An algorithm that is an Optuna sampler: the anchors and `include` first, then the sampler proposes."""

    @abstractmethod
    def sampler(self, seed: int, budget: int) -> Any:
        """The Optuna sampler this algorithm is."""

    def run(self, run: SearchRun) -> dict[str, Any]:
        run.evaluate(run.first)
        run.optimize(run.max_trials)
        return {}


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator: make a `SearchAlgorithm` subclass available to `search(algorithm=name)`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise SearchError(f"register_algorithm: the name must be an identifier, got {name!r}")

    def register(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, SearchAlgorithm)):
            raise SearchError(f"register_algorithm({name!r}): {cls!r} is not a SearchAlgorithm subclass")
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise SearchError(f"register_algorithm: {name!r} is already {known.__module__}.{known.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def algorithm_names() -> tuple[str, ...]:
    """The registered algorithms' names, in registration order."""
    return tuple(_REGISTRY)


def option_names(cls: type[SearchAlgorithm]) -> tuple[str, ...]:
    """The options an algorithm class takes: the keyword arguments of its `__init__`."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.name != "self" and p.kind in kinds)


def make_algorithm(algorithm: str | SearchAlgorithm, **options: Any) -> SearchAlgorithm:
    """The algorithm `algorithm` names, made with `options`; an instance is returned as it is (without options).

    An unknown name, an option the algorithm does not take, or a bad option value raises `SearchError`.
    """
    if isinstance(algorithm, SearchAlgorithm):
        if options:
            raise SearchError(
                f"algorithm {algorithm.name or type(algorithm).__name__!r} is given as an instance: pass "
                f"{', '.join(sorted(options))} to its constructor, not to search()"
            )
        return algorithm
    if not isinstance(algorithm, str) or algorithm not in _REGISTRY:
        raise SearchError(f"unknown algorithm {algorithm!r}; expected one of {list(_REGISTRY)} or a SearchAlgorithm")
    cls = _REGISTRY[algorithm]
    takes = option_names(cls)
    for option in options:
        if option not in takes:
            accepted = ", ".join(takes) if takes else "none"
            raise SearchError(f"algorithm {algorithm!r} takes no option {option!r} (its options: {accepted})")
    return cls(**options)


def check_positive(name: str, value: int | None) -> int | None:
    """`value` if it is None or a positive integer, else a `SearchError` naming the option."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SearchError(f"{name} must be a positive integer or None, got {value!r}")
    return value
