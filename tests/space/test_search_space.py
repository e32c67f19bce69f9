"""Tests of `tailor.space.SearchSpace`, its dimensions and `active_channels`."""

from __future__ import annotations

import json
import math
import random
from itertools import islice

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tailor.errors import InvalidSubnetError
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim, active_channels

PROPS = settings(max_examples=60, deadline=None)
TOL = 1e-9

# -- strategies ------------------------------------------------------------------------------------

dim_names = st.text(alphabet="abcdefgh_0123", min_size=1, max_size=6)
# Multipliers with at most 6 decimals: varied, but never within float noise of a channel boundary.
multipliers = st.one_of(
    st.floats(min_value=1e-6, max_value=1.0).map(lambda x: round(x, 6)).filter(lambda x: x > 0),
    st.sampled_from([0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.6, 0.7, 0.75, 0.9, 1.0]),
)


@st.composite
def width_dims(draw: st.DrawFn, name: str, finite: bool | None = None) -> WidthDim:
    channels = draw(st.integers(min_value=1, max_value=96))
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    step = draw(st.sampled_from(divisors))
    use_choices = draw(st.booleans()) if finite is None else finite
    if use_choices:
        max_choices = 3 if finite else 4
        choices = draw(st.lists(multipliers, min_size=1, max_size=max_choices, unique=True))
        return WidthDim(name, channels, choices=tuple(choices), step=step)
    return WidthDim(name, channels, low=draw(multipliers), step=step)


@st.composite
def depth_dims(draw: st.DrawFn, name: str, small: bool = False) -> DepthDim:
    choices = draw(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=2 if small else 4))
    return DepthDim(name, tuple(choices))


@st.composite
def spaces(draw: st.DrawFn, finite: bool | None = None) -> SearchSpace:
    max_w = 3 if finite else 5
    w_names = draw(st.lists(dim_names, min_size=0 if finite else 1, max_size=max_w, unique=True))
    d_names = draw(st.lists(dim_names, min_size=0, max_size=2 if finite else 3, unique=True))
    widths = [draw(width_dims(n, finite=finite)) for n in w_names]
    depths = [draw(depth_dims(n, small=bool(finite))) for n in d_names]
    return SearchSpace(widths, depths)


@st.composite
def space_and_member(draw: st.DrawFn) -> tuple[SearchSpace, Subnet]:
    """A space and an arbitrary (not necessarily canonical) subnet inside it."""
    space = draw(spaces())
    widths = {}
    for dim in space.widths:
        if dim.choices is not None:
            widths[dim.name] = draw(st.sampled_from(dim.choices))
        else:
            widths[dim.name] = draw(st.floats(min_value=dim.low, max_value=1.0))
    depths = {d.name: draw(st.sampled_from(d.choices)) for d in space.depths}
    return space, Subnet(widths, depths)


@st.composite
def space_and_wm(draw: st.DrawFn) -> tuple[SearchSpace, list[float]]:
    space = draw(spaces())
    unit = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1.0, 0.5, 0.3]))
    wm = draw(st.lists(unit, min_size=space.search_dim, max_size=space.search_dim))
    return space, wm


def simple_space() -> SearchSpace:
    return SearchSpace(
        widths=[
            WidthDim("stem", 32, choices=(0.25, 0.5, 0.75, 1.0)),
            WidthDim("b1", 64, low=0.25, step=8),
        ],
        depths=[DepthDim("s1", (1, 2, 3)), DepthDim("s2", (2, 4))],
    )


def finite_space() -> SearchSpace:
    return SearchSpace(
        widths=[WidthDim("a", 16, choices=(0.5, 1.0)), WidthDim("b", 10, choices=(0.3, 0.6, 1.0))],
        depths=[DepthDim("s", (1, 2))],
    )


# -- active_channels -------------------------------------------------------------------------------


