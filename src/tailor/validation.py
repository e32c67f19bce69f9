"""Typed validation with pydantic, reported as one `TailorError` line that names the key and the expected type.

pydantic (strict mode) checks types and ranges; this module only turns its `ValidationError` (a list of
structured errors) into the one-line message tailor's errors promise, e.g.
``recipe 'r.toml': train.lr: expected a number, got '0.1' (a string)``. Written here because pydantic's own
message spans several lines and names no file.
"""

from __future__ import annotations

import dataclasses
import functools
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")

#: what each pydantic type error expected, in words
_EXPECTED = {
    "bool_type": "true or false (a boolean)",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "dict_type": "a table (an object)",
    "list_type": "a list",
    "tuple_type": "a list",
    "model_type": "a table (an object)",
    "model_attributes_type": "a table (an object)",
    "dataclass_type": "a table (an object)",
    "none_required": "null",
}

_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _NAMES.get(type(value), type(value).__name__)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_of(kind: Any) -> dict[str, Any] | None:
    """Field name -> annotation of a pydantic model or pydantic dataclass, else None."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {f.alias or name: f.annotation for name, f in kind.model_fields.items()}
    fields = getattr(kind, "__pydantic_fields__", None)
    if dataclasses.is_dataclass(kind) and isinstance(fields, dict):
        return {name: f.annotation for name, f in fields.items()}
    return None


def _unwrap(kind: Any) -> Any:
    """`X` for `X | None` and for `list[X]`; anything else as it is."""
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) in (Union, UnionType, list, tuple) and len(args) == 1:
        return args[0]
    return kind


def _known_keys(root: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at `loc` below `root` (nested models and lists of them), or None if not known."""
    kind = _unwrap(root)
    for part in loc:
        if isinstance(part, int):
            kind = _unwrap(kind)
            continue
        fields = _fields_of(kind)
        if fields is None or part not in fields:
            return None
        kind = _unwrap(fields[part])
    fields = _fields_of(kind)
    return sorted(fields) if fields is not None else None


def error_line(exc: ValidationError, where: str, root: Any = None) -> str:
    """One line for the first error of `exc` (and how many more there are), prefixed by `where`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind, loc, value = first["type"], tuple(first["loc"]), first.get("input")
    if loc and loc[-1] == "[key]":  # a dictionary key outside its allowed set
        text = f"unknown key {loc[-2]!r}; {str(first['msg'])[0].lower()}{str(first['msg'])[1:]}"
        loc = loc[:-2]
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_keys(root, loc[:-1]) if root is not None else None
        text = f"unknown key {loc[-1]!r}" + (f"; known keys: {', '.join(known)}" if known else "")
        loc = loc[:-1]
    elif kind in ("missing", "missing_keyword_argument", "missing_argument"):
        text = f"missing key {loc[-1]!r}"
        loc = loc[:-1]
    elif kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {value!r:.80} ({_type_name(value)})"
    elif kind in ("value_error", "assertion_error"):
        text = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        text = f"{str(first['msg'])[0].lower()}{str(first['msg'])[1:]}, got {value!r:.80}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    place = _path(loc)
    return f"{where}: {place + ': ' if place else ''}{text}{more}"


@functools.cache
def _adapter(schema: Any) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


def validate(schema: type[T] | TypeAdapter[T], data: Any, error: type[Exception], where: str) -> T:
    """`data` validated by `schema` (a pydantic model, a dataclass or a `TypeAdapter`); `error` on failure."""
    adapter = schema if isinstance(schema, TypeAdapter) else _adapter(schema)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise error(error_line(exc, where, None if isinstance(schema, TypeAdapter) else schema)) from None


def reraise(exc: ValidationError, error: type[Exception], where: str, root: Any = None) -> Exception:
    """The `error` to raise for `exc` (for callers that validate through a constructor)."""
    return error(error_line(exc, where, root))
