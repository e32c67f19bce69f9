"""`Subnet`: one architecture of a supernet, as a small immutable value.

A subnet is data: a width multiplier per width dimension and an active depth per depth
dimension. It is hashable (usable as a dict key by caches, profiles and the server), compares by
value, serialises to JSON and has a short id that is stable across processes and machines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tailor.checks import number, positive_int
from tailor.errors import InvalidSubnetError

SUBNET_KEYS = frozenset({"widths", "depths"})


def check_width(what: str, value: Any) -> float:
    """`value` as a width multiplier, a float in (0, 1], else an `InvalidSubnetError` naming `what`."""
    return number(what, value, InvalidSubnetError, low=0, high=1, low_open=True)


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidSubnetError(f"{kind} dimension name must be a non-empty string, got {name!r}")
    return name


class Subnet:
    """An immutable architecture choice: `widths[name]` in (0, 1], `depths[name]` >= 1.

    Build one with `Subnet(widths={...}, depths={...})`, or from a `SearchSpace`
    (`largest()`, `sample(rng)`, `from_wm(wm)`, ...), which also checks it lies in the space.
    """

    __slots__ = ("_depths", "_hash", "_id", "_widths")

    def __init__(
        self,
        widths: Mapping[str, float] | None = None,
        depths: Mapping[str, int] | None = None,
    ) -> None:
        w = {_check_name("width", k): check_width(f"width {k!r}", v) for k, v in (widths or {}).items()}
        d = {_check_name("depth", k): positive_int(f"depth {k!r}", v, InvalidSubnetError) for k, v in (depths or {}).items()}
        object.__setattr__(self, "_widths", tuple(sorted(w.items())))
        object.__setattr__(self, "_depths", tuple(sorted(d.items())))
        object.__setattr__(self, "_hash", hash((self._widths, self._depths)))
        object.__setattr__(self, "_id", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Subnet is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Subnet is immutable")

    @property
    def widths(self) -> dict[str, float]:
        """Width multiplier of each width dimension (a fresh dict; the subnet is unchanged)."""
        return dict(self._widths)

    @property
    def depths(self) -> dict[str, int]:
        """Active block count of each depth dimension (a fresh dict)."""
        return dict(self._depths)

    def width(self, name: str) -> float:
        """The width multiplier of dimension `name`."""
        for key, value in self._widths:
            if key == name:
                return value
        raise InvalidSubnetError(f"subnet {self.id} has no width dimension {name!r}")

    def depth(self, name: str) -> int:
        """The active depth of dimension `name`."""
        for key, value in self._depths:
            if key == name:
                return value
        raise InvalidSubnetError(f"subnet {self.id} has no depth dimension {name!r}")

    def replace(self, widths: Mapping[str, float] | None = None, depths: Mapping[str, int] | None = None) -> Subnet:
        """A copy with some widths/depths changed (the subnet itself is immutable)."""
        return Subnet({**dict(self._widths), **(widths or {})}, {**dict(self._depths), **(depths or {})})

    @property
    def id(self) -> str:
        """Short id, stable across runs and machines: a hash of the canonical JSON form."""
        if self._id is None:
            digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:12]
            object.__setattr__(self, "_id", f"sn-{digest}")
        return self._id  # type: ignore[return-value]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready form: {"widths": {name: float}, "depths": {name: int}}."""
        return {"widths": dict(self._widths), "depths": dict(self._depths)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace); equal subnets give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Subnet:
        """Inverse of `to_dict`; unknown keys and malformed values raise `InvalidSubnetError`."""
        if not isinstance(data, Mapping):
            raise InvalidSubnetError(f"a subnet must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - SUBNET_KEYS
        if unknown:
            raise InvalidSubnetError(f"subnet has unknown field(s) {sorted(unknown)}; expected {sorted(SUBNET_KEYS)}")
        for key in SUBNET_KEYS:
            if key in data and not isinstance(data[key], Mapping):
                raise InvalidSubnetError(f"subnet field {key!r} must be an object, got {data[key]!r}")
        return cls(data.get("widths"), data.get("depths"))

    @classmethod
    def from_json(cls, text: str) -> Subnet:
        """Parse `to_json` output (or any JSON object in the same shape)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSubnetError(f"subnet JSON does not parse: {exc}") from exc
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Subnet):
            return NotImplemented
        return self._widths == other._widths and self._depths == other._depths

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        widths = ", ".join(f"{k}={v:g}" for k, v in self._widths)
        depths = ", ".join(f"{k}={v}" for k, v in self._depths)
        return f"Subnet({self.id}; widths: {widths or '-'}; depths: {depths or '-'})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Subnet, (dict(self._widths), dict(self._depths)))
