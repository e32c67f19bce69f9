"""LayerSelect: `ElasticStage` runs d of its L blocks and skips the rest (identity).

Two rules pick the d blocks:
- `"first"` (the default; Once-for-All's elastic depth): blocks 0..d-1.
- `"every_other"` (LayerDrop / DynaBERT): for d >= L/2, block n (0-based) is dropped when n + 1 is a
  multiple of r = L / (L - d), i.e. every r-th block, so the kept ones spread over the whole depth
  (d = L/2 keeps blocks 0, 2, 4, ...; d = 3L/4 drops blocks 3, 7, 11, ...). When r is not an integer the
  L - d dropped blocks are n = floor(k * r) - 1 for k = 1..L-d, the same set whenever r is one. Below L/2
  (r < 2, where dropping every r-th block is not defined) the d kept blocks are n = floor(k * L / d),
  k = 0..d-1, evenly spread from block 0 (which agrees with the rule above at d = L/2). Block 0 always
  runs.

Blocks that some subnet may skip must keep the stage's shape (stride 1, equal in/out channels), as
residual blocks after a stage's first do; `ElasticModel` rejects skippable blocks that downsample when
it indexes the model (a channel mismatch fails at the first forward).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError

DEPTH_RULES = ("first", "every_other")


def kept_blocks(total: int, depth: int, rule: str = "first") -> tuple[int, ...]:
    """Positions (0-based, ascending) of the blocks a stage of `total` blocks runs at `depth` under `rule`."""
    if rule not in DEPTH_RULES:
        raise InvalidSubnetError(f"depth rule must be one of {DEPTH_RULES}, got {rule!r}")
    if not 1 <= depth <= total:
        raise InvalidSubnetError(f"depth {depth} is outside [1, {total}]")
    if rule == "first" or depth == total:
        return tuple(range(depth))
    if 2 * depth < total:
        return tuple(math.floor(k * total / depth + 1e-9) for k in range(depth))
    dropped_count = total - depth
    ratio = total / dropped_count
    # floor(k * ratio) with a tolerance, so that an integer ratio times k is not floored one below itself
    dropped = {math.floor(k * ratio + 1e-9) - 1 for k in range(1, dropped_count + 1)}
    return tuple(n for n in range(total) if n not in dropped)


class ElasticStage(nn.Module):
    """A sequence of blocks whose active depth is chosen by the depth dimension `depth_dim`.

    `rule` says which blocks a depth keeps (`"first"` or `"every_other"`, see the module docstring).
    """

    def __init__(self, blocks: Iterable[nn.Module], depth_dim: str, rule: str = "first") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if not len(self.blocks):
            raise UnsupportedModelError(f"ElasticStage {depth_dim!r}: a stage needs at least one block")
        if rule not in DEPTH_RULES:
            raise UnsupportedModelError(
                f"ElasticStage {depth_dim!r}: depth rule must be one of {DEPTH_RULES}, got {rule!r}"
            )
        self.depth_dim = depth_dim
        self.rule = rule
        object.__setattr__(self, "_active", tuple(self.blocks))

    def kept_positions(self, depth: int) -> tuple[int, ...]:
        """Positions of the blocks that run at `depth` (validated)."""
        if not 1 <= depth <= len(self.blocks):
            raise InvalidSubnetError(
                f"ElasticStage: depth {self.depth_dim!r} = {depth} is outside [1, {len(self.blocks)}]"
            )
        return kept_blocks(len(self.blocks), depth, self.rule)

    def runs(self, position: int, depth: int) -> bool:
        """Whether block `position` runs when the stage's depth is `depth`."""
        if self.rule == "first":
            return position < depth
        return position in self.kept_positions(depth)

    def skippable_positions(self, min_depth: int) -> tuple[int, ...]:
        """Positions of the blocks that some depth >= `min_depth` skips."""
        total = len(self.blocks)
        low = max(1, min(min_depth, total))
        skipped: set[int] = set()
        for depth in range(low, total + 1):
            skipped.update(set(range(total)) - set(kept_blocks(total, depth, self.rule)))
        return tuple(sorted(skipped))

    def configure(self, depths: Mapping[str, int]) -> tuple[nn.Module, ...]:
        """The blocks to run for the given depths (validated)."""
        try:
            depth = depths[self.depth_dim]
        except KeyError:
            raise InvalidSubnetError(f"ElasticStage: no depth given for dimension {self.depth_dim!r}") from None
        return tuple(self.blocks[position] for position in self.kept_positions(depth))

    @property
    def active_depth(self) -> int:
        return len(self._active)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self._active:
            x = block(x)
        return x

    def extra_repr(self) -> str:
        rule = "" if self.rule == "first" else f", rule={self.rule!r}"
        return f"depth_dim={self.depth_dim!r}, active_depth={len(self._active)}{rule}"
