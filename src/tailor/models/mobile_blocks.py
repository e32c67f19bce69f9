"""Inverted-residual (MBConv) blocks and the shared backbone of the elastic mobile families.

`ElasticInvertedResidual` is MobileNetV2's block, with the optional squeeze-excite of MobileNetV3
and EfficientNet: an optional 1x1 expand conv (absent at expand ratio 1, where the depthwise conv
runs on the block's input dimension), a depthwise kxk conv on the hidden dimension, an optional
squeeze-excite, a linear 1x1 projection, and a residual add when the block keeps its shape (stride
1, same width dimension in and out).

The squeeze width of `ElasticSqueezeExcite` is fixed at full size: the gate multiplies the hidden
channels one to one, so only its input side (reduce conv) and output side (expand conv) follow the
hidden width; the squeeze channels in between have no partner to stay consistent with.

`ElasticMobileBackbone` builds, from a list of stages of `BlockSpec`s, the search space and the
layers every family shares: stem conv, stages, final 1x1 head conv. Width dimensions, in order:
- `stem` — the stem conv's output (also the hidden width of the first block when its expand ratio
  is 1). When the first block keeps its shape (expand ratio 1, stride 1, as many output channels as
  the stem: MobileNetV3-Large) its residual add ties the stem to `stage1.out` and there is no
  `stem` dimension (as in the CIFAR ResNets).
- per stage k (1-based): `stagek.out` — the projection output shared by every block of the stage
  (tied by the residual adds), then per block j (0-based) with an expand conv `stagek.blockj.expand`
  — its hidden channels, whose choices are fractions of the largest expand ratio.
- `head` — the final 1x1 conv's output, then the family's classifier dimensions (`head.fc`).
Depth: `stagek` — OFA-style, the first n-2..n blocks of an n-block stage run (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import UnsupportedModelError
from tailor.models.base import fresh_classifier
from tailor.models.resnet import DEFAULT_WIDTHS, width_dim
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticModel, ElasticStage
from tailor.space import DepthDim, SearchSpace, WidthDim

#: Hidden-width choices of a block with an integer expand ratio t: t/2, 2t/3, t (ratio 6: 3, 4, 6 as in Once-for-All).
EXPAND_RATIO_CHOICES = (3 / 6, 4 / 6, 1.0)
#: Hidden-width choices of a MobileNetV3 block whose hidden size is not an integer multiple of its input.
HIDDEN_CHOICES = (0.5, 0.75, 1.0)


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block at full width.

    `hidden` equal to the block's input channels means no expand conv; otherwise `hidden_choices`
    are the width choices of its `expand` dimension. `se` is the squeeze width (0: no squeeze-excite).
    """

    kernel: int
    hidden: int
    out: int
    stride: int
    act: type[nn.Module]
    se: int = 0
    hidden_choices: tuple[float, ...] = EXPAND_RATIO_CHOICES


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite on `dim`: pool, reduce (fixed `squeeze` outputs), act, expand, gate, multiply."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        *,
        dim: str,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.reduce = ElasticConv2d(channels, squeeze, 1, bias=True, in_dim=dim, out_dim=None)
        self.act = act_layer()
        self.expand = ElasticConv2d(squeeze, channels, 1, bias=True, in_dim=None, out_dim=dim)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * self.gate(scale)


