"""Subnet samplers: what each step trains, determinism, and errors."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor import InvalidSubnetError, create_model
from tailor.train import FixedSampler, RandomMinMaxSampler, SandwichSampler, UniformSampler, make_sampler
from tailor.train.samplers import uniform_rate_subnet

SPACE = create_model("resnet20", num_classes=10).space
MOBILE_SPACE = create_model("mobilenet_v2", num_classes=10).space


@given(seed=st.integers(0, 2**32), num_random=st.integers(0, 4))
@settings(max_examples=30, deadline=None)
def test_sandwich_is_largest_smallest_then_random(seed: int, num_random: int) -> None:
    subs = SandwichSampler(num_random).sample(SPACE, random.Random(seed))
    assert len(subs) == 2 + num_random
    assert subs[0] == SPACE.largest() and subs[1] == SPACE.smallest()
    assert all(SPACE.contains(s) for s in subs)
    assert subs == SandwichSampler(num_random).sample(SPACE, random.Random(seed))


@given(seed=st.integers(0, 2**32))
@settings(max_examples=30, deadline=None)
def test_random_min_max_uses_one_rate_for_every_width(seed: int) -> None:
    for space in (SPACE, MOBILE_SPACE):
        largest, smallest, middle = RandomMinMaxSampler(1).sample(space, random.Random(seed))
        assert largest == space.largest() and smallest == space.smallest()
        space.validate(middle)
        # one rate r snapped up per dimension: every width is the smallest choice >= r, so some r lies
        # above each dimension's next-lower choice and at or below every chosen width; the widths of blocks the
        # depths skip are don't-cares, named by their minimum (canonical form)
        skipped = set(space.skipped(middle))
        assert all(middle.widths[name] == space.width_dim(name).min for name in skipped)
        active = [dim for dim in space.widths if dim.name not in skipped]
        below = [max((c for c in dim.choices if c < middle.widths[dim.name]), default=0.0) for dim in active]
        assert max(below) < min(middle.widths[dim.name] for dim in active)


def test_uniform_rate_subnet_snaps_every_dimension_to_the_same_rate() -> None:
    rng = random.Random(3)
    for _ in range(50):
        sub = uniform_rate_subnet(SPACE, rng)
        # resnet20 dims share the choices (0.25, 0.5, 0.75, 1.0): one rate means one width on every dimension
        # the subnet runs (those of blocks its depths skip are don't-cares, at their minimum)
        skipped = set(SPACE.skipped(sub))
        assert len({w for name, w in sub.widths.items() if name not in skipped}) == 1
        assert {sub.widths[name] for name in skipped} <= {0.25}


def test_uniform_sampler_draws_varied_subnets() -> None:
    subs = UniformSampler(200).sample(SPACE, random.Random(0))
    assert len(set(subs)) > 100


def test_fixed_sampler_puts_the_largest_first() -> None:
    small, big = SPACE.smallest(), SPACE.largest()
    sampler = FixedSampler([small, big])
    assert sampler.sample(SPACE, random.Random(0)) == [big, small]
    assert sampler.largest_first
    only_small = FixedSampler([small])
    assert only_small.sample(SPACE, random.Random(0)) == [small]
    assert not only_small.largest_first


def test_make_sampler_by_name_and_errors() -> None:
    assert isinstance(make_sampler("sandwich"), SandwichSampler)
    assert make_sampler("random_min_max", 3).num_random == 3
    assert isinstance(make_sampler([SPACE.largest()]), FixedSampler)
    with pytest.raises(InvalidSubnetError, match="unknown sampler 'sandwitch'"):
        make_sampler("sandwitch")
    with pytest.raises(InvalidSubnetError, match="empty"):
        FixedSampler([])
    with pytest.raises(InvalidSubnetError, match="num_random"):
        SandwichSampler(-1)
