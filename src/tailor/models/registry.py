"""The model registry: `create_model(name, ...)` and `list_models()`, as timm does it."""

from __future__ import annotations

from collections.abc import Callable
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


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_FACTORIES)


def create_model(name: str, num_classes: int | None = None, in_chans: int = 3, **kwargs: Any) -> ElasticModel:
    """Build registered model `name` (its own default class count unless `num_classes` is given)."""
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
