"""The published JSON Schemas: generated from the pydantic models, committed, and as strict as the validation."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

import tailor
from tailor.schemas import SCHEMAS, load_schema, schema_for, schema_path, schema_text, write_schemas
from tailor.search import Candidate, ParetoFront

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_equals_the_generated_one(name: str) -> None:
    path = schema_path(name)
    assert path.is_file(), f"{path} is missing: run `python -m tailor.schemas`"
    assert path.read_text(encoding="utf-8") == schema_text(name), f"{path} is stale: run `python -m tailor.schemas`"


def test_write_schemas_writes_every_schema(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in SCHEMAS)
    for path in written:
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_unknown_schema_name_is_a_tailor_error() -> None:
    with pytest.raises(tailor.TailorError, match="no schema named 'nope'; known: .*recipe"):
        schema_for("nope")


def test_recipe_schema_accepts_the_sample_and_rejects_wrong_types() -> None:
    validator = jsonschema.Draft202012Validator(load_schema("recipe"))
    sample = tomllib.loads((ROOT / "examples" / "recipe.toml").read_text())
    assert not list(validator.iter_errors(sample))
    for bad in ({"train": {"augment": "no"}}, {"train": {"lr": "0.1"}}, {"train": {"flip": 0}},
                {"train": {"seed": "x"}}, {"train": {"epoch": 3}}, {"model": {"name": 3}}):  # fmt: skip
        assert list(validator.iter_errors(bad)), f"the schema accepts {bad}"


def test_front_schema_accepts_a_saved_front_and_rejects_a_bad_metric(tmp_path: Path) -> None:
    space = tailor.create_model("small_cnn").space
    cands = [Candidate(space.largest(), {"accuracy": 0.9, "macs": 2_000_000}),
             Candidate(space.smallest(), {"accuracy": 0.5, "macs": 100_000})]  # fmt: skip
    path = ParetoFront.from_candidates(cands, ("accuracy", "macs")).save(tmp_path / "front.json")
    data = json.loads(path.read_text())
    validator = jsonschema.Draft202012Validator(load_schema("front"))
    assert not list(validator.iter_errors(data))
    data["front"][0]["metrics"]["macs"] = "many"
    assert list(validator.iter_errors(data))
    data["front"][0]["metrics"] = {"speed": 1.0}
    assert list(validator.iter_errors(data))