@st.composite
def channel_cases(draw: st.DrawFn) -> tuple[float, int, int]:
    channels = draw(st.integers(min_value=1, max_value=2048))
    step = draw(st.sampled_from([d for d in range(1, channels + 1) if channels % d == 0]))
    width = draw(st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
    return width, channels, step


@settings(max_examples=100, deadline=None)
@given(channel_cases())
def test_active_channels_properties(case: tuple[float, int, int]) -> None:
    width, channels, step = case
    count = active_channels(width, channels, step)
    assert isinstance(count, int)
    assert count % step == 0
    assert step <= count <= channels
    assert count >= width * channels - TOL
    # minimal: one step fewer would no longer cover width * channels (unless clamped at `step`)
    if count > step:
        assert count - step < width * channels + TOL


@settings(max_examples=100, deadline=None)
@given(channel_cases(), channel_cases())
def test_active_channels_is_monotone_in_width(a: tuple[float, int, int], b: tuple[float, int, int]) -> None:
    _, channels, step = a
    w1, w2 = sorted([a[0], b[0]])
    assert active_channels(w1, channels, step) <= active_channels(w2, channels, step)


@PROPS
@given(st.integers(min_value=1, max_value=512), st.data())
def test_active_channels_is_exact_on_the_grid(channels: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=1, max_value=channels))
    assert active_channels(k / channels, channels) == k
    assert active_channels(1.0, channels) == channels


@pytest.mark.parametrize(
    ("width", "channels", "step", "expected"),
    [
        (0.3, 10, 1, 3),  # 0.3 * 10 == 3.0000000000000004 in floats; must not round up to 4
        (0.7, 10, 1, 7),
        (0.6, 10, 1, 6),
        (0.1, 30, 1, 3),
        (1 / 3, 3, 1, 1),
        (0.5, 7, 1, 4),
        (0.01, 10, 1, 1),
        (1.0, 64, 8, 64),
        (0.5, 12, 4, 8),  # 6 channels rounded up to a multiple of 4
        (0.01, 64, 8, 8),  # clamped up to one step
        (0.99, 64, 16, 64),
    ],
)
def test_active_channels_examples(width: float, channels: int, step: int, expected: int) -> None:
    assert active_channels(width, channels, step) == expected


# -- dimensions ------------------------------------------------------------------------------------


def test_width_dim_normalises_choices() -> None:
    dim = WidthDim("w", 8, choices=(1.0, 0.5, 0.5, 1))
    assert dim.choices == (0.5, 1.0)
    assert dim.min == 0.5
    assert dim == WidthDim("w", 8, choices=(0.5, 1.0))
    assert WidthDim("w", 8, low=1).low == 1.0


