"""Extraction: the active subnet of an `ElasticModel` as a static `torch.fx.GraphModule`.

The model is traced with elastic ops as single calls (containers and stages are traced through, so
skipped blocks are simply absent), and the graph is copied into a module of plain torch layers: each
elastic op's `to_static()` (copies of the weights and statistics it runs), a deep copy of every other
module, a clone of every parameter or buffer the graph reads. No tailor code is left in the result, which
is what ONNX export and the runtimes take.
"""

from __future__ import annotations

import copy

from torch import fx, nn

from tailor.graph import LeafTracer, copy_graph_module
from tailor.ops.base import ElasticOp


def is_elastic_op(module: nn.Module) -> bool:
    """The leaf rule of extraction traces: elastic ops are single calls."""
    return isinstance(module, ElasticOp)


def trace_with_ops_as_leaves(root: nn.Module) -> fx.Graph:
    """`root`'s forward as an fx graph, each elastic op one call."""
    return LeafTracer(is_elastic_op).trace(root)


def static_copy(module: nn.Module) -> nn.Module:
    """What extraction puts in place of `module`: its active configuration as a plain layer, else a deep copy."""
    return module.to_static() if isinstance(module, ElasticOp) else copy.deepcopy(module)


def extract_graph(source: nn.Module, graph: fx.Graph, name: str, training: bool) -> fx.GraphModule:
    """`graph` (traced from `source`) as a static module of plain torch layers, class `Static<name>`."""
    static = copy_graph_module(source, graph, static_copy, class_name=f"Static{name}")
    static.train(training)
    return static


__all__ = ["extract_graph", "is_elastic_op", "static_copy", "trace_with_ops_as_leaves"]
