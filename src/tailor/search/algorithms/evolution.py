"""`evolution`: predictor-assisted evolution, as Once-for-All (surrogates screen, the study evaluates).

A random start (20% of the budget, after the largest and smallest subnets), then rounds of `batch` subnets:
each round fits a `SurrogateModel` per needed metric on everything evaluated so far (accuracy with the
chosen `predictor`, costs with ridge), runs NSGA-II on the predictions (`tailor.search.evolution.evolve`)
from the measured front, and evaluates half the batch from the predicted front (spread along the first
cost objective) and half from the best-predicted unevaluated neighbours of the measured front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tailor.search.algorithms.base import SearchAlgorithm, check_positive, register_algorithm
from tailor.search.encoding import SpaceEncoding
from tailor.search.evolution import evolve, select_best
from tailor.search.metrics import ACCURACY, SearchError, feasible, maximize
from tailor.search.pareto import pareto_mask
from tailor.search.predictor import KINDS, SurrogateModel
from tailor.space import Subnet

if TYPE_CHECKING:
    from tailor.search.runner import SearchRun

#: share of each round's batch taken from the neighbours of the measured front (the rest: the predicted front)
LOCAL_SHARE = 0.5
#: share of the budget evaluated at random before the first round
INITIAL_SHARE = 0.2


@register_algorithm("evolution")
class Evolution(SearchAlgorithm):
    """Predictor-assisted evolution; `predictor` ("ridge" or "mlp") predicts accuracy, `batch` subnets a round
    (default `max(2, budget // 10)`)."""

    def __init__(self, predictor: str = "ridge", batch: int | None = None) -> None:
        if predictor not in KINDS:
            raise SearchError(f"unknown predictor {predictor!r}; expected one of {list(KINDS)}")
        self.predictor = predictor
        self.batch = check_positive("batch", batch)

    def run(self, run: SearchRun) -> dict[str, Any]:
        rng = np.random.default_rng([run.seed, run.worker])
        run.evaluate(run.first)
        initial = max(len(run.known), min(run.budget, max(4, int(INITIAL_SHARE * run.budget))))
        run.optimize(4 * initial, target=initial)  # random start (after the largest/smallest anchors)
        batch = self.batch or max(2, run.budget // 10)
        rounds, loo = 0, {}
        while True:
            run.sync()
            remaining = run.budget - len(run.known)
            if remaining <= 0:
                break
            subs = [s for s, m in run.known.items() if all(n in m for n in run.needed)]
            indices = np.array([run.encoding.to_indices(s) for s in subs])
            models = self._fit(run, subs, indices, seed=run.seed + rounds)
            loo.update({name: model.loo_rmse for name, model in models.items()})
            proposals = self._propose(run, subs, indices, models, rng, min(batch, remaining))
            run.evaluate(proposals)
            rounds += 1
        return {"rounds": rounds, "batch": batch, "initial_random": initial, "predictor": self.predictor,
                "predictor_loo_rmse": {k: float(v) for k, v in loo.items() if v is not None}}  # fmt: skip

    def _fit(self, run: SearchRun, subs: Sequence[Subnet], indices: np.ndarray, seed: int) -> dict[str, SurrogateModel]:
        """One surrogate per needed metric, fitted on every subnet evaluated so far."""
        models = {}
        for name in run.needed:
            kind = self.predictor if name == ACCURACY else "ridge"  # costs are near-linear in the pairwise features
            models[name] = SurrogateModel(run.encoding, kind, seed=seed).fit(
                indices, [run.known[s][name] for s in subs]
            )
        return models

    def _propose(
        self,
        run: SearchRun,
        subs: Sequence[Subnet],
        indices: np.ndarray,
        models: Mapping[str, SurrogateModel],
        rng: np.random.Generator,
        take: int,
    ) -> list[Subnet]:
        """`take` unevaluated subnets: the neighbours of the measured front and the predicted front's spread."""
        encoding, objectives = run.encoding, run.objectives
        score = _scorer(models, objectives, run.constraints)
        true = np.array([[run.known[s][n] for n in objectives] for s in subs])
        fits = np.array([feasible(run.known[s], run.constraints) for s in subs])
        seeds = indices[:0]
        if fits.any():  # start from the measured front
            seeds = indices[fits][pareto_mask(true[fits], [maximize(n) for n in objectives])]
        pop, F, v = evolve(encoding, score, seeds, rng)
        known_keys = {tuple(i) for i in indices}
        fresh = [i for i in range(len(pop)) if tuple(pop[i]) not in known_keys]
        # exploitation: the best-predicted unevaluated neighbours of the measured front
        local: list[Subnet] = []
        if LOCAL_SHARE > 0 and len(seeds):
            near = _neighbours(encoding, seeds, known_keys)
            if len(near):
                Fn, vn = score(near)
                picks = select_best(Fn, vn, min(round(LOCAL_SHARE * take), len(near)))
                local = [encoding.from_indices(near[i]) for i in picks]
        # exploration: the surrogate's own front, spread along the first cost objective
        ranked = [i for i in fresh if v[i] <= 0] or fresh
        ranked = [i for i in ranked if encoding.from_indices(pop[i]) not in local]
        proposals: list[Subnet] = []
        if ranked and take > len(local):
            costs = [j for j, n in enumerate(objectives) if not maximize(n)]
            key = F[ranked, costs[0]] if costs else F[ranked, 0]
            proposals = [encoding.from_indices(pop[ranked[p]]) for p in _spread(np.asarray(key), take - len(local))]
        proposals += local
        while len(proposals) < take:  # the predicted front is exhausted: explore at random
            sub = encoding.from_indices(encoding.random(rng, 1)[0])
            if sub not in run.known and sub not in proposals:
                proposals.append(sub)
        return proposals


def _spread(order_values: np.ndarray, count: int) -> np.ndarray:
    """`count` positions spread evenly along `order_values` (sorted ascending)."""
    order = np.argsort(order_values, kind="stable")
    if count >= len(order):
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, count).round().astype(int))]


def _scorer(models: Mapping[str, SurrogateModel], objectives: Sequence[str], constraints: Mapping[str, float]):
    """Predicted objectives (all minimised) and relative predicted constraint violation of index vectors."""

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = {name: model.predict(idx) for name, model in models.items()}
        F = np.column_stack([-pred[n] if maximize(n) else pred[n] for n in objectives])
        v = np.zeros(len(idx))
        for name, bound in constraints.items():
            excess = bound - pred[name] if maximize(name) else pred[name] - bound
            v += np.clip(excess, 0.0, None) / max(abs(bound), 1e-12)
        return F, v

    return score


def _neighbours(encoding: SpaceEncoding, rows: np.ndarray, exclude: set[tuple[int, ...]]) -> np.ndarray:
    """Index vectors one step (one dimension, one choice up or down) from `rows`, minus `exclude`."""
    found: set[tuple[int, ...]] = set()
    for row in rows:
        for dim, card in enumerate(encoding.cardinalities):
            for step in (-1, 1):
                moved = row.copy()
                moved[dim] += step
                key = tuple(int(v) for v in moved)
                if 0 <= moved[dim] < card and key not in exclude:
                    found.add(key)
    return np.array(sorted(found), dtype=np.int64).reshape(-1, len(encoding))
