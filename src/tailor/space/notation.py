"""The one subnet notation of the command line, and the one reader of subnet files.

Every command that takes subnets (`tailor profile --subnet`, `export --subnet`, `calibrate --subnet`,
`train --subnet`, `route --stages`, `search --include`) reads them with `parse_subnets`: a comma-separated
list of

- `largest`, `smallest`;
- `w<W>` (e.g. `w0.5`): every width dimension at W, full depth; `w<W>:min` at minimum depth. A dimension
  without W among its choices (an expand ratio of 1/2, 2/3, 1) takes its smallest choice above W; W must be
  a choice of at least one dimension, so that a typo is an error;
- a JSON file (`front.json`, `prof.json`, `subs.json`): every subnet in it, or `FILE#ID` the one whose id
  (the file's `id`, or the subnet's `sn-…` id) is ID, or `FILE#N` the N-th entry (0 the first, -1 the last: a
  front's most accurate, as fronts run cheapest first). `read_subnets` reads a list of subnets
  (`Subnet.to_dict()` or `{"id", "subnet"}` objects), a profile (`{"subnets": [{"id", "subnet", ...}]}`)
  and a search front (`{"front": [{"id", "subnet", "metrics"}]}`);
- each optionally `@EXIT` (e.g. `largest@stage2`): the subnet's early exit, where a command takes exits
  (`tailor route`).

Old spellings stay as aliases: `uniform:W` and `uniform:W:min` (profile, export) mean `wW` and `wW:min`.
Subnets come back in canonical form (`SearchSpace.canonical`: one network, one id), each with the name the
file gave it. Errors are `InvalidSubnetError`s naming the item and what was expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tailor.errors import InvalidSubnetError
from tailor.jsonio import read_json
from tailor.space.search_space import SearchSpace
from tailor.space.subnet import Subnet, check_width
from tailor.validation import validate

SUBNET_NOTATION = (
    "comma-separated: largest, smallest, w<W> (every width at W, full depth; w<W>:min at minimum depth), "
    "or a JSON file of subnets, a profile or a search front (FILE#ID or FILE#N picks one entry, -1 the last); "
    "uniform:W[:min] = w<W>[:min]"
)


class SubnetSchema(BaseModel):
    """A subnet as JSON (`Subnet.to_dict()`): a multiplier per width dimension, a block count per depth one."""

    model_config = ConfigDict(extra="forbid", title="tailor subnet")
    widths: Annotated[
        dict[str, Annotated[float, Field(strict=True, gt=0, le=1)]],
        Field(description="width dimension -> multiplier in (0, 1]"),
    ] = {}
    depths: Annotated[
        dict[str, Annotated[int, Field(strict=True, ge=1)]], Field(description="depth dimension -> active blocks (>= 1)")
    ] = {}


class SubnetEntry(BaseModel):
    """An entry of a subnet list, a profile or a front: a subnet with an optional id (other keys are the file's)."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str | None, Field(strict=True, min_length=1)] = None
    subnet: SubnetSchema | None
    exit: Annotated[str | None, Field(strict=True, min_length=1)] = None


@dataclass(frozen=True)
class NamedSubnet:
    """A subnet named on the command line or in a file: `name` (the file's id, else the item), optional `exit`."""

    subnet: Subnet
    name: str
    exit: str | None = None


def _subnet(schema: SubnetSchema, where: str) -> Subnet:
    try:
        return Subnet(schema.widths, schema.depths)
    except InvalidSubnetError as exc:
        raise InvalidSubnetError(f"{where}: {exc}") from None


def read_subnets(
    path: str | os.PathLike[str], space: SearchSpace | None = None, pick: str | None = None
) -> list[NamedSubnet]:
    """The subnets in the JSON file at `path` (a list, a profile or a front), checked against `space`.

    `pick`: only the entry whose id (the file's, or the subnet's `sn-…` id) equals it, else the entry at that
    position when it is an integer (0 the first, -1 the last).
    """
    where = f"subnet file {str(path)!r}"
    data = read_json(path, "subnet file", InvalidSubnetError)
    if isinstance(data, list):
        entries, key = data, ""
    elif isinstance(data, dict) and isinstance(data.get("front"), list):
        entries, key = data["front"], "front"
    elif isinstance(data, dict) and isinstance(data.get("subnets"), list):
        entries, key = data["subnets"], "subnets"
    else:
        raise InvalidSubnetError(
            f"{where}: expected a JSON list of subnets, a profile ({{\"subnets\": [...]}}) "
            f"or a search front ({{\"front\": [...]}}), got {type(data).__name__}"
        )
    if not entries:
        raise InvalidSubnetError(f"{where}: holds no subnets")
    out: list[NamedSubnet] = []
    for index, entry in enumerate(entries):
        at = f"{where}, {key}[{index}]" if key else f"{where}, entry {index}"
        if isinstance(entry, dict) and "subnet" in entry:
            parsed = validate(SubnetEntry, entry, InvalidSubnetError, at)
            if parsed.subnet is None:
                raise InvalidSubnetError(f"{at}: has no subnet (a profile entry without one cannot be run)")
            sub, name, exit_name = _subnet(parsed.subnet, at), parsed.id, parsed.exit
        else:
            sub, name, exit_name = _subnet(validate(SubnetSchema, entry, InvalidSubnetError, at), at), None, None
        if space is not None:
            try:
                sub = space.canonical(sub)
            except InvalidSubnetError as exc:
                raise InvalidSubnetError(f"{at}: {exc}") from None
        out.append(NamedSubnet(sub, name or sub.id, exit_name))
    if pick is not None:
        chosen = [n for n in out if pick in (n.name, n.subnet.id)]
        if not chosen and re.fullmatch(r"-?\d+", pick):  # a position: 0 the first entry, -1 the last
            index = int(pick)
            if not -len(out) <= index < len(out):
                raise InvalidSubnetError(f"{where} has {len(out)} entries; #{pick} is not one of them")
            chosen = [out[index]]
        if not chosen:
            raise InvalidSubnetError(f"{where} has no entry with id {pick!r} (ids: {', '.join(n.name for n in out)})")
        out = chosen[:1]
    return out


def uniform_width(space: SearchSpace, width: float, depth: str = "max", item: str | None = None) -> Subnet:
    """Every width dimension at `width` (or its smallest choice above), depths at "max" or "min" (`w<W>`)."""
    item = item or f"w{width:g}"
    check_width(f"subnet {item!r}: width", width)
    if space.widths and not any(dim.contains(width) for dim in space.widths):
        allowed = sorted({c for dim in space.widths for c in (dim.choices or ())})
        ranges = sorted({dim.low for dim in space.widths if dim.low is not None})
        options = ", ".join(f"{c:g}" for c in allowed) + "".join(f"; any from {low:g}" for low in ranges)
        raise InvalidSubnetError(f"subnet {item!r}: no width dimension allows {width:g} (allowed: {options})")
    depths = {d.name: (d.max if depth == "max" else d.min) for d in space.depths}
    return space.from_wm([width] * space.search_dim, depths=depths)


def _parse_width(token: str, text: str, depth: str | None) -> tuple[float, str]:
    try:
        width = float(text)
    except ValueError:
        raise InvalidSubnetError(f"subnet {token!r}: width {text!r} is not a number") from None
    if depth not in (None, "min", "max"):
        raise InvalidSubnetError(f"subnet {token!r}: the depth after ':' must be min or max, got {depth!r}")
    return width, depth or "max"


def parse_subnet_item(item: str, space: SearchSpace) -> list[NamedSubnet]:
    """One item of the notation (without its `@EXIT`): the subnet(s) it names."""
    if item in ("largest", "smallest"):
        return [NamedSubnet(space.canonical(space.largest() if item == "largest" else space.smallest()), item)]
    if item.startswith("uniform:"):
        parts = item.split(":")
        if len(parts) > 3:
            raise InvalidSubnetError(f"subnet {item!r}: expected uniform:W or uniform:W:min")
        width, depth = _parse_width(item, parts[1], parts[2] if len(parts) == 3 else None)
        return [NamedSubnet(uniform_width(space, width, depth, item), item)]
    if item[:1] == "w" and (item[1:2].isdigit() or item[1:2] == "."):
        text, _, depth = item[1:].partition(":")
        width, depth = _parse_width(item, text, depth or None)
        return [NamedSubnet(uniform_width(space, width, depth, item), item)]
    path, _, pick = item.partition("#")
    if path.lower().endswith(".json") or Path(path).is_file():
        return read_subnets(path, space, pick or None)
    raise InvalidSubnetError(f"unknown subnet {item!r}; {SUBNET_NOTATION}")


def parse_subnets(
    spec: str, space: SearchSpace, *, exits: bool = False, what: str = "--subnet"
) -> list[NamedSubnet]:
    """Every subnet `spec` names (see the module docstring), in order, in canonical form.

    `exits`: whether `ITEM@EXIT` is allowed (early exits, `tailor route`); otherwise it is an error.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSubnetError(f"{what}: no subnets given; {SUBNET_NOTATION}")
    out: list[NamedSubnet] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            raise InvalidSubnetError(f"{what}: empty item in {spec!r}")
        item, at, exit_name = token.partition("@")
        if at and not exits:
            raise InvalidSubnetError(f"{what}: {token!r} names an early exit (@{exit_name}); only `tailor route` takes exits")
        if at and not exit_name:
            raise InvalidSubnetError(f"{what}: {token!r} has an empty exit name after '@'")
        try:
            named = parse_subnet_item(item, space)
        except InvalidSubnetError as exc:
            raise InvalidSubnetError(f"{what}: {exc}") from None
        if at:
            named = [NamedSubnet(n.subnet, token, exit_name) for n in named]
        elif not exits and any(n.exit for n in named):
            raise InvalidSubnetError(f"{what}: {token!r} holds early exits; only `tailor route` takes exits")
        out.extend(named)
    return out


__all__ = [
    "SUBNET_NOTATION",
    "NamedSubnet",
    "SubnetEntry",
    "SubnetSchema",
    "parse_subnet_item",
    "parse_subnets",
    "read_subnets",
    "uniform_width",
]