def test_depth_dim_normalises_choices() -> None:
    dim = DepthDim("d", (3, 1, 3, 2))
    assert dim.choices == (1, 2, 3)
    assert (dim.min, dim.max) == (1, 3)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"choices": (0.5, 1.0), "low": 0.5}, r"width dimension 'w': give exactly one of choices or low"),
        ({}, r"width dimension 'w': give exactly one of choices or low"),
        ({"choices": ()}, r"width dimension 'w': choices are empty"),
        ({"choices": (0.5, 0.0)}, r"width dimension 'w': choice must be a number in \(0, 1\], got 0\.0$"),
        ({"choices": (1.5,)}, r"width dimension 'w': choice must be a number in \(0, 1\], got 1\.5$"),
        ({"choices": (True,)}, r"width dimension 'w': choice must be a number in \(0, 1\], got True$"),
        ({"choices": ("0.5",)}, r"width dimension 'w': choice must be a number in \(0, 1\], got '0\.5'$"),
        ({"low": 0}, r"width dimension 'w': low must be a number in \(0, 1\], got 0$"),
        ({"low": 1.01}, r"width dimension 'w': low must be a number in \(0, 1\], got 1\.01$"),
        ({"low": True}, r"width dimension 'w': low must be a number in \(0, 1\], got True$"),
        ({"low": 0.5, "step": 3}, r"width dimension 'w': step 3 must be a positive divisor of channels 16"),
        ({"low": 0.5, "step": 32}, r"width dimension 'w': step 32 must be a positive divisor of channels 16"),
        ({"low": 0.5, "step": 0}, r"width dimension 'w': step 0 must be a positive divisor"),
        ({"low": 0.5, "step": True}, r"width dimension 'w': step True must be a positive divisor"),
    ],
)
def test_width_dim_rejects_bad_arguments(kwargs, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        WidthDim("w", 16, **kwargs)


@pytest.mark.parametrize("channels", [0, -4, 2.0, True, "16"])
def test_width_dim_rejects_bad_channels(channels) -> None:
    with pytest.raises(
        InvalidSubnetError, match=rf"width dimension 'w': channels must be a positive integer, got {channels!r}"
    ):
        WidthDim("w", channels, low=0.5)


@pytest.mark.parametrize("name", ["", None, 3])
def test_dims_reject_bad_names(name) -> None:
    with pytest.raises(InvalidSubnetError, match=r"width dimension name must be a non-empty string"):
        WidthDim(name, 8, low=0.5)
    with pytest.raises(InvalidSubnetError, match=r"depth dimension name must be a non-empty string"):
        DepthDim(name, (1,))


@pytest.mark.parametrize(
    ("choices", "pattern"),
    [
        ((), r"depth dimension 'd': choices are empty"),
        ((1, 0), r"depth dimension 'd': choice must be a positive integer, got 0$"),
        ((2.0,), r"depth dimension 'd': choice must be a positive integer, got 2\.0$"),
        ((True,), r"depth dimension 'd': choice must be a positive integer, got True$"),
    ],
)
def test_depth_dim_rejects_bad_choices(choices, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        DepthDim("d", choices)


@PROPS
@given(st.integers(min_value=1, max_value=256), st.integers(min_value=2, max_value=256))
def test_width_dim_step_must_divide_channels(channels: int, step: int) -> None:
    if channels % step == 0:
        assert WidthDim("w", channels, low=0.5, step=step).step == step
    else:
        with pytest.raises(
            InvalidSubnetError, match=rf"'w': step {step} must be a positive divisor of channels {channels}"
        ):
            WidthDim("w", channels, low=0.5, step=step)


def test_duplicate_dimension_names_are_rejected() -> None:
    with pytest.raises(InvalidSubnetError, match=r"width dimension 'a' appears twice"):
        SearchSpace([WidthDim("a", 8, low=0.5), WidthDim("b", 8, low=0.5), WidthDim("a", 4, choices=(1.0,))])
    with pytest.raises(InvalidSubnetError, match=r"depth dimension 's' appears twice"):
        SearchSpace([], [DepthDim("s", (1,)), DepthDim("s", (2,))])
    # a width and a depth dimension may share a name: they live in separate namespaces
    space = SearchSpace([WidthDim("x", 8, low=0.5)], [DepthDim("x", (1, 2))])
    assert space.largest() == Subnet({"x": 1.0}, {"x": 2})


def test_dimension_lookup() -> None:
    space = simple_space()
    assert space.width_dim("b1").channels == 64
    assert space.depth_dim("s2").choices == (2, 4)
    with pytest.raises(InvalidSubnetError, match=r"no width dimension 's1'"):
        space.width_dim("s1")
    with pytest.raises(InvalidSubnetError, match=r"no depth dimension 'stem'"):
        space.depth_dim("stem")


# -- serialisation ---------------------------------------------------------------------------------


@PROPS
@given(spaces())
def test_space_dict_and_json_round_trip(space: SearchSpace) -> None:
    for back in (SearchSpace.from_dict(space.to_dict()), SearchSpace.from_json(space.to_json())):
        assert back == space
        assert hash(back) == hash(space)
        assert back.to_json() == space.to_json()
        assert back.size == space.size
        assert back.largest() == space.largest() and back.largest().id == space.largest().id
        assert back.smallest() == space.smallest() and back.smallest().id == space.smallest().id
    data = json.loads(space.to_json())
    assert data["schema"] == "tailor.space/1"
    assert [w["name"] for w in data["widths"]] == [d.name for d in space.widths]


@PROPS
@given(spaces(), st.integers(min_value=0, max_value=2**32))
def test_sampled_subnet_survives_json_round_trip_of_space_and_subnet(space: SearchSpace, seed: int) -> None:
    sub = space.sample(seed)
    back_space = SearchSpace.from_json(space.to_json())
    back_sub = Subnet.from_json(sub.to_json())
    assert back_sub.id == sub.id
    assert back_space.contains(back_sub)
    assert back_space.channels(back_sub) == space.channels(sub)


def test_space_to_dict_example() -> None:
    assert simple_space().to_dict() == {
        "schema": "tailor.space/1",
        "widths": [
            {"name": "stem", "channels": 32, "choices": [0.25, 0.5, 0.75, 1.0]},
            {"name": "b1", "channels": 64, "low": 0.25, "step": 8},
        ],
        "depths": [{"name": "s1", "choices": [1, 2, 3]}, {"name": "s2", "choices": [2, 4]}],
    }


def _space_dict(**overrides):
    data = simple_space().to_dict()
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (_space_dict(schema="tailor.space/2"), r"schema is 'tailor\.space/2', expected 'tailor\.space/1'"),
        ({k: v for k, v in _space_dict().items() if k != "schema"}, r"schema is None, expected 'tailor\.space/1'"),
        (_space_dict(extra=1), r"unknown field\(s\) \['extra'\]"),
        (
            _space_dict(widths=[{"name": "w", "channels": 8, "low": 0.5, "stride": 2}]),
            r"width dimension 'w' has unknown field\(s\) \['stride'\]",
        ),
        (
            _space_dict(depths=[{"name": "s", "choices": [1], "max": 3}]),
            r"depth dimension 's' has unknown field\(s\) \['max'\]",
        ),
        (
            _space_dict(widths=[{"name": "w", "channels": 8, "low": 0.5, "choices": [1.0]}]),
            r"width dimension 'w': give exactly one of choices or low",
        ),
        (
            _space_dict(widths=[{"name": "w", "channels": 8}]),
            r"width dimension 'w': give exactly one of choices or low",
        ),
        (_space_dict(widths=[{"name": "w", "low": 0.5}]), r"width dimension 'w': channels must be a positive int"),
        (_space_dict(widths=[{"channels": 8, "low": 0.5}]), r"width dimension name must be a non-empty string"),
        (_space_dict(widths=[{"name": "w", "channels": 12, "low": 0.5, "step": 5}]), r"'w': step 5 must be a positive"),
        (_space_dict(depths=[{"name": "s", "choices": []}]), r"depth dimension 's': choices are empty"),
        (_space_dict(depths=[{"name": "s", "choices": [0, 1]}]), r"depth dimension 's': choice must be a positive integer, got 0$"),
        (
            _space_dict(depths=[{"name": "s", "choices": [1]}, {"name": "s", "choices": [2]}]),
            r"depth dimension 's' appears twice",
        ),
    ],
)
def test_space_from_dict_rejects_bad_data(data, pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize("data", [[], "tailor.space/1", 3, None])
def test_space_from_dict_rejects_non_objects(data) -> None:
    with pytest.raises(InvalidSubnetError, match=rf"must be a JSON object, got {type(data).__name__}"):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        _space_dict(widths=[5]),
        _space_dict(widths=None),
        _space_dict(widths=[["name", "w"]]),
        _space_dict(depths=[{"name": "s", "choices": 3}]),
        _space_dict(widths=[{"name": "w", "channels": 8, "choices": 0.5}]),
    ],
)
def test_space_from_dict_rejects_malformed_dimension_entries(data) -> None:
    # `from_dict` documents that a malformed dimension raises InvalidSubnetError.
    with pytest.raises(InvalidSubnetError):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize("text", ["", "{", "nope", '{"schema": "tailor.space/1",}'])
