"""SpaceEncoding (index vectors), the surrogate predictors, and the numpy NSGA-II used by evolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from search_helpers import analytic_space

from tailor.errors import InvalidSubnetError
from tailor.search import SearchError, SpaceEncoding, SurrogateModel
from tailor.search.evolution import crowding_distance, evolve, nondominated_ranks
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_encoding_round_trips_random_subnets(seed: int) -> None:
    space = SearchSpace(
        [WidthDim("a", 8, (0.25, 0.5, 1.0)), WidthDim("b", 12, low=0.25, step=2)], [DepthDim("s", (1, 2, 3))]
    )
    enc = SpaceEncoding(space)
    sub = space.sample(seed)
    idx = enc.to_indices(sub)
    assert enc.from_indices(idx) == space.canonical(sub)
    assert enc.from_params(enc.params(sub)) == space.canonical(sub)


def test_encoding_has_one_index_per_architecture() -> None:
    # 0.3 and 0.5 of 4 channels both keep 2 channels: one choice, not two
    space = SearchSpace([WidthDim("a", 4, (0.3, 0.5, 1.0)), WidthDim("b", 12, low=0.25, step=2)])
    enc = SpaceEncoding(space)
    assert enc.dims[0].values == (0.3, 1.0)
    assert [space.width_dim("b").channels_at(w) for w in enc.dims[1].values] == [4, 6, 8, 10, 12]
    assert enc.size == 10
    assert (enc.to_indices(Subnet({"a": 0.5, "b": 0.5})) == [0, 1]).all()
    with pytest.raises(SearchError, match="width:b index 7"):
        enc.from_indices([0, 7])
    with pytest.raises(InvalidSubnetError):
        enc.to_indices(Subnet({"a": 0.7, "b": 0.5}))


def _target(enc: SpaceEncoding, idx: np.ndarray) -> np.ndarray:
    """An additive function of the choices plus pairwise interactions of ordinal values."""
    o = enc.ordinal(idx)
    return np.sin(3 * o[:, 0]) + o[:, 1] ** 2 - 0.5 * o[:, 2] + 2 * o[:, 0] * o[:, 3] - o[:, 1] * o[:, 4]


def test_ridge_surrogate_recovers_a_function_in_its_feature_span() -> None:
    enc = SpaceEncoding(analytic_space(widths=4, depths=2))
    rng = np.random.default_rng(0)
    train, test = enc.random(rng, 120), enc.random(rng, 200)
    model = SurrogateModel(enc, "ridge").fit(train, _target(enc, train))
    error = model.predict(test) - _target(enc, test)
    assert np.abs(error).max() < 0.02
    assert model.loo_rmse is not None and model.loo_rmse < 0.02


def test_mlp_surrogate_ranks_held_out_subnets() -> None:
    enc = SpaceEncoding(analytic_space(widths=4, depths=2))
    rng = np.random.default_rng(1)
    train, test = enc.random(rng, 150), enc.random(rng, 200)
    model = SurrogateModel(enc, "mlp", seed=0).fit(train, _target(enc, train))
    assert np.corrcoef(model.predict(test), _target(enc, test))[0, 1] > 0.9


def test_surrogate_rejects_bad_input() -> None:
    enc = SpaceEncoding(analytic_space())
    with pytest.raises(SearchError, match="kind"):
        SurrogateModel(enc, "forest")
    with pytest.raises(SearchError, match="before fit"):
        SurrogateModel(enc).predict(enc.random(np.random.default_rng(0), 2))
    with pytest.raises(SearchError, match="values"):
        SurrogateModel(enc).fit(enc.random(np.random.default_rng(0), 3), [1.0, 2.0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=25),
    st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0]), min_size=25, max_size=25),
)
def test_nondominated_ranks_follow_constrained_domination(points, violation) -> None:
    F = np.array(points, dtype=float)
    v = np.array(violation[: len(F)])
    ranks = nondominated_ranks(F, v)

    def dominates(i: int, j: int) -> bool:
        if v[i] <= 0 < v[j]:
            return True
        if v[i] > 0 and v[j] > 0:
            return v[i] < v[j]
        return v[i] <= 0 and v[j] <= 0 and bool((F[i] <= F[j]).all() and (F[i] < F[j]).any())

    for j in range(len(F)):
        dominators = [i for i in range(len(F)) if dominates(i, j)]
        assert all(ranks[i] < ranks[j] for i in dominators)
        if ranks[j] > 0:  # something of the previous front dominates it
            assert any(ranks[i] == ranks[j] - 1 for i in dominators)
    if (v <= 0).any():
        assert ranks[v <= 0].max() < ranks[v > 0].min(initial=10**9), "every feasible row ranks first"


def test_crowding_distance_favours_the_ends_and_sparse_regions() -> None:
    F = np.array([[0.0, 4.0], [1.0, 3.0], [1.1, 2.9], [4.0, 0.0]])
    d = crowding_distance(F, np.zeros(4, dtype=int))
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx((1.1 - 0.0) / 4 + (4.0 - 2.9) / 4)
    assert d[2] > d[1]


def test_evolve_finds_the_front_of_an_exact_scorer() -> None:
    enc = SpaceEncoding(analytic_space(widths=4, depths=2))
    everything = np.array(np.meshgrid(*[range(c) for c in enc.cardinalities], indexing="ij")).reshape(len(enc), -1).T

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o = enc.ordinal(idx)
        return np.column_stack([-o.sum(axis=1), (o**2).sum(axis=1) + 0.1 * o[:, 0]]), np.zeros(len(idx))

    F_all, _ = score(everything)
    true_front = {tuple(r) for r in everything[nondominated_ranks(F_all) == 0]}
    pop, F, v = evolve(enc, score, everything[:0], np.random.default_rng(0), population=64, generations=40)
    found = {tuple(r) for r, rank in zip(pop, nondominated_ranks(F, v)) if rank == 0}
    assert len(found & true_front) >= 0.8 * min(64, len(true_front))
