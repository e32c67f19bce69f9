"""Transformer pieces besides attention: `ElasticLayerNorm` and the MLP with elastic hidden width.

LayerNorm normalises each token over its own features and keeps no running statistics, so unlike
BatchNorm it needs no SubnetNorm: a narrower subnet normalises over its active feature prefix with the
shared affine weights (what a network of that width computes). Where the token width is fixed (a ViT's
embedding), a plain `nn.LayerNorm` is the right layer; `ElasticLayerNorm` is for residual streams that
shrink (what `tailor.elasticize` makes of a user's transformer).

`ElasticMlp` is the transformer MLP: `fc1` (elastic hidden width) -> activation -> `fc2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import UnsupportedModelError
from tailor.ops.base import ElasticOp, channel_count
from tailor.ops.conv import ElasticLinear


class LayerNormConfig(NamedTuple):
    """What an `ElasticLayerNorm` runs: its active features, and whether that is fewer than all."""

    features: int
    sliced: bool


class ElasticLayerNorm(ElasticOp, nn.LayerNorm):
    """`LayerNorm` over the last axis, on the first `c` features chosen by the width dimension `dim`."""

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if not isinstance(normalized_shape, int):
            raise UnsupportedModelError("ElasticLayerNorm: only a normalised shape of one axis (an int) is supported")
        nn.LayerNorm.__init__(self, normalized_shape, eps, elementwise_affine, bias, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self.dim = dim
        self.num_features = normalized_shape
        self._active = LayerNormConfig(normalized_shape, False)

    def width_dims(self) -> dict[str, tuple[int, int]]:
        return {} if self.dim is None else {self.dim: (self.num_features, 1)}

    def configure(self, channels: Mapping[str, int], stats_key: str) -> LayerNormConfig:
        c = channel_count("ElasticLayerNorm", channels, self.dim, self.num_features)
        return LayerNormConfig(c, c != self.num_features)

    def _affine(self, c: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, sliced = self._active
        if not sliced:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        if torch.is_grad_enabled():
            weight, bias = self._affine(c)
        else:
            cached = self._eval_cache.get(c)
            if cached is None:
                cached = self._remember(c, self._affine(c))
            weight, bias = cached
        return F.layer_norm(x, (c,), weight, bias, self.eps)

    @torch.no_grad()
    def to_static(self) -> nn.LayerNorm:
        c, _ = self._active
        ref = self.weight if self.weight is not None else None
        norm = nn.LayerNorm(
            c,
            self.eps,
            self.elementwise_affine,
            bias=self.bias is not None,
            device=None if ref is None else ref.device,
            dtype=None if ref is None else ref.dtype,
        )
        weight, bias = self._affine(c)
        if weight is not None:
            norm.weight.copy_(weight)
        if bias is not None:
            norm.bias.copy_(bias)
        return norm

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim!r}"


class ElasticMlp(nn.Module):
    """Transformer MLP `fc2(drop(act(fc1(x))))` whose hidden width follows the dimension `hidden_dim`.

    `embed_dim` names the width dimension of the token features (None: fixed).
    """

    def __init__(
        self,
        features: int,
        hidden: int,
        *,
        hidden_dim: str | None,
        embed_dim: str | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(features, hidden, bias, in_dim=embed_dim, out_dim=hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = ElasticLinear(hidden, features, bias, in_dim=hidden_dim, out_dim=embed_dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


__all__ = ["ElasticLayerNorm", "ElasticMlp"]
