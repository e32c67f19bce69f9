"""WeightSlice for attention: whole heads (`ElasticQKVLinear`, `ElasticSelfAttention`, `ElasticMultiheadAttention`).

A subnet keeps the first h of a block's H heads (SuperServe's WeightSlice keeps the first ceil(W * H)).
The width dimension driving a block's heads counts *features*, H * head_dim of them, with
`step = head_dim`, so that every width keeps whole heads. The packed q/k/v projection lays its rows out
as [q; k; v], each [head, head_dim] (the layout of timm's `qkv` Linear and of `nn.MultiheadAttention`'s
`in_proj_weight`), so h heads read rows `[:h*d]` of each third: `ElasticQKVLinear` selects those three
blocks. The attention itself then never needs the head count: the projection's output is reshaped with
`unflatten(-1, (3, -1, head_dim))`, so the same code runs every subnet, and its `torch.fx` trace (what
`extract` copies) holds only plain `nn.Linear`s and torch functions, no `size()` calls.

Attention is computed as `softmax(q k^T / sqrt(d)) v` with explicit matrix products (timm's unfused
path), because torch's FLOP counter, which `tailor.cost.macs` uses, does not count the fused CPU kernel
of `F.scaled_dot_product_attention`; `ElasticSelfAttention(fused=True)` uses the fused kernel (faster on
GPUs; the MAC counts then miss the two attention products).

`ElasticSelfAttention` is the common qkv-`Linear` + reshape-to-heads form (timm's ViT `Attention`);
`ElasticMultiheadAttention` is a drop-in for `nn.MultiheadAttention` (same call and outputs; unmasked
self- or cross-attention) that adopts its parameters, which is what `tailor.elasticize` turns one into.
Both are containers of elastic ops, traced through by `extract`, so extracted subnets are plain modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops.base import ElasticOp, channel_count
from tailor.ops.conv import ElasticLinear, SlicedLinear


class QKVConfig(NamedTuple):
    """What an `ElasticQKVLinear` runs: input features, features of each of q, k and v, and its weight's key."""

    in_features: int
    head_features: int
    key: tuple[int, int] | None


class ElasticQKVLinear(SlicedLinear, nn.Linear):
    """The packed q/k/v projection `Linear(in, 3 * heads * head_dim)` running the first h heads of each of q, k, v.

    `in_dim` names the width dimension of its input features (None: fixed), `out_dim` the dimension of
    the heads: `heads * head_dim` features with step `head_dim` (its output has three times as many).
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        *,
        in_dim: str | None = None,
        out_dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if num_heads < 1 or head_dim < 1:
            raise UnsupportedModelError(
                f"ElasticQKVLinear: need >= 1 head of >= 1 features, got {num_heads} x {head_dim}"
            )
        nn.Linear.__init__(self, in_features, 3 * num_heads * head_dim, bias, device=device, dtype=dtype)
        ElasticOp.__init__(self)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.in_dim = in_dim
        self.out_dim = out_dim
        self._active = QKVConfig(in_features, num_heads * head_dim, None)

    @property
    def features(self) -> int:
        """Features of one of q, k, v at full width (heads * head_dim)."""
        return self.num_heads * self.head_dim

    def width_dims(self) -> dict[str, tuple[int, int]]:
        dims: dict[str, tuple[int, int]] = {}
        if self.in_dim is not None:
            dims[self.in_dim] = (self.in_features, 1)
        if self.out_dim is not None:
            if self.out_dim == self.in_dim:
                raise UnsupportedModelError(
                    f"ElasticQKVLinear: input and heads cannot share dimension {self.out_dim!r}"
                )
            dims[self.out_dim] = (self.features, self.head_dim)
        return dims

    def configure(self, channels: Mapping[str, int], stats_key: str) -> QKVConfig:
        name = type(self).__name__
        cin = channel_count(name, channels, self.in_dim, self.in_features)
        features = channel_count(name, channels, self.out_dim, self.features)
        if features % self.head_dim:
            raise InvalidSubnetError(f"{name}: {features} features are not whole heads of {self.head_dim}")
        if cin == self.in_features and features == self.features:
            return QKVConfig(cin, features, None)
        return QKVConfig(cin, features, (features, cin))

    @property
    def active_heads(self) -> int:
        """Heads the active configuration runs."""
        return self._active.head_features // self.head_dim

    def _select(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of the first `features` features of each of q, k, v and the first `cin` input columns."""
        features, cin = key
        weight = self.weight.view(3, self.features, self.in_features)[:, :features, :cin].reshape(3 * features, cin)
        bias = None if self.bias is None else self.bias.view(3, self.features)[:, :features].reshape(3 * features)
        return weight, bias


    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, heads={self.num_heads}x{self.head_dim}, bias={self.bias is not None}, "
            f"in_dim={self.in_dim!r}, out_dim={self.out_dim!r}"
        )


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_dim: int, dropout: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(q k^T / sqrt(head_dim)) v, the attention weights) with explicit products; `dropout` on the weights.

    `head_dim` is given (not read from `q.shape`), so that a traced graph holds a constant, not a `size()` call.
    """
    weights = torch.matmul(q * head_dim**-0.5, k.transpose(-2, -1)).softmax(-1)
    return torch.matmul(F.dropout(weights, dropout) if dropout else weights, v), weights


def split_heads(qkv: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3 * h * head_dim) -> q, k, v of shape (B, h, N, head_dim); h follows from the size."""
    qkv = qkv.unflatten(-1, (3, -1, head_dim)).permute(2, 0, 3, 1, 4)  # (3, B, h, N, head_dim)
    return qkv[0], qkv[1], qkv[2]


