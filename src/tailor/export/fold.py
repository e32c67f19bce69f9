"""Fold eval-mode BatchNorm into the convolution before it, on an extracted `fx.GraphModule`.

In eval mode `bn(conv(x)) = conv'(x)` with `w' = w * s` and `b' = (b - mean) * s + beta`, where
`s = gamma / sqrt(var + eps)` per output channel. Folding removes one memory pass per conv and is what
inference runtimes expect; doing it here (not leaving it to an exporter) keeps the exported graph the
same whichever exporter runs, and lets the folded module be checked against the original in PyTorch.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from tailor.graph import called_module


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new `nn.Conv2d` computing `bn(conv(x))` with `bn` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype))
    return fused


def fold_batchnorm(gm: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """A copy of `gm` with every `Conv2d -> BatchNorm2d` pair fused; returns (module, pairs folded).

    A pair is folded only when the BatchNorm's single input is the conv and nothing else reads the
    conv's output (otherwise the unnormalised tensor is still needed). The result is in eval mode.
    """
    gm = copy.deepcopy(gm).eval()
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    folded = 0
    for node in list(gm.graph.nodes):
        bn = called_module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or len(prev.users) != 1 or calls[str(node.target)] != 1:
            continue
        if prev.op != "call_module" or calls[str(prev.target)] != 1:  # a shared module cannot be rewritten
            continue
        conv = called_module(gm, prev)
        if not isinstance(conv, nn.Conv2d) or conv.weight.shape[0] != bn.num_features:
            continue
        gm.set_submodule(str(prev.target), fold_conv_bn(conv, bn))
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        gm.delete_submodule(str(node.target))
        folded += 1
    gm.graph.lint()
    gm.recompile()
    return gm, folded