def test_space_from_json_rejects_malformed_json(text: str) -> None:
    with pytest.raises(InvalidSubnetError, match=r"search space JSON does not parse"):
        SearchSpace.from_json(text)


def test_space_from_json_rejects_wrong_schema() -> None:
    text = json.dumps({"schema": "other/1", "widths": [], "depths": []})
    with pytest.raises(InvalidSubnetError, match=r"schema is 'other/1'"):
        SearchSpace.from_json(text)


# -- building subnets ------------------------------------------------------------------------------


@PROPS
@given(spaces())
def test_largest_and_smallest_are_contained_and_extreme(space: SearchSpace) -> None:
    big, small = space.largest(), space.smallest()
    assert space.contains(big) and big in space
    assert space.contains(small) and small in space
    for dim in space.widths:
        top = dim.choices[-1] if dim.choices is not None else 1.0
        assert big.width(dim.name) == top
        assert small.width(dim.name) == dim.min
        assert space.channels(small)[dim.name] <= space.channels(big)[dim.name]
    for dim in space.depths:
        assert big.depth(dim.name) == max(dim.choices)
        assert small.depth(dim.name) == min(dim.choices)
    assert space.search_dim == len(space.widths)


@PROPS
@given(spaces(), st.integers(min_value=0, max_value=2**32))
def test_sample_is_contained_canonical_and_within_bounds(space: SearchSpace, seed: int) -> None:
    sub = space.sample(seed)
    assert space.contains(sub)
    space.validate(sub)
    assert space.canonical(sub) == sub
    big, small = space.channels(space.largest()), space.channels(space.smallest())
    for name, count in space.channels(sub).items():
        assert small[name] <= count <= big[name]


