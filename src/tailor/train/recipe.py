"""Training recipes in small TOML files: model, data and `TrainConfig`, validated on load.

```toml
[model]
name = "resnet20"            # any registered model; num_classes/in_chans come from the data
kwargs = {}                  # extra create_model arguments, e.g. widths = [0.5, 1.0]

[data]
name = "synthetic"           # digits | synthetic | cifar10 | cifar100 | imagefolder
root = ""                    # directory, for cifar*/imagefolder
train = { n = 20000 }        # arguments of the train split's loader
test = { n = 5000 }

[train]                      # TrainConfig fields; unknown names are errors
epochs = 5
sampler = "sandwich"
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor.errors import InvalidSubnetError
from tailor.train.trainer import TrainConfig


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
        """Validate a parsed recipe; every error names the section and field."""
        _only(data, {"model", "data", "train"}, where)
        model = _table(data, "model", where)
        _only(model, {"name", "kwargs"}, f"{where} [model]")
        source = _table(data, "data", where)
        _only(source, {"name", "root", "train", "test"}, f"{where} [data]")
        try:
            train = TrainConfig.from_dict(_table(data, "train", where))
        except (InvalidSubnetError, TypeError) as exc:
            raise InvalidSubnetError(f"{where} [train]: {exc}") from None
        root = source.get("root") or None
        return cls(
            model=_string(model.get("name", "resnet20"), f"{where} [model] name"),
            model_kwargs=dict(_table(model, "kwargs", f"{where} [model]")),
            data=_string(source.get("name", "synthetic"), f"{where} [data] name"),
            data_root=None if root is None else _string(root, f"{where} [data] root"),
            train_split=dict(_table(source, "train", f"{where} [data]")),
            test_split=dict(_table(source, "test", f"{where} [data]")),
            train=train,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read and validate a TOML recipe file."""
        file = Path(path)
        try:
            parsed = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidSubnetError(f"recipe file {str(file)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidSubnetError(f"recipe file {str(file)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(parsed, where=f"recipe {str(file)!r}")

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


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidSubnetError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _table(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = parent.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidSubnetError(f"{where}: {name!r} must be a table, got {type(value).__name__}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSubnetError(f"{where} must be a non-empty string, got {value!r}")
    return value
