"""Sizes read in forward code (ShuffleNetV2's split, CBAM's pooling) and warnings a user can read."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from user_models import make_more_model

from tailor.convert import FrozenChannelsWarning, elasticize
from tailor.convert.trace import SPECIALISED, ConvertTracer
from tailor.export import run_onnx, to_onnx

TOLERANCE = 1e-5


def x32(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def check_widths(model: nn.Module, user: nn.Module, x: torch.Tensor) -> None:
    """Full width is the original; every uniform width runs and equals its extraction."""
    with torch.no_grad():
        torch.testing.assert_close(model(x), user(x), rtol=0, atol=TOLERANCE)
        for width in (0.25, 0.5, 0.75, 1.0):
            with model.activated(model.space.uniform(width)):
                torch.testing.assert_close(model.extract()(x), model(x), rtol=0, atol=TOLERANCE)


def test_a_channel_count_computed_from_a_size_converts() -> None:
    user = make_more_model("shufflenet")
    with pytest.warns(FrozenChannelsWarning):
        model = elasticize(user, x32())
    names = {d.name for d in model.space.widths}
    assert {"units.0.conv1", "units.3.conv1", "conv"} <= names  # each unit's branch and the head conv shrink
    frozen = {g.name: g.frozen for g in model.frozen_groups}
    assert "`c = int(x.size(1) * self.ratio)`" in frozen["stem.0"]  # the channels whose count was read stay whole
    check_widths(model, user, x32(seed=2))


def test_the_example_gives_sizes_as_numbers_and_marks_where() -> None:
    class Split(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = int(x.size(1) * 0.5)
            if x.size(1) > 2:
                return x[:, :c] * 2
            return x

    x = torch.randn(2, 6, 4, 4)
    graph = ConvertTracer(example_inputs=(x,)).trace(Split())
    specialised = [n for n in graph.nodes if n.meta.get(SPECIALISED)]
    assert {n.name for n in specialised} == {"mul", "gt"}  # int(...) and the `if`
    getitem = next(n for n in graph.nodes if n.name == "getitem")
    assert getitem.args[1][1] == slice(None, 3, None)  # the example's count, as a constant
    with pytest.raises(Exception, match="cannot be traced"):
        ConvertTracer().trace(Split())  # without the example, fx refuses it


def test_extraction_keeps_no_size_calls_and_cbam_exports_to_onnx(tmp_path: Path) -> None:
    user = make_more_model("cbam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1-channel max/mean maps are nothing to warn about
        model = elasticize(user, x32()).eval()
    sub = model.space.uniform(0.5)
    static = model.extract(sub)
    sizes = [n for n in static.graph.nodes if n.target == "size" or (n.op == "call_function" and n.target is getattr)]
    assert all(n.target == "size" and n.args[1:] == (0,) for n in sizes)  # at most the batch size is read
    result = to_onnx(model, sub, tmp_path / "cbam.onnx")
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-4
    x = x32(batch=3, seed=7)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(result.path, x), static(x).numpy(), rtol=1e-4, atol=1e-4)
    check_widths(model, user, x32(seed=3))


def test_many_groups_frozen_at_one_source_line_are_listed_once() -> None:
    with pytest.warns(FrozenChannelsWarning) as record:
        elasticize(make_more_model("shufflenet"), x32())
    message = str(record[0].message)
    lines = message.splitlines()[1:]
    assert any(line.startswith("  - 4 groups ('units.0.conv2', 'units.1.conv2', 'units.2.conv2', ...)") for line in lines)
    assert sum("`return x.view(b, groups, c // groups, h, w)" in line for line in lines) <= 2  # not once per unit
    assert len(lines) < 8  # 4 units would otherwise list 11 groups
