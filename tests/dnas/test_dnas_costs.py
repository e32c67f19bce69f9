"""tailor.dnas cost models: measured latency per branch (cached, per input shape), consistency with tailor.cost."""

from __future__ import annotations

import pytest
import torch
from dnas_models import TOY_INPUT, Toy, TwoStage
from torch import nn

import tailor
from tailor.cost import LayerTable
from tailor.dnas import LatencyCost, MacsCost, ParamsCost, SuperNet, SuperNetError, resolve_costs


def test_latency_is_measured_per_branch_and_input_shape_and_cached() -> None:
    latency = LatencyCost(warmup=0, repeats=2)
    net = SuperNet(TwoStage(), cost=latency, input_shape=(3, 8, 8))
    costs = net.branch_costs("latency")
    assert set(costs) == {"blocks.0", "blocks.2"}
    assert all(c > 0 for branch_costs in costs.values() for c in branch_costs)
    # the two pools have identical branches but run at 8x8 and 4x4: separate measurements
    assert latency.measurements == 8 and len(latency.table) == 8
    again = SuperNet(TwoStage(), cost=latency, input_shape=(3, 8, 8))
    assert latency.measurements == 8  # every branch looked up, none re-timed
    assert again.branch_costs("latency") == costs
    SuperNet(TwoStage(), cost=latency, input_shape=(3, 12, 12))
    assert latency.measurements == 16


def test_latency_shares_a_layer_table() -> None:
    table = LayerTable(threads=1, warmup=0, repeats=2)
    latency = LatencyCost(table=table)
    assert (latency.threads, latency.warmup, latency.repeats) == (1, 0, 2)
    SuperNet(Toy(), cost=latency, input_shape=TOY_INPUT)
    assert len(table) == 4
    with pytest.raises(SuperNetError, match="repeats=5 conflicts with the LayerTable's repeats=2"):
        LatencyCost(repeats=5, table=table)


def test_latency_full_cost_adds_the_measured_rest_of_the_network() -> None:
    model = Toy()
    net = SuperNet(model, cost=LatencyCost(warmup=0, repeats=3), input_shape=TOY_INPUT, full_cost=True)
    fixed = net.chosen_cost() - net.branch_costs()["choice"][model.choice.best_layer_index()]
    assert fixed > 0
    expected = fixed + float((model.choice.theta.detach() * torch.tensor(net.branch_costs()["choice"])).sum())
    assert net.cost.item() == pytest.approx(expected, rel=1e-5)


def test_latency_measurement_leaves_the_model_alone() -> None:
    model = Toy().train()
    bn = model.stem[1]
    before = bn.running_var.clone()
    SuperNet(model, cost=LatencyCost(warmup=1, repeats=2), input_shape=TOY_INPUT, full_cost=True)
    assert model.training and torch.equal(bn.running_var, before)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threads": 0}, "threads"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_latency_arguments_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(SuperNetError, match=match):
        LatencyCost(**kwargs)


def test_params_and_macs_count_as_tailor_cost_does() -> None:
    """On a static resnet20 subnet, the DNAS cost models agree with tailor.cost.params / macs."""
    model = tailor.create_model("resnet20", num_classes=10).eval()
    sub = model.space.smallest()
    static = model.extract(sub).eval()
    x = torch.zeros(1, 3, 32, 32)
    assert ParamsCost().measure(static, x) == tailor.cost.params(model, sub)
    assert MacsCost().measure(static, x) == tailor.cost.macs(model, sub)


def test_resolve_costs_maps_names_functions_and_classes() -> None:
    models, several = resolve_costs(tailor.cost.params)
    assert list(models) == ["params"] and isinstance(models["params"], ParamsCost) and not several
    models, several = resolve_costs({"p": "params", "m": MacsCost, "t": tailor.cost.latency})
    assert list(models) == ["p", "m", "t"] and several
    assert isinstance(models["m"], MacsCost) and isinstance(models["t"], LatencyCost)


def test_a_user_cost_returning_nan_is_refused() -> None:
    def broken(module: nn.Module, x: torch.Tensor) -> float:
        return float("nan")

    with pytest.raises(SuperNetError, match="'broken' returned nan"):
        SuperNet(Toy(), cost=broken, input_shape=TOY_INPUT)


def test_latency_is_measured_on_the_runtime_asked_for() -> None:
    ort = LatencyCost(warmup=0, repeats=2, runtime="onnxruntime")
    net = SuperNet(TwoStage(), cost=ort, input_shape=(3, 8, 8))
    assert ort.runtime == "onnxruntime" and ort.measurements == 8
    assert all(c > 0 for costs in net.branch_costs("latency").values() for c in costs)
    assert all(key[-1] == "onnxruntime" for key in ort.table)
    eager = LatencyCost(warmup=0, repeats=2)
    SuperNet(TwoStage(), cost=eager, input_shape=(3, 8, 8))
    assert eager.runtime == "torch" and set(eager.table).isdisjoint(ort.table), "entries are kept per runtime"


def test_latency_runtime_must_agree_with_its_table() -> None:
    table = LayerTable(threads=1, warmup=0, repeats=2, runtime="onnxruntime")
    assert LatencyCost(table=table).runtime == "onnxruntime"
    with pytest.raises(SuperNetError, match="conflicts with the LatencyTable's runtime 'onnxruntime'"):
        LatencyCost(table=table, runtime="torch")
    with pytest.raises(SuperNetError, match="unknown runtime 'tvm'"):
        LatencyCost(runtime="tvm")
    with pytest.raises(SuperNetError, match="takes 2"):
        LatencyCost(warmup=0, repeats=1).measure(torch.nn.Identity(), torch.zeros(1, 2), torch.zeros(1, 2))