@PROPS
@given(spaces(), st.integers(min_value=0, max_value=2**32))
def test_sample_is_deterministic_for_a_seed(space: SearchSpace, seed: int) -> None:
    first = space.sample(seed)
    assert space.sample(seed) == first
    assert space.sample(seed).id == first.id
    assert space.sample(random.Random(seed)) == first
    rng_a, rng_b = random.Random(seed), random.Random(seed)
    assert [space.sample(rng_a) for _ in range(5)] == [space.sample(rng_b) for _ in range(5)]


def test_sample_covers_the_space() -> None:
    space = finite_space()
    rng = random.Random(0)
    seen = {space.sample(rng) for _ in range(2000)}
    assert seen == set(space)
    ranged = SearchSpace([WidthDim("r", 16, low=0.5, step=4)])
    counts = {ranged.channels(ranged.sample(rng))["r"] for _ in range(500)}
    assert counts == {8, 12, 16}


@PROPS
@given(spaces(), st.data())
def test_sampled_pairs_have_distinct_ids_when_different(space: SearchSpace, data: st.DataObject) -> None:
    a = space.sample(data.draw(st.integers(min_value=0, max_value=2**32)))
    b = space.sample(data.draw(st.integers(min_value=0, max_value=2**32)))
    assert (a == b) == (a.id == b.id)
    if a == b:
        assert space.channels(a) == space.channels(b)
    else:
        # range widths are sampled on the channel grid, so distinct samples differ in a choice, a
        # channel count or a depth
        differs = [
            d.name
            for d in space.widths
            if (a.width(d.name) != b.width(d.name))
            and (d.choices is not None or space.channels(a)[d.name] != space.channels(b)[d.name])
        ]
        assert differs or a.depths != b.depths


@PROPS
@given(space_and_wm())
def test_from_wm_is_contained_and_at_least_the_request(case: tuple[SearchSpace, list[float]]) -> None:
    space, wm = case
    sub = space.from_wm(wm)
    assert space.contains(sub)
    assert space.canonical(sub) == sub
    for dim, value in zip(space.widths, wm):
        got = sub.width(dim.name)
        if dim.choices is not None:
            above = [c for c in dim.choices if c >= value]
            # the smallest choice at or above the request (a request above every choice gets the largest),
            # named by the smallest choice that selects the same channel count
            chosen = above[0] if above else dim.choices[-1]
            assert dim.channels_at(got) == dim.channels_at(chosen) and got <= chosen
            assert got == min(c for c in dim.choices if dim.channels_at(c) == dim.channels_at(chosen))
        else:
            target = max(dim.low, value)
            assert got >= target - TOL
            assert dim.channels_at(got) == dim.channels_at(target)
            assert got == dim.width_for(dim.channels_at(target))
    for dim in space.depths:
        assert sub.depth(dim.name) == dim.max


