"""Tracing a user's model with `torch.fx`, and recording what each node computed on example inputs.

The tracer (a `tailor.graph.LeafTracer`) keeps `torch.nn` layers and elastic ops as single calls, records
each node's source line, records calls of custom autograd functions as one opaque call (fx would otherwise
inline their forward and lose what they are), and turns fx's failures into `UnsupportedModelError`s that
name the node and the operation where tracing stopped.

Given example inputs, it also runs every node as it records it (a lock-step evaluation), so that the
Python numbers computed from tensor sizes are known: `int(x.size(1) * ratio)`, `range(x.size(0))` or
`if x.size(1) > 64:` then trace with the example's value (the node is marked `tailor_specialised`, and the
analysis freezes the channels whose count was read that way), where fx alone refuses them. For extraction
(`specialise_sizes=True`) every size of a non-batch axis becomes a constant, so that an extracted network
holds no `size()` calls for them (ONNX needs static pooling kernels) while its batch axis stays dynamic.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from tailor.errors import UnsupportedModelError
from tailor.graph import LeafTracer, attribute, autograd_function_of, node_name
from tailor.ops.base import ElasticOp


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


#: Marks a node whose value the lock-step evaluation could not compute (the trace goes on symbolically).
_UNKNOWN = object()
_NOTHING = object()
#: `node.meta` key set on nodes whose value was turned into a Python number while tracing.
SPECIALISED = "tailor_specialised"


class ConcreteProxy(fx.Proxy):
    """A proxy whose value on the example inputs is known: sizes and numbers computed from them can be
    used as Python numbers (`int()`, `float()`, indices, `if`), tensors cannot (data-dependent code)."""

    def _number(self, what: str) -> Any:
        tracer: ConvertTracer = self.tracer  # type: ignore[assignment]
        value = tracer.concrete(self.node)
        if isinstance(value, (bool, int, float)):
            self.node.meta[SPECIALISED] = True
            return value
        raise tracer._fail(self.node, f"is used as a Python number ({what}) but is not a size or a number")

    def __int__(self) -> int:
        return int(self._number("int()"))

    def __float__(self) -> float:
        return float(self._number("float()"))

    def __index__(self) -> int:
        return operator.index(self._number("an index"))

    def __getattr__(self, name: str) -> Any:
        tracer: ConvertTracer = self.tracer  # type: ignore[assignment]
        if name == "shape" and tracer.specialise_sizes:
            sizes = tracer.specialised_sizes(self)
            if sizes is not None:
                return sizes
        return super().__getattr__(name)


def _converted_leaf(module: nn.Module) -> bool:
    """Elastic ops and modules marked `traced_as_layer` are single calls of a convert trace."""
    return isinstance(module, ElasticOp) or getattr(module, "traced_as_layer", False)


class ConvertTracer(LeafTracer):
    """fx tracer for `elasticize`: torch.nn layers, elastic ops and modules marked `traced_as_layer` are
    leaves; failures name the node.

    `example_inputs`: forward's arguments, evaluated node by node as the graph is recorded (see the module
    docstring); `specialise_sizes`: sizes of every axis but the first (batch) become constants.
    """

    def __init__(self, example_inputs: tuple[Any, ...] | None = None, specialise_sizes: bool = False) -> None:
        super().__init__(_converted_leaf, stack_traces=True)
        self.example_inputs = example_inputs
        self.specialise_sizes = specialise_sizes and example_inputs is not None
        self._values: dict[fx.Node, Any] | None = None
        self._placeholders = 0

    # -- lock-step evaluation ------------------------------------------------------------------------
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return ConcreteProxy(node, self) if self._values is not None else super().proxy(node)

    def concrete(self, node: fx.Node) -> Any:
        """The node's value on the example inputs (`_UNKNOWN` when it could not be computed)."""
        return _UNKNOWN if self._values is None else self._values.get(node, _UNKNOWN)

    def _evaluate(self, node: fx.Node) -> None:
        values = self._values
        assert values is not None
        missing = []

        def value_of(n: fx.Node) -> Any:
            value = values.get(n, _UNKNOWN)
            if value is _UNKNOWN:
                missing.append(n)
            return value

        try:
            with _plain_modules():
                result = self._compute(node, value_of, missing)
        except Exception:  # the symbolic trace goes on; only numbers from this node are unavailable
            result = _UNKNOWN
        if result is not _NOTHING:
            values[node] = result

    def _compute(self, node: fx.Node, value_of: Callable[[fx.Node], Any], missing: list) -> Any:
        """The value of one node from its inputs' values (`_NOTHING` for the output node)."""
        if node.op == "placeholder":
            inputs = self.example_inputs or ()
            index, self._placeholders = self._placeholders, self._placeholders + 1
            if index < len(inputs):
                return inputs[index]
            return node.args[0] if node.args else _UNKNOWN  # a default argument
        if node.op == "get_attr":
            return attribute(self.traced_root, str(node.target))  # type: ignore[arg-type]
        if node.op not in ("call_module", "call_function", "call_method"):
            return _NOTHING
        args = fx.node.map_arg(node.args, value_of)
        kwargs = fx.node.map_arg(node.kwargs, value_of)
        if missing:
            return _UNKNOWN
        if node.op == "call_module":
            return self.traced_root.get_submodule(str(node.target))(*args, **kwargs)  # type: ignore[union-attr]
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)

    def specialised_sizes(self, proxy: fx.Proxy, dim: Any = None) -> Any:
        """`proxy.size(dim)` with every axis but the batch axis a constant (None: value unknown)."""
        value = self.concrete(proxy.node)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return None
        if dim is not None:
            if not isinstance(dim, int) or dim % value.dim() == 0:
                return None
            return int(value.shape[dim])
        batch = self.create_proxy("call_method", "size", (proxy, 0), {})
        return (batch, *(int(v) for v in value.shape[1:]))

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **more: Any) -> Any:
        if self.specialise_sizes and kind == "call_method" and target == "size" and args:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if isinstance(args[0], fx.Proxy) and (len(args) <= 2 and set(kwargs) <= {"dim"}):
                sizes = self.specialised_sizes(args[0], dim)
                if sizes is not None:
                    return sizes
        return super().create_proxy(kind, target, args, kwargs, *rest, **more)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        if self._values is not None:
            self._evaluate(node)
        return node

    def _fail(self, node: fx.Node, what: str) -> UnsupportedModelError:
        root = self.traced_root
        owner = type(root).__name__ if root is not None else "the model"
        return UnsupportedModelError(f"{owner}.forward cannot be traced by torch.fx: {node_name(node, root)} {what}")

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self.concrete(obj.node)
        if isinstance(value, (bool, int, float)):  # a comparison of sizes: the example's branch
            obj.node.meta[SPECIALISED] = True
            return bool(value)
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
        self.traced_root = root if isinstance(root, nn.Module) else None
        evaluate = self.example_inputs is not None and self.traced_root is not None
        self._values = {} if evaluate else None
        self._placeholders = 0
        buffers = [(b, b.clone()) for b in self.traced_root.buffers()] if evaluate else []  # type: ignore[union-attr]
        try:
            with _autograd_functions_as_calls(self), torch.no_grad():
                return super().trace(root, concrete_args)
        finally:
            self._values = None  # drop the example's activations
            with torch.no_grad():
                for buffer, saved in buffers:  # training-mode layers updated statistics while evaluating
                    buffer.copy_(saved)


@contextmanager
def _plain_modules() -> Iterator[None]:
    """Undo fx's patches of `nn.Module.__call__` / `__getattr__` while a node runs on real tensors (with them,
    a layer called inside the trace records itself in the graph instead of computing). fx keeps the originals
    as `_orig_module_call` / `_orig_module_getattr`; no public API suspends its patches (torch is pinned)."""
    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__ = fx._symbolic_trace._orig_module_call  # type: ignore[method-assign]
    nn.Module.__getattr__ = fx._symbolic_trace._orig_module_getattr  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.__call__ = call  # type: ignore[method-assign]
        nn.Module.__getattr__ = getattr_  # type: ignore[method-assign]


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


def is_autograd_function(target: Any) -> bool:
    """Whether a call_function target calls some custom `torch.autograd.Function`."""
    return autograd_function_of(target) is not None


__all__ = [
    "OPAQUE",
    "SPECIALISED",
    "ConcreteProxy",
    "ConvertTracer",
    "Opaque",
    "Recorder",
    "TensorValue",
    "abstract",
    "function_call",
    "is_autograd_function",
]
