"""torch.fx in one place: the tracer tailor's packages build on, and the graph walks they share.

Four packages read a network as an fx graph: `tailor.ops` extracts a subnet as a static `GraphModule`,
`tailor.convert` traces and analyses a user's model, `tailor.export` folds BatchNorm into convolutions,
and `tailor.cost` sizes each node's output and cuts a subnet into blocks for latency tables. They share:

- `LeafTracer`: fx's tracer, keeping torch.nn layers and the modules a `leaf` rule names (elastic ops,
  whole stages...) as single calls, its failures one `UnsupportedModelError` naming the model and node;
- `copy_graph_module`: a `GraphModule` holding copies of what a graph calls and reads (extraction);
- `called_module`, `attribute`: the module a node calls, the value a dotted `get_attr` target names;
- `describe`, `location`, `node_name`: a node as an error message names it (operation, file:line, code);
- `propagate_shapes`, `output_shape`: every node's output shape on an example (fx's `ShapeProp`);
- `cut_points`, `subgraph`: where exactly one tensor is live, and the nodes between two cuts as a module.

Written here, not taken from torch, is only what fx lacks: naming a node for a person, the single-tensor
cuts of a dataflow graph, and copies (not references) of what a graph reads. Everything else calls fx.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from tailor.errors import UnsupportedModelError

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')
_TORCH_DIR = os.path.dirname(torch.__file__)
_TAILOR_DIR = os.path.dirname(__file__) + os.sep


class LeafTracer(fx.Tracer):
    """fx's tracer with a `leaf` rule: modules it accepts are recorded as one call (as torch.nn layers are),
    everything else is traced through. `stack_traces` records each node's source line (for error messages).

    A failure while tracing is an `UnsupportedModelError` naming the model and the last node recorded
    (fx and user code raise many types). Subclasses extend tracing; the source files of tailor's own, like
    this one, are passed over when `location` looks for the user's line that made a node.
    """

    #: Source files of tailor's tracers (this module, each subclass's in tailor): tracing, not user code.
    machinery: ClassVar[set[str]] = {__file__}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        path = inspect.getfile(cls)
        if path.startswith(_TAILOR_DIR):  # a tracer written next to a user's model must not hide its lines
            LeafTracer.machinery.add(path)

    def __init__(self, leaf: Callable[[nn.Module], bool] = lambda module: False, stack_traces: bool = False) -> None:
        super().__init__()
        self.leaf = leaf
        self.record_stack_traces = stack_traces
        self.last_node: fx.Node | None = None
        self.traced_root: nn.Module | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self.leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        self.last_node = node
        return node

    def trace(self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self.traced_root = root if isinstance(root, nn.Module) else None
        self.last_node = None
        try:
            return super().trace(root, concrete_args)
        except UnsupportedModelError:
            raise
        except Exception as exc:
            where = f" after {node_name(self.last_node, self.traced_root)}" if self.last_node is not None else ""
            raise UnsupportedModelError(
                f"{type(root).__name__}.forward cannot be traced by torch.fx{where}: {type(exc).__name__}: {exc}"
            ) from exc


def attribute(root: nn.Module, target: str) -> Any:
    """The value a dotted `get_attr` (or `call_module`) target names under `root`."""
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def called_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a `call_module` node calls (None for other nodes)."""
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def copy_graph_module(
    source: nn.Module,
    graph: fx.Graph,
    copy_module: Callable[[nn.Module], nn.Module] = copy.deepcopy,
    class_name: str = "GraphModule",
) -> fx.GraphModule:
    """A `GraphModule` running `graph` on copies: `copy_module(m)` of every module it calls, a detached clone
    of every parameter or buffer it reads (fx's own constructor would share `source`'s)."""
    copies: dict[str, Any] = {}
    for node in graph.nodes:
        target = str(node.target)
        if target in copies or node.op not in ("call_module", "get_attr"):
            continue
        value = attribute(source, target)
        if node.op == "call_module":
            copies[target] = copy_module(value)
        elif isinstance(value, nn.Parameter):
            copies[target] = nn.Parameter(value.detach().clone(), value.requires_grad)
        elif isinstance(value, torch.Tensor):
            copies[target] = value.detach().clone()  # registered as a buffer
        else:
            copies[target] = copy.deepcopy(value)
    return fx.GraphModule(copies, graph, class_name=class_name)


