"""Tracing a user's model with `torch.fx`, and recording what each node computed on example inputs.

The tracer keeps `torch.nn` layers and elastic ops as single calls, records each node's source line,
records calls of custom autograd functions as one opaque call (fx would otherwise inline their
forward and lose what they are), and turns fx's failures into `UnsupportedModelError`s that name
the node and the operation where tracing stopped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from tailor.errors import UnsupportedModelError
from tailor.ops.base import ElasticOp

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class TensorValue:
    """A tensor a node produced on the example inputs (only its shape is kept)."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


class Opaque:
    """A value of a type the analysis does not look into (a dtype, a device, a string...)."""

    def __repr__(self) -> str:
        return "Opaque()"


OPAQUE = Opaque()


def abstract(value: Any) -> Any:
    """Tensors -> `TensorValue`; tuples and lists recursively; numbers as they are; anything else -> OPAQUE."""
    if isinstance(value, torch.Tensor):
        return TensorValue(tuple(value.shape))
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)):
        return tuple(abstract(v) for v in value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return OPAQUE


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
    """' at file.py:12: `code`' for the innermost user frame that created the node ('' when unknown)."""
    trace = node.stack_trace or node.meta.get("stack_trace") or ""
    frames = [m for m in _FRAME.finditer(trace) if not m.group(1).startswith(_TORCH_DIR) and m.group(1) != __file__]
    if not frames:
        return ""
    path, line, code = frames[-1].groups()
    return f" at {path.rsplit('/', 1)[-1]}:{line}: `{code.strip()}`"


def node_name(node: fx.Node, root: nn.Module | None = None) -> str:
    """ "node 'name' (operation) at file:line: `code`"."""
    return f"node {node.name!r} ({describe(node, root)}){location(node)}"


class ConvertTracer(fx.Tracer):
    """fx tracer for `elasticize`: torch.nn layers and elastic ops are leaves; failures name the node."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.last_node: fx.Node | None = None
        self._root: nn.Module | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, ElasticOp):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        self.last_node = node
        return node

    def _fail(self, node: fx.Node, what: str) -> UnsupportedModelError:
        owner = type(self._root).__name__ if self._root is not None else "the model"
        return UnsupportedModelError(
            f"{owner}.forward cannot be traced by torch.fx: {node_name(node, self._root)} {what}"
        )

    def to_bool(self, obj: fx.Proxy) -> bool:
        raise self._fail(
            obj.node,
            "is used as a Python bool: data-dependent control flow (`if`, `while`, `assert`, `and`/`or` on "
            "tensors) cannot be traced; move it out of forward or make it depend on constants only",
        )

    def iter(self, obj: fx.Proxy) -> Iterator:
        raise self._fail(obj.node, "is iterated (a loop over a tensor or over a traced value) and cannot be traced")

    def keys(self, obj: fx.Proxy) -> Any:
        raise self._fail(obj.node, "is unpacked with ** and cannot be traced")

    def trace(self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self._root = root if isinstance(root, nn.Module) else None
        self.last_node = None
        try:
            with _autograd_functions_as_calls(self):
                return super().trace(root, concrete_args)
        except UnsupportedModelError:
            raise
        except Exception as exc:  # fx and user code raise many types while tracing
            owner = type(root).__name__
            where = f" after {node_name(self.last_node, self._root)}" if self.last_node is not None else ""
            raise UnsupportedModelError(
                f"{owner}.forward cannot be traced by torch.fx{where}: {type(exc).__name__}: {exc}"
            ) from exc


@contextmanager
def _autograd_functions_as_calls(tracer: fx.Tracer) -> Iterator[None]:
    """While tracing, record `SomeFunction.apply(proxy, ...)` as one call_function node.

    fx would run the function's Python `forward` on proxies and inline it, silently dropping its custom
    backward (or fail inside it). fx itself patches torch while it traces; this patch is undone on exit.
    """
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        proxies: list[fx.Proxy] = []
        fx.node.map_aggregate((args, kwargs), lambda v: proxies.append(v) if isinstance(v, fx.Proxy) else v)
        if proxies:
            return tracer.create_proxy("call_function", function_call(cls), args, kwargs)
        return original.__get__(None, cls)(*args, **kwargs)

    torch.autograd.Function.apply = classmethod(apply)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.autograd.Function.apply = original  # type: ignore[method-assign]


class Recorder(fx.Interpreter):
    """Runs a traced graph on example inputs and keeps `abstract(value)` of every node."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:
            raise UnsupportedModelError(
                f"running the traced model on the example inputs failed at {node_name(n, self.module)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.values[n] = abstract(result)
        return result


def function_call(cls: type) -> Callable[..., Any]:
    """A plain function calling `cls.apply`: the graph's target for a custom autograd function.

    (A bound `apply` would be written into generated code under torch's module name, which does not
    resolve; a function defined here is passed to the generated code as an object.)
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return cls.apply(*args, **kwargs)

    call.__name__ = f"{cls.__name__}_apply"
    call.__qualname__ = f"{cls.__qualname__}.apply"
    call.autograd_function = cls  # type: ignore[attr-defined]
    return call


def autograd_function_of(target: Any) -> type | None:
    """The custom autograd function a call_function target calls, if it is one."""
    owner = getattr(target, "autograd_function", None) or getattr(target, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, torch.autograd.Function) else None


def is_autograd_function(target: Any) -> bool:
    """Whether a call_function target calls some custom `torch.autograd.Function`."""
    return autograd_function_of(target) is not None


__all__ = [
    "OPAQUE",
    "ConvertTracer",
    "Opaque",
    "Recorder",
    "TensorValue",
    "abstract",
    "autograd_function_of",
    "describe",
    "function_call",
    "is_autograd_function",
    "location",
    "node_name",
]