@PROPS
@given(space_and_wm(), st.data())
def test_from_wm_with_explicit_depths(case: tuple[SearchSpace, list[float]], data: st.DataObject) -> None:
    space, wm = case
    depths = {d.name: data.draw(st.sampled_from(d.choices)) for d in space.depths}
    assert space.from_wm(wm, depths=depths).depths == depths


@PROPS
@given(spaces(), st.integers(min_value=0, max_value=2**32))
def test_from_wm_inverts_to_wm_on_samples(space: SearchSpace, seed: int) -> None:
    sub = space.sample(seed)
    wm = space.to_wm(sub)
    assert len(wm) == space.search_dim
    assert wm == [sub.width(d.name) for d in space.widths]
    assert space.from_wm(wm, depths=sub.depths) == space.canonical(sub) == sub


@PROPS
@given(space_and_member())
def test_from_wm_of_to_wm_is_canonical(case: tuple[SearchSpace, Subnet]) -> None:
    space, sub = case
    assert space.contains(sub)
    assert space.from_wm(space.to_wm(sub), depths=sub.depths) == space.canonical(sub)


@PROPS
@given(space_and_member())
def test_canonical_is_idempotent_and_preserves_channels(case: tuple[SearchSpace, Subnet]) -> None:
    space, sub = case
    canon = space.canonical(sub)
    assert space.contains(canon)
    assert space.canonical(canon) == canon
    assert space.channels(canon) == space.channels(sub)
    assert canon.depths == sub.depths
    for dim in space.widths:
        if dim.choices is not None:
            assert canon.width(dim.name) == min(
                c for c in dim.choices if dim.channels_at(c) == dim.channels_at(sub.width(dim.name))
            )
        else:
            assert canon.width(dim.name) * dim.channels == pytest.approx(space.channels(sub)[dim.name])


@PROPS
@given(space_and_member())
def test_channels_match_active_channels(case: tuple[SearchSpace, Subnet]) -> None:
    space, sub = case
    counts = space.channels(sub)
    assert set(counts) == {d.name for d in space.widths}
    for dim in space.widths:
        count = counts[dim.name]
        assert count == active_channels(sub.width(dim.name), dim.channels, dim.step)
        assert count % dim.step == 0
        assert dim.step <= count <= dim.channels


def test_canonical_merges_widths_with_the_same_channels() -> None:
    space = SearchSpace([WidthDim("r", 10, low=0.2)])
    a, b = Subnet({"r": 0.25}), Subnet({"r": 0.3})
    assert a != b
    assert space.canonical(a) == space.canonical(b) == Subnet({"r": 0.3})
    assert space.canonical(a).id == space.canonical(b).id


def test_uniform() -> None:
    space = simple_space()
    sub = space.uniform(0.5)
    assert sub.widths == {"stem": 0.5, "b1": 0.5}
    assert sub.depths == {"s1": 3, "s2": 4}
    assert space.uniform(1.0, depth="min").depths == {"s1": 1, "s2": 2}
    assert space.uniform(1.0) == space.largest()
    with pytest.raises(InvalidSubnetError, match=r"width 'stem' = 0\.6 is outside the space"):
        space.uniform(0.6)
    with pytest.raises(InvalidSubnetError, match=r"width 'b1' = 0\.2 is outside the space"):
        SearchSpace([WidthDim("stem", 8, choices=(0.2, 1.0)), WidthDim("b1", 8, low=0.25)]).uniform(0.2)
    with pytest.raises(InvalidSubnetError, match=r"depth must be 'max' or 'min', got 'mid'"):
        space.uniform(1.0, depth="mid")


# -- finite spaces ---------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(spaces(finite=True))
def test_finite_space_size_len_and_iteration(space: SearchSpace) -> None:
    expected = math.prod(len(d.choices) for d in space.widths) * math.prod(len(d.choices) for d in space.depths)
    assert space.size == expected
    assert len(space) == expected
    subs = list(space)
    assert len(subs) == expected
    assert len(set(subs)) == expected
    assert len({s.id for s in subs}) == expected
    assert all(space.contains(s) for s in subs)
    assert list(space) == subs  # fixed order
    assert space.largest() in subs and space.smallest() in subs


