"""The channel axis moves with indexing and permutes exactly as torch moves it."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.convert.analysis import _indexed_channel_axis

SIZES = (2, 3, 5, 7, 11)  # distinct sizes, so that an axis is found again by its size


@st.composite
def indexed(draw: st.DrawFn) -> tuple[int, int, tuple]:
    ndim = draw(st.integers(2, 5))
    channel = draw(st.integers(1, ndim - 1))
    entries: list = []
    axis = 0
    while axis < ndim:
        kind = draw(st.sampled_from(["full", "int", "slice", "none", "stop"]))
        if kind == "stop":
            break
        if kind == "none":
            entries.append(None)
            continue
        if kind == "int":
            entries.append(draw(st.integers(0, 1)))
        elif kind == "slice":
            entries.append(slice(draw(st.integers(0, 1)), None))
        else:
            entries.append(slice(None))
        axis += 1
    if draw(st.booleans()) and axis < ndim:
        entries.append(Ellipsis)
    return ndim, channel, tuple(entries)


@settings(max_examples=300, deadline=None)
@given(case=indexed())
def test_indexed_channel_axis_follows_torch(case: tuple[int, int, tuple]) -> None:
    ndim, channel, index = case
    x = torch.zeros(SIZES[:ndim])
    out = x[index]
    axis = _indexed_channel_axis(index, ndim, channel)
    touches = any(
        not (isinstance(e, slice) and e == slice(None))
        for position, e in _positions(index, ndim)
        if position in (0, channel)
    ) or _none_before_batch(index)
    if touches:
        assert axis is None
    else:
        assert axis is not None and out.shape[axis] == SIZES[channel]
        assert out.shape[0] == SIZES[0]


def _positions(index: tuple, ndim: int) -> list[tuple[int, object]]:
    """(input axis, entry) of every entry that consumes an axis."""
    consuming = sum(1 for e in index if e is not None and e is not Ellipsis)
    out, axis = [], 0
    for entry in index:
        if entry is Ellipsis:
            axis += ndim - consuming
        elif entry is not None:
            out.append((axis, entry))
            axis += 1
    return out


def _none_before_batch(index: tuple) -> bool:
    for entry in index:
        if entry is None:
            return True
        if entry is not Ellipsis:
            return False
    return False
