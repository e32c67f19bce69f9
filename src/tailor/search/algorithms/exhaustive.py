"""`exhaustive`: every subnet of a finite space, once (the benchmark's ground truth; Optuna's `BruteForceSampler`).

Optuna's `BruteForceSampler` walks the space trial by trial through its own bookkeeping; here the networks are
enumerated in canonical form (`SpaceEncoding.from_indices`) and enqueued in chunks, so that each network is
evaluated once however many names it has, and a resumed or shared study skips what it already holds.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from tailor.search.algorithms.base import SearchAlgorithm, register_algorithm
from tailor.search.metrics import SearchError
from tailor.space import Subnet

if TYPE_CHECKING:
    from tailor.search.runner import SearchRun

#: subnets enqueued at a time (the study persists each chunk before the next is enumerated)
CHUNK = 64


@register_algorithm("exhaustive")
class Exhaustive(SearchAlgorithm):
    """Every network of the space; the budget is the space's size (pass `budget=None`)."""

    def budget(self, requested: int | None, space_size: int) -> int:
        if requested is not None and requested != space_size:
            raise SearchError(
                f"exhaustive search evaluates all {space_size} subnets; pass budget=None (got {requested})"
            )
        return space_size

    def run(self, run: SearchRun) -> dict[str, Any]:
        ranges = [range(int(c)) for c in run.encoding.cardinalities]
        chunk: list[Subnet] = []
        for indices in itertools.product(*ranges):
            sub = run.encoding.from_indices(indices)  # canonical: the widths of skipped blocks repeat a network
            if sub not in run.known and sub not in chunk:
                chunk.append(sub)
            if len(chunk) == CHUNK:
                run.evaluate(chunk)
                chunk = []
        run.evaluate(chunk)
        return {}
