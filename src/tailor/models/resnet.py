"""Elastic ResNets: CIFAR-style `resnet20/32/56` and ImageNet-style `resnet18/50`.

Width encoding (the order of `space.widths`, i.e. of a `wm` vector):
- `stem` — the stem conv's output, present only when stage 1 starts with a projection
  (bottleneck ResNets); otherwise the stem output is tied to `stage1.out` by the identity shortcut.
- per stage k: `stagek.out` — the residual channels shared by every block's output in the stage
  (tied by the additions), then per block j its hidden dimensions: `stagek.blockj.mid` (basic
  blocks) or `stagek.blockj.mid1`, `stagek.blockj.mid2` (bottlenecks).
Depth: `stagek` — how many of the stage's blocks run (CIFAR: 1..n; ImageNet: n-2..n, at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError
from tailor.models.base import PooledClassifierModel
from tailor.models.blocks import ElasticBasicBlock, ElasticBottleneck
from tailor.models.registry import register_model
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticStage
from tailor.space import DepthDim, SearchSpace, WidthDim

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)


def width_dim(
    name: str,
    channels: int,
    widths: Sequence[float] | None,
    min_width: float | None,
    block: tuple[str, int] | None = None,
) -> WidthDim:
    """A width dimension with the given choices, or the range [min_width, 1] when that is set.

    `block = (stage, k)`: only block k (1-based) of that stage uses it (see `WidthDim.block`)."""
    if min_width is not None:
        return WidthDim(name, channels, low=min_width, block=block)
    if widths is None:
        raise InvalidSubnetError("give widths (choices) or min_width (a range [min_width, 1])")
    return WidthDim(name, channels, choices=tuple(widths), block=block)


class ElasticResNet(PooledClassifierModel):
    """A ResNet whose stage widths, block widths and stage depths are elastic."""

    def __init__(
        self,
        block: type[ElasticBasicBlock] | type[ElasticBottleneck],
        layers: Sequence[int],
        stage_channels: Sequence[int],
        *,
        stem: str,
        num_classes: int,
        in_chans: int = 3,
        widths: Sequence[float] | None = DEFAULT_WIDTHS,
        min_width: float | None = None,
        min_depths: Sequence[int] | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        if stem not in ("cifar", "imagenet"):
            raise InvalidSubnetError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if len(layers) != len(stage_channels):
            raise InvalidSubnetError("layers and stage_channels must have one entry per stage")
        min_depths = min_depths or [1] * len(layers)
        stem_channels = stage_channels[0] if stem == "cifar" else 64
        stage1_out = stage_channels[0] * block.expansion
        stem_dim = "stage1.out" if stem_channels == stage1_out else "stem"

        dims = [] if stem_dim == "stage1.out" else [width_dim("stem", stem_channels, widths, min_width)]
        for k, (count, mid) in enumerate(zip(layers, stage_channels), start=1):
            dims.append(width_dim(f"stage{k}.out", mid * block.expansion, widths, min_width))
            for j in range(count):
                for hidden in self._hidden_names(block, k, j):
                    dims.append(width_dim(hidden, mid, widths, min_width, block=(f"stage{k}", j + 1)))
        depth_dims = [
            DepthDim(f"stage{k}", tuple(range(max(1, lo), count + 1)))
            for k, (count, lo) in enumerate(zip(layers, min_depths), start=1)
        ]
        super().__init__(SearchSpace(dims, depth_dims))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem_kind = stem
        self.default_input_size = (in_chans, 32, 32) if stem == "cifar" else (in_chans, 224, 224)
        self.zero_init_residual = zero_init_residual

        if stem == "cifar":
            self.stem_conv = ElasticConv2d(in_chans, stem_channels, 3, 1, 1, out_dim=stem_dim)
            self.stem_pool = None
        else:
            self.stem_conv = ElasticConv2d(in_chans, stem_channels, 7, 2, 3, out_dim=stem_dim)
            self.stem_pool = nn.MaxPool2d(3, 2, 1)
        self.stem_bn = ElasticBatchNorm2d(stem_channels, dim=stem_dim)

        stages = []
        in_ch, in_dim = stem_channels, stem_dim
        for k, (count, mid) in enumerate(zip(layers, stage_channels), start=1):
            out_dim = f"stage{k}.out"
            blocks = []
            for j in range(count):
                stride = 2 if (j == 0 and k > 1) else 1
                hidden = self._hidden_names(block, k, j)
                if block is ElasticBasicBlock:
                    blocks.append(block(in_ch, mid, stride, in_dim=in_dim, mid_dim=hidden[0], out_dim=out_dim))
                else:
                    blocks.append(block(in_ch, mid, stride, in_dim=in_dim, mid_dims=hidden, out_dim=out_dim))
                in_ch, in_dim = mid * block.expansion, out_dim
            stages.append(ElasticStage(blocks, depth_dim=f"stage{k}"))
        self.stages = nn.ModuleList(stages)
        self.num_features = in_ch
        self.fc = ElasticLinear(in_ch, num_classes, in_dim=in_dim)
        self.init_weights()

    @staticmethod
    def _hidden_names(block: type, stage: int, index: int) -> tuple[str, ...]:
        base = f"stage{stage}.block{index}"
        return (f"{base}.mid",) if block is ElasticBasicBlock else (f"{base}.mid1", f"{base}.mid2")

    def residual_norm_names(self) -> list[str]:
        """Qualified names of each block's last norm (the residual branch's output scale), in order."""
        names = []
        for k, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                last = "bn3" if isinstance(block, ElasticBottleneck) else "bn2"
                names.append(f"stages.{k}.blocks.{j}.{last}")
        return names

    def init_weights(self, module: nn.Module | None = None) -> None:
        """Kaiming-normal (fan-out) convs, unit/zero norms, default linear; with `zero_init_residual`
        every block's last norm scale starts at 0, so that each residual branch starts as the identity
        (Goyal et al.; BigNAS uses it so that deep and shallow subnets start alike).

        `module` may be a network extracted from this model: blocks it skips are simply absent.
        """
        target = self if module is None else module
        for child in target.modules():
            if isinstance(child, nn.Conv2d):
                nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(child, nn.BatchNorm2d):
                nn.init.ones_(child.weight)
                nn.init.zeros_(child.bias)
            elif isinstance(child, nn.Linear):
                child.reset_parameters()
        if self.zero_init_residual:
            for name in self.residual_norm_names():
                try:
                    norm = target.get_submodule(name)
                except AttributeError:
                    continue  # a block the extracted subnet skips
                nn.init.zeros_(norm.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the feature map before pooling."""
        x = F.relu(self.stem_bn(self.stem_conv(x)), inplace=True)
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
        return x


