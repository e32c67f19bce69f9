"""tailor.dnas.SuperNetModule: mixing, softmax modes (soft, hard straight-through, Gumbel), gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dnas_models import pool
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tailor.dnas import SuperNetError, SuperNetModule
from tailor.errors import InvalidSubnetError, TailorError

MODES = [
    pytest.param(False, False, id="soft"),
    pytest.param(False, True, id="hard"),
    pytest.param(True, False, id="gumbel"),
    pytest.param(True, True, id="gumbel-hard"),
]


def branch_outputs(module: SuperNetModule, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [b(x) for b in module.sn_branches]


@settings(max_examples=25, deadline=None)
@given(
    alpha=st.lists(st.floats(-4, 4, allow_nan=False), min_size=4, max_size=4),
    temperature=st.floats(0.1, 5.0),
)
def test_soft_output_is_the_theta_weighted_sum(alpha: list[float], temperature: float) -> None:
    torch.manual_seed(1)
    module = pool(4).eval()
    with torch.no_grad():
        module.alpha.copy_(torch.tensor(alpha))
    module.softmax_temperature = temperature
    x = torch.randn(2, 4, 5, 5)
    theta = torch.softmax(torch.tensor(alpha) / temperature, dim=0)
    expected = sum(t * y for t, y in zip(theta, branch_outputs(module, x)))
    with torch.no_grad():
        assert torch.allclose(module.theta, theta, atol=1e-6)
        assert torch.allclose(module(x), expected, atol=1e-5)
    assert module.theta.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_alpha_starts_uniform_like_plinio() -> None:
    module = pool(4)
    assert torch.equal(module.alpha.detach(), torch.full((4,), 0.25))
    assert torch.allclose(module.theta, torch.full((4,), 0.25))
    assert module.alpha.requires_grad


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_hard_forward_is_exactly_the_argmax_branch(training: bool) -> None:
    torch.manual_seed(2)
    module = pool(4, hard_softmax=True).train(training)
    with torch.no_grad():
        module.alpha.copy_(torch.tensor([0.1, 0.9, 0.3, 0.2]))
    x = torch.randn(3, 4, 6, 6)
    expected = module.sn_branches[1](x)
    out = module(x)
    assert torch.equal(out, expected)
    weights = module.mixing_weights()
    assert torch.equal(weights.detach(), torch.tensor([0.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize(("gumbel", "hard"), MODES)
def test_gradients_reach_alpha_in_every_softmax_mode(gumbel: bool, hard: bool) -> None:
    torch.manual_seed(3)
    module = pool(4, gumbel_softmax=gumbel, hard_softmax=hard).train()
    with torch.no_grad():
        module.alpha.copy_(torch.tensor([0.3, 0.1, -0.2, 0.05]))
    x = torch.randn(2, 4, 6, 6)
    target = torch.randn(2, 4, 6, 6)
    loss = F.mse_loss(module(x), target)
    loss.backward()
    grad = module.alpha.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum().item() > 0  # PLiNIO's hard mode (plain one-hot) gives exactly zero here
    # the weights of the branches get gradients as well (the chosen one at least, in hard mode)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.sn_branches.parameters())


def test_hard_gradient_is_the_soft_gradient() -> None:
    """Straight-through: the hard mode's α gradient equals the soft mode's for the same upstream gradient."""
    torch.manual_seed(4)
    soft = pool(4).eval()
    hard = pool(4, hard_softmax=True).eval()
    hard.load_state_dict(soft.state_dict())
    upstream = torch.randn(4)
    for module in (soft, hard):
        with torch.no_grad():
            module.alpha.copy_(torch.tensor([0.5, 0.1, -0.3, 0.2]))
        (module.mixing_weights() * upstream).sum().backward()
    assert torch.allclose(soft.alpha.grad, hard.alpha.grad)
    assert hard.alpha.grad.abs().sum() > 0


def test_gumbel_noise_only_in_training_mode() -> None:
    module = pool(4, gumbel_softmax=True)
    x = torch.randn(1, 4, 5, 5)
    module.train()
    torch.manual_seed(10)
    first = module(x)
    torch.manual_seed(11)
    second = module(x)
    assert not torch.allclose(first, second)  # different Gumbel samples mix differently
    module.eval()
    with torch.no_grad():
        expected = sum(t * y for t, y in zip(module.theta, branch_outputs(module, x)))
        assert torch.allclose(module(x), expected, atol=1e-6)
        assert torch.equal(module(x), module(x))


def test_gumbel_hard_in_training_runs_one_sampled_branch() -> None:
    torch.manual_seed(5)
    module = pool(4, gumbel_softmax=True, hard_softmax=True).train()
    x = torch.randn(1, 4, 5, 5)
    outputs = branch_outputs(module, x)
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = module(x)
        matches = [i for i, y in enumerate(outputs) if torch.equal(out, y)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1  # with uniform α the samples visit several alternatives


def test_temperature_sharpens_theta() -> None:
    module = pool(4)
    with torch.no_grad():
        module.alpha.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    module.update_softmax_options(temperature=0.1)
    assert module.theta[0].item() > 0.99
    module.update_softmax_options(temperature=100.0)
    assert module.theta.max().item() < 0.26


def test_different_output_shapes_raise_with_the_shapes() -> None:
    module = SuperNetModule([nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
    with pytest.raises(
        InvalidSubnetError, match=r"same output shape.*0: Conv2d -> \(1, 8, 5, 5\).*1: Conv2d -> \(1, 4, 5, 5\)"
    ):
        module(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize(
    ("branches", "match"),
    [
        ([], "at least one"),
        ([nn.Identity(), "conv"], "alternative 1 is a str"),
        (nn.Conv2d(1, 1, 1), "list of alternative modules"),
        ([nn.Sequential(SuperNetModule([nn.Identity()]))], "nesting is not supported"),
    ],
)
def test_bad_branches_are_refused(branches: object, match: str) -> None:
    with pytest.raises(InvalidSubnetError, match=match):
        SuperNetModule(branches)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"hard": 1}, "hard must be true or false, got 1"),
        ({"gumbel": "yes"}, "gumbel must be true or false, got .yes."),
    ],
)
def test_bad_softmax_options_are_refused(options: dict, match: str) -> None:
    module = pool(4)
    with pytest.raises(SuperNetError, match=match):
        module.update_softmax_options(**options)
    assert isinstance(SuperNetError("x"), TailorError)
    assert module.softmax_temperature == 1.0 and not module.hard_softmax and not module.gumbel_softmax


def test_indexing_and_best_layer_index() -> None:
    module = pool(4)
    assert len(module) == 4 and isinstance(module[3], nn.Identity)
    with torch.no_grad():
        module.alpha.copy_(torch.tensor([0.0, 0.0, 2.0, 1.0]))
    assert module.best_layer_index() == 2
