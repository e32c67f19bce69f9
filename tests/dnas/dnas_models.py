"""Tiny models with SuperNetModules for the DNAS tests, and their hand-computed costs."""

from __future__ import annotations

import math

import torch
from torch import nn

from tailor.dnas import SuperNetModule


def pool(channels: int = 4, **options: bool) -> SuperNetModule:
    """3x3 conv, 5x5 conv, depthwise-separable 3x3, identity: all keep `channels` and the spatial size."""
    return SuperNetModule(
        [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.Conv2d(channels, channels, 5, padding=2),
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                nn.Conv2d(channels, channels, 1),
            ),
            nn.Identity(),
        ],
        **options,
    )


class Toy(nn.Module):
    """stem (3->4 conv stride 2 + BN + ReLU), a searchable layer, global pool, linear 4->10."""

    def __init__(self, **options: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.choice = pool(4, **options)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.choice(self.stem(x)).mean((2, 3)))


class TwoStage(nn.Module):
    """Two searchable layers at different resolutions (8x8, then 4x4 after a stride-2 conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(pool(4), nn.Conv2d(4, 4, 3, stride=2, padding=1), pool(4))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


# Hand-computed costs of `pool(4)` (per alternative) at an HxW input: params = weights + biases;
# MACs = output pixels x output channels x (input channels / groups) x kernel area (biases are not MACs).
POOL_PARAMS = [4 * 4 * 9 + 4, 4 * 4 * 25 + 4, (4 * 9 + 4) + (4 * 4 + 4), 0]  # 148, 404, 60, 0


def pool_macs(pixels: int) -> list[int]:
    return [pixels * 4 * 4 * 9, pixels * 4 * 4 * 25, pixels * 4 * 9 + pixels * 4 * 4, 0]


# Toy on 3x8x8: the stem halves 8x8 to 4x4, where the searchable layer runs.
TOY_INPUT = (3, 8, 8)
TOY_FIXED_PARAMS = (3 * 4 * 9 + 4) + 2 * 4 + (4 * 10 + 10)  # stem conv, BN affine, head: 170
TOY_FIXED_MACS = 16 * 4 * 3 * 9 + 4 * 10  # stem conv at 4x4 output, head: 1768


def log_theta(theta: list[float]) -> torch.Tensor:
    """α whose softmax (T = 1) is exactly `theta` (up to float rounding)."""
    return torch.tensor([math.log(t) for t in theta])
