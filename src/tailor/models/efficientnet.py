"""Elastic EfficientNet: `efficientnet_b0`.

Stage grouping: the rows [e, k, s, c, n] of the paper's table, 7 stages of 1, 2, 2, 3, 3, 4, 1
MBConv blocks (output 16, 24, 40, 80, 112, 192, 320; kernels 3, 3, 5, 3, 5, 5, 3), stem 32, head
1280. Every block has squeeze-excite (SiLU, sigmoid gate) with max(1, block input channels / 4)
squeeze channels; activations are SiLU throughout. Stochastic depth (drop connect) is not modelled.

Width encoding (the order of `space.widths`, i.e. of a `wm` vector):
- `stem` — the stem conv's output, also the hidden width of the first block (expand ratio 1).
- per stage k (1-based): `stagek.out` — the projection output shared by the stage's blocks, then per
  block j (0-based) with an expand conv `stagek.blockj.expand` — its hidden channels
  (make_divisible(in * 6, 8) at full size), choices 3/6, 4/6, 1: expand ratios 3, 4, 6 as in
  Once-for-All.
- `head` — the final 1x1 conv's output (1280).
Non-expand dimensions take the `widths` choices (default 0.25, 0.5, 0.75, 1) or the range [min_width, 1].
Depth: `stagek` — the first n-2..n blocks of an n-block stage run (at least 1; a 1-block stage has (1,)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from tailor.models.mobile_blocks import DEFAULT_WIDTHS, EXPAND_RATIO_CHOICES, BlockSpec, ElasticLinearClassifier
from tailor.models.registry import register_model
from tailor.ops import expand_channels

#: EfficientNet-B0 stages [e (expand ratio), k (kernel), s (first stride), c (output channels), n (blocks)].
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def b0_stages(stem_channels: int = 32) -> list[list[BlockSpec]]:
    """EfficientNet-B0's MBConv blocks, one list per table row."""
    stages = []
    in_ch = stem_channels
    for e, k, s, c, n in B0_STAGES:
        blocks = []
        for i in range(n):
            hidden = in_ch if e == 1 else expand_channels(in_ch, e)
            squeeze = max(1, int(in_ch * 0.25))
            blocks.append(
                BlockSpec(k, hidden, c, s if i == 0 else 1, nn.SiLU, se=squeeze, hidden_choices=EXPAND_RATIO_CHOICES)
            )
            in_ch = c
        stages.append(blocks)
    return stages


class ElasticEfficientNet(ElasticLinearClassifier):
    """EfficientNet-B0 with elastic stage widths, expand ratios and stage depths."""

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
            b0_stages(32),
            num_classes=num_classes,
            drop_rate=drop_rate,
            stem_channels=32,
            head_channels=1280,
            stem_act=nn.SiLU,
            head_act=nn.SiLU,
            se_act_layer=nn.SiLU,
            se_gate_layer=nn.Sigmoid,
            bn_eps=1e-3,
            bn_momentum=0.01,
            in_chans=in_chans,
            widths=widths,
            min_width=min_width,
        )


@register_model
def efficientnet_b0(**kwargs: Any) -> ElasticEfficientNet:
    """EfficientNet-B0: 7 stages [1, 2, 2, 3, 3, 4, 1] (5.29 M parameters, 0.39 GMACs at 224)."""
    kwargs.setdefault("num_classes", 1000)
    return ElasticEfficientNet(**kwargs)
