"""Channel dependency analysis over a traced graph: which channels must shrink together.

Every tensor with a channel axis gets a *layout*: which axis holds the channels (1 for convolutional
maps, the last for transformer tokens (B, N, C), which linear layers and LayerNorm read), the sequence of
channel *atoms* it is made of (one atom per layer output; `torch.cat` on channels concatenates layouts)
and, after a flatten, how many features each channel carries. Operations then constrain the atoms:

- a convolution or linear layer reads its input layout and starts a new atom for its outputs; a
  depthwise or grouped convolution with as many outputs as inputs keeps its input's atom (whole groups
  only), and one with a different output count links the two atoms (same number of groups active);
- element-wise operations, norms, activations, pooling, dropout, reshapes that keep the channel axis,
  a flatten and `expand_as` pass layouts through; permutes and indexing of other axes move the channel
  axis with them (a patch embedding's `flatten(2).transpose(1, 2)`, a class token's `x[:, 0]`); adding
  or multiplying tensors merges their atoms (residual adds, squeeze-excite gates), while an operand of
  size 1 on the channel axis broadcasts;
- multi-head attention (`nn.MultiheadAttention`, or a user's qkv-Linear attention module recognised by
  `tailor.convert.attention`) reads one group, writes a new one (its output projection) and has a group of
  its own for the heads, whose step is the head size (heads shrink whole);
- the network's inputs and outputs are fixed.

Atoms merged by these rules form the channel groups (union-find). Whatever the analysis cannot follow
(an unknown layer or function receiving channels, a view or permute that moves the channel axis, a
channel count baked into a reshape, a custom autograd function) *freezes* the groups involved at full
width and records the node and operation; frozen groups are always correct, only less elastic.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from tailor.convert.attention import AttentionUnit
from tailor.convert.trace import TensorValue, is_autograd_function
from tailor.graph import node_name
from tailor.ops.attention import unsupported_multihead_attention

# -- values ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The channel axis of a tensor: (atom, channels) segments in order, `inner` features per channel,
    and which axis of the tensor it is (`axis`; 1 for (N, C, ...) maps, the last for (B, N, C) tokens)."""

    segments: tuple[tuple[int, int], ...]
    inner: int = 1
    axis: int = 1

    def at(self, axis: int) -> Layout:
        """The same channels on another axis of a tensor."""
        return self if axis == self.axis else Layout(self.segments, self.inner, axis)

    @property
    def channels(self) -> int:
        return sum(c for _, c in self.segments)

    @property
    def features(self) -> int:
        return self.channels * self.inner


@dataclass(frozen=True)
class SizeOf:
    """The value of `x.size()` / `x.shape` for a tensor with layout `layout`."""

    layout: Layout


@dataclass(frozen=True)
class ChannelCount:
    """The value of `x.size(1)` / `x.shape[1]`: the active channel count of `layout` at run time."""

    layout: Layout


@dataclass(frozen=True)
class Reason:
    """Why a group stays at full width; `expected` ones (inputs, outputs) are not worth a warning."""

    text: str
    expected: bool


@dataclass
class ModuleUse:
    """A convertible layer and the layouts it reads and writes (merged over all its calls)."""

    target: str
    kind: str  # "conv" | "linear" | "batchnorm" | "groupnorm"
    module: nn.Module
    in_layout: Layout
    out_atom: int | None = None  # conv / linear outputs
    norm_groups: int | None = None  # group norm: number of groups at full width
    heads_atom: int | None = None  # attention: the heads' features (step: the head size)


@dataclass(frozen=True)
class Link:
    """Grouped conv `layer` with different input and output counts: atoms `a` and `b` keep equal
    numbers of groups of `a_unit` and `b_unit` channels."""

    a: int
    a_unit: int
    b: int
    b_unit: int
    layer: str


# -- operation tables ----------------------------------------------------------------------------------

#: Layers `elasticize` replaces by elastic ops (exact types: a subclass may compute something else).
CONVERTIBLE_LAYERS: frozenset[type[nn.Module]] = frozenset(
    {nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.MultiheadAttention, AttentionUnit}
)
#: Functions of other libraries known to keep the channel axis of their first operand, by qualified name
#: (torchvision's stochastic depth multiplies each sample by 0 or 1/(1-p)).
KNOWN_PASSTHROUGH_FUNCTIONS: frozenset[str] = frozenset({"torchvision.ops.stochastic_depth.stochastic_depth"})

#: Layers that act per element, or per channel over space (input and output share the channel axis).
PASSTHROUGH_LAYERS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
    nn.Softmax,
    nn.LogSoftmax,
)
#: Layers on (N, C, H, W) maps that keep the channel axis (they need 4-D inputs to mean that).
SPATIAL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)
#: Reshaping layers (checked through the shapes they produce).
RESHAPE_LAYERS: tuple[type[nn.Module], ...] = (nn.Flatten,)

