"""The JSON Schemas of the files tailor reads and writes, generated from the pydantic models that validate them.

`schema_for(name)` builds one schema from its model; `write_schemas()` writes every one as
`<name>.schema.json` next to this file (`python -m tailor.schemas` does the same), and a test checks that
the committed files equal the generated ones, so the published schemas never drift from the validation.
To publish another file's schema, add `name: "module:attribute"` to `SCHEMAS` (a pydantic model, a pydantic
dataclass or any type `pydantic.TypeAdapter` takes) and run `python -m tailor.schemas`.

The models are imported when a schema is asked for, not when this package is: it sits beside `cli`, above
every layer, and must not pull them into `import tailor`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from tailor.errors import TailorError

#: schema name -> "module:attribute" of the pydantic model that validates the file
SCHEMAS: dict[str, str] = {
    "front": "tailor.search.pareto:FrontSchema",
    "recipe": "tailor.train.recipe:RecipeSchema",
    "profile": "tailor.cost.profile_schema:profile_json_schema",  # a function: its schema has closed pattern keys
}

HERE = Path(__file__).resolve().parent
_BASE_URL = "https://tailor.invalid/schemas/"  # a stable identifier, not a download location


def _model(name: str) -> Any:
    if name not in SCHEMAS:
        raise TailorError(f"no schema named {name!r}; known: {', '.join(sorted(SCHEMAS))}")
    module, _, attribute = SCHEMAS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def schema_for(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of file kind `name`, generated from its pydantic model."""
    from pydantic import BaseModel, TypeAdapter

    model = _model(name)
    if callable(model) and not isinstance(model, type):
        schema = {k: v for k, v in model().items() if k not in ("$schema", "$id")}
    elif isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema()
    else:
        schema = TypeAdapter(model).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE_URL}{name}.schema.json",
        **schema,
    }


def schema_text(name: str) -> str:
    """`schema_for(name)` as the committed file holds it (sorted keys, indented, final newline)."""
    return json.dumps(schema_for(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the schema of `name` is (or will be) written: `<directory or this package>/<name>.schema.json`."""
    return Path(directory or HERE) / f"{name}.schema.json"


def write_schemas(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write every schema in `SCHEMAS` into `directory` (default: this package); returns the paths written."""
    written = []
    for name in sorted(SCHEMAS):
        path = schema_path(name, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema_text(name), encoding="utf-8")
        written.append(path)
    return written


def load_schema(name: str) -> dict[str, Any]:
    """The committed (published) schema of `name`."""
    path = schema_path(name)
    if not path.is_file():
        raise TailorError(f"schema file {str(path)!r} is missing: run `python -m tailor.schemas`")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["SCHEMAS", "load_schema", "schema_for", "schema_path", "schema_text", "write_schemas"]
