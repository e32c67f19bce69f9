"""Helpers shared by `tailor.export` and `tailor.cost` (cost builds on export, never the reverse): checked subnet extraction and argument checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import fx

from tailor.checks import positive_int
from tailor.errors import InvalidSubnetError, ProfileError, SubnetNormFallbackWarning, UnsupportedModelError
from tailor.ops import ElasticModel
from tailor.space import Subnet


def static_subnet(model: ElasticModel, sub: Subnet) -> fx.GraphModule:
    """`model.extract(sub)` in eval mode, after checking that `sub` lies in `model.space`.

    The model's own active subnet and train/eval mode are left as they were.
    """
    if not isinstance(model, ElasticModel):
        raise UnsupportedModelError(f"expected a tailor ElasticModel, got {type(model).__name__}")
    if not isinstance(sub, Subnet):
        raise InvalidSubnetError(f"expected a Subnet, got {type(sub).__name__}")
    model.space.validate(sub)  # raises InvalidSubnetError naming the dimension and value
    was_training = model.training
    with warnings.catch_warnings():  # switching modes with another subnet active says nothing about `sub`
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        model.eval()
        try:
            static = model.extract(sub)
        finally:
            model.train(was_training)
    return static.eval()


def input_shape_of(model: ElasticModel, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample input shape (C, H, W): `input_shape` if given, else `model.default_input_size`."""
    if input_shape is None:
        input_shape = getattr(model, "default_input_size", None)
        if input_shape is None:
            raise ProfileError(f"{type(model).__name__} has no default_input_size: pass input_shape=(C, H, W)")
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape):
        raise ProfileError(f"input_shape must be positive integers (per sample, no batch axis), got {input_shape!r}")
    return shape


def check_positive_int(name: str, value: object) -> int:
    """`tailor.checks.positive_int` raising `ProfileError`: the measurement arguments' check (batch size, repeats)."""
    return positive_int(name, value, ProfileError)


def example_input(shape: Sequence[int], batch_size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic standard-normal batch of shape (batch_size, *shape)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, *shape), generator=gen)
