"""Tests of `tailor.space.Subnet`: value semantics, ids, serialisation, immutability, validation."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import re
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tailor.errors import InvalidSubnetError, TailorError
from tailor.space import Subnet

# -- strategies ------------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=10)
width_values = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True, allow_nan=False),
    st.just(1),
    st.sampled_from([0.25, 0.3, 0.5, 0.75, 1.0]),
)
depth_values = st.integers(min_value=1, max_value=64)
width_maps = st.dictionaries(names, width_values, max_size=6)
depth_maps = st.dictionaries(names, depth_values, max_size=6)


@st.composite
def subnets(draw: st.DrawFn) -> Subnet:
    return Subnet(widths=draw(width_maps), depths=draw(depth_maps))


@st.composite
def subnet_pairs(draw: st.DrawFn) -> tuple[Subnet, Subnet]:
    """A subnet and a second one that is either independent or a one-entry edit of the first."""
    first = draw(subnets())
    if draw(st.booleans()):
        return first, draw(subnets())
    widths, depths = first.widths, first.depths
    if draw(st.booleans()):
        widths[draw(names)] = draw(width_values)
    else:
        depths[draw(names)] = draw(depth_values)
    return first, Subnet(widths, depths)


ID_RE = re.compile(r"^sn-[0-9a-f]{12}$")
PROPS = settings(max_examples=75, deadline=None)


# -- round trips and ids ---------------------------------------------------------------------------


@PROPS
@given(subnets())
def test_dict_round_trip(sub: Subnet) -> None:
    back = Subnet.from_dict(sub.to_dict())
    assert back == sub
    assert hash(back) == hash(sub)
    assert back.id == sub.id
    assert back.widths == sub.widths and back.depths == sub.depths


@PROPS
@given(subnets())
def test_json_round_trip(sub: Subnet) -> None:
    text = sub.to_json()
    back = Subnet.from_json(text)
    assert back == sub
    assert hash(back) == hash(sub)
    assert back.id == sub.id
    assert back.to_json() == text
    # the JSON is a plain object of the documented shape
    data = json.loads(text)
    assert set(data) == {"widths", "depths"}
    assert data["widths"] == sub.widths and data["depths"] == sub.depths


@PROPS
@given(subnets())
def test_pickle_and_copy_round_trip(sub: Subnet) -> None:
    for back in (pickle.loads(pickle.dumps(sub)), copy.copy(sub), copy.deepcopy(sub)):
        assert back == sub
        assert hash(back) == hash(sub)
        assert back.id == sub.id


@PROPS
@given(subnets())
def test_id_is_short_stable_and_derived_from_canonical_json(sub: Subnet) -> None:
    assert ID_RE.match(sub.id)
    assert sub.id == sub.id  # cached value is stable
    expected = "sn-" + hashlib.sha256(sub.to_json().encode()).hexdigest()[:12]
    assert sub.id == expected


def test_id_known_value() -> None:
    sub = Subnet(widths={"stem": 0.5, "b1": 1.0}, depths={"s1": 2})
    canonical = '{"depths":{"s1":2},"widths":{"b1":1.0,"stem":0.5}}'
    assert sub.to_json() == canonical
    assert sub.id == "sn-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_id_is_stable_across_processes() -> None:
    code = (
        "from tailor.space import Subnet\n"
        "print(Subnet(widths={'stem': 0.5, 'b1': 0.75}, depths={'s1': 2, 's2': 3}).id)\n"
    )
    here = Subnet(widths={"b1": 0.75, "stem": 0.5}, depths={"s2": 3, "s1": 2}).id
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


@PROPS
@given(subnets(), st.randoms(use_true_random=False))
def test_equal_regardless_of_insertion_order(sub: Subnet, rnd) -> None:
    widths = list(sub.widths.items())
    depths = list(sub.depths.items())
    rnd.shuffle(widths)
    rnd.shuffle(depths)
    other = Subnet(dict(reversed(widths)), dict(depths))
    assert other == sub
    assert hash(other) == hash(sub)
    assert other.id == sub.id
    assert other.to_json() == sub.to_json()


def test_int_and_float_width_are_the_same_subnet() -> None:
    a = Subnet(widths={"x": 1}, depths={"d": 2})
    b = Subnet(widths={"x": 1.0}, depths={"d": 2})
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert isinstance(a.width("x"), float)


@PROPS
@given(subnet_pairs())
def test_different_subnets_have_different_ids(pair: tuple[Subnet, Subnet]) -> None:
    a, b = pair
    assume(a != b)
    assert a.id != b.id
    assert a.to_json() != b.to_json()


@PROPS
@given(subnets(), subnets())
def test_equality_matches_dict_form(a: Subnet, b: Subnet) -> None:
    assert (a == b) == (a.to_dict() == b.to_dict())
    if a == b:
        assert hash(a) == hash(b)


def test_usable_as_dict_key_and_in_sets() -> None:
    a = Subnet({"w": 0.5}, {"d": 1})
    b = Subnet({"w": 0.5}, {"d": 1})
    c = Subnet({"w": 0.5}, {"d": 2})
    assert len({a, b, c}) == 2
    cache = {a: "hit"}
    assert cache[b] == "hit"
    assert c not in cache


def test_width_and_depth_namespaces_are_separate() -> None:
    a = Subnet(widths={"x": 0.5})
    b = Subnet(depths={"x": 1})
    assert a != b
    assert a.id != b.id
    assert Subnet() == Subnet({}, {})
    assert Subnet().to_dict() == {"widths": {}, "depths": {}}


def test_not_equal_to_other_types() -> None:
    sub = Subnet({"w": 0.5}, {"d": 1})
    assert sub != sub.to_dict()
    assert sub != sub.id
    assert (sub == 1) is False


# -- immutability ----------------------------------------------------------------------------------


@PROPS
@given(subnets(), st.sampled_from(["widths", "depths", "id", "_widths", "_depths", "_hash", "_id", "other"]))
def test_setting_or_deleting_attributes_raises(sub: Subnet, attr: str) -> None:
    before = sub.to_json()
    with pytest.raises(AttributeError):
        setattr(sub, attr, {})
    with pytest.raises(AttributeError):
        delattr(sub, attr)
    assert sub.to_json() == before


@PROPS
@given(subnets())
def test_returned_dicts_are_copies(sub: Subnet) -> None:
    before = sub.to_json()
    widths, depths = sub.widths, sub.depths
    widths["__injected__"] = 0.5
    depths["__injected__"] = 3
    data = sub.to_dict()
    data["widths"]["__other__"] = 0.5
    assert sub.to_json() == before
    assert "__injected__" not in sub.widths
    assert "__other__" not in sub.widths


def test_later_changes_to_input_dicts_do_not_leak_in() -> None:
    widths = {"a": 0.5}
    depths = {"s": 2}
    sub = Subnet(widths, depths)
    ident = sub.id
    widths["a"] = 1.0
    depths["b"] = 4
    assert sub.width("a") == 0.5
    assert sub.depths == {"s": 2}
    assert sub.id == ident


@PROPS
@given(subnets(), width_maps, depth_maps)
def test_replace_returns_new_subnet_and_keeps_original(sub: Subnet, new_w, new_d) -> None:
    before = sub.to_json()
    out = sub.replace(widths=new_w, depths=new_d)
    assert sub.to_json() == before
    assert out.widths == {k: float(v) for k, v in {**sub.widths, **new_w}.items()}
    assert out.depths == {**sub.depths, **new_d}
    assert sub.replace() == sub


def test_replace_validates() -> None:
    sub = Subnet({"a": 0.5}, {"s": 2})
    with pytest.raises(InvalidSubnetError, match=r"width 'a'.*1\.5"):
        sub.replace(widths={"a": 1.5})
    with pytest.raises(InvalidSubnetError, match=r"depth 's'.*0"):
        sub.replace(depths={"s": 0})


@PROPS
@given(subnets())
def test_accessors(sub: Subnet) -> None:
    for name, value in sub.widths.items():
        assert sub.width(name) == value
    for name, value in sub.depths.items():
        assert sub.depth(name) == value
    assert sub.id in repr(sub)


def test_accessors_name_missing_dimension() -> None:
    sub = Subnet({"a": 0.5}, {"s": 2})
    with pytest.raises(InvalidSubnetError, match=r"no width dimension 'nope'"):
        sub.width("nope")
    with pytest.raises(InvalidSubnetError, match=r"no depth dimension 'a'"):
        sub.depth("a")


# -- validation errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (0, r"width 'w' must be a number in \(0, 1\], got 0$"),
        (0.0, r"width 'w' must be a number in \(0, 1\], got 0\.0$"),
        (-0.5, r"width 'w' must be a number in \(0, 1\], got -0\.5$"),
        (1.0000001, r"width 'w' must be a number in \(0, 1\], got 1\.0000001$"),
        (2, r"width 'w' must be a number in \(0, 1\], got 2$"),
        (math.nan, r"width 'w' must be a number in \(0, 1\], got nan$"),
        (math.inf, r"width 'w' must be a number in \(0, 1\], got inf$"),
        (True, r"width 'w' must be a number in \(0, 1\], got True$"),
        (False, r"width 'w' must be a number in \(0, 1\], got False$"),
        ("0.5", r"width 'w' must be a number in \(0, 1\], got '0\.5'$"),
        (None, r"width 'w' must be a number in \(0, 1\], got None$"),
        ([0.5], r"width 'w' must be a number in \(0, 1\], got \[0\.5\]$"),
    ],
)
def test_bad_width_value(value, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        Subnet(widths={"w": value})


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (0, r"depth 'd' must be a positive integer, got 0$"),
        (-3, r"depth 'd' must be a positive integer, got -3$"),
        (2.0, r"depth 'd' must be a positive integer, got 2\.0$"),
        (True, r"depth 'd' must be a positive integer, got True$"),
        ("2", r"depth 'd' must be a positive integer, got '2'$"),
        (None, r"depth 'd' must be a positive integer, got None$"),
    ],
)
def test_bad_depth_value(value, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        Subnet(depths={"d": value})


@pytest.mark.parametrize("name", ["", 3, None, ("a",)])
@pytest.mark.parametrize("kind", ["width", "depth"])
def test_bad_dimension_name(kind: str, name) -> None:
    kwargs = {"widths": {name: 0.5}} if kind == "width" else {"depths": {name: 1}}
    with pytest.raises(
        InvalidSubnetError, match=rf"{kind} dimension name must be a non-empty string, got {re.escape(repr(name))}"
    ):
        Subnet(**kwargs)


@PROPS
@given(st.floats().filter(lambda x: not (0.0 < x <= 1.0)))
def test_any_width_outside_unit_interval_is_rejected(value: float) -> None:
    with pytest.raises(InvalidSubnetError, match=r"width 'w'"):
        Subnet(widths={"w": value})


@PROPS
@given(st.integers(max_value=0))
def test_any_depth_below_one_is_rejected(value: int) -> None:
    with pytest.raises(InvalidSubnetError, match=rf"depth 'd' must be a positive integer, got {value}$"):
        Subnet(depths={"d": value})


def test_errors_are_value_errors_and_tailor_errors() -> None:
    with pytest.raises(ValueError):
        Subnet(widths={"w": 0})
    with pytest.raises(TailorError):
        Subnet(depths={"d": 0})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"widths": {}, "depths": {}, "extra": 1}, r"unknown field\(s\) \['extra'\]"),
        ({"width": {"a": 0.5}}, r"unknown field\(s\) \['width'\]"),
        ({"widths": [0.5]}, r"field 'widths' must be an object"),
        ({"depths": 3}, r"field 'depths' must be an object"),
        ({"widths": {"a": 0}}, r"width 'a' must be a number in \(0, 1\], got 0$"),
        ({"depths": {"s": 0}}, r"depth 's' must be a positive integer, got 0$"),
        ({"depths": {"s": 1.5}}, r"depth 's' must be a positive integer, got 1\.5$"),
    ],
)
def test_from_dict_rejects_malformed_data(data, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        Subnet.from_dict(data)


@pytest.mark.parametrize("data", [[1, 2], "widths", 3, None])
def test_from_dict_rejects_non_objects(data) -> None:
    with pytest.raises(InvalidSubnetError, match=rf"must be a JSON object, got {type(data).__name__}"):
        Subnet.from_dict(data)


def test_from_dict_accepts_missing_fields() -> None:
    assert Subnet.from_dict({}) == Subnet()
    assert Subnet.from_dict({"widths": {"a": 0.5}}) == Subnet({"a": 0.5})


@pytest.mark.parametrize("text", ["", "{", "not json", '{"widths": {"a": 0.5}', "{'widths': {}}"])
def test_from_json_rejects_malformed_json(text: str) -> None:
    with pytest.raises(InvalidSubnetError, match=r"subnet JSON does not parse"):
        Subnet.from_json(text)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("[]", r"must be a JSON object, got list"),
        ('"x"', r"must be a JSON object, got str"),
        ('{"widths": {"a": 0.5}, "schema": 1}', r"unknown field\(s\) \['schema'\]"),
        ('{"widths": {"a": 1.5}}', r"width 'a' must be a number in \(0, 1\], got 1\.5"),
        ('{"widths": {"a": true}}', r"width 'a' must be a number in \(0, 1\], got True"),
        ('{"depths": {"s": "2"}}', r"depth 's' must be a positive integer, got '2'"),
    ],
)
def test_from_json_rejects_bad_content(text: str, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        Subnet.from_json(text)
