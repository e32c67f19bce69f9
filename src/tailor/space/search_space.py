"""`SearchSpace`: which subnets a supernet can run, and how to name, sample and check them.

A space has width dimensions (each an independent group of channels, with a full channel count and
either a finite set of multipliers or a range [low, 1]) and depth dimensions (one per stage: which
block counts are allowed). Channels tied by a residual add or a depthwise conv share one dimension,
so `search_dim` counts only independent choices, as the slimmable-models seed does.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tailor.checks import positive_int
from tailor.errors import InvalidSubnetError
from tailor.space.subnet import Subnet, check_width

SPACE_SCHEMA = "tailor.space/1"


def active_channels(width: float, channels: int, step: int = 1) -> int:
    """Channels kept at multiplier `width`: ceil(width * channels), rounded up to a multiple of `step`.

    The product is rounded to 9 decimals first, so that 0.3 * 10 counts as 3, not 4.
    """
    count = math.ceil(round(width * channels, 9))
    count = -(-count // step) * step
    return max(step, min(channels, count))


@dataclass(frozen=True)
class WidthDim:
    """One independent width choice: `channels` at full width, and `choices` or a range [low, 1].

    `step` forces active channel counts to multiples of it (grouped convolutions keep whole groups).
    `block = (depth dimension, k)` says that only block k (1-based) of that stage uses these channels, so the
    width is a don't-care in subnets that run fewer than k blocks there (`SearchSpace.canonical` then
    names it by its minimum); None: the channels are used at every depth.
    """

    name: str
    channels: int
    choices: tuple[float, ...] | None = None
    low: float | None = None
    step: int = 1
    block: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSubnetError(f"width dimension name must be a non-empty string, got {self.name!r}")
        positive_int(f"width dimension {self.name!r}: channels", self.channels, InvalidSubnetError)
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 1 or self.channels % self.step:
            raise InvalidSubnetError(
                f"width dimension {self.name!r}: step {self.step!r} must be a positive divisor of channels {self.channels}"
            )
        if (self.choices is None) == (self.low is None):
            raise InvalidSubnetError(f"width dimension {self.name!r}: give exactly one of choices or low")
        if self.choices is not None:
            if not self.choices:
                raise InvalidSubnetError(f"width dimension {self.name!r}: choices are empty")
            values = [check_width(f"width dimension {self.name!r}: choice", value) for value in self.choices]
            object.__setattr__(self, "choices", tuple(sorted(set(values))))
        else:
            object.__setattr__(self, "low", check_width(f"width dimension {self.name!r}: low", self.low))
        if self.block is not None:
            block = tuple(self.block) if isinstance(self.block, (tuple, list)) else None
            if (
                block is None
                or len(block) != 2
                or not isinstance(block[0], str)
                or not block[0]
                or isinstance(block[1], bool)
                or not isinstance(block[1], int)
                or block[1] < 1
            ):
                raise InvalidSubnetError(
                    f"width dimension {self.name!r}: block must be (depth dimension name, block number >= 1), "
                    f"got {self.block!r}"
                )
            object.__setattr__(self, "block", block)

    @property
    def min(self) -> float:
        """Smallest allowed multiplier."""
        return self.choices[0] if self.choices is not None else self.low  # type: ignore[return-value]

    def contains(self, width: float) -> bool:
        """Whether `width` is an allowed multiplier of this dimension."""
        if self.choices is not None:
            return width in self.choices
        return self.low <= width <= 1.0  # type: ignore[operator]

    def channels_at(self, width: float) -> int:
        """Active channel count at multiplier `width`."""
        return active_channels(width, self.channels, self.step)

    def snap(self, value: float) -> float:
        """The smallest allowed multiplier >= `value` (the largest choice when none is that large)."""
        if self.choices is not None:
            for choice in self.choices:
                if choice >= value - 1e-12:
                    return choice
            return self.choices[-1]
        return min(1.0, max(self.low, value))  # type: ignore[type-var]

    def canonical(self, width: float) -> float:
        """The multiplier that names `width`'s channel count: the smallest choice selecting the same
        channels, or `width_for` of the count on a range."""
        canonical = self.width_of_channels(self.channels_at(width))
        if canonical is None:  # only for a width outside the dimension
            raise InvalidSubnetError(f"width {self.name!r} = {width!r} is outside the dimension")
        return canonical

    def width_of_channels(self, count: int) -> float | None:
        """The canonical multiplier that selects exactly `count` channels, or None if none does."""
        if self.choices is not None:
            return next((c for c in self.choices if self.channels_at(c) == count), None)
        width = self.width_for(count)
        return width if width <= 1.0 and self.channels_at(width) == count else None

    def width_for(self, count: int) -> float:
        """The canonical multiplier of a range dimension selecting `count` channels: count / channels,
        raised to `low` when `low` sits just above that fraction (within the rounding of `channels_at`)."""
        return max(self.low, count / self.channels) if self.low is not None else count / self.channels

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "channels": self.channels}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        else:
            out["low"] = self.low
        if self.step != 1:
            out["step"] = self.step
        if self.block is not None:
            out["block"] = list(self.block)
        return out


@dataclass(frozen=True)
class DepthDim:
    """One stage's elastic depth: the allowed numbers of active blocks (`max(choices)` blocks exist)."""

    name: str
    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSubnetError(f"depth dimension name must be a non-empty string, got {self.name!r}")
        if not self.choices:
            raise InvalidSubnetError(f"depth dimension {self.name!r}: choices are empty")
        for value in self.choices:
            positive_int(f"depth dimension {self.name!r}: choice", value, InvalidSubnetError)
        object.__setattr__(self, "choices", tuple(sorted(set(self.choices))))

    @property
    def max(self) -> int:
        return self.choices[-1]

    @property
    def min(self) -> int:
        return self.choices[0]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "choices": list(self.choices)}