_ELEMENTWISE_NAMES = (
    "relu relu_ relu6 elu selu celu gelu silu mish sigmoid tanh hardtanh hardswish hardsigmoid softplus "
    "leaky_relu logsigmoid softsign tanhshrink threshold dropout alpha_dropout feature_alpha_dropout "
    "softmax log_softmax normalize add sub subtract mul multiply div divide true_divide floor_divide "
    "maximum minimum pow where clamp clip clamp_min clamp_max exp log log1p sqrt rsqrt abs neg square erf "
    "sign round floor ceil reciprocal lerp addcmul addcdiv masked_fill zeros_like ones_like empty_like "
    "rand_like randn_like full_like"
)
#: torch / torch.nn.functional functions that act element-wise (operands broadcast).
ELEMENTWISE_FUNCTIONS: frozenset[Any] = frozenset(
    {
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.floordiv,
        operator.pow,
        operator.neg,
        operator.pos,
        operator.abs,
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
    }
    | {getattr(torch, n) for n in _ELEMENTWISE_NAMES.split() if hasattr(torch, n)}
    | {getattr(F, n) for n in _ELEMENTWISE_NAMES.split() if hasattr(F, n)}
)
#: Tensor methods that act element-wise.
ELEMENTWISE_METHODS: frozenset[str] = frozenset(
    _ELEMENTWISE_NAMES.split()
    + "add_ sub_ mul_ div_ pow_ clamp_ clip_ sigmoid_ tanh_ masked_fill_ neg_ abs_ exp_ sqrt_ fill_ zero_".split()
)
#: Tensor methods that change only dtype, device, memory layout or autograd state (first operand).
UNARY_METHODS: frozenset[str] = frozenset(
    "contiguous clone detach float double half bfloat16 to type type_as cpu cuda requires_grad_".split()
)
#: Functions on (N, C, ...) maps that keep the channel axis (first operand; checked by shape).
SPATIAL_FUNCTIONS: frozenset[Any] = frozenset(
    getattr(F, n)
    for n in (
        "max_pool2d avg_pool2d adaptive_avg_pool2d adaptive_max_pool2d lp_pool2d interpolate upsample "
        "upsample_nearest upsample_bilinear pad dropout2d"
    ).split()
    if hasattr(F, n)
)
#: Reductions: over spatial axes they keep the layout; over the channel axis they end it.
REDUCTION_FUNCTIONS: frozenset[Any] = frozenset(
    getattr(torch, n) for n in "mean sum amax amin std var logsumexp max min".split()
)
REDUCTION_METHODS: frozenset[str] = frozenset("mean sum amax amin std var logsumexp max min".split())
RESHAPE_FUNCTIONS: frozenset[Any] = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze})
RESHAPE_METHODS: frozenset[str] = frozenset("view reshape flatten squeeze unsqueeze view_as reshape_as".split())
PERMUTE_METHODS: frozenset[str] = frozenset("permute transpose movedim swapaxes".split())
PERMUTE_FUNCTIONS: frozenset[Any] = frozenset({torch.permute, torch.transpose, torch.movedim, torch.swapaxes})
CAT_FUNCTIONS: frozenset[Any] = frozenset(
    getattr(torch, n) for n in ("cat", "concat", "concatenate") if hasattr(torch, n)
)
SPLIT_FUNCTIONS: frozenset[Any] = frozenset({torch.chunk, torch.split, torch.tensor_split, torch.unbind})
SPLIT_METHODS: frozenset[str] = frozenset("chunk split tensor_split unbind".split())
#: Attributes of a tensor that do not depend on its channel count.
PLAIN_ATTRIBUTES: frozenset[str] = frozenset("ndim dtype device is_cuda requires_grad layout".split())


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _pad_spatial_only(value: Any, ndim: int) -> bool:
    return isinstance(value, (tuple, list)) and len(value) <= 2 * (ndim - 2)


