"""MobileNetV2/V3 and EfficientNet-B0: published sizes, subnets == extraction, expand ratios, SE slicing."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tailor
from tailor.ops import ElasticModel, expand_channels

MOBILE = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0"]

# Published full-width sizes at 224x224 with 1000 classes: (parameters, MACs).
# MACs: the papers' MAdds (MobileNetV2 300M, MobileNetV3-Large 219M, -Small 56M, EfficientNet-B0 0.39B).
PUBLISHED = {
    "mobilenet_v2": (3.50e6, 300e6),
    "mobilenet_v3_large": (5.48e6, 219e6),
    "mobilenet_v3_small": (2.54e6, 56e6),
    "efficientnet_b0": (5.29e6, 390e6),
}


def make(name: str, **kwargs: object) -> ElasticModel:
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=kwargs.pop("num_classes", 7), **kwargs).eval()
    with torch.no_grad():  # random BN statistics and affine, so slicing mistakes show
        for _, module in model.elastic_layers():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: torch.nn.Module, side: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.randn(1, 3, side, side))
    return counter.get_total_flops() // 2


def non_expand_uniform(model: ElasticModel, width: float) -> tailor.Subnet:
    """Every non-expand width at `width`, expand dims at their largest choice, full depth."""
    names = [d.name for d in model.space.widths if not d.name.endswith(".expand")]
    return model.space.largest().replace(widths=dict.fromkeys(names, width))


@pytest.mark.parametrize("name", MOBILE)
def test_full_width_matches_the_published_architecture(name: str) -> None:
    params, published_macs = PUBLISHED[name]
    model = tailor.create_model(name).eval()
    static = model.extract(model.space.largest())
    count = count_params(static)
    assert count == count_params(model)  # the largest subnet holds every weight
    assert abs(count - params) / params < 0.02
    measured = count_macs(static, 224)
    assert abs(measured - published_macs) / published_macs < 0.02


@pytest.mark.parametrize("name", MOBILE)
def test_32x32_input_runs_down_to_1x1(name: str) -> None:
    model = make(name)
    model.activate(model.space.smallest())
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 32))
        assert features.shape[-2:] == (1, 1)
        assert model.forward_head(features).shape == (2, 7)


@pytest.mark.parametrize("name", MOBILE)
def test_parameters_and_macs_fall_with_width(name: str) -> None:
    model = make(name)
    statics = [model.extract(non_expand_uniform(model, w)) for w in (0.25, 0.5, 0.75, 1.0)]
    params = [count_params(s) for s in statics]
    macs = [count_macs(s, 64) for s in statics]
    assert params == sorted(params) and len(set(params)) == 4
    assert macs == sorted(macs) and len(set(macs)) == 4


def test_space_layout_and_depths() -> None:
    v2 = tailor.create_model("mobilenet_v2")
    names = [d.name for d in v2.space.widths]
    assert names[:5] == ["stem", "stage1.out", "stage2.out", "stage2.block0.expand", "stage2.block1.expand"]
    assert names[-3:] == ["stage7.out", "stage7.block0.expand", "head"]
    assert [d.choices for d in v2.space.depths] == [(1,), (1, 2), (1, 2, 3), (2, 3, 4), (1, 2, 3), (1, 2, 3), (1,)]
    # V3-Large: the first block (16 -> 16, stride 1) is residual, which ties the stem to stage1.out
    large = tailor.create_model("mobilenet_v3_large")
    names = [d.name for d in large.space.widths]
    assert names[0] == "stage1.out" and "stem" not in names and names[-2:] == ["head", "head.fc"]
    assert large.stages[0].blocks[0].use_residual and large.stages[0].blocks[0].expand_conv is None
    assert large.space.width_dim("stage4.block1.expand").choices == (0.5, 0.75, 1.0)  # 80 -> 200
    small = tailor.create_model("mobilenet_v3_small")
    assert [d.name for d in small.space.widths][:2] == ["stem", "stage1.out"]
    assert small.space.width_dim("head").channels == 576 and small.space.width_dim("head.fc").channels == 1024


def test_mobilenet_v2_expand_ratio_choices() -> None:
    model = make("mobilenet_v2")
    space = model.space
    in_ch = 32
    for k, stage in enumerate(model.stages, start=1):
        for j, block in enumerate(stage.blocks):
            if block.expand_conv is not None:
                dim = space.width_dim(f"stage{k}.block{j}.expand")
                assert dim.choices == pytest.approx((3 / 6, 4 / 6, 1.0))
                for choice, ratio in zip(dim.choices, (3, 4, 6)):
                    assert dim.channels_at(choice) == expand_channels(in_ch, ratio)
            in_ch = block.project_conv.out_channels
    # stage3.block1 runs 32 -> 192 -> 32 at ratio 6: ratio 3 keeps make_divisible(32 * 3, 8) = 96 hidden channels
    sub = space.largest().replace(widths={"stage3.block1.expand": 3 / 6})
    static = model.extract(sub)
    block = static.get_submodule("stages.2.blocks.1")
    assert block.expand_conv.out_channels == expand_channels(32, 3) == 96
    assert block.dw_conv.in_channels == block.dw_conv.out_channels == block.dw_conv.groups == 96
    assert block.project_conv.in_channels == 96 and block.project_conv.out_channels == 32
    x = torch.randn(2, 3, 64, 64)
    model.activate(sub)
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-5)


def test_efficientnet_se_follows_the_hidden_width() -> None:
    model = make("efficientnet_b0")
    block = model.stages[3].blocks[1]  # 80 -> 480 -> 80, squeeze max(1, 80 / 4) = 20
    assert block.se.reduce.in_channels == 480 and block.se.reduce.out_channels == 20
    sub = model.space.largest().replace(widths={"stage4.block1.expand": 3 / 6, "stage4.out": 0.5})
    static = model.extract(sub)
    se = static.get_submodule("stages.3.blocks.1.se")
    assert (se.reduce.in_channels, se.reduce.out_channels) == (240, 20)
    assert (se.expand.in_channels, se.expand.out_channels) == (20, 240)
    torch.testing.assert_close(se.reduce.weight, block.se.reduce.weight[:, :240])
    torch.testing.assert_close(se.reduce.bias, block.se.reduce.bias)
    torch.testing.assert_close(se.expand.weight, block.se.expand.weight[:240])
    torch.testing.assert_close(se.expand.bias, block.se.expand.bias[:240])
    assert static.get_submodule("stages.3.blocks.1.expand_conv").in_channels == 40


def test_width_range_and_reset_classifier() -> None:
    model = make("mobilenet_v3_small", min_width=0.3)
    assert model.space.width_dim("stage3.out").low == 0.3
    assert model.space.width_dim("stage3.block1.expand").choices == pytest.approx((0.5, 4 / 6, 1.0))  # 40 -> 240
    model.reset_classifier(5)
    sub = model.space.sample(11)
    model.activate(sub)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 5)
        torch.testing.assert_close(model.extract()(x), out, rtol=1e-4, atol=1e-5)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (
            2,
            model.space.channels(sub)["head.fc"],
        )
