"""TensorMemory counts what a block allocates: new storages only, freed ones leave the live total."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.train.memory import TensorMemory, parameter_bytes


@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=6))
@settings(max_examples=25, deadline=None)
def test_kept_tensors_add_up_and_freed_ones_do_not_raise_the_peak(sizes: list[int]) -> None:
    with TensorMemory() as memory:
        kept = [torch.zeros(n) for n in sizes]
    assert memory.report.peak_bytes == 4 * sum(sizes)
    assert memory.report.allocations == len(sizes)
    del kept
    with TensorMemory() as memory:
        for n in sizes:
            torch.zeros(n)  # dropped at once: never two alive together
    assert memory.report.peak_bytes == 4 * max(sizes)
    assert memory.report.allocated_bytes == 4 * sum(sizes)


def test_views_and_in_place_results_are_not_allocations() -> None:
    base = torch.ones(1000)
    with TensorMemory() as memory:
        base.add_(1)
        view = base[:10]
        view.mul_(2)
        fresh = base * 2
    assert memory.report.allocations == 1 and memory.report.peak_bytes == 4000
    assert fresh.sum() > 0


def test_parameter_bytes_counts_parameters_and_buffers() -> None:
    module = torch.nn.BatchNorm1d(10)  # 2 parameters + 2 float buffers of 10, one int64 counter
    assert parameter_bytes(module) == 4 * 40 + 8
