"""Residual blocks built from elastic ops (the "layer" level between ops and networks).

Each block takes the width dimensions of its input, its hidden channels and its output; the
shortcut of a block whose shape changes is a 1x1 conv + SubnetNorm on the same dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailor.ops import ElasticBatchNorm2d, ElasticConv2d


class ElasticShortcut(nn.Module):
    """Projection shortcut: 1x1 conv (with stride) + BatchNorm, for blocks that change shape."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, in_dim: str, out_dim: str) -> None:
        super().__init__()
        self.conv = ElasticConv2d(in_ch, out_ch, 1, stride, 0, in_dim=in_dim, out_dim=out_dim)
        self.bn = ElasticBatchNorm2d(out_ch, dim=out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ElasticBasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs; `mid_dim` sizes the hidden channels."""

    expansion = 1

    def __init__(self, in_ch: int, mid_ch: int, stride: int, *, in_dim: str, mid_dim: str, out_dim: str) -> None:
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = ElasticConv2d(in_ch, mid_ch, 3, stride, 1, in_dim=in_dim, out_dim=mid_dim)
        self.bn1 = ElasticBatchNorm2d(mid_ch, dim=mid_dim)
        self.conv2 = ElasticConv2d(mid_ch, out_ch, 3, 1, 1, in_dim=mid_dim, out_dim=out_dim)
        self.bn2 = ElasticBatchNorm2d(out_ch, dim=out_dim)
        needs_projection = stride != 1 or in_ch != out_ch or in_dim != out_dim
        self.shortcut = (
            ElasticShortcut(in_ch, out_ch, stride, in_dim=in_dim, out_dim=out_dim) if needs_projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ElasticBottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4); each hidden conv has its own dimension."""

    expansion = 4

    def __init__(
        self, in_ch: int, mid_ch: int, stride: int, *, in_dim: str, mid_dims: tuple[str, str], out_dim: str
    ) -> None:
        super().__init__()
        out_ch = mid_ch * self.expansion
        first, second = mid_dims
        self.conv1 = ElasticConv2d(in_ch, mid_ch, 1, 1, 0, in_dim=in_dim, out_dim=first)
        self.bn1 = ElasticBatchNorm2d(mid_ch, dim=first)
        self.conv2 = ElasticConv2d(mid_ch, mid_ch, 3, stride, 1, in_dim=first, out_dim=second)
        self.bn2 = ElasticBatchNorm2d(mid_ch, dim=second)
        self.conv3 = ElasticConv2d(mid_ch, out_ch, 1, 1, 0, in_dim=second, out_dim=out_dim)
        self.bn3 = ElasticBatchNorm2d(out_ch, dim=out_dim)
        needs_projection = stride != 1 or in_ch != out_ch or in_dim != out_dim
        self.shortcut = (
            ElasticShortcut(in_ch, out_ch, stride, in_dim=in_dim, out_dim=out_dim) if needs_projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity, inplace=True)
