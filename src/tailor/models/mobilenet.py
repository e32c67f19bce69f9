"""Elastic MobileNets: `mobilenet_v2` (1.0) and `mobilenet_v3_large` / `mobilenet_v3_small` (1.0).

Stage grouping: consecutive blocks with the same output channels form one stage.
- MobileNetV2: the rows [t, c, n, s] of the paper's table, 7 stages of 1, 2, 3, 4, 3, 3, 1 blocks
  (output 16, 24, 32, 64, 96, 160, 320), stem 32, head 1280.
- MobileNetV3-Large: 6 stages of 1, 2, 3, 4, 2, 3 blocks (output 16, 24, 40, 80, 112, 160),
  stem 16, head 960, classifier hidden 1280.
- MobileNetV3-Small: 5 stages of 1, 2, 3, 2, 3 blocks (output 16, 24, 40, 48, 96), stem 16,
  head 576, classifier hidden 1024. As in the reference implementation, the 576 head conv has no
  squeeze-excite (the paper's table marks one; the published 2.54 M parameters are without it).
SE blocks and hardswish are where the paper's tables put them; SE squeeze = make_divisible(hidden / 4, 8).

Width encoding (the order of `space.widths`, i.e. of a `wm` vector):
- `stem` — the stem conv's output (the hidden width of the first block, whose expand ratio is 1).
  MobileNetV3-Large's first block keeps its shape (16 -> 16, stride 1, residual), so its stem is tied
  to `stage1.out` and there is no `stem` dimension.
- per stage k (1-based): `stagek.out` — the projection output shared by the stage's blocks, then per
  block j (0-based) with an expand conv `stagek.blockj.expand` — its hidden channels. Choices: for an
  integer expand ratio t, (1/2, 2/3, 1) of the full hidden width (ratio 6: expand ratios 3, 4, 6 as
  in Once-for-All); for MobileNetV3 hidden sizes that are not an integer multiple of the block's
  input (e.g. 24 -> 88, 80 -> 200, 80 -> 184), (0.5, 0.75, 1).
- `head` — the final 1x1 conv's output (1280 / 960 / 576), then for V3 `head.fc` — the hidden
  features of the pre-classifier Linear (1280 / 1024).
Non-expand dimensions take the `widths` choices (default 0.25, 0.5, 0.75, 1) or the range [min_width, 1].
Depth: `stagek` — the first n-2..n blocks of an n-block stage run (at least 1; a 1-block stage has (1,)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import UnsupportedModelError
from tailor.models.mobile_blocks import (
    DEFAULT_WIDTHS,
    EXPAND_RATIO_CHOICES,
    HIDDEN_CHOICES,
    BlockSpec,
    ElasticLinearClassifier,
    ElasticMobileBackbone,
    group_by_output,
)
from tailor.models.registry import register_model
from tailor.ops import ElasticLinear, expand_channels

#: MobileNetV2 stages [t (expand ratio), c (output channels), n (blocks), s (first stride)].
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

#: MobileNetV3 blocks (kernel, hidden, out, SE, hardswish, stride), from the paper's tables 1 and 2.
V3_LARGE_BLOCKS = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
V3_SMALL_BLOCKS = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)
#: (stem, head conv, classifier hidden) channels.
V3_SIZES = {"large": (16, 960, 1280), "small": (16, 576, 1024)}


def v2_stages(stem_channels: int = 32) -> list[list[BlockSpec]]:
    """MobileNetV2's blocks, one list per table row; hidden = make_divisible(in * t, 8)."""
    stages = []
    in_ch = stem_channels
    for t, c, n, s in V2_STAGES:
        blocks = []
        for i in range(n):
            hidden = in_ch if t == 1 else expand_channels(in_ch, t)
            blocks.append(BlockSpec(3, hidden, c, s if i == 0 else 1, nn.ReLU6, hidden_choices=EXPAND_RATIO_CHOICES))
            in_ch = c
        stages.append(blocks)
    return stages


