"""tailor.route early exits: cutting at named stages, width composability, views, training, save/load, costs."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost import macs
from tailor.errors import CheckpointError, TailorError, UnsupportedModelError
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticModel, ElasticStage
from tailor.route import (
    EarlyExitModel,
    Stage,
    add_early_exits,
    load_exits,
    save_exits,
    stage_costs,
    train_exits,
)
from tailor.space import DepthDim, SearchSpace, WidthDim
from train_helpers import BlobImages


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_exits_share_the_backbone_for_every_subnet(resnet_exits: EarlyExitModel, seed: int) -> None:
    backbone = resnet_exits.backbone
    sub = resnet_exits.space.sample(random.Random(seed))
    tailor.calibrate(resnet_exits, [sub], [torch.randn(16, 3, 32, 32)], batches=1)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        with resnet_exits.activated(sub):
            outs = resnet_exits.forward_exits(x)
            final = resnet_exits(x)
            h1, logits1, pooled1 = resnet_exits.run_exits(x, 0, 0, features=True)
            h2, logits2, _ = resnet_exits.run_exits(h1, 1, 1)
            _, logits3, _ = resnet_exits.run_exits(h2, 2, 2)
        with backbone.activated(sub):
            reference = backbone(x)
    assert list(outs) == ["stage1", "stage2", "final"]
    assert torch.equal(final, reference) and torch.equal(outs["final"], reference)
    assert torch.equal(logits1, outs["stage1"]) and torch.equal(logits2, outs["stage2"]) and torch.equal(logits3, final)
    channels = resnet_exits.space.channels(resnet_exits.space.canonical(sub))["stage1.out"]
    assert h1.shape[1] == channels  # the head reads however many channels the stage writes
    assert pooled1.shape == (3, 2 * resnet_exits.hidden)


@pytest.mark.parametrize("name", ["resnet20", "small_cnn", "mobilenet_v3_small"])
def test_exit_views_extract_to_static_networks_with_the_same_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=5).eval()
    exits = add_early_exits(model, ["stage1", "stage2"]).eval()
    x = torch.randn(2, 3, 32, 32)
    for sub in (model.space.smallest(), model.space.largest()):
        with torch.no_grad(), exits.activated(sub):
            outs = exits.forward_exits(x)
            h1 = exits.run_exits(x, 0, 0)[0]
        for stop in ("stage1", "stage2", "final"):
            static = exits.exit_view(stop).extract(sub).eval()
            assert not any(isinstance(m, (ElasticConv2d, ElasticStage)) for m in static.modules())
            with torch.no_grad():
                assert torch.allclose(static(x), outs[stop], atol=1e-5)
        resumed = exits.exit_view("final", start="stage1").extract(sub).eval()
        with torch.no_grad():
            assert torch.allclose(resumed(h1), outs["final"], atol=1e-5)


def test_stages_are_named_by_depth_dimension_or_module_path() -> None:
    model = tailor.create_model("resnet20", num_classes=10)
    by_name = add_early_exits(model, ["stage2"])
    by_path = add_early_exits(model, ["stages.1"])
    assert by_name.exits == by_path.exits == ("stage2", "final")
    with pytest.raises(UnsupportedModelError, match=r"no stage 'stage7'.*stage1 \(stages.0\)"):
        add_early_exits(model, ["stage7"])
    with pytest.raises(UnsupportedModelError, match="forward order"):
        add_early_exits(model, ["stage2", "stage1"])
    with pytest.raises(UnsupportedModelError, match="twice"):
        add_early_exits(model, ["stage1", "stages.0"])
    with pytest.raises(UnsupportedModelError, match="at least one stage"):
        add_early_exits(model, [])
    with pytest.raises(UnsupportedModelError, match="already has early exits"):
        add_early_exits(by_name, ["stage1"])


class SkipAroundStage(ElasticModel):
    """The input is added back after stage 1: two tensors cross that cut, so no exit can go there."""

    def __init__(self) -> None:
        super().__init__(SearchSpace([WidthDim("c", 8, (0.5, 1.0))], [DepthDim("s1", (1, 2)), DepthDim("s2", (1,))]))
        self.default_input_size = (8, 8, 8)
        self.stage_a = ElasticStage([ElasticConv2d(8, 8, 3, 1, 1) for _ in range(2)], depth_dim="s1")
        self.stage_b = ElasticStage([ElasticConv2d(8, 8, 3, 1, 1, out_dim="c")], depth_dim="s2")
        self.bn = ElasticBatchNorm2d(8, dim="c")
        self.fc = ElasticLinear(8, 3, in_dim="c")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stage_a(x) + x
        h = self.bn(self.stage_b(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_a_cut_crossed_by_two_tensors_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="more than one tensor crosses"):
        add_early_exits(SkipAroundStage(), ["s1"])
    assert add_early_exits(SkipAroundStage(), ["s2"]).exits == ("s2", "final")


def blob_data() -> BlobImages:
    return BlobImages(192, seed=0, num_classes=4, size=16)


def accuracy(model: EarlyExitModel, sub: tailor.Subnet, data: BlobImages) -> dict[str, float]:
    with torch.no_grad(), model.activated(sub):
        outs = model.forward_exits(data.images)
    return {k: float((v.argmax(1) == data.labels).double().mean()) for k, v in outs.items()}


def test_frozen_training_teaches_the_heads_and_leaves_the_backbone_alone() -> None:
    torch.manual_seed(0)
    model = tailor.create_model("resnet20", num_classes=4).eval()
    exits = add_early_exits(model, ["stage1", "stage2"]).eval()
    data = blob_data()
    subs = [model.space.smallest(), model.space.largest()]
    backbone_before = {k: v.clone() for k, v in model.state_dict().items() if "subnet_" not in k}
    heads_before = {k: v.clone() for k, v in exits.heads.state_dict().items()}
    history = train_exits(exits, data, subs, epochs=3, batch_size=64, lr=3e-3)
    backbone_after = {k: v for k, v in model.state_dict().items() if "subnet_" not in k}
    assert all(torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before)
    assert any(not torch.equal(heads_before[k], v) for k, v in exits.heads.state_dict().items())
    assert set(history[0].loss) == {"stage1", "stage2"}  # the frozen final output is not trained
    assert history[-1].loss["stage1"] < history[0].loss["stage1"]
    assert all(model.has_norm_stats(s) for s in subs)  # calibrated before training on a frozen backbone
    for sub in subs:
        assert accuracy(exits, sub, data)["stage1"] > 0.6  # 4 classes: chance is 0.25
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


def test_joint_training_moves_the_backbone_and_recalibrates() -> None:
    torch.manual_seed(0)
    model = tailor.create_model("resnet20", num_classes=4)
    exits = add_early_exits(model, ["stage2"])
    data = blob_data()
    subs = [model.space.largest(), model.space.smallest()]
    before = model.stages[0].blocks[0].conv1.weight.detach().clone()
    history = train_exits(exits, data, subs, epochs=4, batch_size=64, freeze_backbone=False, lr=0.05)
    assert set(history[0].loss) == {"stage2", "final"}
    assert not torch.equal(before, model.stages[0].blocks[0].conv1.weight)
    assert all(exits.has_norm_stats(s) for s in subs)
    assert accuracy(exits.eval(), subs[0], data)["final"] > 0.6


def test_save_and_load_exits_round_trip(tmp_path: object, resnet_exits: EarlyExitModel) -> None:
    path = save_exits(resnet_exits, tmp_path / "exits")  # type: ignore[operator]
    loaded = load_exits(resnet_exits.backbone, path).eval()
    x = torch.randn(2, 3, 32, 32)
    sub = resnet_exits.space.largest()
    with torch.no_grad(), resnet_exits.activated(sub):
        expected = resnet_exits.forward_exits(x)
    with torch.no_grad(), loaded.activated(sub):
        got = loaded.forward_exits(x)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    weights = path / "exits.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_exits(resnet_exits.backbone, path)
    (path / "exits.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(CheckpointError, match="not a tailor.exits/1"):
        load_exits(resnet_exits.backbone, path)
    meta = {"schema": "tailor.exits/1", "after_stages": ["stage1", 2], "hidden": 0, "sha256": "0" * 64}
    (path / "exits.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"exits.json'?: after_stages\[1\]: expected a string, got 2"):
        load_exits(resnet_exits.backbone, path)
    (path / "exits.json").write_text(json.dumps({**meta, "after_stages": ["stage1"], "hidden": "64"}))
    with pytest.raises(CheckpointError, match=r"hidden: expected an integer"):
        load_exits(resnet_exits.backbone, path)


def test_stage_costs_charge_resumed_exits_only_their_increment(
    resnet: tailor.ElasticModel, resnet_exits: EarlyExitModel
) -> None:
    large, small = resnet.space.largest(), resnet.space.smallest()
    assert stage_costs(resnet, [small, large], "macs") == [macs(resnet, small), macs(resnet, large)]
    chain = stage_costs(resnet_exits, [Stage(large, "stage1"), Stage(large, "stage2"), Stage(large)], "macs")
    heads = [macs(resnet_exits.exit_view(name), large) for name in ("stage1", "stage2")]
    prefix1 = macs(resnet_exits.exit_view("stage1"), large)
    assert chain[0] == prefix1
    # the whole chain: the full network once plus both heads (nothing recomputed)
    head_macs = sum(
        sum(p.numel() for p in resnet_exits.heads[name].parameters()) for name in ("stage1", "stage2")
    )  # a lower bound on what the heads add
    assert sum(chain) > macs(resnet, large) + head_macs
    assert sum(chain) < macs(resnet, large) + sum(heads)  # far less than re-running prefixes
    restarted = stage_costs(resnet_exits, [Stage(small), Stage(large, "stage2")], "macs")
    assert restarted[1] == macs(resnet_exits.exit_view("stage2"), large)
    # latency: every piece (prefix, resumed increments, the whole network through the exit model) is timed
    resnet_exits.activate(small)
    chain_ms = stage_costs(resnet_exits, [Stage(large, "stage1"), Stage(large), Stage(small)], batch_size=2, repeats=2)
    assert len(chain_ms) == 3 and all(ms > 0 for ms in chain_ms)
    assert resnet_exits.active_subnet == small and not resnet_exits.training  # put back as it was


def test_train_exits_errors(resnet: tailor.ElasticModel, resnet_exits: EarlyExitModel) -> None:
    data = blob_data()
    with pytest.raises(TailorError, match="EarlyExitModel"):
        train_exits(resnet, data, [resnet.space.largest()])  # type: ignore[arg-type]
    with pytest.raises(TailorError, match="at least one subnet"):
        train_exits(resnet_exits, data, [])
    with pytest.raises(TailorError, match="epochs"):
        train_exits(resnet_exits, data, [resnet.space.largest()], epochs=0)
    with pytest.raises(TailorError, match="no exit 'stage5'"):
        train_exits(resnet_exits, data, [resnet.space.largest()], exit_weights={"stage5": 1.0})
