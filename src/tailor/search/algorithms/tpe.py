"""`tpe`: Optuna's multivariate, multi-objective TPE sampler; constraints reach it through `trial.set_constraint`."""

from __future__ import annotations

from typing import Any

from tailor.search.algorithms.base import SamplerAlgorithm, register_algorithm


@register_algorithm("tpe")
class TPE(SamplerAlgorithm):
    """`optuna.samplers.TPESampler(multivariate=True)` after `max(5, min(20, budget // 8))` random start-up trials."""

    def sampler(self, seed: int, budget: int) -> Any:
        import optuna

        startup = max(5, min(20, budget // 8))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
