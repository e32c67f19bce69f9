"""Subnet samplers: which subnets one training step runs.

Every sampler is a pure function of (space, step seed): the trainer derives the seed from the run's
seed, epoch and step, so that all distributed ranks sample the same subnets and a resumed run samples
what the uninterrupted one would have. The first subnet of a step is the teacher for in-place
distillation when it is the largest one (`sandwich`, `random_min_max`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tailor.checks import non_negative_int, positive_int
from tailor.errors import InvalidSubnetError
from tailor.space import SearchSpace, Subnet


class SubnetSampler:
    """Base class: `sample(space, rng)` gives the subnets of one step, the teacher first if there is one."""

    name: str = "base"
    #: Whether the first subnet of every step is the largest (it then teaches the others).
    largest_first: bool = False

    def sample(self, space: SearchSpace, rng: random.Random) -> list[Subnet]:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """JSON description (stored in checkpoints and metrics logs)."""
        return {"name": self.name}


@dataclass
class SandwichSampler(SubnetSampler):
    """US-Nets' sandwich rule: the largest, the smallest and `num_random` random subnets per step.

    Random subnets are drawn per dimension (per-layer widths and per-stage depths), so every subnet
    of the space is trained, not only uniform ones.
    """

    num_random: int = 2
    name: str = "sandwich"
    largest_first: bool = True

    def __post_init__(self) -> None:
        non_negative_int("sandwich: num_random", self.num_random, InvalidSubnetError)

    def sample(self, space: SearchSpace, rng: random.Random) -> list[Subnet]:
        return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(self.num_random)]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "num_random": self.num_random}


@dataclass
class RandomMinMaxSampler(SubnetSampler):
    """Model Slicing's `random_min_max`: the largest, the smallest and `num_random` uniform-width subnets.

    A random subnet has one slice rate for every width dimension (drawn uniformly between the space's
    smallest rate and 1, then snapped up to each dimension's choices) and random depths.
    """

    num_random: int = 1
    name: str = "random_min_max"
    largest_first: bool = True

    def __post_init__(self) -> None:
        non_negative_int("random_min_max: num_random", self.num_random, InvalidSubnetError)

    def sample(self, space: SearchSpace, rng: random.Random) -> list[Subnet]:
        return [space.largest(), space.smallest()] + [uniform_rate_subnet(space, rng) for _ in range(self.num_random)]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "num_random": self.num_random}


def uniform_rate_subnet(space: SearchSpace, rng: random.Random) -> Subnet:
    """A subnet with one random slice rate for all width dimensions and random per-stage depths."""
    low = min((dim.min for dim in space.widths), default=1.0)
    rate = rng.uniform(low, 1.0)
    depths = {d.name: rng.choice(d.choices) for d in space.depths}
    return space.from_wm([rate] * space.search_dim, depths)


@dataclass
class UniformSampler(SubnetSampler):
    """`num_subnets` subnets drawn uniformly per dimension (no largest or smallest forced in)."""

    num_subnets: int = 1
    name: str = "uniform"

    def __post_init__(self) -> None:
        positive_int("uniform: num_subnets", self.num_subnets, InvalidSubnetError)

    def sample(self, space: SearchSpace, rng: random.Random) -> list[Subnet]:
        return [space.sample(rng) for _ in range(self.num_subnets)]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "num_subnets": self.num_subnets}


class FixedSampler(SubnetSampler):
    """The same list of subnets every step (e.g. a few deployment targets); the largest first if listed."""

    name = "fixed"

    def __init__(self, subnets: Sequence[Subnet]) -> None:
        if not subnets:
            raise InvalidSubnetError("fixed sampler: the list of subnets is empty")
        for sub in subnets:
            if not isinstance(sub, Subnet):
                raise InvalidSubnetError(f"fixed sampler: expected Subnet values, got {type(sub).__name__}")
        self.subnets = list(subnets)

    def sample(self, space: SearchSpace, rng: random.Random) -> list[Subnet]:
        subs = [space.canonical(sub) for sub in self.subnets]
        largest = space.canonical(space.largest())
        self.largest_first = largest in subs
        if self.largest_first:
            subs.remove(largest)
            subs.insert(0, largest)
        return subs

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "subnets": [sub.to_dict() for sub in self.subnets]}


SAMPLERS = ("sandwich", "random_min_max", "uniform", "fixed")


def make_sampler(spec: str | SubnetSampler | Sequence[Subnet], num_random: int | None = None) -> SubnetSampler:
    """A sampler from its name (`sandwich`, `random_min_max`, `uniform`), an instance, or a list of subnets."""
    if isinstance(spec, SubnetSampler):
        return spec
    if isinstance(spec, str):
        if spec == "sandwich":
            return SandwichSampler(2 if num_random is None else num_random)
        if spec == "random_min_max":
            return RandomMinMaxSampler(1 if num_random is None else num_random)
        if spec == "uniform":
            return UniformSampler(1 if num_random is None else num_random)
        raise InvalidSubnetError(f"unknown sampler {spec!r}; choose one of {', '.join(SAMPLERS[:3])} or a subnet list")
    return FixedSampler(list(spec))