class ElasticInvertedResidual(nn.Module):
    """MBConv: [1x1 expand + BN + act] -> kxk depthwise + BN + act -> [SE] -> 1x1 project + BN (+ x).

    `expand_dim` None means expand ratio 1: no expand conv, and the depthwise conv runs on `in_dim`
    (`hidden_ch` must then equal `in_ch`).
    """

    def __init__(
        self,
        in_ch: int,
        hidden_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int,
        *,
        in_dim: str,
        expand_dim: str | None,
        out_dim: str,
        act_layer: type[nn.Module],
        se_channels: int = 0,
        se_act_layer: type[nn.Module] = nn.ReLU,
        se_gate_layer: type[nn.Module] = nn.Hardsigmoid,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if expand_dim is None and hidden_ch != in_ch:
            raise UnsupportedModelError(
                f"ElasticInvertedResidual: without an expand conv the hidden width must be the input's ({in_ch}), got {hidden_ch}"
            )
        hidden_dim = in_dim if expand_dim is None else expand_dim
        if expand_dim is None:
            self.expand_conv = None
            self.expand_bn = None
        else:
            self.expand_conv = ElasticConv2d(in_ch, hidden_ch, 1, in_dim=in_dim, out_dim=hidden_dim)
            self.expand_bn = ElasticBatchNorm2d(hidden_ch, bn_eps, bn_momentum, dim=hidden_dim)
        self.dw_conv = ElasticConv2d(
            hidden_ch,
            hidden_ch,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=hidden_ch,
            in_dim=hidden_dim,
            out_dim=hidden_dim,
        )
        self.dw_bn = ElasticBatchNorm2d(hidden_ch, bn_eps, bn_momentum, dim=hidden_dim)
        self.act = act_layer()
        self.se = (
            ElasticSqueezeExcite(
                hidden_ch, se_channels, dim=hidden_dim, act_layer=se_act_layer, gate_layer=se_gate_layer
            )
            if se_channels > 0
            else None
        )
        self.project_conv = ElasticConv2d(hidden_ch, out_ch, 1, in_dim=hidden_dim, out_dim=out_dim)
        self.project_bn = ElasticBatchNorm2d(out_ch, bn_eps, bn_momentum, dim=out_dim)
        self.use_residual = stride == 1 and in_ch == out_ch and in_dim == out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand_conv is not None:
            out = self.act(self.expand_bn(self.expand_conv(out)))
        out = self.act(self.dw_bn(self.dw_conv(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.project_bn(self.project_conv(out))
        if self.use_residual:
            out = out + x
        return out


def group_by_output(blocks: Sequence[BlockSpec]) -> list[list[BlockSpec]]:
    """Consecutive blocks with the same output channels form one stage."""
    stages: list[list[BlockSpec]] = []
    for block in blocks:
        if stages and stages[-1][-1].out == block.out:
            stages[-1].append(block)
        else:
            stages.append([block])
    return stages


def init_linear(linear: nn.Linear) -> None:
    """Classifier init: weights from N(0, 0.01), zero bias."""
    nn.init.normal_(linear.weight, 0.0, 0.01)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class ElasticMobileBackbone(ElasticModel):
    """Stem conv, stages of `ElasticInvertedResidual`s and the final 1x1 head conv (see the module docstring).

    Subclasses add their classifier, `forward_head` and `reset_classifier`; `head_dims` names the
    classifier's extra width dimensions (e.g. `("head.fc", 1280)`), placed after `head` in the space.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[BlockSpec]],
        *,
        stem_channels: int,
        head_channels: int,
        stem_act: type[nn.Module],
        head_act: type[nn.Module],
        head_dims: Sequence[tuple[str, int]] = (),
        se_act_layer: type[nn.Module] = nn.ReLU,
        se_gate_layer: type[nn.Module] = nn.Hardsigmoid,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        in_chans: int = 3,
        widths: Sequence[float] | None = DEFAULT_WIDTHS,
        min_width: float | None = None,
    ) -> None:
        if not stages or not all(stages):
            raise UnsupportedModelError("a mobile backbone needs at least one stage, each with at least one block")
        first = stages[0][0]
        stem_tied = first.hidden == stem_channels and first.stride == 1 and first.out == stem_channels
        stem_dim = "stage1.out" if stem_tied else "stem"

        # Search space: stem, per stage (out, then each block's expand), head dims.
        dims = [] if stem_tied else [width_dim("stem", stem_channels, widths, min_width)]
        in_ch = stem_channels
        for k, blocks in enumerate(stages, start=1):
            dims.append(width_dim(f"stage{k}.out", blocks[0].out, widths, min_width))
            for j, spec in enumerate(blocks):
                if spec.hidden != in_ch:
                    dims.append(
                        WidthDim(
                            f"stage{k}.block{j}.expand", spec.hidden, choices=spec.hidden_choices, block=(f"stage{k}", j + 1)
                        )
                    )
                in_ch = spec.out
        dims.append(width_dim("head", head_channels, widths, min_width))
        dims.extend(width_dim(name, channels, widths, min_width) for name, channels in head_dims)
        depth_dims = [
            DepthDim(f"stage{k}", tuple(range(max(1, len(blocks) - 2), len(blocks) + 1)))
            for k, blocks in enumerate(stages, start=1)
        ]
        super().__init__(SearchSpace(dims, depth_dims))
        self.in_chans = in_chans
        self.default_input_size = (in_chans, 224, 224)

        self.stem_conv = ElasticConv2d(in_chans, stem_channels, 3, 2, 1, out_dim=stem_dim)
        self.stem_bn = ElasticBatchNorm2d(stem_channels, bn_eps, bn_momentum, dim=stem_dim)
        self.stem_act = stem_act()

        built = []
        in_ch, in_dim = stem_channels, stem_dim
        for k, blocks in enumerate(stages, start=1):
            out_dim = f"stage{k}.out"
            layer = []
            for j, spec in enumerate(blocks):
                layer.append(
                    ElasticInvertedResidual(
                        in_ch,
                        spec.hidden,
                        spec.out,
                        spec.kernel,
                        spec.stride,
                        in_dim=in_dim,
                        expand_dim=None if spec.hidden == in_ch else f"stage{k}.block{j}.expand",
                        out_dim=out_dim,
                        act_layer=spec.act,
                        se_channels=spec.se,
                        se_act_layer=se_act_layer,
                        se_gate_layer=se_gate_layer,
                        bn_eps=bn_eps,
                        bn_momentum=bn_momentum,
                    )
                )
                if j > 0 and not layer[-1].use_residual:
                    raise UnsupportedModelError(
                        f"stage{k}.block{j}: blocks after a stage's first must keep its shape (they can be skipped)"
                    )
                in_ch, in_dim = spec.out, out_dim
            built.append(ElasticStage(layer, depth_dim=f"stage{k}"))
        self.stages = nn.ModuleList(built)

        self.head_conv = ElasticConv2d(in_ch, head_channels, 1, in_dim=in_dim, out_dim="head")
        self.head_bn = ElasticBatchNorm2d(head_channels, bn_eps, bn_momentum, dim="head")
        self.head_act = head_act()
        self.head_channels = head_channels

    def init_weights(self, module: nn.Module | None = None) -> None:
        """Kaiming-normal (fan-out) convs, unit/zero norms, N(0, 0.01) linears; `module` may be a
        network extracted from this model (see `ElasticModel.init_weights`)."""
        for child in (self if module is None else module).modules():
            if isinstance(child, nn.Conv2d):
                nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
                if child.bias is not None:
                    nn.init.zeros_(child.bias)
            elif isinstance(child, nn.BatchNorm2d):
                nn.init.ones_(child.weight)
                nn.init.zeros_(child.bias)
            elif isinstance(child, nn.Linear):
                init_linear(child)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and head conv: the feature map before pooling."""
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        for stage in self.stages:
            x = stage(x)
        return self.head_act(self.head_bn(self.head_conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final classifier (`self.classifier`) with a fresh one for `num_classes` outputs."""
        self.num_classes = num_classes
        self.classifier = fresh_classifier(self.classifier, num_classes)
        init_linear(self.classifier)
        self.invalidate_plans()


class ElasticLinearClassifier(ElasticMobileBackbone):
    """Backbone + pool + dropout + one `ElasticLinear` on `head` (MobileNetV2, EfficientNet)."""

    def __init__(
        self, stages: Sequence[Sequence[BlockSpec]], *, num_classes: int, drop_rate: float, **kwargs: Any
    ) -> None:
        super().__init__(stages, **kwargs)
        self.num_classes = num_classes
        self.num_features = self.head_channels
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = ElasticLinear(self.num_features, num_classes, in_dim="head")
        self.init_weights()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout and classifier (`pre_logits=True`: the pooled features)."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.classifier(self.dropout(x))
