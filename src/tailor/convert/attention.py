"""Recognising a user's multi-head self-attention module written in the qkv-`Linear` + reshape-to-heads form.

`elasticize` keeps the user's forward code, and that code usually reshapes the packed projection's output
with a head count fixed in the code (`qkv(x).reshape(B, N, 3, self.num_heads, head_dim)`), so it could
never run fewer heads. `recognise_attention` therefore finds the modules that compute standard multi-head
self-attention and swaps each for an `AttentionUnit`, which computes the same from the same two `Linear`
layers but reads the head count from the tensor's size; the conversion then makes it an
`ElasticSelfAttention` (heads shrink whole).

A module is a candidate when its forward calls exactly two `nn.Linear` layers, `qkv` with three times the
output features of what `proj` reads and `proj` writing as many features as `qkv` reads, and some tensor in
it has the shape (..., 3, heads, head_dim) of the split projection. It is replaced only if, on every call
the example inputs make, an `AttentionUnit` on its own layers returns what it returned (eval mode): that
check, not the syntax, is what makes the replacement safe (a module with a relative-position bias, another
scale, talking heads or any extra operation gives other outputs and stays as written; its heads then stay
at full width with a warning naming the reshape). Dropout probabilities are read from the training-mode
trace (a dropout on the projection's output is `proj_drop`, any other `attn_drop`).

The graph walk is written here because no library recognises attention patterns in an fx graph of
arbitrary user code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from tailor.convert.trace import TensorValue
from tailor.ops.attention import attend, split_heads


class AttentionUnit(nn.Module):
    """A recognised self-attention: `proj(softmax(q k^T / sqrt(d)) v)` from the user's own `qkv` and `proj`.

    Plain torch (no elastic ops): `elasticize` traces it as one layer and converts it to an
    `ElasticSelfAttention` adopting both layers' parameters. `source` is the replaced module's path.
    """

    #: `ConvertTracer` keeps it as one call (the analysis has a rule for it)
    traced_as_layer = True

    def __init__(
        self,
        qkv: nn.Linear,
        proj: nn.Linear,
        num_heads: int,
        head_dim: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        source: str = "",
    ) -> None:
        super().__init__()
        self.qkv = qkv
        self.proj = proj
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.attn_drop = attn_drop
        self.proj_drop = proj_drop
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.head_dim)
        out = attend(q, k, v, self.head_dim, self.attn_drop if self.training else 0.0)[0]
        out = self.proj(out.transpose(1, 2).flatten(2))
        return F.dropout(out, self.proj_drop, self.training) if self.proj_drop else out

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}x{self.head_dim}, source={self.source!r}"


def _stack_paths(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [str(path) for path, _ in stack.values()] if isinstance(stack, dict) else []


def _candidates(root: nn.Module, graph: fx.Graph, recorded: dict[fx.Node, Any]) -> dict[str, tuple[str, str, int, int]]:
    """{module path: (qkv target, proj target, heads, head_dim)} of modules shaped like self-attention."""
    nodes_in: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        for path in _stack_paths(node):
            if node.op == "call_module" and str(node.target) == path:
                continue  # the layer itself, not something inside it
            nodes_in.setdefault(path, []).append(node)
    found: dict[str, tuple[str, str, int, int]] = {}
    for path, nodes in nodes_in.items():
        try:
            module = root.get_submodule(path)
        except AttributeError:
            continue
        if not path or type(module).__module__.startswith("torch.nn") or isinstance(module, AttentionUnit):
            continue
        linears = {
            str(n.target): root.get_submodule(str(n.target))
            for n in nodes
            if n.op == "call_module" and type(root.get_submodule(str(n.target))) is nn.Linear
        }
        if len(linears) != 2:
            continue
        (name_a, a), (name_b, b) = linears.items()
        if a.out_features != 3 * b.in_features:
            (name_a, a), (name_b, b) = (name_b, b), (name_a, a)
        if a.out_features != 3 * b.in_features or a.in_features != b.out_features:
            continue
        for n in nodes:
            shape = recorded.get(n)
            if isinstance(shape, TensorValue) and shape.ndim >= 4 and shape.shape[-3] == 3:
                heads, head_dim = shape.shape[-2], shape.shape[-1]
                if heads * head_dim == b.in_features and heads > 0:
                    found[path] = (name_a, name_b, heads, head_dim)
                    break
    # a module inside another candidate is the one to replace (the outer one holds more than attention)
    return {p: v for p, v in found.items() if not any(q != p and q.startswith(p + ".") for q in found)}


def _dropouts(root: nn.Module, graph: fx.Graph | None, path: str, proj: str) -> tuple[float, float]:
    """(attention-weight dropout, output dropout) probabilities of the module at `path`, from a training trace."""
    attn_drop = proj_drop = 0.0
    if graph is None:
        return attn_drop, proj_drop
    for node in graph.nodes:
        if path not in _stack_paths(node):
            continue
        p = 0.0
        if node.op == "call_module" and isinstance(root.get_submodule(str(node.target)), nn.Dropout):
            p = root.get_submodule(str(node.target)).p
        elif node.op == "call_function" and node.target in (F.dropout, F.scaled_dot_product_attention):
            value = node.kwargs.get("p", node.kwargs.get("dropout_p", 0.0))
            p = float(value) if isinstance(value, (int, float)) else 0.0
        if not p:
            continue
        source = node.args[0] if node.args else None
        if isinstance(source, fx.Node) and source.op == "call_module" and str(source.target) == proj:
            proj_drop = p
        else:
            attn_drop = p
    return attn_drop, proj_drop


def recognise_attention(
    net: nn.Module,
    graph: fx.Graph,
    recorded: dict[fx.Node, Any],
    inputs: tuple[Any, ...],
    train_graph: fx.Graph | None = None,
) -> list[str]:
    """Replace, in `net` (in place), every module computing standard self-attention by an `AttentionUnit`.

    `graph`/`recorded`: the eval-mode trace of `net` and each node's value on `inputs`; `train_graph` the
    training-mode trace (for dropout probabilities; None when the two are the same). Returns the paths replaced.
    """
    candidates = _candidates(net, graph, recorded)
    if not candidates:
        return []
    calls: dict[str, list[tuple[tuple, dict, Any]]] = {path: [] for path in candidates}
    handles = []
    for path in candidates:
        module = net.get_submodule(path)

        def hook(_: nn.Module, args: tuple, kwargs: dict, output: Any, path: str = path) -> None:
            calls[path].append((args, kwargs, output))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    training = net.training
    buffers = [(b, b.clone()) for b in net.buffers()]
    try:
        net.eval()
        with torch.no_grad():
            net(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        net.train(training)
    replaced = []
    for path, (qkv, proj, heads, head_dim) in candidates.items():
        seen = calls[path]
        if not seen or not all(
            len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor) and args[0].dim() == 3
            and isinstance(output, torch.Tensor)
            for args, kwargs, output in seen
        ):  # fmt: skip
            continue
        attn_drop, proj_drop = _dropouts(net, train_graph, path, proj)
        unit = AttentionUnit(
            net.get_submodule(qkv), net.get_submodule(proj), heads, head_dim, attn_drop, proj_drop, path
        )
        unit.eval()
        with torch.no_grad():
            same = all(_close(unit(args[0]), output) for args, _, output in seen)
        if not same:
            continue
        original = net.get_submodule(path)
        unit.train(original.training)
        _replace(net, original, unit)
        replaced.append(path)
    return replaced


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale))


def _replace(net: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` wherever `old` is registered (shared modules included)."""
    for parent in net.modules():
        for child_name, child in list(parent._modules.items()):
            if child is old:
                parent._modules[child_name] = new


__all__ = ["AttentionUnit", "recognise_attention"]