# -- the analysis ---------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """Union-find over channel atoms, filled by `run(graph, values)` for each traced graph of a model."""

    root: nn.Module
    norm: str = "batch"  # what BatchNorm2d becomes: "batch" (SubnetNorm) or "group"
    norm_groups: int = 8
    parent: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    reasons: list[list[Reason]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    layers: list[list[str]] = field(default_factory=list)
    producers: list[list[str]] = field(default_factory=list)
    uses: dict[str, ModuleUse] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # convertible layers left as they are -> why

    # -- union-find --------------------------------------------------------------------------------
    def new_atom(self, channels: int, label: str, reason: Reason | None = None) -> int:
        atom = len(self.parent)
        self.parent.append(atom)
        self.channels.append(channels)
        self.step.append(1)
        self.reasons.append([reason] if reason is not None else [])
        self.labels.append(label)
        self.layers.append([])
        self.producers.append([])
        return atom

    def find(self, atom: int) -> int:
        root = atom
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[atom] != root:
            self.parent[atom], atom = root, self.parent[atom]
        return root

    def union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.channels[ra] != self.channels[rb]:  # cannot happen for shapes torch accepted; stay safe
            reason = Reason(f"{where} ties {self.channels[ra]} channels to {self.channels[rb]}", False)
            self.freeze(ra, reason)
            self.freeze(rb, reason)
            return
        keep, gone = min(ra, rb), max(ra, rb)  # the earliest atom names the group
        self.parent[gone] = keep
        self.step[keep] = _lcm(self.step[keep], self.step[gone])
        self.reasons[keep] += self.reasons[gone]
        for name in self.layers[gone]:
            if name not in self.layers[keep]:
                self.layers[keep].append(name)
        self.producers[keep] += [p for p in self.producers[gone] if p not in self.producers[keep]]

    def freeze(self, atom: int, reason: Reason) -> None:
        self.reasons[self.find(atom)].append(reason)

    def frozen(self, atom: int) -> bool:
        return bool(self.reasons[self.find(atom)])

    def require_step(self, atom: int, step: int) -> None:
        root = self.find(atom)
        self.step[root] = _lcm(self.step[root], step)

    def touch(self, atom: int, layer: str, produces: bool = False) -> None:
        root = self.find(atom)
        if layer not in self.layers[root]:
            self.layers[root].append(layer)
        if produces and layer not in self.producers[root]:
            self.producers[root].append(layer)

    # -- layouts -----------------------------------------------------------------------------------
    def fresh(self, value: Any, label: str, reason: Reason, axis: int = 1) -> Any:
        """A value for a tensor whose channels are fixed: a new frozen atom per channel-bearing tensor, its
        channels on `axis` (1 unless the caller knows better, e.g. the axis of the inputs' channels)."""
        if isinstance(value, TensorValue):
            if value.ndim < 2:
                return None
            axis = axis if axis < value.ndim else 1
            return Layout(((self.new_atom(value.shape[axis], label, reason), value.shape[axis]),), axis=axis)
        if isinstance(value, tuple):
            return tuple(self.fresh(v, label, reason, axis) for v in value)
        return None

    def freeze_layout(self, layout: Layout, reason: Reason) -> None:
        for atom, _ in layout.segments:
            self.freeze(atom, reason)

    def merge(self, a: Layout | None, b: Layout | None, where: str) -> Layout | None:
        """The layout of two tensors that must hold the same channels (freezing both if they cannot)."""
        if a is None or b is None:
            return a if b is None else b
        same = (
            a.inner == b.inner
            and a.axis == b.axis
            and len(a.segments) == len(b.segments)
            and all(ca == cb for (_, ca), (_, cb) in zip(a.segments, b.segments))
        )
        if same:
            for (x, _), (y, _) in zip(a.segments, b.segments):
                self.union(x, y, where)
            return a
        reason = Reason(f"{where} combines tensors whose channels are laid out differently", False)
        self.freeze_layout(a, reason)
        self.freeze_layout(b, reason)
        return a

    def release_sizes(self, values: Any, reason: Reason) -> None:
        """Freeze every layout whose channel count `values` carry into an operation we cannot follow."""
        for value in _leaves(values):
            if isinstance(value, (SizeOf, ChannelCount)):
                self.freeze_layout(value.layout, reason)

    # -- graph walk --------------------------------------------------------------------------------
    def run(self, graph: fx.Graph, recorded: dict[fx.Node, Any]) -> None:
        """Propagate layouts through `graph`; `recorded` holds each node's abstract value on the examples."""
        self._recorded = recorded
        self._values: dict[fx.Node, Any] = {}
        for node in graph.nodes:
            self._values[node] = self._visit(node)

    def _value(self, arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return self._values.get(arg)
        if isinstance(arg, (tuple, list)):
            return tuple(self._value(a) for a in arg)
        return arg

    def _rec(self, arg: Any) -> Any:
        return self._recorded.get(arg) if isinstance(arg, fx.Node) else arg

    def _from_constants(self, node: fx.Node) -> bool:
        """Whether tensor `node` is computed from parameters and constants only: no network input's values
        reach it (its sizes may: `cls_token.expand(x.shape[0], -1, -1)` is a constant)."""
        cache: dict[fx.Node, bool] = self.__dict__.setdefault("_constant_cache", {})
        pending = [node]
        while pending:
            current = pending[-1]
            if current in cache:
                pending.pop()
                continue
            if current.op == "placeholder" or not isinstance(self._recorded.get(current), (TensorValue, tuple)):
                cache[current] = current.op != "placeholder"  # sizes and numbers carry no input values
                pending.pop()
                continue
            inputs = [n for n in current.all_input_nodes if n not in cache]
            if inputs:
                pending.extend(inputs)
                continue
            cache[current] = all(cache[n] for n in current.all_input_nodes)
            pending.pop()
        return cache[node]

    def _layout(self, arg: Any) -> Layout | None:
        value = self._value(arg)
        return value if isinstance(value, Layout) else None

    def _where(self, node: fx.Node) -> str:
        return node_name(node, self.root)

    def _visit(self, node: fx.Node) -> Any:
        out = self._recorded.get(node)
        if node.op == "placeholder":
            return self.fresh(out, f"input {node.name!r}", Reason(f"network input {node.name!r}", True))
        if node.op == "get_attr":
            return None  # a constant: checked by shape where it meets channels
        if node.op == "output":
            self._output(node)
            return None
        if node.op == "call_module":
            return self._module(node, out)
        if node.op == "call_method":
            return self._method(node, out)
        return self._function(node, out)

    def _output(self, node: fx.Node) -> None:
        reason = Reason("network output", True)
        for value in _leaves(self._value(node.args)):
            if isinstance(value, Layout):
                self.freeze_layout(value, reason)
            elif isinstance(value, (SizeOf, ChannelCount)):
                self.freeze_layout(value.layout, reason)

    def opaque(self, node: fx.Node, out: Any, why: str) -> Any:
        """An operation whose channel semantics we cannot follow: freeze what goes in and what comes out."""
        where = self._where(node)
        inputs = [v for v in _leaves(self._value((node.args, node.kwargs)))]
        reads_channels = False
        reason = Reason(f"{where} {why}", False)
        # the output's channels: on axis 1, or on the last axis when the first input's are last too (tokens)
        axis = 1
        last = out.ndim - 1 if isinstance(out, TensorValue) else -1
        for value in inputs:
            if isinstance(value, Layout):
                if not reads_channels and value.axis == last > 1:
                    axis = last
                self.freeze_layout(value, reason)
                reads_channels = True
            elif isinstance(value, (SizeOf, ChannelCount)):
                self.freeze_layout(value.layout, reason)
                reads_channels = True
        produced = Reason(f"channels produced by {where}, which {why}", not reads_channels)
        return self.fresh(out, f"output of {node.name!r}", produced, axis)

    # -- layers ------------------------------------------------------------------------------------
    def _module(self, node: fx.Node, out: Any) -> Any:
        module = self.root.get_submodule(node.target)
        x = node.args[0] if node.args else None
        layout, shape = self._layout(x), self._rec(x)
        kind = type(module)
        give_up = self._keep_layer if kind in CONVERTIBLE_LAYERS else self.opaque
        if module._forward_hooks or module._forward_pre_hooks:
            return give_up(node, out, "has forward hooks, which elasticize cannot carry over")
        if kind is nn.MultiheadAttention:
            return self._multihead_attention(node, module, out)
        if len(node.args) != 1 or node.kwargs or not isinstance(shape, TensorValue):
            return give_up(node, out, "is called in a way elasticize does not handle")
        if kind is AttentionUnit:
            return self._attention_unit(node, module, layout, shape, out)
        if kind is nn.LayerNorm:
            return self._layer_norm(node, module, layout, shape, out)
        if layout is not None and layout.axis != 1 and (kind in (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)
                                                         or isinstance(module, SPATIAL_LAYERS)):  # fmt: skip
            return give_up(node, out, "reads channels on axis 1, but they are on another axis here")
        if kind is nn.Conv2d:
            return self._conv(node, module, layout, shape, out)
        if kind is nn.Linear:
            return self._linear(node, module, layout, shape, out)
        if kind is nn.BatchNorm2d:
            if not module.track_running_stats or shape.ndim != 4:
                return self._keep_layer(node, out, "is a BatchNorm2d without running statistics or on non-4-D input")
            if self.norm == "group":
                return self._norm(node, module, layout, "groupnorm", self._group_count(layout))
            return self._norm(node, module, layout, "batchnorm", None)
        if kind is nn.GroupNorm:
            return self._norm(node, module, layout, "groupnorm", module.num_groups)
        if isinstance(module, nn.PReLU) and module.num_parameters != 1:
            return self.opaque(node, out, "has one parameter per channel")
        if isinstance(module, PASSTHROUGH_LAYERS) or (isinstance(module, SPATIAL_LAYERS) and shape.ndim == 4):
            if getattr(module, "return_indices", False):
                return self.opaque(node, out, "returns indices")
            return self._keep_axis(node, layout, shape, out)
        if isinstance(module, nn.PReLU):
            return self._keep_axis(node, layout, shape, out)
        if isinstance(module, RESHAPE_LAYERS):
            return self._reshape(node, layout, shape, out, ())
        return self.opaque(node, out, f"is a {kind.__name__}, which elasticize cannot make elastic")

    def _keep_layer(self, node: fx.Node, out: Any, why: str) -> Any:
        """A convertible layer that this call prevents from converting: it stays as it is (all calls)."""
        self.kept[str(node.target)] = f"{self._where(node)} {why}"
        return self.opaque(node, out, why)

    def settle(self) -> None:
        """After every graph: layers kept unconverted freeze the channels their other calls recorded."""
        for target, why in self.kept.items():
            use = self.uses.pop(target, None)
            if use is not None:
                reason = Reason(f"{why} (so it stays unconverted)", False)
                self.freeze_layout(use.in_layout, reason)
                for atom in (use.out_atom, use.heads_atom):
                    if atom is not None:
                        self.freeze(atom, reason)

    def _group_count(self, layout: Layout | None) -> int:
        """Groups of a BatchNorm turned group norm: nearest `norm_groups` with whole groups per segment.

        Channels per group must divide every concatenated segment (so that narrowing keeps whole
        groups); among those, the smallest at or above channels / `norm_groups` (at most `norm_groups`
        groups), or the largest one when every candidate gives more groups.
        """
        if layout is None:
            return 1
        common = math.gcd(*(c for _, c in layout.segments))
        candidates = [d for d in range(1, common + 1) if common % d == 0]
        wanted = layout.channels / self.norm_groups
        per_group = next((d for d in candidates if d >= wanted), candidates[-1])
        return layout.channels // per_group

    def _use(self, node: fx.Node, kind: str, module: nn.Module, layout: Layout, **extra: Any) -> ModuleUse:
        """The record of `module`; a layer called again must read the same channels each time."""
        target = str(node.target)
        use = self.uses.get(target)
        if use is None:
            use = self.uses[target] = ModuleUse(target, kind, module, layout, **extra)
        else:
            use.in_layout = self.merge(use.in_layout, layout, f"{self._where(node)} (a layer called twice)")  # type: ignore[assignment]
        for atom, _ in layout.segments:
            self.touch(atom, target)
        return use

    def _conv(self, node: fx.Node, conv: nn.Conv2d, layout: Layout | None, shape: TensorValue, out: Any) -> Any:
        if conv.padding_mode != "zeros" or shape.ndim != 4 or layout is None or not _explicit_padding(conv):
            return self._keep_layer(
                node, out, "is a Conv2d with a non-zero padding mode, odd 'same' padding or non-4-D input"
            )
        if conv.groups > 1 and len(layout.segments) > 1:
            return self._keep_layer(node, out, "is a grouped convolution reading concatenated channels")
        target = str(node.target)
        use = self._use(node, "conv", conv, layout)
        if conv.groups == 1:
            if use.out_atom is None:
                use.out_atom = self.new_atom(conv.out_channels, target)
        else:
            in_atom = use.in_layout.segments[0][0]
            in_unit, out_unit = conv.in_channels // conv.groups, conv.out_channels // conv.groups
            self.require_step(in_atom, in_unit)
            if conv.in_channels == conv.out_channels:  # depthwise, or grouped with as many outputs as inputs
                if use.out_atom is None:
                    use.out_atom = in_atom
                self.union(use.out_atom, in_atom, self._where(node))
            elif use.out_atom is None:
                use.out_atom = self.new_atom(conv.out_channels, target)
                self.links.append(Link(in_atom, in_unit, use.out_atom, out_unit, target))
            self.require_step(use.out_atom, out_unit)
        self.touch(use.out_atom, target, produces=True)
        return Layout(((use.out_atom, conv.out_channels),))

    def _linear(self, node: fx.Node, linear: nn.Linear, layout: Layout | None, shape: TensorValue, out: Any) -> Any:
        last = shape.ndim - 1
        if shape.ndim < 2:
            return self._keep_layer(node, out, "is a Linear layer on a 1-D input")
        target = str(node.target)
        if layout is None or layout.axis != last or (shape.ndim > 2 and layout.inner != 1):
            # the features it reads are not channels the analysis follows: they stay fixed, its outputs can shrink
            if layout is not None:
                self.freeze_layout(layout, Reason(f"{self._where(node)} reads them on another axis than its features", False))
            layout = self.fresh(shape, f"input of {target!r}", Reason(f"features {self._where(node)} reads", True), last)

        use = self._use(node, "linear", linear, layout)
        if use.out_atom is None:
            use.out_atom = self.new_atom(linear.out_features, target)
        self.touch(use.out_atom, target, produces=True)
        return Layout(((use.out_atom, linear.out_features),), axis=last)

    def _layer_norm(self, node: fx.Node, norm: nn.LayerNorm, layout: Layout | None, shape: TensorValue, out: Any) -> Any:
        """LayerNorm over the last axis: a narrower subnet normalises its active features (no statistics)."""
        if (
            layout is None
            or len(norm.normalized_shape) != 1
            or layout.axis != shape.ndim - 1
            or layout.inner != 1
            or len(layout.segments) != 1
        ):
            return self._keep_layer(
                node, out, "is a LayerNorm over something else than the channels of one layer (last axis)"
            )
        self._use(node, "layernorm", norm, layout)
        return layout

    def _attention_unit(
        self, node: fx.Node, unit: AttentionUnit, layout: Layout | None, shape: TensorValue, out: Any
    ) -> Any:
        """A recognised qkv-Linear self-attention: reads one group, writes one, and has its heads' own group."""
        target = str(node.target)
        if layout is None or layout.axis != 2 or layout.inner != 1 or len(layout.segments) != 1 or shape.ndim != 3:
            return self._keep_layer(node, out, "is an attention layer whose input channels elasticize cannot follow")
        use = self._use(node, "attention", unit, layout)
        return self._attention_outputs(use, target, unit.num_heads, unit.head_dim, unit.proj.out_features)

    def _attention_outputs(self, use: ModuleUse, target: str, heads: int, head_dim: int, out_features: int) -> Layout:
        if use.heads_atom is None:
            use.heads_atom = self.new_atom(heads * head_dim, f"{target}.heads")
            use.out_atom = self.new_atom(out_features, target)
        self.require_step(use.heads_atom, head_dim)
        self.touch(use.heads_atom, target, produces=True)
        self.touch(use.out_atom, target, produces=True)  # type: ignore[arg-type]
        return Layout(((use.out_atom, out_features),), axis=2)  # type: ignore[arg-type]

    def _multihead_attention(self, node: fx.Node, mha: nn.MultiheadAttention, out: Any) -> Any:
        """`nn.MultiheadAttention(q, k, v, ...)` without masks: q, k and v read one group (the packed projection)."""
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
                 "is_causal")  # fmt: skip
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        why = unsupported_multihead_attention(mha)
        if why is None and (len(node.args) > len(names) or set(bound) - set(names)):
            why = "is called with arguments elasticize does not know"
        if why is None and any(bound.get(k) not in (None, False) for k in ("key_padding_mask", "attn_mask", "is_causal")):
            why = "is given an attention mask, which elasticize does not follow"
        if why is None and not all(isinstance(bound.get(k, True), bool) for k in ("need_weights", "average_attn_weights")):
            why = "is given need_weights or average_attn_weights computed at run time"
        inputs = [bound.get(k) for k in ("query", "key", "value")]
        layouts = [self._layout(x) for x in inputs]
        shapes = [self._rec(x) for x in inputs]
        if why is None and not all(
            isinstance(shape, TensorValue) and shape.ndim == 3 and isinstance(layout, Layout) and layout.axis == 2
            and layout.inner == 1 and len(layout.segments) == 1
            for layout, shape in zip(layouts, shapes)
        ):  # fmt: skip
            why = "reads inputs whose channels elasticize cannot follow (batched (., ., features) tensors only)"
        if why is not None:
            return self._keep_layer(node, out, why)
        merged = layouts[0]
        for layout in layouts[1:]:
            merged = self.merge(merged, layout, self._where(node))  # one packed projection reads all three
        use = self._use(node, "mha", mha, merged)  # type: ignore[arg-type]
        result = self._attention_outputs(use, str(node.target), mha.num_heads, mha.head_dim, mha.embed_dim)
        weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
        return (result, None if weights is None else self.fresh(weights, f"output of {node.name!r}",
                                                                Reason("attention weights", True)))  # fmt: skip

    def _norm(self, node: fx.Node, module: nn.Module, layout: Layout | None, kind: str, groups: int | None) -> Any:
        out = self._recorded.get(node)
        if layout is None or layout.inner != 1:
            return self._keep_layer(node, out, "normalises a tensor whose channels elasticize cannot follow")
        if groups is not None:
            per_group = layout.channels // groups
            if any(c % per_group for _, c in layout.segments):
                reason = Reason(f"{self._where(node)} normalises groups that straddle concatenated tensors", False)
                self.freeze_layout(layout, reason)
            for atom, _ in layout.segments:
                self.require_step(atom, per_group)
        self._use(node, kind, module, layout, norm_groups=groups)
        return layout

    # -- functions and methods -------------------------------------------------------------------------
    def _function(self, node: fx.Node, out: Any) -> Any:
        target = node.target
        if target is operator.getitem:
            return self._getitem(node, out)
        if target is getattr:
            return self._getattr(node, out)
        if is_autograd_function(target):
            return self.opaque(node, out, "is a custom autograd function, whose channel semantics are unknown")
        if target in CAT_FUNCTIONS:
            return self._cat(node, out)
        if target in ELEMENTWISE_FUNCTIONS:
            return self._elementwise(node, out, node.args, node.kwargs)
        if target in SPATIAL_FUNCTIONS:
            layout = self._layout(node.args[0]) if node.args else None
            if layout is not None and layout.axis != 1:
                return self.opaque(node, out, "pools or pads a map whose channels are not on axis 1")
            if target is F.pad and not _pad_spatial_only(
                node.args[1] if len(node.args) > 1 else node.kwargs.get("pad"), _ndim(self._rec(node.args[0]))
            ):
                return self.opaque(node, out, "pads the channel or batch axis")
            return self._first_operand(node, out)
        if target in REDUCTION_FUNCTIONS:
            return self._reduction(node, out)
        if target in RESHAPE_FUNCTIONS:
            return self._reshape_call(node, out)
        if target in PERMUTE_FUNCTIONS:
            return self._permute(node, out)
        if target in SPLIT_FUNCTIONS:
            return self._split(node, out)
        if f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}" in KNOWN_PASSTHROUGH_FUNCTIONS:
            return self._first_operand(node, out)
        return self.opaque(node, out, "is a function elasticize does not know")

    def _method(self, node: fx.Node, out: Any) -> Any:
        name = node.target
        if name == "size":
            return self._size(node, out)
        if name in ("dim", "ndimension", "is_contiguous", "get_device"):
            return None
        if name in UNARY_METHODS:
            return self._first_operand(node, out, check_others=False)
        if name in ELEMENTWISE_METHODS:
            return self._elementwise(node, out, node.args, node.kwargs)
        if name in REDUCTION_METHODS:
            return self._reduction(node, out)
        if name in RESHAPE_METHODS:
            return self._reshape_call(node, out)
        if name in PERMUTE_METHODS:
            return self._permute(node, out)
        if name in ("expand", "expand_as"):
            return self._expand(node, out)
        if name in SPLIT_METHODS:
            return self._split(node, out)
        return self.opaque(node, out, "is a tensor method elasticize does not know")

    def _elementwise(self, node: fx.Node, out: Any, args: Any, kwargs: Any) -> Any:
        where = self._where(node)
        if not isinstance(out, TensorValue):  # arithmetic on sizes and numbers
            self.release_sizes(self._value((args, kwargs)), Reason(f"{where} computes with a channel count", False))
            return None
        if out.ndim < 2:
            self.opaque(node, out, "reduces channels element-wise into fewer than two axes")
            return None
        merged: Layout | None = None
        fixed_operand = False
        leaves = _node_leaves((args, kwargs))
        # the output's channel axis: that of the first full-rank operand with channels (aligned from the right)
        out_axis = next(
            (
                self._values[a].axis + out.ndim - self._recorded[a].ndim
                for a in leaves
                if isinstance(self._values.get(a), Layout)
                and isinstance(self._recorded.get(a), TensorValue)
                and self._recorded[a].shape[self._values[a].axis] != 1
            ),
            1,
        )
        for arg in leaves:
            value, rec = self._values.get(arg), self._recorded.get(arg)
            if isinstance(value, (SizeOf, ChannelCount)):
                self.release_sizes(value, Reason(f"{where} computes with a channel count", False))
                continue
            if not isinstance(rec, TensorValue):
                continue
            axis = out_axis - (out.ndim - rec.ndim)  # the operand's axis aligned with the output's channel axis
            if axis < 0 or rec.shape[axis] == 1:
                continue  # broadcasts along channels
            if isinstance(value, Layout) and rec.ndim == out.ndim:
                merged = self.merge(merged, value, where)
            else:
                fixed_operand = True
        if merged is None:
            return self.fresh(
                out, f"output of {node.name!r}", Reason(f"channels computed from constants by {where}", True)
            )
        if fixed_operand:
            self.freeze_layout(
                merged, Reason(f"{where} combines the channels with a fixed-size tensor (e.g. a parameter)", False)
            )
        if merged.axis >= out.ndim or merged.features != out.shape[merged.axis]:
            return self.opaque(node, out, "changes the channel count")
        return merged

    def _first_operand(self, node: fx.Node, out: Any, check_others: bool = True) -> Any:
        x = node.args[0] if node.args else None
        layout, rec = self._layout(x), self._rec(x)
        if check_others:
            self.release_sizes(
                self._value((node.args[1:], node.kwargs)), Reason(f"{self._where(node)} uses a channel count", False)
            )
        return self._keep_axis(node, layout, rec, out)

    def _keep_axis(self, node: fx.Node, layout: Layout | None, rec: Any, out: Any) -> Any:
        """The output keeps the input's batch and channel axes: same layout, or opaque if it does not."""
        if layout is None:
            return self.fresh(
                out,
                f"output of {node.name!r}",
                Reason(f"channels computed from constants by {self._where(node)}", True),
            )
        if (
            isinstance(out, TensorValue)
            and isinstance(rec, TensorValue)
            and out.ndim == rec.ndim
            and layout.axis < out.ndim
            and out.shape[0] == rec.shape[0]
            and out.shape[layout.axis] == rec.shape[layout.axis]
        ):
            return layout
        return self.opaque(node, out, "changes the batch or channel axis")

    def _reduction(self, node: fx.Node, out: Any) -> Any:
        x = node.args[0] if node.args else None
        layout, rec = self._layout(x), self._rec(x)
        if not isinstance(rec, TensorValue):
            return self.opaque(node, out, "reduces something elasticize cannot follow")
        dim = node.kwargs.get("dim", node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else None))
        if isinstance(dim, fx.Node):  # torch.max(x, other): element-wise
            return self._elementwise(node, out, node.args, node.kwargs)
        if layout is None:
            return self.fresh(
                out,
                f"output of {node.name!r}",
                Reason(f"channels computed from constants by {self._where(node)}", True),
            )
        if dim is None:
            return None  # a scalar of the whole tensor
        dims = {d % rec.ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,)) if isinstance(d, int)}
        if 0 in dims or len(dims) != len(dim if isinstance(dim, (tuple, list)) else (dim,)):
            return self.opaque(node, out, "reduces over the batch axis")
        if layout.axis in dims:  # over channels: the result no longer has them
            outs = out if isinstance(out, tuple) else (out,)
            if all(isinstance(o, TensorValue) and o.ndim < rec.ndim for o in outs):
                # no channel axis left (a later unsqueeze makes a single, fixed channel)
                return tuple(None for _ in outs) if isinstance(out, tuple) else None
            return self.fresh(
                out, f"output of {node.name!r}", Reason(f"a reduction over channels by {self._where(node)}", True)
            )
        # over other axes only (spatial, tokens): the channel axis stays, moved left by reduced axes before it
        outs = out if isinstance(out, tuple) else (out,)  # (values, indices) for max/min
        kept_ndim = all(isinstance(o, TensorValue) and o.ndim == rec.ndim for o in outs)
        axis = layout.axis if kept_ndim else layout.axis - sum(1 for d in dims if d < layout.axis)
        if not all(
            isinstance(o, TensorValue) and o.shape[0] == rec.shape[0] and axis < o.ndim
            and o.shape[axis] == rec.shape[layout.axis]
            for o in outs
        ):  # fmt: skip
            return self.opaque(node, out, "reduces in a way elasticize cannot follow")
        return tuple(layout.at(axis) for _ in outs) if isinstance(out, tuple) else layout.at(axis)

    def _size(self, node: fx.Node, out: Any) -> Any:
        layout, rec = self._layout(node.args[0]), self._rec(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if layout is None or not isinstance(rec, TensorValue):
            return None
        if dim is None:
            return SizeOf(layout)
        if isinstance(dim, int) and dim % rec.ndim == layout.axis:
            return ChannelCount(layout)
        return None

    def _getattr(self, node: fx.Node, out: Any) -> Any:
        obj, name = node.args[0], node.args[1]
        layout = self._layout(obj)
        if name == "shape" and layout is not None:
            return SizeOf(layout)
        if name == "data" and layout is not None:
            return layout
        if name in PLAIN_ATTRIBUTES or layout is None:
            return (
                self.fresh(out, f"output of {node.name!r}", Reason("constant", True))
                if isinstance(out, TensorValue)
                else None
            )
        return self.opaque(node, out, f"reads the tensor attribute {name!r}")

    def _getitem(self, node: fx.Node, out: Any) -> Any:
        obj, index = node.args[0], node.args[1]
        value, rec = self._value(obj), self._rec(obj)
        where = self._where(node)
        if isinstance(value, SizeOf):
            channel = value.layout.axis
            if isinstance(index, int) and isinstance(rec, tuple) and index % len(rec) == channel:
                return ChannelCount(value.layout)
            if isinstance(index, int):
                return None
            if isinstance(index, slice) and isinstance(rec, tuple) and channel not in range(len(rec))[index]:
                return None
            self.release_sizes(value, Reason(f"{where} passes on a size including the channel count", False))
            return None
        if isinstance(value, Layout) and isinstance(rec, TensorValue):
            axis = _indexed_channel_axis(index, rec.ndim, value.axis)
            if axis is not None and isinstance(out, TensorValue) and axis < out.ndim:
                self.release_sizes(self._value(index), Reason(f"{where} indexes with a channel count", False))
                if out.shape[0] == rec.shape[0] and out.shape[axis] == rec.shape[value.axis]:
                    return value.at(axis)
            return self.opaque(node, out, "indexes the batch or channel axis")
        if isinstance(value, tuple) and isinstance(index, (int, slice)):
            try:
                return value[index]
            except IndexError:
                return self.opaque(node, out, "indexes past a tuple")
        if isinstance(out, TensorValue):
            return self.opaque(node, out, "indexes a value elasticize cannot follow")
        return None

    def _cat(self, node: fx.Node, out: Any) -> Any:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
        if not isinstance(tensors, (tuple, list)) or not isinstance(out, TensorValue) or not isinstance(dim, int):
            return self.opaque(node, out, "concatenates something elasticize cannot follow")
        layouts = [self._layout(t) for t in tensors]
        if any(layout is None for layout in layouts):
            return self.opaque(node, out, "concatenates tensors whose channels elasticize cannot follow")
        axes = {layout.axis for layout in layouts}  # type: ignore[union-attr]
        if len(axes) == 1 and dim % out.ndim == next(iter(axes)):
            if any(layout.inner != 1 for layout in layouts):  # type: ignore[union-attr]
                return self.opaque(node, out, "concatenates flattened features")
            segments = tuple(seg for layout in layouts for seg in layout.segments)  # type: ignore[union-attr]
            return Layout(segments, axis=next(iter(axes)))
        merged: Layout | None = None
        constants = False
        for tensor, layout in zip(tensors, layouts):
            if isinstance(tensor, fx.Node) and self._from_constants(tensor):
                constants = True  # a parameter (a class token, ...): its channels cannot shrink with the others
                continue
            merged = self.merge(merged, layout, self._where(node))
        if merged is None:
            return self.fresh(out, f"output of {node.name!r}", Reason("constant", True))
        if constants:
            self.freeze_layout(
                merged,
                Reason(f"{self._where(node)} concatenates the channels with a fixed-size tensor (e.g. a class token)", False),
            )
        return merged

    def _reshape_call(self, node: fx.Node, out: Any) -> Any:
        x = node.args[0] if node.args else node.kwargs.get("input")
        shape_args: tuple = ()
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in ("view", "reshape"):
            rest = node.args[1:] or (node.kwargs.get("shape", node.kwargs.get("size", ())),)
            shape_args = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else tuple(rest)
            if len(rest) == 1 and isinstance(self._value(rest[0]), SizeOf):  # x.view(y.size())
                shape_args = (rest[0],)
        elif name in ("view_as", "reshape_as"):
            shape_args = (node.args[1],)
        return self._reshape(node, self._layout(x), self._rec(x), out, shape_args)

    def _reshape(self, node: fx.Node, layout: Layout | None, rec: Any, out: Any, shape_args: tuple) -> Any:
        """A reshape that keeps (batch, channels) or flattens (batch, everything else); else opaque.

        `shape_args` are a view/reshape's sizes: the one for the channel axis must follow the channels at
        run time (-1 or `x.size(1)`), else the channels it would hard-code are frozen.
        """
        where = self._where(node)
        if layout is None:
            return self.fresh(
                out, f"output of {node.name!r}", Reason(f"channels made by {where}, not by a layer", True)
            )
        if (
            not isinstance(out, TensorValue)
            or not isinstance(rec, TensorValue)
            or out.ndim < 2
            or out.shape[0] != rec.shape[0]
        ):
            return self.opaque(node, out, "reshapes the batch or channel axis")
        axis = layout.axis  # the channel axis of the output
        if layout.axis == 1:
            keeps = (
                out.shape[1] == rec.shape[1]
                and layout.inner == 1
                and math.prod(out.shape[2:]) == math.prod(rec.shape[2:])
            )
            flattens = out.ndim == 2 and out.shape[1] == math.prod(rec.shape[1:])
        else:  # channels last (tokens): they must stay last, whole, with every axis before them kept together
            axis = out.ndim - 1
            keeps = layout.axis == rec.ndim - 1 and layout.inner == 1 and out.shape[-1] == rec.shape[-1] and axis > 0
            flattens = False
        if keeps:
            result = layout.at(axis)
        elif flattens:
            result = Layout(layout.segments, layout.inner * math.prod(rec.shape[2:]))
        else:
            return self.opaque(node, out, "reshapes the channel axis (e.g. a channel shuffle)")
        if not shape_args:
            return result
        values = [self._value(a) for a in shape_args]
        if len(values) == 1 and isinstance(values[0], (SizeOf, Layout)):  # view(y.size()) / view_as(y)
            other = values[0].layout if isinstance(values[0], SizeOf) else values[0]
            return (
                self.merge(result, other, where)
                if keeps
                else self.opaque(node, out, "reshapes to another tensor's size")
            )
        position_of_channels = axis if len(values) == out.ndim else 1
        channel_arg = values[position_of_channels] if len(values) > position_of_channels else None
        for position, value in enumerate(values):
            if position != position_of_channels:
                self.release_sizes(value, Reason(f"{where} uses a channel count for another axis", False))
        if channel_arg == -1:
            return result
        if isinstance(channel_arg, ChannelCount) and keeps:
            return self.merge(result, channel_arg.layout, where)
        self.release_sizes(channel_arg, Reason(f"{where} computes a size from a channel count", False))
        self.freeze_layout(result, Reason(f"{where} hard-codes the channel count in a view or reshape", False))
        return result

    def _permute(self, node: fx.Node, out: Any) -> Any:
        x = node.args[0]
        layout, rec = self._layout(x), self._rec(x)
        if layout is None or not isinstance(rec, TensorValue):
            return self.fresh(out, f"output of {node.name!r}", Reason("constant", True))
        ndim = rec.ndim
        args = [a for a in node.args[1:]]
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        moved: set[int]
        if name == "permute":
            order = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            order = order or node.kwargs.get("dims", ())
            if not all(isinstance(d, int) for d in order):
                return self.opaque(node, out, "permutes axes elasticize cannot follow")
            moved = {i for i, d in enumerate(order) if d % ndim != i}
        else:
            pair = args + [node.kwargs[k] for k in ("dim0", "dim1", "source", "destination") if k in node.kwargs]
            flat = [d for p in pair for d in (p if isinstance(p, (tuple, list)) else (p,))]
            if not all(isinstance(d, int) for d in flat):
                return self.opaque(node, out, "moves axes elasticize cannot follow")
            moved = {d % ndim for d in flat}
        if layout.axis not in moved:
            axis = layout.axis
        elif name == "permute":
            axis = [d % ndim for d in order].index(layout.axis)
        elif name == "transpose" or name == "swapaxes":
            a, b = (d % ndim for d in flat[:2])
            axis = b if layout.axis == a else a
        else:  # movedim(source, destination)
            sources = [d % ndim for d in (pair[0] if isinstance(pair[0], (tuple, list)) else (pair[0],))]
            targets = [d % ndim for d in (pair[1] if isinstance(pair[1], (tuple, list)) else (pair[1],))]
            if layout.axis not in sources:
                return self.opaque(node, out, "moves axes elasticize cannot follow")
            axis = targets[sources.index(layout.axis)]
        if axis == 0 or not isinstance(out, TensorValue) or out.shape[axis] != rec.shape[layout.axis]:
            return self.opaque(node, out, "moves the channel axis to the front (or where elasticize cannot follow it)")
        return layout.at(axis)

    def _expand(self, node: fx.Node, out: Any) -> Any:
        """`x.expand_as(y)` / `x.expand(sizes)`: keeps x's channels, or broadcasts a single channel to y's."""
        x = node.args[0]
        layout, rec = self._layout(x), self._rec(x)
        where = self._where(node)
        if not isinstance(rec, TensorValue) or not isinstance(out, TensorValue) or rec.ndim != out.ndim:
            return self.opaque(node, out, "expands a tensor to another rank")
        target: Layout | None = None  # the layout the output's channel axis follows
        axis = layout.axis if layout is not None else 1
        if node.target == "expand_as":
            target = self._layout(node.args[1])
            if layout is None and target is not None:
                axis = target.axis
        else:
            sizes = node.args[1:]
            sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else tuple(sizes)
            values = [self._value(v) for v in sizes]
            if len(values) == 1 and isinstance(values[0], SizeOf):
                target = values[0].layout
            else:
                for position, value in enumerate(values):
                    if position != axis:
                        self.release_sizes(value, Reason(f"{where} uses a channel count for another axis", False))
                channel = values[axis] if len(values) > axis else None
                if isinstance(channel, ChannelCount):
                    target = channel.layout
                elif channel == -1:
                    target = layout
                elif rec.shape[axis] != 1 and layout is not None:
                    self.freeze_layout(layout, Reason(f"{where} hard-codes the channel count", False))
                    return layout
        if axis >= rec.ndim or rec.shape[axis] != 1 or out.shape[axis] == 1:  # no broadcast along channels
            if layout is None:
                return self.fresh(
                    out, f"output of {node.name!r}", Reason(f"channels computed from constants by {where}", True)
                )
            return self.merge(layout, target, where)
        if target is None:
            return self.fresh(
                out, f"output of {node.name!r}", Reason(f"{where} expands to a fixed channel count", False)
            )
        return target

    def _split(self, node: fx.Node, out: Any) -> Any:
        x = node.args[0]
        layout, rec = self._layout(x), self._rec(x)
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        default = 0
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 and name != "unbind" else default)
        if name == "unbind":
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if layout is None or not isinstance(rec, TensorValue) or not isinstance(dim, int) or not isinstance(out, tuple):
            return self.opaque(node, out, "splits a tensor elasticize cannot follow")
        if name == "unbind" or dim % rec.ndim in (0, layout.axis):
            return self.opaque(node, out, "splits the batch or channel axis")
        return tuple(layout if isinstance(o, TensorValue) and o.ndim == rec.ndim else None for o in out)


