"""PLiNIO compatibility: its supernet test cases, re-written for tailor (imports renamed, private attributes not used).

The cases follow PLiNIO's `unit_test/test_methods/test_supernet/test_supernet.py` in spirit: output shapes,
params/ops of a standard pool, custom nested blocks, counting searchable modules, export, summary, ICV,
Gumbel sampling with two named costs, a soft -> hard switch. The numbers are derived here from the cost
definitions (PLiNIO's current ones: `params`/`ops` count one bias per output channel, `*_no_bias` do not).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailor.dnas import (
    SuperNet,
    SuperNetCombiner,
    SuperNetModule,
    ops,
    ops_bit,
    ops_no_bias,
    params,
    params_bit,
    params_no_bias,
)
from tailor.errors import InvalidSubnetError

C, SIDE = 32, 16  # PLiNIO uses 64x64 inputs; ops scale with the output area, params do not


class CustomSeq(nn.Module):
    """Two 7x7 convolutions with a ReLU between: a user block inside a pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(C, C, 7, padding="same")
        self.conv2 = nn.Conv2d(C, C, 7, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class CustomSeqL2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = CustomSeq(), CustomSeq()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c1(self.c2(x))


class StandardSN(nn.Module):
    """conv 3x3 | two conv 3x3 | conv 5x5 | identity, on 32 channels."""

    def __init__(self, **options: bool) -> None:
        super().__init__()
        self.conv1 = SuperNetModule(
            supernet_branches=[
                nn.Conv2d(C, C, 3, padding="same"),
                nn.Sequential(nn.Conv2d(C, C, 3, padding="same"), nn.Conv2d(C, C, 3, padding="same")),
                nn.Conv2d(C, C, 5, padding="same"),
                nn.Identity(),
            ],
            **options,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class StandardSNv2(nn.Module):
    """A pool with a nested user block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SuperNetModule(
            [nn.Conv2d(C, C, 3, padding="same"), CustomSeqL2(), nn.Conv2d(C, C, 5, padding="same"), nn.Identity()]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


def _ds_block(cin: int, cout: int, stride: int) -> SuperNetModule:
    """A DS-CNN block choice: conv 3x3, depthwise-separable 3x3, or depthwise-separable 5x5."""

    def dws(k: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(),
        )  # fmt: skip

    conv = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())
    return SuperNetModule([conv, dws(3), dws(5)])


class DSCnnSN(nn.Module):
    """A keyword-spotting DS-CNN (1 x 49 x 10 spectrograms) with four searchable blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, (10, 4), (2, 2), (5, 1)), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(*(_ds_block(16, 16, 1) for _ in range(4)))
        self.head = nn.Linear(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class ResNet8SN(nn.Module):
    """A ResNet-8-like net whose residual branches are searchable (3x3 or 5x5 convs)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.res = nn.ModuleList(
            SuperNetModule([nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)]) for _ in range(3)
        )
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for block in self.res:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


def _conv_params(cin: int, cout: int, k: int, bias: bool = True, groups: int = 1) -> int:
    return cout * (cin // groups * k * k + (1 if bias else 0))


# the standard pool: branch costs per output pixel (params) are conv3, 2 x conv3, conv5, identity
STANDARD = [_conv_params(C, C, 3), 2 * _conv_params(C, C, 3), _conv_params(C, C, 5), 0]
STANDARD_NO_BIAS = [_conv_params(C, C, 3, False), 2 * _conv_params(C, C, 3, False), _conv_params(C, C, 5, False), 0]


def test_output_shape_of_a_standard_pool() -> None:
    net = SuperNet(StandardSN(), input_shape=(C, SIDE, SIDE))
    assert net(torch.rand(2, C, SIDE, SIDE)).shape == (2, C, SIDE, SIDE)


def test_output_shape_with_a_custom_nested_block() -> None:
    net = SuperNet(StandardSNv2(), input_shape=(C, SIDE, SIDE))
    assert net(torch.rand(1, C, SIDE, SIDE)).shape == (1, C, SIDE, SIDE)
    custom = 2 * 2 * _conv_params(C, C, 7)  # two CustomSeq of two 7x7 convs each
    expected = (_conv_params(C, C, 3) + custom + _conv_params(C, C, 5)) / 4
    assert SuperNet(StandardSNv2(), cost=params, input_shape=(C, SIDE, SIDE)).get_cost().item() == expected


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (params, sum(STANDARD) / 4),  # 13344: weights + one bias per output channel, theta uniform
        (params_no_bias, sum(STANDARD_NO_BIAS) / 4),  # 13312, PLiNIO's value before it counted biases
        (ops, sum(STANDARD) / 4 * SIDE * SIDE),  # per output pixel, at every pixel ("same" padding)
        (ops_no_bias, sum(STANDARD_NO_BIAS) / 4 * SIDE * SIDE),
        ("ops", sum(STANDARD) / 4 * SIDE * SIDE),
        ("params_no_bias", sum(STANDARD_NO_BIAS) / 4),
    ],
)
def test_params_and_ops_of_a_standard_pool(cost: object, expected: float) -> None:
    net = SuperNet(StandardSN(), cost=cost, input_shape=(C, SIDE, SIDE))
    _ = net(torch.rand(4, C, SIDE, SIDE))  # a forward first, as PLiNIO's test does; the cost does not depend on it
    assert net.get_cost().item() == pytest.approx(expected, rel=1e-7)
    assert sum(STANDARD) / 4 == 13344 and sum(STANDARD_NO_BIAS) / 4 == 13312


def test_bit_costs_scale_by_the_precisions() -> None:
    fp32 = SuperNet(StandardSN(), cost={"pb": params_bit, "ob": ops_bit}, input_shape=(C, SIDE, SIDE))
    assert fp32.get_cost("pb").item() == pytest.approx(sum(STANDARD_NO_BIAS) / 4 * 32)
    assert fp32.get_cost("ob").item() == pytest.approx(sum(STANDARD_NO_BIAS) / 4 * SIDE * SIDE * 32 * 32, rel=1e-6)
    model = StandardSN()
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            layer.w_precision, layer.in_precision = 4, 8  # what a quantized layer declares
    quantized = SuperNet(model, cost={"pb": params_bit, "ob": ops_bit}, input_shape=(C, SIDE, SIDE))
    assert quantized.get_cost("pb").item() == pytest.approx(sum(STANDARD_NO_BIAS) / 4 * 4)
    assert quantized.get_cost("ob").item() == pytest.approx(sum(STANDARD_NO_BIAS) / 4 * SIDE * SIDE * 32, rel=1e-6)


def test_grouped_convolutions_count_their_groups_and_other_layers_count_zero() -> None:
    grouped = nn.Sequential(nn.Conv2d(8, 16, 3, groups=4), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    x = torch.rand(1, 8, 6, 6)
    assert params.measure(grouped, x) == 16 * (2 * 9 + 1)
    assert ops_no_bias.measure(grouped, x) == 16 * 2 * 9 * 4 * 4
    assert params.measure(nn.Linear(10, 3), torch.rand(1, 10)) == 3 * 11
    assert ops.measure(nn.Linear(10, 3), torch.rand(1, 5, 10)) == 3 * 11 * 5  # every row (token) of the sample


def test_full_cost_adds_the_layers_outside_the_pools_once() -> None:
    net = SuperNet(DSCnnSN(), cost=params, input_shape=(1, 49, 10), full_cost=True)
    stem = 16 * (1 * 10 * 4 + 1)
    head = 12 * (16 + 1)
    assert net.get_cost().item() == pytest.approx(stem + head + sum(sum(c) / 3 for c in net.branch_costs().values()))


def test_number_of_searchable_modules_and_combiners() -> None:
    net = SuperNet(DSCnnSN(), input_shape=(1, 49, 10))
    assert len(net.supernet_modules()) == 4
    assert sum(isinstance(m, SuperNetCombiner) for m in net.modules()) == 4


def test_supernet_keeps_the_models_output_shape_on_an_example() -> None:
    model = DSCnnSN()
    x = torch.rand(1, 1, 49, 10)
    before = model(x)
    net = SuperNet(model, input_example=x)
    assert net(x).shape == before.shape == (1, 12)


@pytest.mark.parametrize(("model", "shape", "cost"), [(DSCnnSN, (1, 49, 10), params), (ResNet8SN, (3, 32, 32), ops)])
def test_export_keeps_the_output_shape_and_drops_every_pool(model: type, shape: tuple, cost: object) -> None:
    net = SuperNet(model(), cost=cost, input_shape=shape)
    out1 = net(torch.rand(1, *shape))
    net.get_cost()
    exported = net.export()
    out2 = exported(torch.rand(1, *shape))
    assert out1.shape == out2.shape
    assert not any(isinstance(m, (SuperNetModule, SuperNetCombiner)) for m in exported.modules())


def test_summary_lists_each_pool_with_its_branches() -> None:
    summary = SuperNet(StandardSN(), input_shape=(C, SIDE, SIDE)).summary()
    assert list(summary) == ["conv1"]
    branches = summary["conv1"]["supernet_branches"]
    assert [branches[f"branch_{i}"]["alpha"] for i in range(4)] == pytest.approx([0.25] * 4)
    combiner = StandardSN().conv1.sn_combiner
    assert combiner.summary() == {"supernet_branches": {f"branch_{i}": {"alpha": 0.25} for i in range(4)}}


def test_icv_at_the_start_is_mean_squared_over_eps() -> None:
    net = SuperNet(StandardSN(), input_shape=(C, SIDE, SIDE))
    eps = 1e-3
    # four identical architectural weights: mean 1/4, variance 0, so icv = (1/16) / eps
    assert net.get_total_icv(eps).item() == pytest.approx((1 / 16) / eps, rel=1e-5)


@pytest.mark.parametrize("hard", [False, True], ids=["soft-gumbel", "hard-gumbel"])
def test_gumbel_sampling_with_two_named_costs(hard: bool) -> None:
    net = SuperNet(StandardSN(gumbel_softmax=True, hard_softmax=hard), cost={"params": params, "ops": ops},
                   input_shape=(C, SIDE, SIDE))  # fmt: skip
    size, operations, icv = net.get_cost("params"), net.get_cost("ops"), net.get_total_icv()
    weights = [1.0, 0.0, 0.0, 0.0] if hard else [0.25] * 4  # the expected cost is never Gumbel-sampled
    assert size.item() == pytest.approx(sum(w * c for w, c in zip(weights, STANDARD)))
    assert operations.item() == pytest.approx(sum(w * c for w, c in zip(weights, STANDARD)) * SIDE * SIDE)
    assert torch.isfinite(icv)
    net.train()
    _ = net(torch.rand(1, C, SIDE, SIDE))
    sampled = net.model.conv1.sn_combiner.theta_alpha
    assert sampled.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert not hard or sorted(sampled.tolist()) == [0.0, 0.0, 0.0, 1.0]


def test_switching_from_soft_to_hard_sampling_changes_theta_and_costs() -> None:
    net = SuperNet(StandardSN(gumbel_softmax=True), cost={"params": params, "ops": ops}, input_shape=(C, SIDE, SIDE))
    size_soft, ops_soft = net.get_cost("params"), net.get_cost("ops")
    combiner = next(m for m in net.modules() if isinstance(m, SuperNetCombiner))
    theta_soft = combiner.theta_alpha.detach().clone()
    net.update_softmax_options(hard=True)
    _ = net(torch.rand(1, C, SIDE, SIDE))  # a forward draws new weights
    theta_hard = combiner.theta_alpha.detach()
    assert torch.all(theta_soft != theta_hard)
    assert net.get_cost("params") != size_soft and net.get_cost("ops") != ops_soft


def test_supernet_branches_keyword_and_its_misuse() -> None:
    branches = [nn.Conv2d(4, 4, 3, padding=1), nn.Identity()]
    assert len(SuperNetModule(supernet_branches=branches)) == 2
    assert len(SuperNetModule(branches=branches)) == 2
    with pytest.raises(InvalidSubnetError, match="once"):
        SuperNetModule(branches, branches=branches)
    with pytest.raises(InvalidSubnetError, match="once"):
        SuperNetModule()


def test_state_dict_keys_are_plinios_and_tailors_earlier_keys_still_load() -> None:
    torch.manual_seed(0)
    source = StandardSN()
    with torch.no_grad():
        source.conv1.alpha.copy_(torch.tensor([0.1, 2.0, 0.3, 0.4]))
    state = source.state_dict()
    assert "conv1.sn_combiner.alpha" in state and "conv1.alpha" not in state
    legacy = {("conv1.alpha" if k == "conv1.sn_combiner.alpha" else k): v for k, v in state.items()}
    for saved in (state, legacy):  # PLiNIO's layout (today's), and tailor's earlier one
        target = StandardSN()
        result = target.load_state_dict(saved, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(target.conv1.alpha, source.conv1.alpha) and target.conv1.best_layer_index() == 1
    # a PLiNIO SuperNet's state dict (`seed.` prefix) loads into a tailor SuperNet
    net = SuperNet(StandardSN(), input_shape=(C, SIDE, SIDE))
    net.load_state_dict({f"seed.{k}": v for k, v in state.items()}, strict=True)
    assert net.summary()["conv1"]["chosen"] == 1


def test_train_selection_and_nas_parameters_of_a_combiner() -> None:
    combiner = StandardSN().conv1.sn_combiner
    assert [n for n, _ in combiner.named_nas_parameters(prefix="conv1.sn_combiner")] == ["conv1.sn_combiner.alpha"]
    combiner.train_selection = False
    assert not combiner.alpha.requires_grad and not combiner.train_selection
    assert list(combiner.nas_parameters()) == [combiner.alpha]
