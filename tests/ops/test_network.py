"""ElasticModel: plans, SubnetNorm end to end, checkpoints of statistics, extraction of custom models."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tailor
from tailor.errors import InvalidSubnetError, SubnetNormFallbackWarning, UnsupportedModelError
from tailor.ops import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLinear,
    ElasticModel,
    ElasticStage,
    expand_channels,
)
from tailor.space import DepthDim, SearchSpace, WidthDim

EXPAND_RATIOS = (3, 4, 6)


class InvertedResidual(nn.Module):
    """MobileNetV2 block from elastic ops: expand 1x1, depthwise 3x3, project 1x1, residual."""

    def __init__(self, channels: int, hidden_dim: str, io_dim: str, norm: str) -> None:
        super().__init__()
        hidden = expand_channels(channels, max(EXPAND_RATIOS))

        def norm_layer(c: int, dim: str) -> nn.Module:
            return ElasticBatchNorm2d(c, dim=dim) if norm == "batch" else ElasticGroupNorm(c // 4, c, dim=dim)

        self.expand = ElasticConv2d(channels, hidden, 1, in_dim=io_dim, out_dim=hidden_dim)
        self.norm1 = norm_layer(hidden, hidden_dim)
        self.depthwise = ElasticConv2d(hidden, hidden, 3, 1, 1, groups=hidden, in_dim=hidden_dim, out_dim=hidden_dim)
        self.norm2 = norm_layer(hidden, hidden_dim)
        self.project = ElasticConv2d(hidden, channels, 1, in_dim=hidden_dim, out_dim=io_dim)
        self.norm3 = norm_layer(channels, io_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.norm1(self.expand(x)))
        out = F.relu6(self.norm2(self.depthwise(out)))
        return x + self.norm3(self.project(out))


class TinyMobile(ElasticModel):
    """Stem, one stage of inverted residuals with elastic expand ratio and depth, linear head."""

    def __init__(self, norm: str = "batch", channels: int = 16, blocks: int = 3) -> None:
        hidden = expand_channels(channels, max(EXPAND_RATIOS))
        widths = [WidthDim("io", channels, choices=(0.5, 1.0), step=4)]
        widths += [
            WidthDim(f"block{i}.expand", hidden, choices=tuple(r / max(EXPAND_RATIOS) for r in EXPAND_RATIOS), step=4)
            for i in range(blocks)
        ]
        super().__init__(SearchSpace(widths, [DepthDim("stage", tuple(range(1, blocks + 1)))]))
        self.stem = ElasticConv2d(3, channels, 3, 1, 1, out_dim="io")
        self.stem_norm = (
            ElasticBatchNorm2d(channels, dim="io") if norm == "batch" else ElasticGroupNorm(4, channels, dim="io")
        )
        self.stage = ElasticStage(
            [InvertedResidual(channels, f"block{i}.expand", "io", norm) for i in range(blocks)], "stage"
        )
        self.head = ElasticLinear(channels, 5, in_dim="io")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage(F.relu(self.stem_norm(self.stem(x))))
        return self.head(x.mean((2, 3)))


def randomise_stats(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_custom_model_with_expand_ratios_matches_extraction(norm: str) -> None:
    model = TinyMobile(norm).eval()
    randomise_stats(model)
    x = torch.randn(3, 3, 12, 12)
    for sub in list(model.space)[:: max(1, model.space.size // 12)]:
        with torch.no_grad(), model.activated(sub):
            out = model(x)
        static = model.extract(sub)
        with torch.no_grad():
            torch.testing.assert_close(static(x), out, rtol=1e-4, atol=1e-5)
        ratio = round(sub.width("block0.expand") * max(EXPAND_RATIOS))
        assert static.get_submodule("stage.blocks.0.expand").out_channels == expand_channels(16, ratio)
        assert static.get_submodule("stage.blocks.0.depthwise").groups == expand_channels(16, ratio)


def test_model_and_space_mismatch_names_the_layer() -> None:
    class Broken(ElasticModel):
        def __init__(self) -> None:
            super().__init__(SearchSpace([WidthDim("a", 8, choices=(0.5, 1.0))]))
            self.conv = ElasticConv2d(3, 6, 3, out_dim="a")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    with pytest.raises(UnsupportedModelError, match=r"layer 'conv': width dimension 'a' has 8 channels, the layer 6"):
        Broken().activate(Broken().space.largest())

    class Unknown(Broken):
        def __init__(self) -> None:
            super().__init__()
            self.conv = ElasticConv2d(3, 8, 3, out_dim="b")

    with pytest.raises(UnsupportedModelError, match=r"layer 'conv': width dimension 'b' is not in the model's space"):
        Unknown().activate(Unknown().space.largest())


def calibrated_resnet(subs: int = 3) -> tuple[ElasticModel, list[tailor.Subnet], list[torch.Tensor]]:
    model = tailor.create_model("resnet20").eval()
    rng = random.Random(0)
    chosen = [model.space.largest(), model.space.smallest()] + [model.space.sample(rng) for _ in range(subs - 2)]
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    keys = tailor.calibrate(model, chosen, batches, batches=2)
    assert keys == [model.stats_key(s) for s in chosen]
    return model, chosen, batches


def test_calibrated_statistics_are_the_exact_moments_of_each_subnet() -> None:
    model, subs, batches = calibrated_resnet()
    sub = subs[2]
    name, bn = model.norm_layers(sub)[-1]
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    model.train()  # training mode: each norm normalises with its own batch statistics, as in calibration
    with torch.no_grad(), model.activated(sub):
        for x in batches[:2]:  # calibrate used the first two batches only
            model(x)
    handle.remove()
    values = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t in seen], dim=1).double()
    mean, var = bn.subnet_stats(model.stats_key(sub))
    torch.testing.assert_close(mean.double(), values.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var.double(), values.var(1), rtol=1e-4, atol=1e-5)
    assert model.has_norm_stats(sub) and name.startswith("stages.2")


def test_subnet_stats_survive_state_dict_round_trip_and_to() -> None:
    model, subs, batches = calibrated_resnet()
    x = batches[2]
    outputs = {}
    for sub in subs:
        with torch.no_grad(), model.activated(sub):
            outputs[sub] = model(x)
    fresh = tailor.create_model("resnet20").eval()
    fresh.load_state_dict(model.state_dict())
    fresh64 = tailor.create_model("resnet20").eval()
    fresh64.load_state_dict(model.state_dict())
    fresh64.to(torch.float64)
    for sub in subs:
        assert fresh.has_norm_stats(sub)
        with torch.no_grad(), fresh.activated(sub):
            torch.testing.assert_close(fresh(x), outputs[sub])
        with torch.no_grad(), fresh64.activated(sub):
            torch.testing.assert_close(fresh64(x.double()).float(), outputs[sub], rtol=1e-4, atol=1e-4)
    # the statistics differ per subnet, and differ from the shared ones
    a, _b = (model.norm_layers(s)[0][1] for s in subs[:2])
    assert not torch.allclose(a.subnet_stats(model.stats_key(subs[0]))[0][:4], a.running_mean[:4])


def test_uncalibrated_subnet_falls_back_visibly() -> None:
    model, subs, _ = calibrated_resnet()
    model.activate(subs[0])
    assert not model.uses_shared_norm_stats
    other = model.space.uniform(0.75)
    with pytest.warns(SubnetNormFallbackWarning, match=model.stats_key(other)):
        model.activate(other)
    assert model.uses_shared_norm_stats
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.activate(other)  # training mode normalises with batch statistics: nothing to warn about
    with pytest.warns(SubnetNormFallbackWarning):
        model.eval()


def test_equal_channel_counts_share_one_stats_key() -> None:
    model = tailor.create_model("resnet20", min_width=0.1)
    largest = model.space.largest()
    a = largest.replace(widths={"stage1.out": 0.30})  # ceil(0.30 * 16) = 5 channels
    b = largest.replace(widths={"stage1.out": 0.27})  # ceil(0.27 * 16) = 5 channels
    assert a != b and model.stats_key(a) == model.stats_key(b)
    model.activate(a)
    assert model.active_subnet.width("stage1.out") == 5 / 16
    with pytest.raises(InvalidSubnetError, match="stage1.out"):
        model.activate(largest.replace(widths={"stage1.out": 0.05}))


def test_norm_stats_bytes_reports_per_subnet_against_shared() -> None:
    model, subs, _ = calibrated_resnet()
    report = model.norm_stats_bytes()
    assert report["subnets"] == 3
    expected = 0
    for sub in subs:
        expected += sum(2 * 4 * bn.subnet_stats(model.stats_key(sub))[0].numel() for _, bn in model.norm_layers(sub))
    assert report["subnet_stats_bytes"] == expected
    params = sum(p.numel() * 4 for p in model.parameters())
    assert params < report["shared_bytes"] < params * 1.1


def test_weight_cache_setting_is_validated() -> None:
    model = tailor.create_model("resnet20")
    model.set_weight_cache(0)
    assert all(m.cache_entries == 0 for _, m in model.elastic_layers() if hasattr(m, "cache_entries"))
    with pytest.raises(InvalidSubnetError, match=">= 0"):
        model.set_weight_cache(-1)


def test_a_skippable_block_that_downsamples_is_rejected() -> None:
    class Strided(ElasticModel):
        def __init__(self) -> None:
            super().__init__(SearchSpace([WidthDim("a", 8, choices=(1.0,))], [DepthDim("stage", (1, 2))]))
            blocks = [
                ElasticConv2d(8, 8, 3, 1, 1, in_dim="a", out_dim="a"),
                ElasticConv2d(8, 8, 3, 2, 1, in_dim="a", out_dim="a"),
            ]
            self.stage = ElasticStage(blocks, "stage")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stage(x)

    with pytest.raises(
        UnsupportedModelError, match=r"layer 'stage.blocks.1': a block that depth may skip cannot downsample"
    ):
        Strided().activate(Strided().space.largest())
