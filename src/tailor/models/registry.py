"""The model registry: `create_model(name, ...)` and `list_models()`, as timm does it.

A model family is one module of `tailor.models` whose factories carry `@register_model`; the registry imports
every module of the package the first time it is asked (no list of families to keep up to date).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from tailor.errors import UnsupportedModelError
from tailor.ops import ElasticModel

Factory = TypeVar("Factory", bound=Callable[..., ElasticModel])

_FACTORIES: dict[str, Callable[..., ElasticModel]] = {}


def register_model(factory: Factory) -> Factory:
    """Decorator: make `factory` (named like the model) available to `create_model`."""
    name = factory.__name__
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise UnsupportedModelError(f"a model named {name!r} is already registered")
    _FACTORIES[name] = factory
    return factory


@cache
def _import_families() -> None:
    """Import every module of `tailor.models` once, so that each family's factories are registered."""
    package = importlib.import_module("tailor.models")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"tailor.models.{module.name}")


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _import_families()
    return sorted(_FACTORIES)


def create_model(name: str, num_classes: int | None = None, in_chans: int = 3, **kwargs: Any) -> ElasticModel:
    """Build registered model `name` (its own default class count unless `num_classes` is given)."""
    _import_families()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnsupportedModelError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = factory(in_chans=in_chans, **kwargs)
    # How to build it again (checkpoints store this as JSON): the name and every argument given.
    model.architecture = {"name": name, "kwargs": {"in_chans": in_chans, **kwargs}}
    return model
