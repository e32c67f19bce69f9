"""The argument checks every package shares, each raising the caller's own `TailorError` subclass.

    self.workers = positive_int("workers", workers, PolicyError)
    rate = positive_float("poisson: rate", rate, TraceError)

A check returns the value as a plain `int` or `float` (numpy scalars included, `bool` never: `True` is no
count), or raises `error` with one line that names the argument and the bad value:
``workers must be a positive integer, got 0``. The name carries any context the caller wants shown
(``"fit_router: epochs"``, ``"--threads"``). Numbers must be finite. Written by hand rather than with
pydantic: these are single scalars checked in constructors and hot paths, where building a validator per
call costs more than the check, and the message wording is tailor's own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

from tailor.errors import TailorError

T = TypeVar("T")
ErrorClass = type[TailorError]

#: how much of a bad value's repr a message shows (a request body can be megabytes)
SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """`repr(value)`, cut to `SHOWN_CHARS` with a trailing "..." when longer."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _fail(name: str, what: str, value: Any, error: ErrorClass) -> TailorError:
    return error(f"{name} must be {what}, got {shown(value)}")


def _int_words(low: int | None, high: int | None) -> str:
    if high is not None:
        return f"an integer in [{low}, {high}]" if low is not None else f"an integer <= {high}"
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")


def integer(name: str, value: Any, error: ErrorClass, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an `int` if it is an integer (not a bool) within [low, high]."""
    wrong_type = type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral))
    if wrong_type or (low is not None and value < low) or (high is not None and value > high):
        raise _fail(name, _int_words(low, high), value, error)
    return int(value)


def positive_int(name: str, value: Any, error: ErrorClass) -> int:
    """`value` as an `int` >= 1 (a count of things that must exist: workers, epochs, batch size)."""
    return integer(name, value, error, low=1)


def non_negative_int(name: str, value: Any, error: ErrorClass) -> int:
    """`value` as an `int` >= 0 (a count that may be zero: warm-up calls, spare workers)."""
    return integer(name, value, error, low=0)


def _number_words(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        if low == 0:
            return "a positive finite number" if low_open else "a finite number >= 0"
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def number(
    name: str,
    value: Any,
    error: ErrorClass,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a finite `float` within the bounds (open or closed at each end)."""
    wrong_type = type(value) not in (float, int) and (isinstance(value, bool) or not isinstance(value, numbers.Real))
    if wrong_type or not math.isfinite(value):
        raise _fail(name, _number_words(low, high, low_open, high_open), value, error)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise _fail(name, _number_words(low, high, low_open, high_open), value, error)
    return float(value)


def finite_float(name: str, value: Any, error: ErrorClass) -> float:
    """`value` as a finite `float` (a threshold, a bound)."""
    return number(name, value, error)


def positive_float(name: str, value: Any, error: ErrorClass) -> float:
    """`value` as a finite `float` > 0 (a rate, a deadline, a temperature)."""
    return number(name, value, error, low=0, low_open=True)


def non_negative_float(name: str, value: Any, error: ErrorClass) -> float:
    """`value` as a finite `float` >= 0 (a cost, a tolerance, a noise level)."""
    return number(name, value, error, low=0)


def fraction(name: str, value: Any, error: ErrorClass) -> float:
    """`value` as a `float` in [0, 1] (a probability, an agreement, an accuracy)."""
    return number(name, value, error, low=0, high=1)


def one_of(name: str, value: T, choices: Collection[Any], error: ErrorClass) -> T:
    """`value` itself if it is one of `choices` (names, modes), else `error` listing them."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value asked of a set or dict
        known = False
    if not known:
        raise error(f"{name} must be one of {list(choices)}, got {shown(value)}")
    return value


def boolean(name: str, value: Any, error: ErrorClass) -> bool:
    """`value` itself if it is `True` or `False` (not 0/1, not "true": a switch must say which)."""
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, got {shown(value)}")
    return value


__all__ = [
    "boolean",
    "finite_float",
    "fraction",
    "integer",
    "non_negative_float",
    "non_negative_int",
    "number",
    "one_of",
    "positive_float",
    "positive_int",
    "shown",
]
