"""LayerSelect: `ElasticStage` runs the first d of its blocks and skips the rest (identity).

Blocks past the minimum depth must keep the stage's shape (stride 1, equal in/out channels), as
residual blocks after a stage's first do; `ElasticModel` rejects skippable blocks that downsample
when it indexes the model (a channel mismatch fails at the first forward).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError


class ElasticStage(nn.Module):
    """A sequence of blocks whose active depth is chosen by the depth dimension `depth_dim`."""

    def __init__(self, blocks: Iterable[nn.Module], depth_dim: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if not len(self.blocks):
            raise UnsupportedModelError(f"ElasticStage {depth_dim!r}: a stage needs at least one block")
        self.depth_dim = depth_dim
        object.__setattr__(self, "_active", tuple(self.blocks))

    def configure(self, depths: Mapping[str, int]) -> tuple[nn.Module, ...]:
        """The blocks to run for the given depths (validated)."""
        try:
            depth = depths[self.depth_dim]
        except KeyError:
            raise InvalidSubnetError(f"ElasticStage: no depth given for dimension {self.depth_dim!r}") from None
        if not 1 <= depth <= len(self.blocks):
            raise InvalidSubnetError(
                f"ElasticStage: depth {self.depth_dim!r} = {depth} is outside [1, {len(self.blocks)}]"
            )
        return tuple(self.blocks[:depth])

    @property
    def active_depth(self) -> int:
        return len(self._active)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self._active:
            x = block(x)
        return x

    def extra_repr(self) -> str:
        return f"depth_dim={self.depth_dim!r}, active_depth={len(self._active)}"