def _cifar_resnet(depth: int, **kwargs: object) -> ElasticResNet:
    n = (depth - 2) // 6
    kwargs.setdefault("num_classes", 10)
    return ElasticResNet(ElasticBasicBlock, [n, n, n], [16, 32, 64], stem="cifar", **kwargs)  # type: ignore[arg-type]


@register_model
def resnet20(**kwargs: object) -> ElasticResNet:
    """CIFAR ResNet-20: 3 stages x 3 basic blocks, 16/32/64 channels (0.27 M parameters)."""
    return _cifar_resnet(20, **kwargs)


@register_model
def resnet32(**kwargs: object) -> ElasticResNet:
    """CIFAR ResNet-32: 3 stages x 5 basic blocks."""
    return _cifar_resnet(32, **kwargs)


@register_model
def resnet56(**kwargs: object) -> ElasticResNet:
    """CIFAR ResNet-56: 3 stages x 9 basic blocks."""
    return _cifar_resnet(56, **kwargs)


def _imagenet_resnet(block: type, layers: list[int], **kwargs: object) -> ElasticResNet:
    kwargs.setdefault("num_classes", 1000)
    kwargs.setdefault("min_depths", [max(1, n - 2) for n in layers])
    return ElasticResNet(block, layers, [64, 128, 256, 512], stem="imagenet", **kwargs)  # type: ignore[arg-type]


@register_model
def resnet18(**kwargs: object) -> ElasticResNet:
    """ImageNet ResNet-18: basic blocks [2, 2, 2, 2]."""
    return _imagenet_resnet(ElasticBasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet50(**kwargs: object) -> ElasticResNet:
    """ImageNet ResNet-50: bottlenecks [3, 4, 6, 3] (25.6 M parameters)."""
    return _imagenet_resnet(ElasticBottleneck, [3, 4, 6, 3], **kwargs)
