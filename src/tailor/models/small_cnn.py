"""`small_cnn`: a plain CNN like the Big/Little demo's, with elastic width and depth.

Three stages of two 3x3 conv + BN + ReLU layers (32, 64, 128 channels), 2x2 max-pool after the
first two stages, global average pool, linear classifier.

Width encoding: `stage1.out`, `stage2.out`, `stage3.out` (both convs of a stage write the same
channels, so that the second can be skipped). Depth: `stagek` in (1, 2): the second conv of a stage
is the one skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tailor.models.base import PooledClassifierModel
from tailor.models.registry import register_model
from tailor.models.resnet import DEFAULT_WIDTHS, width_dim
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticStage
from tailor.space import DepthDim, SearchSpace


class ConvBNReLU(nn.Module):
    """3x3 conv + SubnetNorm + ReLU on given width dimensions."""

    def __init__(self, in_ch: int, out_ch: int, *, in_dim: str | None, out_dim: str) -> None:
        super().__init__()
        self.conv = ElasticConv2d(in_ch, out_ch, 3, 1, 1, in_dim=in_dim, out_dim=out_dim)
        self.bn = ElasticBatchNorm2d(out_ch, dim=out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SmallCNN(PooledClassifierModel):
    """Plain CNN: stages of conv layers, pooling between stages, linear head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        channels: Sequence[int] = (32, 64, 128),
        widths: Sequence[float] | None = DEFAULT_WIDTHS,
        min_width: float | None = None,
    ) -> None:
        dims = [width_dim(f"stage{k}.out", c, widths, min_width) for k, c in enumerate(channels, start=1)]
        super().__init__(SearchSpace(dims, [DepthDim(f"stage{k}", (1, 2)) for k in range(1, len(channels) + 1)]))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.default_input_size = (in_chans, 32, 32)
        stages = []
        in_ch, in_dim = in_chans, None
        for k, c in enumerate(channels, start=1):
            out_dim = f"stage{k}.out"
            layers = [
                ConvBNReLU(in_ch, c, in_dim=in_dim, out_dim=out_dim),
                ConvBNReLU(c, c, in_dim=out_dim, out_dim=out_dim),
            ]
            stages.append(ElasticStage(layers, depth_dim=f"stage{k}"))
            in_ch, in_dim = c, out_dim
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        self.num_features = in_ch
        self.fc = ElasticLinear(in_ch, num_classes, in_dim=in_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv stages, max-pooling after all but the last."""
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index < last:
                x = self.pool(x)
        return x


@register_model
def small_cnn(**kwargs: object) -> SmallCNN:
    """Plain 6-conv CNN (32/64/128 channels), CIFAR-sized inputs."""
    return SmallCNN(**kwargs)  # type: ignore[arg-type]