class ElasticSelfAttention(nn.Module):
    """Multi-head self-attention on (B, N, dim) tokens with elastic heads (timm's ViT `Attention`).

    `embed_dim` names the width dimension of the token features (None: fixed), `heads_dim` the
    dimension of the heads (`num_heads * head_dim` features, step `head_dim`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        heads_dim: str | None,
        embed_dim: str | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise UnsupportedModelError(f"ElasticSelfAttention: {dim} features do not split into {num_heads} heads")
            head_dim = dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.attn_drop = attn_drop
        self.fused = fused
        self.qkv = ElasticQKVLinear(dim, num_heads, head_dim, qkv_bias, in_dim=embed_dim, out_dim=heads_dim)
        self.proj = ElasticLinear(num_heads * head_dim, dim, in_dim=heads_dim, out_dim=embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.head_dim)
        dropout = self.attn_drop if self.training else 0.0
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            x = attend(q, k, v, self.head_dim, dropout)[0]
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


class ElasticMultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` with elastic heads: the same call and outputs, its parameters adopted.

    Supports what a vision model uses: self- or cross-attention without masks, `batch_first` either way,
    attention dropout, and the attention weights (`need_weights`, averaged over the active heads unless
    `average_attn_weights=False`). Masks, `add_bias_kv`, `add_zero_attn` and separate key/value sizes are
    refused (`UnsupportedModelError`); `tailor.elasticize` leaves such layers unconverted.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        *,
        heads_dim: str | None,
        in_dim: str | None = None,
        out_dim: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise UnsupportedModelError(
                f"ElasticMultiheadAttention: {embed_dim} features do not split into {num_heads} heads"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        factory = dict(device=device, dtype=dtype)
        self.in_proj = ElasticQKVLinear(
            embed_dim, num_heads, self.head_dim, bias, in_dim=in_dim, out_dim=heads_dim, **factory
        )
        self.out_proj = ElasticLinear(embed_dim, embed_dim, bias, in_dim=heads_dim, out_dim=out_dim, **factory)

    @classmethod
    def from_module(
        cls, mha: nn.MultiheadAttention, *, heads_dim: str | None, in_dim: str | None = None, out_dim: str | None = None
    ) -> ElasticMultiheadAttention:
        """An elastic copy of `mha` holding its very parameters (no copies: tied weights stay tied)."""
        reason = unsupported_multihead_attention(mha)
        if reason is not None:
            raise UnsupportedModelError(f"ElasticMultiheadAttention: {reason}")
        weight = mha.in_proj_weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            mha.dropout,
            mha.in_proj_bias is not None,
            mha.batch_first,
            heads_dim=heads_dim,
            in_dim=in_dim,
            out_dim=out_dim,
            device=weight.device,
            dtype=weight.dtype,
        )
        new.in_proj._parameters["weight"] = weight
        new.in_proj._parameters["bias"] = mha.in_proj_bias
        new.out_proj._parameters["weight"] = mha.out_proj.weight
        new.out_proj._parameters["bias"] = mha.out_proj.bias
        new.in_proj.clear_cache()
        new.out_proj.clear_cache()
        new.train(mha.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise UnsupportedModelError("ElasticMultiheadAttention: attention masks are not supported")
        self_attention = key is query and value is query
        if not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1))
        if self_attention:  # one projection
            q, k, v = split_heads(self.in_proj(query), self.head_dim)
        else:  # cross-attention: each input through its third of the projection
            q = split_heads(self.in_proj(query), self.head_dim)[0]
            k = split_heads(self.in_proj(key), self.head_dim)[1]
            v = split_heads(self.in_proj(value), self.head_dim)[2]
        out, weights = attend(q, k, v, self.head_dim, self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


def unsupported_multihead_attention(mha: nn.MultiheadAttention) -> str | None:
    """Why `ElasticMultiheadAttention` cannot stand in for `mha`, or None when it can."""
    if not mha._qkv_same_embed_dim:
        return "separate key/value sizes (kdim/vdim) are not supported"
    if mha.bias_k is not None or mha.bias_v is not None:
        return "add_bias_kv is not supported"
    if mha.add_zero_attn:
        return "add_zero_attn is not supported"
    if mha._forward_hooks or mha._forward_pre_hooks or mha.out_proj._forward_hooks:
        return "forward hooks cannot be carried over"
    return None


__all__ = [
    "ElasticMultiheadAttention",
    "ElasticQKVLinear",
    "ElasticSelfAttention",
    "attend",
    "split_heads",
    "unsupported_multihead_attention",
]