# -- naming nodes ------------------------------------------------------------------------------------


def autograd_function_of(target: Any) -> type | None:
    """The custom autograd function a call_function target calls, if it is one."""
    owner = getattr(target, "autograd_function", None) or getattr(target, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, torch.autograd.Function) else None


def describe(node: fx.Node, root: nn.Module | None = None) -> str:
    """A short, human-readable name for a node's operation: `torch.cat`, `Tensor.view`, `layer 'fc' (Linear)`."""
    if node.op == "call_module":
        kind = ""
        if root is not None:
            try:
                kind = f" ({type(root.get_submodule(node.target)).__name__})"
            except AttributeError:
                kind = ""
        return f"layer {node.target!r}{kind}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        target = node.target
        function_class = autograd_function_of(target)
        if function_class is not None:
            return f"custom autograd function {function_class.__qualname__}"
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
        module = {"_operator": "operator", "torch.nn.functional": "F", "torch._C._nn": "F"}.get(module, module)
        if module.startswith("torch._C"):
            module = "torch"
        return f"{module}.{name}" if module else name
    if node.op == "get_attr":
        return f"attribute {node.target!r}"
    return node.op


def location(node: fx.Node) -> str:
    """' at file.py:12: `code`' for the innermost user frame that created the node ('' when unknown); frames
    in torch and in tracers (`LeafTracer.machinery`) are passed over."""
    trace_text = node.stack_trace or node.meta.get("stack_trace") or ""
    frames = [
        m
        for m in _FRAME.finditer(trace_text)
        if not m.group(1).startswith(_TORCH_DIR) and m.group(1) not in LeafTracer.machinery
    ]
    if not frames:
        return ""
    path, line, code = frames[-1].groups()
    return f" at {path.rsplit('/', 1)[-1]}:{line}: `{code.strip()}`"


def node_name(node: fx.Node, root: nn.Module | None = None) -> str:
    """ "node 'name' (operation) at file:line: `code`"."""
    return f"node {node.name!r} ({describe(node, root)}){location(node)}"


# -- shapes and cuts ---------------------------------------------------------------------------------


def propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """Run `gm` once on `example` (no autograd) so that every node knows its output shape (`output_shape`)."""
    with torch.inference_mode():
        ShapeProp(gm).propagate(example)
    return gm


def output_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's (tensor) output after `propagate_shapes`; None when unknown or not a tensor."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def cut_points(nodes: Sequence[fx.Node]) -> list[int]:
    """Indices (into `nodes`, a graph's nodes in order) after which exactly one tensor, that node's output,
    is still needed by later nodes: where a graph can be cut into single-input pieces."""
    order = {n: i for i, n in enumerate(nodes)}
    end = len(nodes)
    last_use = {n: max((order.get(u, end) for u in n.users), default=order[n]) for n in nodes}
    live: set[fx.Node] = set()
    cuts = []
    for i, node in enumerate(nodes):
        live.add(node)
        live = {n for n in live if last_use[n] > i}
        if node.op != "placeholder" and live == {node}:
            cuts.append(i)
    return cuts


def subgraph(gm: fx.GraphModule, source: fx.Node, body: Sequence[fx.Node]) -> fx.GraphModule:
    """`body` (nodes fed only by `source`, and constants they read) as a module of its own: one input, the
    last node's output. Its modules and constants are `gm`'s (shared, not copied)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {source: graph.placeholder("x")}

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:  # a constant (get_attr) read inside the body
            env[node] = graph.node_copy(node)
        return env[node]

    for node in body:
        env[node] = graph.node_copy(node, lookup)
    graph.output(env[body[-1]])
    return fx.GraphModule(gm, graph)


__all__ = [
    "LeafTracer",
    "attribute",
    "autograd_function_of",
    "called_module",
    "copy_graph_module",
    "cut_points",
    "describe",
    "location",
    "node_name",
    "output_shape",
    "propagate_shapes",
    "subgraph",
]