def test_finite_space_example() -> None:
    space = finite_space()
    assert space.size == len(space) == 12
    assert len(set(space)) == 12
    assert Subnet({"a": 0.5, "b": 0.3}, {"s": 1}) in set(space)


def test_empty_space_has_one_empty_subnet() -> None:
    space = SearchSpace()
    assert space.size == len(space) == 1
    assert list(space) == [Subnet()]
    assert space.largest() == space.smallest() == space.from_wm([]) == Subnet()


@PROPS
@given(spaces())
def test_continuous_spaces_have_no_size(space: SearchSpace) -> None:
    continuous = any(d.choices is None for d in space.widths)
    assert (space.size is None) == continuous
    if continuous:
        with pytest.raises(InvalidSubnetError, match=r"continuous width ranges; it has no finite size"):
            len(space)
        with pytest.raises(InvalidSubnetError, match=r"continuous width ranges; it cannot be enumerated"):
            next(iter(space))
    else:
        assert len(list(islice(space, 1000))) == min(1000, space.size)


# -- validation errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "pattern"),
    [
        (
            Subnet({"stem": 0.6, "b1": 1.0}, {"s1": 1, "s2": 2}),
            r"width 'stem' = 0\.6 is outside the space \(allowed: \[0\.25, 0\.5, 0\.75, 1\.0\]\)",
        ),
        (
            Subnet({"stem": 1.0, "b1": 0.2}, {"s1": 1, "s2": 2}),
            r"width 'b1' = 0\.2 is outside the space \(allowed: \[0\.25, 1\]\)",
        ),
        (
            Subnet({"stem": 1.0, "b1": 1.0}, {"s1": 4, "s2": 2}),
            r"depth 's1' = 4 is outside the space \(allowed: \[1, 2, 3\]\)",
        ),
        (Subnet({"stem": 1.0, "b1": 1.0}, {"s1": 1, "s2": 3}), r"depth 's2' = 3 is outside the space"),
        (Subnet({"b1": 1.0}, {"s1": 1, "s2": 2}), r"lacks width dimension 'stem'"),
        (Subnet({"stem": 1.0, "b1": 1.0}, {"s2": 2}), r"lacks depth dimension 's1'"),
        (
            Subnet({"stem": 1.0, "b1": 1.0, "zz": 0.5}, {"s1": 1, "s2": 2}),
            r"width dimension\(s\) \['zz'\] are not in the space",
        ),
        (
            Subnet({"stem": 1.0, "b1": 1.0}, {"s1": 1, "s2": 2, "s9": 1}),
            r"depth dimension\(s\) \['s9'\] are not in the space",
        ),
        (
            Subnet({"stem": 1.0, "b1": 1.0, "s1": 0.5}, {"s1": 1, "s2": 2}),
            r"width dimension\(s\) \['s1'\] are not in the space",
        ),
    ],
)
def test_validate_names_the_offending_dimension(sub: Subnet, pattern: str) -> None:
    space = simple_space()
    with pytest.raises(InvalidSubnetError, match=pattern):
        space.validate(sub)
    assert not space.contains(sub)
    assert sub not in space
    for method in (space.canonical, space.channels, space.to_wm):
        with pytest.raises(InvalidSubnetError, match=pattern):
            method(sub)


def test_validate_lacking_id_names_the_subnet() -> None:
    sub = Subnet({"b1": 1.0}, {"s1": 1, "s2": 2})
    with pytest.raises(InvalidSubnetError, match=sub.id):
        simple_space().validate(sub)


@pytest.mark.parametrize("obj", [None, {"widths": {}, "depths": {}}, "sn-000000000000"])
def test_validate_rejects_non_subnets(obj) -> None:
    space = simple_space()
    with pytest.raises(InvalidSubnetError, match=rf"expected a Subnet, got {type(obj).__name__}"):
        space.validate(obj)
    assert not space.contains(obj)
    assert obj not in space


