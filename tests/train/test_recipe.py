"""Recipes: the sample in examples/, the key table in the train README, the default largest-first phases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tailor import create_model
from tailor.train import TrainConfig, Trainer
from tailor.train.recipe import Recipe
from train_helpers import BlobImages

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| (`[^`]*`|omitted) \|")
TYPES = {int: "int", float: "float", bool: "bool", str: "string"}


def _readme_rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "src" / "tailor" / "train" / "README.md").read_text(encoding="utf-8")
    return {m.group(1): (m.group(2), m.group(3)) for m in map(ROW.match, text.splitlines()) if m}


def test_train_readme_lists_every_trainconfig_key_with_its_type_and_default() -> None:
    rows = _readme_rows()
    fields = TrainConfig.__pydantic_fields__
    assert set(fields) <= set(rows), f"missing from the README's table: {sorted(set(fields) - set(rows))}"
    for name, info in fields.items():
        kind, default = rows[name]
        annotation = info.annotation
        plain = next((t for t in TYPES if annotation is t or t in getattr(annotation, "__args__", ())), str)
        assert kind == TYPES[plain], f"{name}: the README says {kind}, the field is {annotation}"
        expected = "omitted" if info.default is None else f"`{json.dumps(info.default)}`"
        assert default == expected, f"{name}: the README says {default}, the default is {info.default!r}"


def test_the_sample_recipe_loads_and_is_what_the_readme_runs() -> None:
    recipe = Recipe.load(ROOT / "examples" / "recipe.toml")
    assert (recipe.model, recipe.data) == ("small_cnn", "digits")
    assert recipe.train.flip is False and recipe.train.sampler == "sandwich"
    assert "examples/recipe.toml" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("sampler", "expected"), [("sandwich", 2.0), ("random_min_max", 2.0), ("uniform", 0.0),
                                                   ("fixed", 0.0)])  # fmt: skip
def test_default_phases_are_a_quarter_of_the_epochs_for_teacher_samplers(sampler: str, expected: float) -> None:
    config = TrainConfig(epochs=8, sampler=sampler)
    assert config.largest_only_epochs is None and config.student_ramp_epochs is None
    assert config.effective_largest_only_epochs == expected and config.effective_student_ramp_epochs == expected
    explicit = TrainConfig(epochs=8, sampler=sampler, largest_only_epochs=0.0, student_ramp_epochs=1.0)
    assert explicit.effective_largest_only_epochs == 0.0 and explicit.effective_student_ramp_epochs == 1.0


def test_default_recipe_trains_the_largest_alone_first_then_ramps_the_students(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    log = tmp_path / "log.jsonl"
    config = TrainConfig(epochs=4, batch_size=16, augment=False, num_random=1)  # 4 steps per epoch, 16 in all
    trainer = Trainer(model, BlobImages(64, seed=1), config, log_path=log, device="cpu")
    weights = [trainer.student_weight_at(s) for s in range(trainer.total_steps)]
    trainer.fit()
    steps = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "step"]
    largest = model.space.largest().id
    assert [s["subnets"] for s in steps[:4]] == [[largest]] * 4, "the first quarter trains the largest alone"
    assert all(len(s["subnets"]) == 3 and s["subnets"][0] == largest for s in steps[4:])
    ramp = weights[4:8]
    assert ramp == sorted(ramp) and 0 < ramp[0] < ramp[-1] == pytest.approx(1.0) and weights[8:] == [1.0] * 8


def test_assigning_a_field_is_checked_and_a_bad_value_changes_nothing() -> None:
    from tailor import RecipeError

    config = TrainConfig(epochs=4, largest_only_epochs=2.0)
    config.lr = 1
    assert config.lr == 1.0 and isinstance(config.lr, float)
    with pytest.raises(RecipeError, match=r"train config: augment: expected true or false"):
        config.augment = "no"
    with pytest.raises(RecipeError, match=r"largest_only_epochs=2.0 is more than epochs=1"):
        config.epochs = 1
    assert (config.augment, config.epochs) == (True, 4)
