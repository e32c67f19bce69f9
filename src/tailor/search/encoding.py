"""`SpaceEncoding`: a search space as a vector of choice indices (for Optuna, evolution and predictors).

Each width dimension becomes the ordered list of the multipliers that select distinct channel counts
(canonical form, so two names for one architecture never appear), each depth dimension its depth
choices. A subnet is then a vector of indices, one per dimension: Optuna suggests them as ordered
integers (`width:<dim>`, `depth:<dim>`), evolution mutates them, and predictors read `features`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tailor.errors import InvalidSubnetError
from tailor.search.metrics import SearchError
from tailor.space import SearchSpace, Subnet


@dataclass(frozen=True)
class EncodedDim:
    """One dimension: `kind` ("width" or "depth"), its name, and its ordered values."""

    kind: str
    name: str
    values: tuple[float | int, ...]

    @property
    def param(self) -> str:
        """The Optuna parameter name."""
        return f"{self.kind}:{self.name}"


def _width_values(space: SearchSpace, name: str) -> tuple[float, ...]:
    dim = space.width_dim(name)
    if dim.choices is not None:
        counts: dict[int, float] = {}
        for choice in dim.choices:
            counts.setdefault(dim.channels_at(choice), dim.canonical(choice))
        return tuple(counts[c] for c in sorted(counts))
    low = dim.channels_at(dim.low)  # type: ignore[arg-type]
    return tuple(dim.width_for(c) for c in range(low, dim.channels + 1, dim.step))


class SpaceEncoding:
    """Index vectors for the subnets of `space` (see the module docstring)."""

    def __init__(self, space: SearchSpace) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"SpaceEncoding: expected a SearchSpace, got {type(space).__name__}")
        self.space = space
        dims = [EncodedDim("width", d.name, _width_values(space, d.name)) for d in space.widths]
        dims += [EncodedDim("depth", d.name, tuple(d.choices)) for d in space.depths]
        if not dims:
            raise SearchError("the search space has no dimensions: there is nothing to search")
        self.dims: tuple[EncodedDim, ...] = tuple(dims)
        self.cardinalities = np.array([len(d.values) for d in dims], dtype=np.int64)
        self._index = [{v: i for i, v in enumerate(d.values)} for d in dims]

    @property
    def size(self) -> int:
        """Number of distinct architectures (canonical subnets: the widths of blocks a depth skips do not count)."""
        blocked = [d for d in self.dims if d.kind == "width" and self.space.width_dim(d.name).block is not None]
        if not blocked:
            return int(np.prod(self.cardinalities, dtype=object))
        free = int(np.prod([len(d.values) for d in self.dims if d.kind == "width" and d not in blocked], dtype=object))
        depth_dims = [d for d in self.space.depths]
        total = 0
        for depths in itertools.product(*(d.choices for d in depth_dims)):
            chosen = dict(zip((d.name for d in depth_dims), depths))
            count = 1
            for dim in blocked:
                stage, number = self.space.width_dim(dim.name).block  # type: ignore[misc]
                count *= len(dim.values) if chosen[stage] >= number else 1
            total += count
        return free * total

    def __len__(self) -> int:
        return len(self.dims)

    # -- subnet <-> indices ------------------------------------------------------------------------------
    def canonical(self, sub: Subnet) -> Subnet:
        """`sub` checked against the space and in canonical form."""
        self.space.validate(sub)
        return self.space.canonical(sub)

    def to_indices(self, sub: Subnet) -> np.ndarray:
        """The index vector of `sub` (validated and canonicalised first)."""
        canonical = self.canonical(sub)
        widths, depths = canonical.widths, canonical.depths
        out = np.empty(len(self.dims), dtype=np.int64)
        for i, dim in enumerate(self.dims):
            value = widths[dim.name] if dim.kind == "width" else depths[dim.name]
            try:
                out[i] = self._index[i][value]
            except KeyError:
                raise InvalidSubnetError(f"{dim.kind} {dim.name!r} = {value!r} is not an encoded choice") from None
        return out

    def from_indices(self, indices: Sequence[int] | np.ndarray) -> Subnet:
        """The subnet of an index vector; an index out of range raises `SearchError` naming the dimension."""
        idx = [int(i) for i in indices]
        if len(idx) != len(self.dims):
            raise SearchError(f"from_indices: expected {len(self.dims)} indices, got {len(idx)}")
        widths: dict[str, float] = {}
        depths: dict[str, int] = {}
        for i, dim in zip(idx, self.dims):
            if not 0 <= i < len(dim.values):
                raise SearchError(f"from_indices: {dim.param} index {i} is outside [0, {len(dim.values) - 1}]")
            if dim.kind == "width":
                widths[dim.name] = float(dim.values[i])
            else:
                depths[dim.name] = int(dim.values[i])
        return self.space.canonical(Subnet(widths, depths))

    # -- Optuna ------------------------------------------------------------------------------------------
    def suggest(self, trial: Any) -> Subnet:
        """Ask an Optuna trial for one ordered integer per dimension and build the subnet."""
        return self.from_indices([trial.suggest_int(d.param, 0, len(d.values) - 1) for d in self.dims])

    def params(self, sub: Subnet) -> dict[str, int]:
        """Optuna parameters of `sub` (for `study.enqueue_trial`)."""
        return {d.param: int(i) for d, i in zip(self.dims, self.to_indices(sub))}

    def from_params(self, params: Mapping[str, Any]) -> Subnet:
        """The subnet of a trial's parameters; a missing parameter raises `SearchError`."""
        try:
            return self.from_indices([params[d.param] for d in self.dims])
        except KeyError as exc:
            raise SearchError(f"trial parameters lack {exc.args[0]!r}: the study encodes another space") from None

    # -- sampling and features -----------------------------------------------------------------------------
    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` uniformly random index vectors (rows)."""
        return rng.integers(0, self.cardinalities[None, :], size=(n, len(self.dims)))

    def ordinal(self, indices: np.ndarray) -> np.ndarray:
        """Index vectors scaled to [0, 1] per dimension (0 for one-choice dimensions)."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.float64))
        span = np.maximum(self.cardinalities - 1, 1).astype(np.float64)
        return idx / span

    def features(self, indices: np.ndarray) -> np.ndarray:
        """Predictor inputs: ordinal values, one-hot choices, and pairwise products of ordinal values."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.int64))
        ordinal = self.ordinal(idx)
        blocks = [ordinal]
        for i, card in enumerate(self.cardinalities):
            if card > 1:
                blocks.append(np.eye(card)[idx[:, i]])
        k = ordinal.shape[1]
        if k > 1:
            rows, cols = np.triu_indices(k, 1)
            blocks.append(ordinal[:, rows] * ordinal[:, cols])
        return np.concatenate(blocks, axis=1)