@PROPS
@given(space_and_member(), st.data())
def test_any_choice_outside_the_dimension_is_rejected(case: tuple[SearchSpace, Subnet], data: st.DataObject) -> None:
    space, sub = case
    dim = data.draw(st.sampled_from(space.widths))
    value = data.draw(st.floats(min_value=1e-6, max_value=1.0))
    assume(not dim.contains(value))
    bad = sub.replace(widths={dim.name: value})
    with pytest.raises(InvalidSubnetError, match=rf"width '{dim.name}' = {value!r} is outside the space"):
        space.validate(bad)


@pytest.mark.parametrize("wm", [[], [1.0], [1.0, 1.0, 1.0]])
def test_from_wm_rejects_wrong_length(wm: list[float]) -> None:
    with pytest.raises(InvalidSubnetError, match=rf"expected 2 width multipliers, got {len(wm)}"):
        simple_space().from_wm(wm)


@pytest.mark.parametrize(
    ("wm", "pattern"),
    [
        ([-0.1, 0.5], r"width 'stem' = -0\.1 is not in \[0, 1\]"),
        ([0.5, 1.5], r"width 'b1' = 1\.5 is not in \[0, 1\]"),
        ([math.nan, 0.5], r"width 'stem' = nan is not in"),
        ([0.5, math.inf], r"width 'b1' = inf is not in"),
        ([0.5, -math.inf], r"width 'b1' = -inf is not in"),
    ],
)
def test_from_wm_rejects_values_outside_unit_interval(wm: list[float], pattern: str) -> None:
    with pytest.raises(InvalidSubnetError, match=pattern):
        simple_space().from_wm(wm)


@PROPS
@given(space_and_wm(), st.data())
def test_from_wm_rejects_any_out_of_range_value(case: tuple[SearchSpace, list[float]], data: st.DataObject) -> None:
    space, wm = case
    i = data.draw(st.integers(min_value=0, max_value=len(wm) - 1))
    bad = data.draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9), st.just(math.nan)))
    wm[i] = bad
    with pytest.raises(InvalidSubnetError, match=rf"width '{space.widths[i].name}' = "):
        space.from_wm(wm)


def test_from_wm_rejects_depths_outside_the_space() -> None:
    space = simple_space()
    with pytest.raises(InvalidSubnetError, match=r"depth 's2' = 3 is outside the space"):
        space.from_wm([1.0, 1.0], depths={"s2": 3})
    with pytest.raises(InvalidSubnetError, match=r"depth dimension\(s\) \['s7'\] are not in the space"):
        space.from_wm([1.0, 1.0], depths={"s7": 1})


def test_from_wm_examples() -> None:
    space = simple_space()
    sub = space.from_wm([0.3, 0.3])
    assert sub.width("stem") == 0.5  # smallest choice >= 0.3
    assert sub.width("b1") == 0.375  # 0.3 * 64 = 19.2 -> 24 channels (step 8) -> 24 / 64
    assert space.channels(sub) == {"stem": 16, "b1": 24}
    assert space.from_wm([0.0, 0.0]).widths == {"stem": 0.25, "b1": 0.25}
    assert space.from_wm([1.0, 1.0]) == space.largest()


# -- range lows that sit just above a channel boundary ---------------------------------------------

# low * channels = 3.0000000001 needs 4 channels, but active_channels rounds the product to 9 decimals
# first and keeps 3, i.e. width 0.3 < low: the space then produces subnets it does not contain.
BOUNDARY_SPACE = SearchSpace([WidthDim("r", 10, low=0.30000000001)])


def test_sample_stays_in_space_when_low_is_just_above_a_channel_boundary() -> None:
    rng = random.Random(0)
    samples = [BOUNDARY_SPACE.sample(rng) for _ in range(200)]
    outside = [s for s in samples if not BOUNDARY_SPACE.contains(s)]
    assert outside == []


def test_canonical_stays_in_space_when_low_is_just_above_a_channel_boundary() -> None:
    canon = BOUNDARY_SPACE.canonical(BOUNDARY_SPACE.smallest())
    assert BOUNDARY_SPACE.contains(canon)


def test_from_wm_zero_works_when_low_is_just_above_a_channel_boundary() -> None:
    sub = BOUNDARY_SPACE.from_wm([0.0])
    assert BOUNDARY_SPACE.contains(sub)
