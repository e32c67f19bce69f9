"""tailor.checks: each check accepts exactly the values it names, returns them as plain int/float, and
raises the caller's error class with a message naming the argument and the bad value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor.checks import (
    boolean,
    finite_float,
    fraction,
    integer,
    non_negative_float,
    non_negative_int,
    number,
    one_of,
    positive_float,
    positive_int,
    shown,
)
from tailor.errors import DataError, ProfileError, TailorError

# anything a caller might pass by mistake: numbers of every kind, bools, strings, None, containers
ANYTHING = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=200),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


def _outcome(check, *args):
    """(returned value, None) or (None, the TailorError raised)."""
    try:
        return check("name", *args), None
    except TailorError as exc:
        return None, exc


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.parametrize(
    ("check", "accepts"),
    [
        (positive_int, lambda v: _is_int(v) and v >= 1),
        (non_negative_int, lambda v: _is_int(v) and v >= 0),
        (positive_float, lambda v: _is_real(v) and v > 0),
        (non_negative_float, lambda v: _is_real(v) and v >= 0),
        (finite_float, _is_real),
        (fraction, lambda v: _is_real(v) and 0 <= v <= 1),
    ],
)
@given(value=ANYTHING)
def test_a_check_accepts_exactly_what_it_names(check, accepts, value) -> None:
    returned, error = _outcome(check, value, DataError)
    if accepts(value):
        assert error is None and returned == value
        assert type(returned) is (int if check in (positive_int, non_negative_int) else float)
    else:
        assert isinstance(error, DataError) and isinstance(error, ValueError)
        message = str(error)
        assert message.startswith("name must be ") and message.endswith(f"got {shown(value)}")
        assert "\n" not in message


@given(value=st.integers(-50, 50), low=st.integers(-20, 20), span=st.one_of(st.none(), st.integers(0, 20)))
def test_integer_bounds_are_inclusive_and_the_message_states_them(value, low, span) -> None:
    high = None if span is None else low + span
    returned, error = _outcome(lambda name, v: integer(name, v, ProfileError, low=low, high=high), value)
    inside = value >= low and (high is None or value <= high)
    assert (error is None) == inside
    if inside:
        assert returned == value
    else:
        bound = f"[{low}, {high}]" if high is not None else {0: "non-negative", 1: "positive"}.get(low, f">= {low}")
        assert bound in str(error) and f"got {value}" in str(error)


@given(value=st.floats(-3, 3), low_open=st.booleans(), high_open=st.booleans())
def test_number_honours_open_and_closed_ends(value, low_open, high_open) -> None:
    _returned, error = _outcome(
        lambda name, v: number(name, v, ProfileError, low=-1, high=1, low_open=low_open, high_open=high_open), value
    )
    above_low = value > -1 if low_open else value >= -1
    below_high = value < 1 if high_open else value <= 1
    assert (error is None) == (above_low and below_high)
    if error is not None:
        assert f"{'(' if low_open else '['}-1, 1{')' if high_open else ']'}" in str(error)


def test_numpy_scalars_count_and_come_back_as_python_numbers() -> None:
    assert type(positive_int("n", np.int64(3), DataError)) is int
    assert type(positive_float("rate", np.float32(0.5), DataError)) is float
    with pytest.raises(DataError, match="n must be a positive integer, got 2.0"):
        positive_int("n", 2.0, DataError)  # a float is no count, even a whole one


def test_the_messages_read_as_tailor_states_them() -> None:
    with pytest.raises(DataError, match=r"^workers must be a positive integer, got 0$"):
        positive_int("workers", 0, DataError)
    with pytest.raises(DataError, match=r"^warmup must be a non-negative integer, got True$"):
        non_negative_int("warmup", True, DataError)
    with pytest.raises(DataError, match=r"^rate must be a positive finite number, got inf$"):
        positive_float("rate", math.inf, DataError)
    with pytest.raises(DataError, match=r"^noise must be a finite number >= 0, got -0.1$"):
        non_negative_float("noise", -0.1, DataError)
    with pytest.raises(DataError, match=r"^p must be a number in \[0, 1\], got 1.5$"):
        fraction("p", 1.5, DataError)
    with pytest.raises(DataError, match=r"^bound must be a finite number, got nan$"):
        finite_float("bound", math.nan, DataError)


@given(value=ANYTHING, choices=st.lists(st.text(max_size=5), min_size=1, max_size=4))
def test_one_of_accepts_the_choices_only(value, choices) -> None:
    returned, error = _outcome(lambda name, v: one_of(name, v, choices, ProfileError), value)
    if isinstance(value, str) and value in choices:
        assert error is None and returned == value
    else:
        assert isinstance(error, ProfileError) and str(list(choices)) in str(error)
        assert str(error).endswith(f"got {shown(value)}")


def test_one_of_takes_unhashable_values_and_sets() -> None:
    with pytest.raises(ProfileError, match=r"mode must be one of \['a'\], got \[1\]"):
        one_of("mode", [1], {"a"}, ProfileError)
    assert one_of("mode", "a", {"a": 1}, ProfileError) == "a"


@given(value=ANYTHING)
def test_boolean_takes_true_and_false_only(value) -> None:
    _returned, error = _outcome(lambda name, v: boolean(name, v, ProfileError), value)
    assert (error is None) == isinstance(value, bool)
    if error is not None:
        assert str(error) == f"name must be true or false, got {shown(value)}"


@given(text=st.text(max_size=300))
def test_shown_cuts_long_values_and_says_so(text) -> None:
    out = shown(text)
    assert len(out) <= 80
    assert out == repr(text) or (len(repr(text)) > 80 and out.endswith("...") and repr(text).startswith(out[:-3]))