def v3_stages(variant: str) -> list[list[BlockSpec]]:
    """MobileNetV3 blocks grouped into stages by output channels."""
    table = V3_LARGE_BLOCKS if variant == "large" else V3_SMALL_BLOCKS
    blocks = []
    in_ch = V3_SIZES[variant][0]
    for kernel, hidden, out, se, hardswish, stride in table:
        choices = EXPAND_RATIO_CHOICES if hidden % in_ch == 0 else HIDDEN_CHOICES
        squeeze = expand_channels(hidden, 0.25) if se else 0
        act = nn.Hardswish if hardswish else nn.ReLU
        blocks.append(BlockSpec(kernel, hidden, out, stride, act, se=squeeze, hidden_choices=choices))
        in_ch = out
    return group_by_output(blocks)


class ElasticMobileNetV2(ElasticLinearClassifier):
    """MobileNetV2 (width 1.0) with elastic stage widths, expand ratios and stage depths."""

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[float] | None = DEFAULT_WIDTHS,
        min_width: float | None = None,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__(
            v2_stages(32),
            num_classes=num_classes,
            drop_rate=drop_rate,
            stem_channels=32,
            head_channels=1280,
            stem_act=nn.ReLU6,
            head_act=nn.ReLU6,
            in_chans=in_chans,
            widths=widths,
            min_width=min_width,
        )


class ElasticMobileNetV3(ElasticMobileBackbone):
    """MobileNetV3 Large or Small (width 1.0) with elastic widths, hidden sizes and stage depths."""

    def __init__(
        self,
        variant: str,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[float] | None = DEFAULT_WIDTHS,
        min_width: float | None = None,
        drop_rate: float = 0.2,
    ) -> None:
        if variant not in V3_SIZES:
            raise UnsupportedModelError(f"MobileNetV3 variant must be 'large' or 'small', got {variant!r}")
        stem, head, hidden = V3_SIZES[variant]
        super().__init__(
            v3_stages(variant),
            stem_channels=stem,
            head_channels=head,
            stem_act=nn.Hardswish,
            head_act=nn.Hardswish,
            head_dims=(("head.fc", hidden),),
            se_act_layer=nn.ReLU,
            se_gate_layer=nn.Hardsigmoid,
            bn_eps=1e-3,
            bn_momentum=0.01,
            in_chans=in_chans,
            widths=widths,
            min_width=min_width,
        )
        self.variant = variant
        self.num_classes = num_classes
        self.num_features = hidden  # the pre-logits features (after the hidden Linear)
        self.head_fc = ElasticLinear(head, hidden, in_dim="head", out_dim="head.fc")
        self.head_fc_act = nn.Hardswish()
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = ElasticLinear(hidden, num_classes, in_dim="head.fc")
        self.init_weights()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, hidden Linear + hardswish (`pre_logits=True` stops here), dropout, classifier."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        x = self.head_fc_act(self.head_fc(x))
        return x if pre_logits else self.classifier(self.dropout(x))


@register_model
def mobilenet_v2(**kwargs: Any) -> ElasticMobileNetV2:
    """MobileNetV2 1.0: 7 stages [1, 2, 3, 4, 3, 3, 1] (3.50 M parameters, 0.30 GMACs at 224)."""
    kwargs.setdefault("num_classes", 1000)
    return ElasticMobileNetV2(**kwargs)


@register_model
def mobilenet_v3_large(**kwargs: Any) -> ElasticMobileNetV3:
    """MobileNetV3-Large 1.0: 6 stages [1, 2, 3, 4, 2, 3] (5.48 M parameters, 0.22 GMACs at 224)."""
    kwargs.setdefault("num_classes", 1000)
    return ElasticMobileNetV3("large", **kwargs)


@register_model
def mobilenet_v3_small(**kwargs: Any) -> ElasticMobileNetV3:
    """MobileNetV3-Small 1.0: 5 stages [1, 2, 3, 2, 3] (2.54 M parameters, 0.06 GMACs at 224)."""
    kwargs.setdefault("num_classes", 1000)
    return ElasticMobileNetV3("small", **kwargs)