def _entries(data: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    """The list of dimension objects under `field`, each checked to be a JSON object."""
    items = data.get(field, [])
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise InvalidSubnetError(f"search space field {field!r} must be a list of objects, got {items!r}")
    return items


class SearchSpace:
    """The set of subnets of one supernet: width dimensions and per-stage depth dimensions."""

    def __init__(self, widths: Sequence[WidthDim] = (), depths: Sequence[DepthDim] = ()) -> None:
        self.widths: tuple[WidthDim, ...] = tuple(widths)
        self.depths: tuple[DepthDim, ...] = tuple(depths)
        for kind, dims in (("width", self.widths), ("depth", self.depths)):
            seen: set[str] = set()
            for dim in dims:
                if dim.name in seen:
                    raise InvalidSubnetError(f"{kind} dimension {dim.name!r} appears twice in the space")
                seen.add(dim.name)
        self._width_by_name = {d.name: d for d in self.widths}
        self._depth_by_name = {d.name: d for d in self.depths}
        for dim in self.widths:
            if dim.block is None:
                continue
            stage, number = dim.block
            if stage not in self._depth_by_name:
                raise InvalidSubnetError(f"width dimension {dim.name!r}: block names no depth dimension {stage!r}")
            if number > self._depth_by_name[stage].max:
                raise InvalidSubnetError(
                    f"width dimension {dim.name!r}: block {number} of {stage!r}, which has at most "
                    f"{self._depth_by_name[stage].max} blocks"
                )

    # -- shape -----------------------------------------------------------------------------------
    @property
    def search_dim(self) -> int:
        """Number of independent width dimensions (the length of a `wm` vector)."""
        return len(self.widths)

    def width_dim(self, name: str) -> WidthDim:
        try:
            return self._width_by_name[name]
        except KeyError:
            raise InvalidSubnetError(f"the space has no width dimension {name!r}") from None

    def depth_dim(self, name: str) -> DepthDim:
        try:
            return self._depth_by_name[name]
        except KeyError:
            raise InvalidSubnetError(f"the space has no depth dimension {name!r}") from None

    def __len__(self) -> int:
        """Number of distinct subnets; raises for spaces with a continuous width range."""
        size = self.size
        if size is None:
            raise InvalidSubnetError("the space has continuous width ranges; it has no finite size")
        return size

    @property
    def size(self) -> int | None:
        """Number of distinct subnets, or None when a width dimension is a continuous range."""
        total = 1
        for dim in self.widths:
            if dim.choices is None:
                return None
            total *= len(dim.choices)
        for depth in self.depths:
            total *= len(depth.choices)
        return total

    # -- building subnets ------------------------------------------------------------------------
    def _depths_at(self, which: str) -> dict[str, int]:
        return {d.name: (d.max if which == "max" else d.min) for d in self.depths}

    def largest(self) -> Subnet:
        """Every width at 1 (its largest choice) and every stage at full depth."""
        return Subnet({d.name: d.choices[-1] if d.choices else 1.0 for d in self.widths}, self._depths_at("max"))

    def smallest(self) -> Subnet:
        """Every width at its minimum and every stage at its minimum depth."""
        return Subnet({d.name: d.min for d in self.widths}, self._depths_at("min"))

    def uniform(self, width: float, depth: str = "max") -> Subnet:
        """All widths at `width` (must be allowed in every dimension); depths at "max" or "min"."""
        if depth not in ("max", "min"):
            raise InvalidSubnetError(f"uniform: depth must be 'max' or 'min', got {depth!r}")
        sub = Subnet({d.name: width for d in self.widths}, self._depths_at(depth))
        self.validate(sub)
        return self._dont_cares_at_min(sub)

    def sample(self, rng: random.Random | int | None = None) -> Subnet:
        """A subnet drawn uniformly per dimension (choices uniformly, ranges on the channel grid)."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        widths = {}
        for dim in self.widths:
            if dim.choices is not None:
                widths[dim.name] = dim.canonical(rng.choice(dim.choices))
            else:
                lo = dim.channels_at(dim.low)  # type: ignore[arg-type]
                counts = range(lo, dim.channels + 1, dim.step)
                widths[dim.name] = dim.width_for(rng.choice(counts))
        depths = {d.name: rng.choice(d.choices) for d in self.depths}
        return self._dont_cares_at_min(Subnet(widths, depths))

    def from_wm(self, wm: Sequence[float], depths: Mapping[str, int] | None = None) -> Subnet:
        """Subnet from a flat vector of width multipliers (one per `search_dim`, in `widths` order).

        Values are optimiser outputs in [0, 1]: each is raised to the smallest allowed multiplier at
        or above it (`WidthDim.snap`). Depths default to full depth.
        """
        values = list(wm)
        if len(values) != self.search_dim:
            raise InvalidSubnetError(f"from_wm: expected {self.search_dim} width multipliers, got {len(values)}")
        widths = {}
        for dim, value in zip(self.widths, values):
            try:  # floats, ints, numpy scalars, 0-d tensors; not bools or strings
                if isinstance(value, (bool, str, bytes)):
                    raise TypeError
                value = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InvalidSubnetError(f"from_wm: width {dim.name!r} = {value!r} is not a number") from None
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise InvalidSubnetError(f"from_wm: width {dim.name!r} = {value!r} is not in [0, 1]")
            widths[dim.name] = dim.canonical(dim.snap(value))
        chosen = {**self._depths_at("max"), **(depths or {})}
        sub = Subnet(widths, chosen)
        self.validate(sub)
        return self._dont_cares_at_min(sub)

    def to_wm(self, sub: Subnet) -> list[float]:
        """The flat width vector of `sub` (inverse of `from_wm` on valid subnets)."""
        self.validate(sub)
        return [sub.width(d.name) for d in self.widths]

    def __iter__(self) -> Iterator[Subnet]:
        """Every subnet of a finite space, in a fixed order."""
        if self.size is None:
            raise InvalidSubnetError("the space has continuous width ranges; it cannot be enumerated")
        width_choices = [d.choices for d in self.widths]
        depth_choices = [d.choices for d in self.depths]
        for ws in itertools.product(*width_choices):
            for ds in itertools.product(*depth_choices):
                yield Subnet(
                    {d.name: w for d, w in zip(self.widths, ws)},
                    {d.name: v for d, v in zip(self.depths, ds)},
                )

    # -- checking ----------------------------------------------------------------------------------
    def validate(self, sub: Subnet) -> None:
        """Raise `InvalidSubnetError` naming the first dimension where `sub` leaves the space."""
        if not isinstance(sub, Subnet):
            raise InvalidSubnetError(f"expected a Subnet, got {type(sub).__name__}")
        widths, depths = sub.widths, sub.depths
        for dim in self.widths:
            if dim.name not in widths:
                raise InvalidSubnetError(f"subnet {sub.id} lacks width dimension {dim.name!r}")
            value = widths.pop(dim.name)
            if not dim.contains(value):
                allowed = list(dim.choices) if dim.choices is not None else f"[{dim.low}, 1]"
                raise InvalidSubnetError(f"width {dim.name!r} = {value!r} is outside the space (allowed: {allowed})")
        for dim in self.depths:
            if dim.name not in depths:
                raise InvalidSubnetError(f"subnet {sub.id} lacks depth dimension {dim.name!r}")
            value = depths.pop(dim.name)
            if value not in dim.choices:
                raise InvalidSubnetError(
                    f"depth {dim.name!r} = {value!r} is outside the space (allowed: {list(dim.choices)})"
                )
        if widths:
            raise InvalidSubnetError(f"width dimension(s) {sorted(widths)} are not in the space")
        if depths:
            raise InvalidSubnetError(f"depth dimension(s) {sorted(depths)} are not in the space")

    def contains(self, sub: Subnet) -> bool:
        """Whether `sub` is a subnet of this space."""
        try:
            self.validate(sub)
        except InvalidSubnetError:
            return False
        return True

    def __contains__(self, sub: object) -> bool:
        return isinstance(sub, Subnet) and self.contains(sub)

    def canonical(self, sub: Subnet) -> Subnet:
        """One name per network: each width as the smallest multiplier selecting its channel count, and the
        widths of blocks the depths skip (`WidthDim.block`) at their minimum.

        Two subnets that compute the same network have the same canonical form, hence one id (and so share
        SubnetNorm statistics, cache entries, and one row in a search front).
        """
        self.validate(sub)
        widths = {d.name: d.canonical(sub.width(d.name)) for d in self.widths}
        return self._dont_cares_at_min(Subnet(widths, sub.depths))

    def skipped(self, sub: Subnet) -> list[str]:
        """The width dimensions `sub` does not use: those of blocks beyond its depth (don't-cares)."""
        depths = sub.depths
        return [
            d.name for d in self.widths if d.block is not None and depths.get(d.block[0], d.block[1]) < d.block[1]
        ]

    def _dont_cares_at_min(self, sub: Subnet) -> Subnet:
        skipped = self.skipped(sub)
        if not skipped:
            return sub
        return sub.replace(widths={name: self.width_dim(name).canonical(self.width_dim(name).min) for name in skipped})

    def channels(self, sub: Subnet) -> dict[str, int]:
        """Active channel count of every width dimension under `sub`."""
        self.validate(sub)
        return {d.name: d.channels_at(sub.width(d.name)) for d in self.widths}

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with a schema tag."""
        return {
            "schema": SPACE_SCHEMA,
            "widths": [d.to_dict() for d in self.widths],
            "depths": [d.to_dict() for d in self.depths],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Inverse of `to_dict`; a wrong schema or malformed dimension raises `InvalidSubnetError`."""
        if not isinstance(data, Mapping):
            raise InvalidSubnetError(f"a search space must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SPACE_SCHEMA:
            raise InvalidSubnetError(f"search space schema is {data.get('schema')!r}, expected {SPACE_SCHEMA!r}")
        unknown = set(data) - {"schema", "widths", "depths"}
        if unknown:
            raise InvalidSubnetError(f"search space has unknown field(s) {sorted(unknown)}")
        widths = []
        for item in _entries(data, "widths"):
            extra = set(item) - {"name", "channels", "choices", "low", "step", "block"}
            if extra:
                raise InvalidSubnetError(f"width dimension {item.get('name')!r} has unknown field(s) {sorted(extra)}")
            choices = item.get("choices")
            if choices is not None and not isinstance(choices, list):
                raise InvalidSubnetError(
                    f"width dimension {item.get('name')!r}: choices must be a list, got {choices!r}"
                )
            widths.append(
                WidthDim(
                    name=item.get("name"),
                    channels=item.get("channels"),
                    choices=tuple(choices) if choices is not None else None,
                    low=item.get("low"),
                    step=item.get("step", 1),
                    block=tuple(item["block"]) if isinstance(item.get("block"), list) else item.get("block"),
                )
            )
        depths = []
        for item in _entries(data, "depths"):
            extra = set(item) - {"name", "choices"}
            if extra:
                raise InvalidSubnetError(f"depth dimension {item.get('name')!r} has unknown field(s) {sorted(extra)}")
            choices = item.get("choices")
            if not isinstance(choices, list):
                raise InvalidSubnetError(
                    f"depth dimension {item.get('name')!r}: choices must be a list, got {choices!r}"
                )
            depths.append(DepthDim(name=item.get("name"), choices=tuple(choices)))
        return cls(widths, depths)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSubnetError(f"search space JSON does not parse: {exc}") from exc
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return self.widths == other.widths and self.depths == other.depths

    def __hash__(self) -> int:
        return hash((self.widths, self.depths))

    def __repr__(self) -> str:
        size = self.size
        return (
            f"SearchSpace({len(self.widths)} width dims, {len(self.depths)} depth dims, "
            f"{'continuous' if size is None else f'{size} subnets'})"
        )
