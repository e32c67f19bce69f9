"""Helpers for the serving-core tests (no tests here): synthetic profiles and hypothesis strategies."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tailor.serve import ServingProfile, synthetic_profile
from tailor.serve.traces import Trace

BATCHES = (1, 2, 4, 8, 16, 32)


def small_profile(batch_sizes: tuple[int, ...] = BATCHES) -> ServingProfile:
    """Four subnets, latency base + per_item * b, accuracy rising with cost."""
    return ServingProfile(
        synthetic_profile(
            accuracies=[0.70, 0.74, 0.77, 0.80],
            base_ms=[1.0, 1.5, 2.2, 3.0],
            per_item_ms=[0.2, 0.35, 0.55, 0.8],
            batch_sizes=batch_sizes,
        )
    )


@st.composite
def monotone_profiles(draw: st.DrawFn, max_subnets: int = 5) -> ServingProfile:
    """Random Pareto profiles: accuracy and latency both rise with the subnet, latency rises with batch."""
    k = draw(st.integers(1, max_subnets))
    batches = tuple(sorted(draw(st.sets(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16]), min_size=1, max_size=5))))
    # on grids, so that no two subnets' latencies or accuracies are equal after the profile's rounding
    base = sorted(v / 100 for v in draw(st.lists(st.integers(20, 1000), min_size=k, max_size=k, unique=True)))
    item = sorted(v / 100 for v in draw(st.lists(st.integers(1, 300), min_size=k, max_size=k)))
    acc = sorted(v / 1000 for v in draw(st.lists(st.integers(100, 990), min_size=k, max_size=k, unique=True)))
    return ServingProfile(synthetic_profile(acc, base, item, batch_sizes=batches))


@st.composite
def small_traces(draw: st.DrawFn, max_requests: int = 60, per_request: bool = False) -> Trace:
    """A few dozen arrivals in well under a second, sometimes in tight bursts; optional per-request deadlines."""
    n = draw(st.integers(0, max_requests))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.0002, 0.001, 0.003, 0.01, 0.05]), min_size=n, max_size=n))
    arrivals = np.cumsum(gaps)
    deadlines = None
    if per_request and n:
        deadlines = np.asarray(draw(st.lists(st.floats(1.0, 80.0), min_size=n, max_size=n)))
    return Trace(arrivals, deadlines, "hypothesis", float(arrivals[-1]) + 0.1 if n else 0.1)
