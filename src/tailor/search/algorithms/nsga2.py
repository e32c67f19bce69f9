"""`nsga2`: Optuna's NSGA-II sampler; constraints reach it through `trial.set_constraint` (constrained domination)."""

from __future__ import annotations

from typing import Any

from tailor.search.algorithms.base import SamplerAlgorithm, check_positive, register_algorithm


@register_algorithm("nsga2")
class NSGA2(SamplerAlgorithm):
    """`optuna.samplers.NSGAIISampler`; `population` defaults to `max(8, min(50, budget // 8))`."""

    def __init__(self, population: int | None = None) -> None:
        self.population = check_positive("population", population)

    def sampler(self, seed: int, budget: int) -> Any:
        import optuna

        size = self.population or max(8, min(50, budget // 8))
        return optuna.samplers.NSGAIISampler(population_size=size, seed=seed)
