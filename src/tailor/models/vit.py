"""Elastic Vision Transformers: `vit_tiny`, `vit_small` (DeiT-Tiny/Small sizes) and `vit_micro` (32x32, CPU-sized).

Architecture (DeiT's, which is ViT's): a `patch_size` x `patch_size` stride-`patch_size` conv embeds
patches; a learned position embedding (kept as a (1, D, H/p, W/p) map and resampled bicubically to other
input sizes, exactly the identity at the size it was built for) is added; a class token is prepended;
`depth` pre-norm blocks (LayerNorm, multi-head self-attention, LayerNorm, GELU MLP, each residual) run in
one `ElasticStage`; a final LayerNorm; the head reads the class token (`global_pool="token"`) or the mean
of the patch tokens (`"avg"`). The token width D (`embed_dim`) is fixed: LayerNorm keeps no running
statistics, so a ViT needs no SubnetNorm.

Search space (the order of `space.widths`, i.e. of a `wm` vector), per block j (0-based):
- `blockj.heads` — the attention heads: `num_heads * head_dim` features, step `head_dim`, choices
  h / num_heads for h in `head_choices` (default: every count 1..num_heads); a subnet runs the first h.
- `blockj.mlp` — the MLP's hidden width: `mlp_ratio * D` features, choices r / mlp_ratio for r in
  `mlp_ratios` (default: 1/4, 1/2, 3/4 and all of `mlp_ratio`, DynaBERT's width multipliers).
Depth: `depth` — how many blocks run (default choices L/2, 3L/4, L: DynaBERT's depth multipliers), picked
by `depth_rule`: `"every_other"` (default; LayerDrop/DynaBERT, the kept blocks spread over the whole
depth) or `"first"` (the first d blocks). Widths of blocks that a depth skips do not matter.

Published sizes at 224x224, 1000 classes: DeiT-Tiny 5.7 M parameters, 1.3 GFLOPs (1.26 G MACs);
DeiT-Small 22.1 M, 4.6 G MACs (`benchmarks/model_sizes.py` prints ours beside them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.models.registry import register_model
from tailor.ops import ElasticMlp, ElasticModel, ElasticSelfAttention, ElasticStage
from tailor.ops.select import DEPTH_RULES
from tailor.space import DepthDim, SearchSpace, WidthDim

#: DynaBERT's width multipliers, used for the MLP hidden width by default.
MLP_WIDTHS = (0.25, 0.5, 0.75, 1.0)
#: DynaBERT's depth multipliers (of the full depth), rounded up to whole blocks.
DEPTH_MULTIPLIERS = (0.5, 0.75, 1.0)
#: Standard deviation of the position embedding's normal init (the original ViT's).
INIT_STD = 0.02


class ElasticViTBlock(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden: int,
        *,
        heads_dim: str,
        mlp_dim: str,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ElasticSelfAttention(
            dim, num_heads, heads_dim=heads_dim, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ElasticMlp(dim, hidden, hidden_dim=mlp_dim, drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _fractions(values: Sequence[float], full: float, what: str) -> tuple[float, ...]:
    """Width choices value / full, checked to lie in (0, 1]."""
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= full:
            raise InvalidSubnetError(f"vit: {what} {value!r} is not in (0, {full}]")
        out.append(value / full)
    if not out:
        raise InvalidSubnetError(f"vit: {what} choices are empty")
    return tuple(out)


class ElasticViT(ElasticModel):
    """A Vision Transformer whose heads, MLP widths (per block) and depth are elastic (module docstring)."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        head_choices: Sequence[int] | None = None,
        mlp_ratios: Sequence[float] | None = None,
        depth_choices: Sequence[int] | None = None,
        depth_rule: str = "every_other",
        global_pool: str = "token",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ) -> None:
        if img_size < 1 or patch_size < 1 or img_size % patch_size:
            raise UnsupportedModelError(
                f"vit: img_size {img_size} must be a positive multiple of patch_size {patch_size}"
            )
        if embed_dim % num_heads:
            raise UnsupportedModelError(f"vit: embed_dim {embed_dim} does not split into {num_heads} heads")
        if depth_rule not in DEPTH_RULES:
            raise UnsupportedModelError(f"vit: depth_rule must be one of {DEPTH_RULES}, got {depth_rule!r}")
        if global_pool not in ("token", "avg"):
            raise UnsupportedModelError(f"vit: global_pool must be 'token' or 'avg', got {global_pool!r}")
        head_dim = embed_dim // num_heads
        hidden = int(embed_dim * mlp_ratio)
        heads = tuple(range(1, num_heads + 1)) if head_choices is None else tuple(head_choices)
        mlp = tuple(mlp_ratio * m for m in MLP_WIDTHS) if mlp_ratios is None else tuple(mlp_ratios)
        depths = (
            tuple(sorted({math.ceil(m * depth) for m in DEPTH_MULTIPLIERS}))
            if depth_choices is None
            else tuple(depth_choices)
        )
        if not depths or not all(isinstance(d, int) and 1 <= d <= depth for d in depths) or max(depths) != depth:
            raise InvalidSubnetError(f"vit: depth choices {depths!r} must be ints in [1, {depth}] including {depth}")
        heads_widths = _fractions(heads, num_heads, "head count")
        mlp_widths = _fractions(mlp, mlp_ratio, "MLP ratio")
        dims: list[WidthDim] = []
        for j in range(depth):
            dims.append(WidthDim(f"block{j}.heads", num_heads * head_dim, choices=heads_widths, step=head_dim))
            dims.append(WidthDim(f"block{j}.mlp", hidden, choices=mlp_widths))
        super().__init__(SearchSpace(dims, [DepthDim("depth", depths)]))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = embed_dim
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.global_pool = global_pool
        self.default_input_size = (in_chans, img_size, img_size)

        grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        self.pos_drop = nn.Dropout(drop_rate)
        blocks = [
            ElasticViTBlock(
                embed_dim,
                num_heads,
                hidden,
                heads_dim=f"block{j}.heads",
                mlp_dim=f"block{j}.mlp",
                qkv_bias=qkv_bias,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
            )
            for j in range(depth)
        ]
        self.stages = nn.ModuleList([ElasticStage(blocks, depth_dim="depth", rule=depth_rule)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self.init_weights()

    def init_weights(self, module: nn.Module | None = None) -> None:
        """The original ViT's (JAX) scheme: Xavier-uniform linears with zero biases, LeCun-normal patch embedding, unit/zero LayerNorms, position embedding N(0, 0.02), zero class token.

        timm's default (every linear N(0, 0.02)) suits D = 768; the small ViTs trained on this CPU learned
        markedly slower with it. `module` may be a network extracted from this model (see
        `ElasticModel.init_weights`); fans are then its own layers'.
        """
        target = self if module is None else module
        for child in target.modules():
            if isinstance(child, nn.Linear):
                nn.init.xavier_uniform_(child.weight)
                if child.bias is not None:
                    nn.init.zeros_(child.bias)
            elif isinstance(child, nn.LayerNorm):
                if child.weight is not None:
                    nn.init.ones_(child.weight)
                if child.bias is not None:
                    nn.init.zeros_(child.bias)
            elif isinstance(child, nn.Conv2d):
                fan_in = child.in_channels * child.kernel_size[0] * child.kernel_size[1] // child.groups
                nn.init.trunc_normal_(child.weight, std=fan_in**-0.5)
                if child.bias is not None:
                    nn.init.zeros_(child.bias)
        with torch.no_grad():
            pos_embed = getattr(target, "pos_embed", None)
            if isinstance(pos_embed, torch.Tensor):
                nn.init.normal_(pos_embed, std=INIT_STD)
            cls_token = getattr(target, "cls_token", None)
            if isinstance(cls_token, torch.Tensor):
                nn.init.zeros_(cls_token)

    def no_weight_decay(self) -> set[str]:
        """Parameters an optimizer should not decay (timm's convention; `tailor.train.Trainer` reads it)."""
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, position embedding, class token, blocks, final norm: (B, 1 + patches, D) tokens."""
        x = self.patch_embed(x)
        x = x + F.interpolate(self.pos_embed, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Class token (or mean of the patch tokens) and classifier (`pre_logits=True`: the pooled features)."""
        x = x[:, 1:].mean(1) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` outputs (other weights kept)."""
        old = self.head
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.invalidate_plans()


def _vit(defaults: dict[str, Any], kwargs: dict[str, Any]) -> ElasticViT:
    return ElasticViT(**{**defaults, **kwargs})


@register_model
def vit_tiny(**kwargs: Any) -> ElasticViT:
    """DeiT-Tiny: D 192, 12 blocks, 3 heads, MLP ratio 4 (5.7 M parameters, 1.26 G MACs at 224x224)."""
    return _vit({"embed_dim": 192, "depth": 12, "num_heads": 3}, kwargs)


@register_model
def vit_small(**kwargs: Any) -> ElasticViT:
    """DeiT-Small: D 384, 12 blocks, 6 heads, MLP ratio 4 (22.1 M parameters, 4.6 G MACs at 224x224)."""
    return _vit({"embed_dim": 384, "depth": 12, "num_heads": 6}, kwargs)


@register_model
def vit_micro(**kwargs: Any) -> ElasticViT:
    """A CPU-sized ViT for 32x32 inputs: patch 4, D 96, 6 blocks, 3 heads, MLP ratio 4, 10 classes."""
    return _vit(
        {"img_size": 32, "patch_size": 4, "num_classes": 10, "embed_dim": 96, "depth": 6, "num_heads": 3}, kwargs
    )
