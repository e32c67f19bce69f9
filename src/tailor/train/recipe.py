"""Training recipes in small TOML files: model, data and `TrainConfig`, type-checked on load (pydantic, strict).

```toml
[model]
name = "resnet20"            # any registered model; num_classes/in_chans come from the data
kwargs = {}                  # extra create_model arguments, e.g. widths = [0.5, 1.0]

[data]
name = "synthetic"           # digits | synthetic | cifar10 | cifar100 | imagefolder
root = ""                    # directory, for cifar*/imagefolder
train = { n = 20000 }        # arguments of the train split's loader
test = { n = 5000 }

[train]                      # TrainConfig fields; unknown keys and wrong types are errors
epochs = 5
sampler = "sandwich"
```

`examples/recipe.toml` is a complete sample; `src/tailor/schemas/recipe.schema.json` the published schema
(generated from `RecipeSchema`). Every problem raises `tailor.RecipeError` naming the file, the key and what
was expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tailor.data import list_datasets
from tailor.errors import RecipeError
from tailor.models import list_models
from tailor.train.trainer import TrainConfig
from tailor.validation import validate

_STRICT = ConfigDict(extra="forbid")


class ModelSection(BaseModel):
    """`[model]`: the registered model and extra `create_model` arguments."""

    model_config = _STRICT
    name: Annotated[str, Field(strict=True, min_length=1, description="a registered model (tailor models lists them)")] = "resnet20"
    kwargs: Annotated[
        dict[str, Any], Field(strict=True, description="extra create_model arguments (num_classes and in_chans come from the data)")
    ] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
        return name


class DataSection(BaseModel):
    """`[data]`: the data set, its directory, and the arguments of each split's loader."""

    model_config = _STRICT
    name: Annotated[str, Field(strict=True, min_length=1, description="digits, synthetic, cifar10, cifar100 or imagefolder")] = (
        "synthetic"
    )
    root: Annotated[str, Field(strict=True, description="directory of cifar10/cifar100/imagefolder data ('' for none)")] = ""
    train: Annotated[dict[str, Any], Field(strict=True, description="arguments of the train split's loader, e.g. {n = 20000}")] = {}
    test: Annotated[dict[str, Any], Field(strict=True, description="arguments of the test split's loader")] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in list_datasets():
            raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(list_datasets())}")
        return name


class RecipeSchema(BaseModel):
    """A training recipe file: `[model]`, `[data]` and `[train]` (TrainConfig's fields), all optional."""

    model_config = ConfigDict(extra="forbid", title="tailor training recipe")
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainConfig = Field(default_factory=TrainConfig)


@dataclass
class Recipe:
    """What to train on what: `model` name and arguments, data source and split arguments, `train` config."""

    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "synthetic"
    data_root: str | None = None
    train_split: dict[str, Any] = field(default_factory=dict)
    test_split: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "recipe") -> Recipe:
        """Validate a parsed recipe; every error (a `RecipeError`) names the key and the expected type."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: expected a table, got {type(data).__name__}")
        parsed = validate(RecipeSchema, dict(data), RecipeError, where)
        return cls(
            model=parsed.model.name,
            model_kwargs=dict(parsed.model.kwargs),
            data=parsed.data.name,
            data_root=parsed.data.root or None,
            train_split=dict(parsed.data.train),
            test_split=dict(parsed.data.test),
            train=parsed.train,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read and validate a TOML recipe file."""
        return cls.from_dict(read_toml(path), where=f"recipe {str(path)!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model, "kwargs": self.model_kwargs},
            "data": {
                "name": self.data,
                "root": self.data_root or "",
                "train": self.train_split,
                "test": self.test_split,
            },
            "train": self.train.to_dict(),
        }


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed TOML file at `path`; a missing or malformed file raises `RecipeError` naming it."""
    file = Path(path)
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe file {str(file)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe file {str(file)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe file {str(file)!r} is not valid TOML: {exc}") from None
