"""The registered models annotate block-private widths correctly, so canonical subnets name one network."""

from __future__ import annotations

import random

import pytest
import torch

import tailor
from tailor.ops import ElasticStage


@pytest.mark.parametrize("name", tailor.list_models())
def test_block_private_widths_are_read_only_inside_their_block(name: str) -> None:
    model = tailor.create_model(name)
    space = model.space
    owner: dict[str, set[tuple[str, int] | None]] = {}
    inside: dict[int, tuple[str, int]] = {}
    for stage in (m for m in model.modules() if isinstance(m, ElasticStage)):
        for k, block in enumerate(stage.blocks, start=1):
            for module in block.modules():
                inside[id(module)] = (stage.depth_dim, k)
    for module in model.modules():
        dims = getattr(module, "width_dims", None)
        if callable(dims):
            for dim in dims():
                owner.setdefault(dim, set()).add(inside.get(id(module)))
    annotated = [d for d in space.widths if d.block is not None]
    for dim in annotated:
        assert owner[dim.name] == {dim.block}, f"{dim.name} is annotated {dim.block}, read by {owner[dim.name]}"
    if name.startswith(("resnet", "mobilenet", "efficientnet")):
        assert annotated, "per-block widths exist in this family and must be annotated"


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v3_small"])
def test_subnets_differing_only_in_skipped_widths_compute_the_same_network(name: str) -> None:
    torch.manual_seed(0)
    model = tailor.create_model(name).eval()
    space, rng = model.space, random.Random(0)
    x = torch.randn(2, *model.default_input_size)
    checked = 0
    for _ in range(20):
        sub = space.sample(rng)
        skipped = space.skipped(sub)
        if not skipped:
            continue
        other = sub.replace(widths={n: space.width_dim(n).choices[-1] for n in skipped})
        assert other != sub and space.canonical(other) == sub
        with torch.no_grad():
            a = model.extract(sub)(x)
            b = model.extract(other)(x)
        assert torch.equal(a, b)
        checked += 1
    assert checked >= 3
