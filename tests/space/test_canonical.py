"""`SearchSpace.canonical`: one network, one name — widths of blocks the depths skip are don't-cares."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.errors import InvalidSubnetError
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim

CHOICES = (0.25, 0.5, 0.75, 1.0)


@st.composite
def blocked_spaces(draw: st.DrawFn) -> SearchSpace:
    """A space with stages whose blocks each own a width dimension (as ResNet's mid channels), plus a shared one."""
    stages = draw(st.integers(1, 3))
    widths = [WidthDim("shared", draw(st.integers(4, 32)), choices=CHOICES)]
    depths = []
    for k in range(1, stages + 1):
        blocks = draw(st.integers(1, 4))
        low = draw(st.integers(1, blocks))
        depths.append(DepthDim(f"stage{k}", tuple(range(low, blocks + 1))))
        for j in range(1, blocks + 1):
            channels = draw(st.integers(2, 24))
            widths.append(WidthDim(f"stage{k}.block{j}", channels, choices=CHOICES, block=(f"stage{k}", j)))
    return SearchSpace(widths, depths)


@settings(max_examples=80, deadline=None)
@given(blocked_spaces(), st.integers(0, 2**31))
def test_canonical_sets_exactly_the_skipped_widths_to_their_minimum(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    widths = {d.name: rng.choice(CHOICES) for d in space.widths}
    depths = {d.name: rng.choice(d.choices) for d in space.depths}
    sub = Subnet(widths, depths)
    canonical = space.canonical(sub)
    skipped = set(space.skipped(sub))
    assert skipped == {d.name for d in space.widths if d.block and depths[d.block[0]] < d.block[1]}
    for dim in space.widths:
        expected = dim.min if dim.name in skipped else widths[dim.name]
        assert canonical.width(dim.name) == dim.canonical(expected)  # and the smallest naming its channel count
    assert canonical.depths == depths and space.contains(canonical)
    assert space.canonical(canonical) == canonical  # idempotent
    # any other widths on the skipped dimensions name the same network
    other = sub.replace(widths={name: rng.choice(CHOICES) for name in skipped})
    assert space.canonical(other) == canonical


@settings(max_examples=40, deadline=None)
@given(blocked_spaces(), st.integers(0, 2**31))
def test_sample_from_wm_and_uniform_are_canonical(space: SearchSpace, seed: int) -> None:
    sub = space.sample(seed)
    assert space.canonical(sub) == sub
    depths = {d.name: d.min for d in space.depths}
    assert space.canonical(space.from_wm([0.5] * space.search_dim, depths)) == space.from_wm(
        [0.5] * space.search_dim, depths
    )
    assert space.canonical(space.uniform(0.75, "min")) == space.uniform(0.75, "min")


def test_block_dimensions_round_trip_through_json() -> None:
    space = SearchSpace(
        [WidthDim("s1.b2", 8, choices=CHOICES, block=("s1", 2)), WidthDim("out", 8, low=0.25)], [DepthDim("s1", (1, 2))]
    )
    data = space.to_dict()
    assert data["widths"][0]["block"] == ["s1", 2] and "block" not in data["widths"][1]
    assert SearchSpace.from_json(space.to_json()) == space


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (("s9", 1), "block names no depth dimension 's9'"),
        (("s1", 3), "block 3 of 's1', which has at most 2 blocks"),
        (("s1", 0), "block must be"),
        ("s1", "block must be"),
    ],
)
def test_bad_block_annotations_are_refused(block: object, message: str) -> None:
    with pytest.raises(InvalidSubnetError, match=message):
        SearchSpace([WidthDim("w", 8, choices=CHOICES, block=block)], [DepthDim("s1", (1, 2))])  # type: ignore[arg-type]