# -- helpers ---------------------------------------------------------------------------------------------


def _leaves(value: Any) -> list[Any]:
    out: list[Any] = []

    def visit(v: Any) -> None:
        if isinstance(v, (tuple, list)):
            for item in v:
                visit(item)
        elif isinstance(v, dict):
            for item in v.values():
                visit(item)
        elif isinstance(v, slice):
            visit((v.start, v.stop, v.step))
        else:
            out.append(v)

    visit(value)
    return out


def _node_leaves(value: Any) -> list[fx.Node]:
    return [v for v in _leaves(value) if isinstance(v, fx.Node)]


def _ndim(value: Any) -> int:
    return value.ndim if isinstance(value, TensorValue) else 0


def _explicit_padding(conv: nn.Conv2d) -> bool:
    """Whether the conv's padding is (or can be made) explicit numbers; rewrites 'valid'/'same' in place."""
    if not isinstance(conv.padding, str):
        return True
    if conv.padding == "valid":
        conv.padding = (0, 0)
        return True
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if conv.padding == "same" and all(t % 2 == 0 for t in totals):
        conv.padding = tuple(t // 2 for t in totals)
        return True
    return False


def _indexed_channel_axis(index: Any, ndim: int, channel: int) -> int | None:
    """Where the channel axis ends up in `tensor[index]`, or None if the index touches it or the batch axis.

    Other axes may be indexed by integers (removing them), sliced, or extended by None.
    """
    entries = index if isinstance(index, tuple) else (index,)
    consuming = sum(1 for e in entries if e is not None and e is not Ellipsis)
    if consuming > ndim:
        return None
    axis = 0  # input axis the next entry addresses
    out_axis = 0  # output axis it becomes
    result: int | None = None
    for entry in entries:
        if entry is Ellipsis:
            skipped = ndim - consuming
            if axis <= channel < axis + skipped:
                result = out_axis + channel - axis
            axis += skipped
            out_axis += skipped
            continue
        if entry is None:
            if axis == 0:
                return None  # a new axis in front of the batch
            out_axis += 1
            continue
        if axis in (0, channel):
            if not (isinstance(entry, slice) and entry == slice(None)):
                return None
            if axis == channel:
                result = out_axis
            axis += 1
            out_axis += 1
            continue
        if isinstance(entry, slice):
            out_axis += 1
        elif not isinstance(entry, int) or isinstance(entry, bool):
            return None  # tensor or list indexing
        axis += 1
    if result is None and axis <= channel:
        result = out_axis + channel - axis  # untouched trailing axes
    return result
