"""NSGA-II on index vectors, in numpy: the inner loop of predictor-assisted evolution.

`evolve` breeds a population under a cheap scoring function (surrogate predictions): binary
tournaments on (constrained non-domination rank, crowding distance), uniform crossover, and per-gene
mutation that either steps to a neighbouring choice or redraws it. Deb's constrained domination
puts every feasible vector ahead of every infeasible one, and infeasible ones by total violation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tailor.search.encoding import SpaceEncoding

Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # indices -> (objectives to minimise, violation)


def dominance_matrix(objectives: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """`D[i, j]`: row i constrained-dominates row j (all objectives minimised; violation >= 0, 0 = feasible)."""
    F = np.asarray(objectives, dtype=np.float64)
    n = len(F)
    v = np.zeros(n) if violation is None else np.asarray(violation, dtype=np.float64)
    no_worse = (F[:, None, :] <= F[None, :, :]).all(axis=2)
    better = (F[:, None, :] < F[None, :, :]).any(axis=2)
    pareto = no_worse & better
    feas = v <= 0
    both = feas[:, None] & feas[None, :]
    one = feas[:, None] & ~feas[None, :]
    neither = ~feas[:, None] & ~feas[None, :]
    return (both & pareto) | one | (neither & (v[:, None] < v[None, :]))


def nondominated_ranks(objectives: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Front number of every row (0: no other row constrained-dominates it)."""
    D = dominance_matrix(objectives, violation)
    n = len(D)
    ranks = np.full(n, -1, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        dominated = (D[remaining][:, remaining]).any(axis=0)
        current = np.flatnonzero(remaining)[~dominated]
        ranks[current] = rank
        remaining[current] = False
        rank += 1
    return ranks


def crowding_distance(objectives: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within each front (boundary points get infinity)."""
    F = np.asarray(objectives, dtype=np.float64)
    out = np.zeros(len(F))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        if len(members) <= 2:
            out[members] = np.inf
            continue
        for j in range(F.shape[1]):
            order = members[np.argsort(F[members, j], kind="stable")]
            span = F[order[-1], j] - F[order[0], j]
            out[order[0]] = out[order[-1]] = np.inf
            if span > 0:
                out[order[1:-1]] += (F[order[2:], j] - F[order[:-2], j]) / span
    return out


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def select_best(F: np.ndarray, v: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` best rows: by constrained non-domination rank, then crowding distance."""
    ranks = nondominated_ranks(F, v)
    crowd = crowding_distance(F, ranks)
    order = np.lexsort((-crowd, ranks))
    return order[:count]


def evolve(
    encoding: SpaceEncoding,
    score: Scorer,
    initial: np.ndarray,
    rng: np.random.Generator,
    population: int = 64,
    generations: int = 25,
    crossover_prob: float = 0.9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run NSGA-II; returns the final population's index vectors, scores and violations (rank 0 first)."""
    k = len(encoding)
    cards = encoding.cardinalities
    pop = _unique_rows(np.asarray(initial, dtype=np.int64).reshape(-1, k))
    if len(pop) < population:
        pop = _unique_rows(np.concatenate([pop, encoding.random(rng, population - len(pop))]))
    F, v = score(pop)
    keep = select_best(F, v, population)
    pop, F, v = pop[keep], F[keep], v[keep]
    for _ in range(generations):
        ranks = nondominated_ranks(F, v)
        crowd = crowding_distance(F, ranks)
        n = len(pop)
        a, b = rng.integers(0, n, size=(2, population))
        better = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowd[a] >= crowd[b]))
        parents = np.where(better, a, b)
        mates = parents[rng.permutation(population)]
        children = pop[parents].copy()
        cross = (rng.random(population) < crossover_prob)[:, None] & (rng.random((population, k)) < 0.5)
        children[cross] = pop[mates][cross]
        mutate = rng.random((population, k)) < 1.0 / k
        step = np.where(rng.random((population, k)) < 0.5, -1, 1)
        stepped = np.clip(children + step, 0, cards - 1)
        redrawn = rng.integers(0, cards[None, :], size=(population, k))
        local = rng.random((population, k)) < 0.5
        children = np.where(mutate, np.where(local, stepped, redrawn), children)
        merged = _unique_rows(np.concatenate([pop, children]))
        Fm, vm = score(merged)
        keep = select_best(Fm, vm, population)
        pop, F, v = merged[keep], Fm[keep], vm[keep]
    return pop, F, v
