"""The index of a model's elastic layers: every op and stage, where it sits, and which stages may skip it.

Built once per model (and again after `invalidate_plans`), and checked against the model's space then:
each op's width dimensions must exist with the op's channel count and a compatible step, each stage's
depth dimension must exist and fit its blocks, and blocks a depth may skip must not downsample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops.base import ElasticOp
from tailor.ops.select import ElasticStage

if TYPE_CHECKING:
    from tailor.ops.network import ElasticModel


@dataclass(frozen=True)
class IndexedLayer:
    """An elastic op or stage of a model: its qualified name, the module, and the (stage, block position)
    pairs enclosing it (it runs only where each of those stages runs that block)."""

    name: str
    module: nn.Module
    conditions: tuple[tuple[ElasticStage, int], ...]

    def runs(self, depths: Mapping[str, int]) -> bool:
        """Whether this layer runs at the given stage depths."""
        return all(stage.runs(position, depths[stage.depth_dim]) for stage, position in self.conditions)


def index_layers(model: ElasticModel) -> tuple[IndexedLayer, ...]:
    """Every elastic op and stage of `model`, in definition order, checked against `model.space`."""
    layers: list[IndexedLayer] = []
    _collect(model, "", (), layers)
    for layer in layers:
        _check(model, layer)
    return tuple(layers)


def _collect(module: nn.Module, prefix: str, conditions: tuple, out: list[IndexedLayer]) -> None:
    for child_name, child in module.named_children():
        name = f"{prefix}{child_name}"
        if isinstance(child, ElasticOp):
            out.append(IndexedLayer(name, child, conditions))
        elif isinstance(child, ElasticStage):
            out.append(IndexedLayer(name, child, conditions))
            for position, block in enumerate(child.blocks):
                inner = (*conditions, (child, position))
                _collect(block, f"{name}.blocks.{position}.", inner, out)
                if isinstance(block, (ElasticOp, ElasticStage)):
                    out.append(IndexedLayer(f"{name}.blocks.{position}", block, inner))
        else:
            _collect(child, f"{name}.", conditions, out)


def _check(model: ElasticModel, layer: IndexedLayer) -> None:
    module = layer.module
    if isinstance(module, ElasticStage):
        dim = lookup_dim(model, layer.name, "depth", module.depth_dim)
        if dim.max > len(module.blocks):
            raise UnsupportedModelError(
                f"layer {layer.name!r}: depth dimension {dim.name!r} allows {dim.max} blocks, "
                f"the stage has {len(module.blocks)}"
            )
        _check_skippable(layer.name, module, dim.min)
        return
    for dim_name, (channels, step) in module.width_dims().items():  # type: ignore[operator]
        dim = model._op_width_dim(layer.name, dim_name)
        if dim.channels != channels:
            raise UnsupportedModelError(
                f"layer {layer.name!r}: width dimension {dim_name!r} has {dim.channels} channels, the layer {channels}"
            )
        if dim.step % step:
            raise UnsupportedModelError(
                f"layer {layer.name!r}: width dimension {dim_name!r} has step {dim.step}, "
                f"the layer needs a multiple of {step}"
            )


def _check_skippable(name: str, stage: ElasticStage, min_depth: int) -> None:
    """Blocks that a subnet may skip must keep the stage's resolution (no strided conv or pooling)."""
    for position in stage.skippable_positions(min_depth):
        for sub_name, sub in stage.blocks[position].named_modules():
            strided = isinstance(sub, nn.Conv2d) and sub.stride != (1, 1)
            if strided or isinstance(sub, (nn.MaxPool2d, nn.AvgPool2d)):
                path = ".".join(part for part in (name, "blocks", str(position), sub_name) if part)
                raise UnsupportedModelError(f"layer {path!r}: a block that depth may skip cannot downsample")


def lookup_dim(model: ElasticModel, layer: str, kind: str, name: str) -> Any:
    """The `kind` ("width" or "depth") dimension `name` of `model.space`; an error naming `layer` if absent."""
    try:
        return model.space.width_dim(name) if kind == "width" else model.space.depth_dim(name)
    except InvalidSubnetError:
        raise UnsupportedModelError(f"layer {layer!r}: {kind} dimension {name!r} is not in the model's space") from None


__all__ = ["IndexedLayer", "index_layers", "lookup_dim"]
