"""Every registered model: subnets run, activated == extracted, sizes shrink, depth skips blocks."""

from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from model_helpers import MODELS, macs, make, sample_input
from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import ElasticStage


def test_registry_lists_and_rejects() -> None:
    assert {"resnet20", "resnet32", "resnet56", "resnet18", "resnet50"} <= set(MODELS)
    with pytest.raises(UnsupportedModelError, match="unknown model 'nope'.*resnet20"):
        tailor.create_model("nope")


@pytest.mark.parametrize("name", MODELS)
def test_random_subnets_match_their_extraction(name: str) -> None:
    model = make(name)
    x = sample_input(name)
    rng = random.Random(name)
    subs = [model.space.largest(), model.space.smallest()] + [model.space.sample(rng) for _ in range(2)]
    for sub in subs:
        model.activate(sub)
        with torch.no_grad():
            out = model(x)
        static = model.extract()
        assert out.shape == (2, 7)
        assert not [m for m in static.modules() if type(m).__module__.startswith("tailor")]
        with torch.no_grad():
            torch.testing.assert_close(static(x), out, rtol=1e-4, atol=1e-5)
        assert model.active_subnet == model.space.canonical(sub)
        blocks = {n for n, _ in static.named_modules() if re.fullmatch(r"stages\.\d+\.blocks\.\d+", n)}
        assert len(blocks) == sum(sub.depths.values())  # skipped blocks are gone from the extraction


@pytest.mark.parametrize("name", MODELS)
def test_narrower_subnets_have_fewer_parameters_and_macs(name: str) -> None:
    model = make(name)
    x = sample_input(name, 1)
    largest = model.space.largest()
    counts, work = [], []
    for w in (0.25, 0.5, 0.75, 1.0):  # every dimension at w, or at its nearest choice at or above w
        static = model.extract(model.space.from_wm([w] * model.space.search_dim, depths=largest.depths))
        counts.append(sum(p.numel() for p in static.parameters()))
        work.append(macs(static, x))
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert work == sorted(work) and len(set(work)) == 4
    assert counts[-1] == sum(p.numel() for p in model.parameters())  # full width holds every weight


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_resnet20_any_subnet_matches_extraction(seed: int) -> None:
    model = make("resnet20")
    sub = model.space.sample(seed)
    x = sample_input("resnet20")
    with torch.no_grad(), model.activated(sub):
        out = model(x)
    static = model.extract(sub)
    with torch.no_grad():
        torch.testing.assert_close(static(x), out, rtol=1e-4, atol=1e-5)
    # any narrowing of a width never adds parameters
    narrower = sub.replace(widths={name: model.space.width_dim(name).min for name in sub.widths})
    assert sum(p.numel() for p in model.extract(narrower).parameters()) <= sum(p.numel() for p in static.parameters())


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_depth_runs_exactly_the_first_blocks(name: str) -> None:
    model = make(name)
    calls: dict[str, int] = {}
    for stage_index, stage in enumerate(model.stages):
        assert isinstance(stage, ElasticStage)
        for block_index, block in enumerate(stage.blocks):
            key = f"stage{stage_index + 1}.{block_index}"
            block.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
    sub = model.space.sample(random.Random(3))
    model.activate(sub)
    with torch.no_grad():
        model(sample_input(name, 1))
    expected = {f"{dim}.{i}" for dim, depth in sub.depths.items() for i in range(depth)}
    assert set(calls) == expected and all(v == 1 for v in calls.values())
    static = model.extract()
    blocks_in_static = {n for n, _ in static.named_modules() if re.fullmatch(r"stages\.\d+\.blocks\.\d+", n)}
    assert len(blocks_in_static) == sum(sub.depths.values())


def test_invalid_subnets_are_rejected_with_the_dimension_named() -> None:
    model = make("resnet20")
    largest = model.space.largest()
    with pytest.raises(InvalidSubnetError, match=r"'stage2.block1.mid' = 0.3"):
        model.activate(largest.replace(widths={"stage2.block1.mid": 0.3}))
    with pytest.raises(InvalidSubnetError, match=r"depth 'stage3' = 4"):
        model.activate(largest.replace(depths={"stage3": 4}))
    with pytest.raises(InvalidSubnetError, match="not in the space"):
        model.activate(largest.replace(widths={"bogus": 0.5}))
    assert model.active_subnet == largest  # a rejected activation changes nothing


def test_activated_restores_the_previous_subnet() -> None:
    model = make("resnet20")
    small, big = model.space.smallest(), model.space.largest()
    model.activate(small)
    with model.activated(big):
        assert model.active_subnet == big
    assert model.active_subnet == small


def test_training_sends_gradients_to_the_shared_weights() -> None:
    model = make("resnet20").train()
    model.activate(model.space.uniform(0.5))
    loss = torch.nn.functional.cross_entropy(model(sample_input("resnet20", 4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    weight = model.stages[1].blocks[0].conv1.weight
    assert weight.grad is not None
    assert weight.grad[:16, :8].abs().sum() > 0
    assert weight.grad[16:].abs().sum() == 0


def test_repeated_eval_forwards_do_not_copy_weights_again() -> None:
    model = make("resnet20")
    model.activate(model.space.uniform(0.5))
    x = sample_input("resnet20", 1)
    with torch.inference_mode():
        model(x)
        snapshot = {name: dict(m._eval_cache) for name, m in model.elastic_layers() if hasattr(m, "_eval_cache")}
        model(x)
    for name, module in model.elastic_layers():
        if hasattr(module, "_eval_cache"):
            assert module._eval_cache.keys() == snapshot[name].keys()
            for key, entry in module._eval_cache.items():
                assert all(a is b for a, b in zip(entry, snapshot[name][key])), name


def test_every_family_module_is_registered_without_being_listed() -> None:
    """A family is one module with `@register_model` factories: the registry finds it, no list to extend."""
    import ast
    from pathlib import Path

    package = Path(tailor.models.__file__).parent
    decorated = {
        node.name
        for path in package.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "register_model" for d in node.decorator_list)
    }
    assert len(decorated) >= 10 and decorated == set(tailor.list_models())
