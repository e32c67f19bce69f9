"""`random`: Optuna's random sampler (after the largest and smallest subnets, as every sampler)."""

from __future__ import annotations

from typing import Any

from tailor.search.algorithms.base import SamplerAlgorithm, register_algorithm


@register_algorithm("random")
class RandomSearch(SamplerAlgorithm):
    """`optuna.samplers.RandomSampler`: subnets drawn uniformly per dimension."""

    def sampler(self, seed: int, budget: int) -> Any:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)
