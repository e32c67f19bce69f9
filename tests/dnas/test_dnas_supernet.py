"""tailor.dnas.SuperNet: hand-computed costs, gradients of the cost, search, export, phases, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dnas_models import (
    POOL_PARAMS,
    TOY_FIXED_MACS,
    TOY_FIXED_PARAMS,
    TOY_INPUT,
    Toy,
    TwoStage,
    log_theta,
    pool,
    pool_macs,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tailor.cost
from tailor.dnas import MacsCost, ParamsCost, SuperNet, SuperNetError, SuperNetModule
from tailor.errors import InvalidSubnetError, UnsupportedModelError

THETA = [0.1, 0.2, 0.3, 0.4]


def set_alpha(module: SuperNetModule, alpha: torch.Tensor) -> None:
    with torch.no_grad():
        module.alpha.copy_(alpha)


# -- hand-computed costs ------------------------------------------------------------------------------------


def test_branch_costs_are_hand_computed_at_the_branch_input_shape() -> None:
    net = SuperNet(Toy(), cost=["params", "macs"], input_shape=TOY_INPUT)
    assert net.branch_costs("params") == {"choice": POOL_PARAMS}
    assert net.branch_costs("macs") == {"choice": pool_macs(16)}  # 4x4 after the stride-2 stem, not 8x8
    assert pool_macs(16) == [2304, 6400, 832, 0]


@pytest.mark.parametrize("full_cost", [False, True])
def test_expected_cost_is_theta_weighted(full_cost: bool) -> None:
    model = Toy()
    net = SuperNet(model, cost={"params": tailor.cost.params, "macs": tailor.cost.macs}, input_shape=TOY_INPUT,
                   full_cost=full_cost)  # fmt: skip
    fixed_params = TOY_FIXED_PARAMS if full_cost else 0
    fixed_macs = TOY_FIXED_MACS if full_cost else 0
    # uniform θ at construction: (148 + 404 + 60 + 0) / 4 = 153 params; (2304 + 6400 + 832) / 4 = 2384 MACs
    assert net.get_cost("params").item() == pytest.approx(153 + fixed_params)
    assert net.get_cost("macs").item() == pytest.approx(2384 + fixed_macs)
    set_alpha(model.choice, log_theta(THETA))
    # 0.1 * 148 + 0.2 * 404 + 0.3 * 60 = 113.6 params; 0.1 * 2304 + 0.2 * 6400 + 0.3 * 832 = 1760 MACs
    assert net.get_cost("params").item() == pytest.approx(113.6 + fixed_params, rel=1e-6)
    assert net.get_cost("macs").item() == pytest.approx(1760.0 + fixed_macs, rel=1e-6)
    assert TOY_FIXED_PARAMS == 170 and TOY_FIXED_MACS == 1768


def test_costs_of_two_modules_at_two_resolutions_add_up() -> None:
    model = TwoStage()
    net = SuperNet(model, cost=MacsCost(), input_shape=(3, 8, 8))
    assert net.branch_costs() == {"blocks.0": pool_macs(64), "blocks.2": pool_macs(16)}
    set_alpha(model.blocks[0], log_theta(THETA))
    set_alpha(model.blocks[2], log_theta([0.4, 0.3, 0.2, 0.1]))
    expected = sum(t * c for t, c in zip(THETA, pool_macs(64))) + sum(
        t * c for t, c in zip([0.4, 0.3, 0.2, 0.1], pool_macs(16))
    )
    assert net.cost.item() == pytest.approx(expected, rel=1e-6)


def test_hard_mode_cost_is_the_argmax_cost_with_a_soft_gradient() -> None:
    model = Toy(hard_softmax=True)
    net = SuperNet(model, cost="params", input_shape=TOY_INPUT)
    set_alpha(model.choice, log_theta(THETA))
    cost = net.cost
    assert cost.item() == 0.0  # argmax is the identity (θ = 0.4)
    cost.backward()
    assert model.choice.alpha.grad.abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    alpha=st.lists(st.floats(-3, 3, allow_nan=False), min_size=4, max_size=4),
    temperature=st.floats(0.2, 4.0),
)
def test_cost_gradient_matches_the_softmax_derivative(alpha: list[float], temperature: float) -> None:
    model = Toy()
    net = SuperNet(model, cost="params", input_shape=TOY_INPUT)
    set_alpha(model.choice, torch.tensor(alpha))
    net.update_softmax_options(temperature=temperature)
    cost = net.cost
    cost.backward()
    theta = torch.softmax(torch.tensor(alpha, dtype=torch.float64) / temperature, 0)
    c = torch.tensor(POOL_PARAMS, dtype=torch.float64)
    expected_cost = (theta * c).sum()
    expected_grad = theta * (c - expected_cost) / temperature  # d/dα_j Σθ_i c_i
    assert cost.item() == pytest.approx(expected_cost.item(), rel=1e-5, abs=1e-3)
    assert torch.allclose(model.choice.alpha.grad.double(), expected_grad, rtol=1e-4, atol=1e-3)


def test_shared_module_is_priced_per_call_for_macs_and_once_for_params() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = pool(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(F.avg_pool2d(self.block(x), 2))

    net = SuperNet(Twice(), cost=["params", "macs"], input_shape=(4, 8, 8))
    assert net.branch_costs("params") == {"block": POOL_PARAMS}
    assert net.branch_costs("macs") == {"block": [a + b for a, b in zip(pool_macs(64), pool_macs(16))]}


def test_input_example_batch_does_not_scale_costs() -> None:
    by_shape = SuperNet(Toy(), cost="macs", input_shape=TOY_INPUT)
    by_example = SuperNet(Toy(), cost="macs", input_example=torch.randn(8, *TOY_INPUT))
    assert by_shape.branch_costs() == by_example.branch_costs()


def test_a_user_function_is_a_cost_model() -> None:
    def outputs(module: nn.Module, x: torch.Tensor) -> float:
        return float(module(x).numel() + sum(p.numel() for p in module.parameters()))

    net = SuperNet(Toy(), cost=outputs, input_shape=TOY_INPUT)
    assert net.branch_costs("outputs") == {"choice": [64 + p for p in POOL_PARAMS]}


def test_reassigning_the_cost_specification_reprices() -> None:
    net = SuperNet(Toy(), cost="params", input_shape=TOY_INPUT)
    net.cost_specification = ParamsCost()
    assert list(net.cost_specification) == ["params"]
    net.cost_specification = "macs"
    assert net.branch_costs() == {"choice": pool_macs(16)}
    with pytest.raises(SuperNetError, match="no cost model named 'params'"):
        net.get_cost("params")


# -- several cost models, errors --------------------------------------------------------------------------


def test_several_cost_models_need_a_name() -> None:
    net = SuperNet(Toy(), cost=[tailor.cost.params, MacsCost()], input_shape=TOY_INPUT)
    with pytest.raises(SuperNetError, match=r"several cost models \(params, macs\)"):
        _ = net.cost
    with pytest.raises(SuperNetError, match=r"no cost model named 'latency'.*\['params', 'macs'\]"):
        net.get_cost("latency")
    single = SuperNet(Toy(), cost=tailor.cost.params, input_shape=TOY_INPUT)
    assert single.cost.item() == single.get_cost("params").item() == pytest.approx(153)


@pytest.mark.parametrize(
    ("cost", "match"),
    [
        ("flops", "unknown cost model 'flops'"),
        (tailor.cost.peak_memory, "peak_memory is not a per-branch cost model"),
        ({}, "empty mapping"),
        (["params", ParamsCost()], "two cost models are named 'params'"),
        (3, "cannot use 3 as a cost model"),
    ],
)
def test_bad_cost_specifications_are_refused(cost: object, match: str) -> None:
    with pytest.raises(SuperNetError, match=match):
        SuperNet(Toy(), cost=cost, input_shape=TOY_INPUT)  # type: ignore[arg-type]


def test_alternatives_with_different_output_shapes_name_the_module() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1),
                SuperNetModule([nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)]),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    with pytest.raises(InvalidSubnetError, match=r"SuperNetModule 'features.1'.*same output shape.*\(1, 4, 4, 4\)"):
        SuperNet(Bad(), input_shape=(3, 8, 8))


def test_model_and_input_errors() -> None:
    with pytest.raises(UnsupportedModelError, match="contains no SuperNetModule"):
        SuperNet(nn.Sequential(nn.Linear(3, 3)), input_shape=(3,))
    with pytest.raises(SuperNetError, match="needs input_shape"):
        SuperNet(Toy())
    with pytest.raises(SuperNetError, match="does not match input_example"):
        SuperNet(Toy(), input_shape=(3, 16, 16), input_example=torch.randn(1, *TOY_INPUT))
    with pytest.raises(SuperNetError, match="positive integers"):
        SuperNet(Toy(), input_shape=(3, 0, 8))
    with pytest.raises(UnsupportedModelError, match="shape propagation through Toy failed"):
        SuperNet(Toy(), input_shape=(5, 8, 8))  # the stem wants 3 channels

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = pool(4), pool(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(InvalidSubnetError, match="'spare' was not called"):
        SuperNet(Unused(), input_shape=(4, 4, 4))


# -- construction leaves the model as it was ---------------------------------------------------------------


def test_construction_keeps_train_mode_statistics_and_rng() -> None:
    model = Toy().train()
    model.head.eval()  # a mixed state must come back exactly
    stats = model.stem[1].running_mean.clone(), model.stem[1].num_batches_tracked.clone()
    rng = torch.get_rng_state()
    SuperNet(model, cost=["params", "macs", "latency"], input_shape=TOY_INPUT, full_cost=True)
    assert model.training and model.stem.training and model.choice.training and model.choice.sn_branches[0].training
    assert not model.head.training
    assert torch.equal(model.stem[1].running_mean, stats[0])
    assert torch.equal(model.stem[1].num_batches_tracked, stats[1])
    assert torch.equal(torch.get_rng_state(), rng)
    assert "forward" not in vars(model.choice)  # the cost stand-ins are gone


# -- parameters and phases -----------------------------------------------------------------------------------


def test_nas_and_net_parameters_partition_the_parameters() -> None:
    model = TwoStage()
    net = SuperNet(model, input_shape=(3, 8, 8))
    nas = list(net.named_nas_parameters())
    assert [n for n, _ in nas] == ["seed.blocks.0.sn_combiner.alpha", "seed.blocks.2.sn_combiner.alpha"]  # PLiNIO's names
    nas_ids = {id(p) for p in net.nas_parameters()}
    net_ids = {id(p) for p in net.net_parameters()}
    assert nas_ids.isdisjoint(net_ids)
    assert nas_ids | net_ids == {id(p) for p in model.parameters()}


def test_training_phases_toggle_requires_grad_and_keep_user_frozen_weights() -> None:
    model = Toy()
    model.head.weight.requires_grad_(False)
    net = SuperNet(model, input_shape=TOY_INPUT)
    nas, weights = list(net.nas_parameters()), [p for p in net.net_parameters() if p is not model.head.weight]

    def state() -> tuple[bool, bool, bool]:
        return (
            all(p.requires_grad for p in nas),
            all(p.requires_grad for p in weights),
            model.head.weight.requires_grad,
        )

    assert state() == (True, True, False) and net.train_selection
    net.train_nas_only()
    assert state() == (True, False, False) and not any(p.requires_grad for p in weights)
    net.train_net_only()
    assert state() == (False, True, False) and not net.train_selection
    net.train_net_and_nas()
    assert state() == (True, True, False)
    net.train_selection = False
    assert state() == (False, True, False)


def test_update_softmax_options_reaches_every_module_or_none() -> None:
    model = TwoStage()
    net = SuperNet(model, input_shape=(3, 8, 8))
    net.update_softmax_options(temperature=0.5, hard=True, gumbel=True)
    for _, module in net.supernet_modules():
        assert (module.softmax_temperature, module.hard_softmax, module.gumbel_softmax) == (0.5, True, True)
    with pytest.raises(SuperNetError, match="temperature"):
        net.update_softmax_options(temperature=-1.0, hard=False)
    assert all(m.hard_softmax and m.softmax_temperature == 0.5 for _, m in net.supernet_modules())


# -- search, summary, ICV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gumbel", "hard"), [(False, False), (False, True), (True, False), (True, True)],
    ids=["soft", "hard", "gumbel", "gumbel-hard"],
)  # fmt: skip
@pytest.mark.parametrize("cost", ["params", "macs"])
def test_a_large_cost_strength_makes_the_cheapest_branch_win(gumbel: bool, hard: bool, cost: str) -> None:
    torch.manual_seed(0)
    model = Toy(gumbel_softmax=gumbel, hard_softmax=hard)
    net = SuperNet(model, cost=cost, input_shape=TOY_INPUT)
    costs = net.branch_costs()["choice"]
    # the most expensive branch starts ahead: the search has to move α away from it
    set_alpha(model.choice, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    scale = max(costs)
    nas_opt = torch.optim.Adam(net.nas_parameters(), lr=0.1)
    net_opt = torch.optim.SGD(net.net_parameters(), lr=0.01)
    x, y = torch.randn(16, *TOY_INPUT), torch.randint(0, 10, (16,))
    net.train()
    for _ in range(60):
        loss = F.cross_entropy(net(x), y) + 10.0 * net.cost / scale
        nas_opt.zero_grad()
        net_opt.zero_grad()
        loss.backward()
        nas_opt.step()
        net_opt.step()
    assert model.choice.best_layer_index() == costs.index(min(costs))  # the identity
    assert net.summary()["choice"]["chosen_module"] == "Identity"


def test_summary_reports_theta_choice_and_costs() -> None:
    model = TwoStage()
    net = SuperNet(model, cost=["params", "macs"], input_shape=(3, 8, 8))
    set_alpha(model.blocks[2], log_theta(THETA))
    summary = net.summary()
    assert list(summary) == ["blocks.0", "blocks.2"]
    second = summary["blocks.2"]
    assert second["chosen"] == 3 and second["chosen_module"] == "Identity"
    assert second["theta"] == pytest.approx(THETA, rel=1e-5)
    branches = second["supernet_branches"]
    assert [branches[f"branch_{i}"]["alpha"] for i in range(4)] == pytest.approx(THETA, rel=1e-5)
    assert branches["branch_1"]["cost"] == {"params": POOL_PARAMS[1], "macs": pool_macs(16)[1]}
    assert summary["blocks.0"]["theta"] == pytest.approx([0.25] * 4)


def test_total_icv_is_plinios_mean_squared_over_variance() -> None:
    model = TwoStage()
    net = SuperNet(model, input_shape=(3, 8, 8))
    eps = 1e-3
    uniform = 0.25**2 / (0.0 + eps)  # 62.5: undecided
    assert net.get_total_icv().item() == pytest.approx(2 * uniform)
    set_alpha(model.blocks[0], log_theta(THETA))
    var = sum((t - 0.25) ** 2 for t in THETA) / 3  # unbiased, as torch.var
    icv = net.get_total_icv()
    assert icv.item() == pytest.approx(uniform + 0.25**2 / (var + eps), rel=1e-5)
    icv.backward()
    assert model.blocks[0].alpha.grad.abs().sum() > 0


# -- export ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chosen", [0, 1, 2, 3])
def test_export_equals_the_mixed_network_when_theta_is_one_hot(chosen: int) -> None:
    torch.manual_seed(chosen)
    model = TwoStage()
    net = SuperNet(model, input_shape=(3, 8, 8)).eval()
    for _, module in net.supernet_modules():
        set_alpha(module, F.one_hot(torch.tensor(chosen), 4).float())
    x = torch.randn(5, 3, 8, 8)
    net.update_softmax_options(hard=True)
    exported = net.export().eval()
    with torch.no_grad():
        assert torch.equal(exported(x), net(x))  # hard θ is exactly one-hot: identical outputs
        net.update_softmax_options(hard=False, temperature=0.01)  # soft θ, one-hot to float precision
        assert torch.allclose(exported(x), net(x), atol=1e-6)


def test_export_is_a_plain_independent_copy() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = pool(4)
            self.alias = self.block  # the same module under two names

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.alias(self.block(x))

    model = Shared()
    net = SuperNet(model, cost=["params", "macs"], input_shape=(4, 6, 6), full_cost=True)
    set_alpha(model.block, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    exported = net.export()
    assert not any(type(m).__module__.startswith("tailor") for m in exported.modules())
    assert isinstance(exported.block, nn.Sequential) and exported.alias is exported.block
    with torch.no_grad():
        exported.block[0].weight.zero_()
    assert model.block.sn_branches[2][0].weight.abs().sum() > 0  # the SuperNet's weights are untouched
    assert isinstance(model.block, SuperNetModule)
    assert net.chosen_cost("params") == sum(p.numel() for p in exported.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        exported(torch.zeros(1, 4, 6, 6))
    assert net.chosen_cost("macs") == counter.get_total_flops() // 2


def test_export_of_a_bare_supernet_module_is_its_branch() -> None:
    module = pool(4)
    set_alpha(module, torch.tensor([0.0, 3.0, 0.0, 0.0]))
    net = SuperNet(module, input_shape=(4, 5, 5))
    assert net.summary()["<model>"]["chosen"] == 1
    exported = net.export()
    assert isinstance(exported, nn.Conv2d) and exported.kernel_size == (5, 5)


def test_chosen_cost_with_full_cost_counts_the_whole_exported_network() -> None:
    model = Toy()
    net = SuperNet(model, cost="params", input_shape=TOY_INPUT, full_cost=True)
    set_alpha(model.choice, torch.tensor([0.0, 2.0, 0.0, 0.0]))
    assert net.chosen_cost() == TOY_FIXED_PARAMS + POOL_PARAMS[1]
    assert net.chosen_cost() == sum(p.numel() for p in net.export().parameters())
    assert math.isclose(net.cost.item(), TOY_FIXED_PARAMS + float((model.choice.theta.detach() * torch.tensor(POOL_PARAMS, dtype=torch.float32)).sum()), rel_tol=1e-6)  # fmt: skip
