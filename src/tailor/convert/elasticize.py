"""`elasticize(model, example_inputs, ...)`: any traceable CNN -> an `ElasticizedModel`, weights kept.

Steps: deep-copy the model; trace it with `torch.fx` in train and in eval mode (forward code may
branch on `self.training`); run each trace on the example inputs to learn every tensor's shape; find
the channel groups (`analysis`); settle the constraints between groups (whole groups of grouped
convs and group norms, grouped convs whose two sides must keep equal group counts); build the space;
replace each `Conv2d`/`Linear`/`BatchNorm2d`/`GroupNorm` by the elastic op reading its groups,
adopting the user's parameters and buffers; and check that the full-width model computes what the
original computes on the example inputs.

`upgrade_dynamic_layers(model, groups, sr_list)` is Model Slicing's call on top of it.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from tailor.convert.analysis import Analysis, Reason
from tailor.convert.attention import AttentionUnit, recognise_attention
from tailor.convert.model import ChannelGroup, ElasticizedModel, GroupDim
from tailor.convert.trace import ConvertTracer, Recorder
from tailor.errors import InvalidSubnetError, UnsupportedModelError
from tailor.ops import (
    ChannelLayout,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticModel,
    ElasticMultiheadAttention,
    ElasticSelfAttention,
)
from tailor.ops.base import ElasticOp
from tailor.space import SearchSpace, WidthDim

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
MODES = ("per_group", "uniform")
NORMS = ("batch", "group")
#: Name of the single width dimension in uniform mode.
UNIFORM_DIM = "width"
#: Largest channel count of a uniform dimension that resolves every group's count exactly (see `_knob`).
MAX_EXACT_KNOB_CHANNELS = 2**40
#: Tolerances of the full-width self-check (float32 sums in a different order would still pass).
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5
#: Height and width of the example input `upgrade_dynamic_layers` makes when given none.
DEFAULT_EXAMPLE_SIZE = 32


class FrozenChannelsWarning(UserWarning):
    """`elasticize` kept some channel groups at full width because it could not follow them."""


def elasticize(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any],
    widths: Sequence[float] = DEFAULT_WIDTHS,
    norm: str = "batch",
    groups: int = 8,
    mode: str = "per_group",
    *,
    strict: bool = False,
    check: bool = True,
) -> ElasticizedModel:
    """Make `model` elastic in width, keeping its weights; returns an `ElasticizedModel`.

    - `example_inputs`: a tensor or a tuple of `forward`'s arguments (use a batch of 2 or more, so that
      batch and channel axes are told apart by shape); they are run once, on a copy of the model.
    - `widths`: the width multipliers every dimension offers (1.0 should be one of them).
    - `norm`: "batch" turns each BatchNorm2d into a SubnetNorm layer (shared affine, per-subnet
      statistics after `tailor.calibrate`); "group" into Model Slicing's sliced GroupNorm with `groups`
      groups (or the largest divisor of the channel count below it), whose channel counts are snapped to
      whole groups. GroupNorm differs from BatchNorm, so only "batch" keeps the original outputs.
    - `mode`: "per_group" gives one width dimension per independent channel group (a per-layer search
      space); "uniform" one dimension, `width`, for every group (Model Slicing's global slice rate).
    - `strict`: raise `UnsupportedModelError` where the default freezes channels it cannot follow.
    - `check`: at full width, compare the result with the original on `example_inputs` (norm="batch").

    The model's input channels and its outputs never shrink. Channels reaching something the analysis
    cannot follow (unknown layers or functions, channel shuffles, custom autograd functions, sizes
    hard-coded in reshapes) stay at full width: `model.channel_groups` records why and a
    `FrozenChannelsWarning` names the node and operation. Untraceable forward code raises
    `UnsupportedModelError` naming the node where tracing stopped. The given model is not modified.
    """
    widths = _check_arguments(model, widths, norm, groups, mode)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs:
        raise UnsupportedModelError("elasticize: example_inputs is empty; give the tensors forward takes")
    try:
        net = copy.deepcopy(model)
    except Exception as exc:
        raise UnsupportedModelError(f"elasticize: the model cannot be deep-copied: {exc}") from exc
    training = net.training
    traces = [(mode, graph, _record(net, graph, inputs)) for mode, graph in _traces(net, inputs)]
    if _recognise(net, traces, inputs):  # attention modules became AttentionUnits: trace again
        traces = [(mode, graph, _record(net, graph, inputs)) for mode, graph in _traces(net, inputs)]
    analysis = Analysis(net, norm=norm, norm_groups=groups)
    for _, graph, recorded in traces:
        analysis.run(graph, recorded)
    analysis.settle()
    reference = _reference(net, inputs) if check and norm == "batch" else None
    _settle_constraints(analysis)

    channel_groups, roots, group_dims, space = _build_space(analysis, widths, mode)
    unsupported = [
        g
        for g, r in zip(channel_groups, roots)
        if g.frozen is not None and g.channels > 1 and _unsupported_only(analysis, r)  # 1 channel: nothing to shrink
    ]
    if unsupported:
        text = _frozen_lines(unsupported)
        if strict:
            raise UnsupportedModelError(
                f"elasticize: cannot follow the channels of {len(unsupported)} group(s):\n{text}"
            )
        warnings.warn(
            f"elasticize: {len(unsupported)} channel group(s) stay at full width because their channels reach "
            f"operations it cannot follow:\n{text}",
            FrozenChannelsWarning,
            stacklevel=2,
        )
    if not group_dims:
        reasons = "\n".join(f"  - {g.name!r}: {g.frozen}" for g in channel_groups)
        raise UnsupportedModelError(f"elasticize: no channels of {type(model).__name__} can shrink:\n{reasons}")

    dim_of = {atom: _group_name(analysis, atom) for atom in range(len(analysis.parent))}
    dim_of = {atom: (name if name in group_dims else None) for atom, name in dim_of.items()}
    _convert_layers(net, analysis, dim_of)
    for module in list(net.modules()):  # attention the analysis left at full width: still plain elastic ops
        if isinstance(module, AttentionUnit):
            _replace_module(net, module, _elastic_attention("attention", module, None, None, None))
    net.train(training)

    elastic = ElasticizedModel(
        net,
        space,
        channel_groups,
        group_dims,
        mode=mode,
        norm=norm,
        input_size=tuple(inputs[0].shape[1:]) if isinstance(inputs[0], torch.Tensor) else (),
        example_inputs=inputs,
    )
    _check_plans(elastic)
    if reference is not None:
        _check_full_width(elastic, inputs, reference, type(model).__name__)
    elastic.train(training)
    return elastic


def upgrade_dynamic_layers(
    model: nn.Module,
    groups: int,
    sr_list: Sequence[float],
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
) -> ElasticizedModel:
    """Model Slicing's one call: `model` made elastic with one global slice rate from `sr_list`.

    `groups` is the GroupNorm group count (Model Slicing's group-norm slicing); `groups=0` keeps batch
    normalisation (SubnetNorm). Unlike Model Slicing's version, the model's weights are kept and its
    first and last layers are found from the traced graph, not guessed from registration order.
    Without `example_inputs`, a (2, C, 32, 32) normal tensor is used, C being the in_channels of the
    first Conv2d registered in the model (a (2, F) tensor for a model whose first layer is Linear).
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 0:
        raise UnsupportedModelError(f"upgrade_dynamic_layers: groups must be an int >= 0, got {groups!r}")
    if example_inputs is None:
        example_inputs = _default_example(model)
    norm = "group" if groups > 0 else "batch"
    return elasticize(model, example_inputs, widths=tuple(sr_list), norm=norm, groups=max(groups, 1), mode="uniform")


# -- arguments and tracing -----------------------------------------------------------------------------


def _check_arguments(model: nn.Module, widths: Sequence[float], norm: str, groups: int, mode: str) -> tuple[float, ...]:
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"elasticize: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, ElasticModel) or any(isinstance(m, ElasticOp) for m in model.modules()):
        raise UnsupportedModelError(f"elasticize: {type(model).__name__} already contains elastic layers")
    if mode not in MODES:
        raise UnsupportedModelError(f"elasticize: mode must be one of {MODES}, got {mode!r}")
    if norm not in NORMS:
        raise UnsupportedModelError(f"elasticize: norm must be one of {NORMS}, got {norm!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise UnsupportedModelError(f"elasticize: groups must be a positive int, got {groups!r}")
    try:
        values = tuple(widths)
    except TypeError:
        raise InvalidSubnetError(f"elasticize: widths must be a sequence of multipliers, got {widths!r}") from None
    if not values:
        raise InvalidSubnetError("elasticize: widths is empty")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise InvalidSubnetError(f"elasticize: width {value!r} is not in (0, 1]")
    return tuple(sorted({float(v) for v in values}))


def _traces(net: nn.Module, inputs: tuple[Any, ...]) -> list[tuple[bool, fx.Graph]]:
    """(training mode, forward graph) in train and in eval mode (one graph when they are the same); sizes
    turned into Python numbers take their values on `inputs`."""
    graphs: list[tuple[bool, fx.Graph]] = []
    codes: set[str] = set()
    training = net.training
    try:
        for mode in (training, not training):
            net.train(mode)
            graph = ConvertTracer(example_inputs=inputs).trace(net)
            code = graph.python_code("self").src
            if code not in codes:
                codes.add(code)
                graphs.append((mode, graph))
    finally:
        net.train(training)
    return graphs


def _recognise(net: nn.Module, traces: list[tuple[bool, fx.Graph, dict[fx.Node, Any]]], inputs: tuple[Any, ...]) -> bool:
    """Swap the user's self-attention modules for `AttentionUnit`s (see `tailor.convert.attention`)."""
    eval_trace = next((t for t in traces if not t[0]), traces[0])
    train_graph = next((graph for mode, graph, _ in traces if mode), None)
    return bool(recognise_attention(net, eval_trace[1], eval_trace[2], inputs, train_graph))


def _record(net: nn.Module, graph: fx.Graph, inputs: tuple[Any, ...]) -> dict[fx.Node, Any]:
    """Run `graph` on the inputs (eval mode, no grad, buffers restored) and return each node's abstract value."""
    module = fx.GraphModule(net, graph)
    buffers = [(b, b.clone()) for b in net.buffers()]  # functional calls in the train graph may update them
    training = net.training
    recorder = Recorder(module)
    try:
        net.eval()
        with torch.no_grad():
            recorder.run(*inputs)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        net.train(training)
    return recorder.values


def _reference(net: nn.Module, inputs: tuple[Any, ...]) -> Any:
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            return _detach(net(*inputs))
    finally:
        net.train(training)


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value) if not hasattr(value, "_fields") else value
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _default_example(model: nn.Module) -> torch.Tensor:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            ref = module.weight
            return torch.randn(
                2, module.in_channels, DEFAULT_EXAMPLE_SIZE, DEFAULT_EXAMPLE_SIZE, device=ref.device, dtype=ref.dtype
            )
        if isinstance(module, nn.Linear):
            return torch.randn(2, module.in_features, device=module.weight.device, dtype=module.weight.dtype)
    raise UnsupportedModelError(
        f"upgrade_dynamic_layers: {type(model).__name__} has no Conv2d or Linear to infer an input from; give example_inputs"
    )


# -- constraints and the space -------------------------------------------------------------------------


def _settle_constraints(analysis: Analysis) -> None:
    """Apply what no single node can: groups that cannot shrink, and grouped convs linking two groups.

    A grouped conv from `a` to `b` channels (g groups) runs as many groups on both sides, so both of its
    groups keep counts that are the same number of `unit`s (a_unit = a/g, b_unit = b/g): their steps are
    raised to the same multiple of the units, and if either side is frozen, so is the other.
    """
    changed = True
    while changed:
        changed = False
        for atom in range(len(analysis.parent)):
            root = analysis.find(atom)
            if root != atom or analysis.frozen(root):
                continue
            channels, step = analysis.channels[root], analysis.step[root]
            if channels % step:
                analysis.freeze(root, Reason(f"its layers need multiples of {step} out of {channels} channels", False))
                changed = True
            elif step == channels:
                analysis.freeze(
                    root, Reason(f"it cannot shrink (every width keeps whole steps of {step} channels)", True)
                )
                changed = True
        for link in analysis.links:
            a, b = analysis.find(link.a), analysis.find(link.b)
            if a == b:
                continue
            if analysis.frozen(a) != analysis.frozen(b):
                frozen, other = (a, b) if analysis.frozen(a) else (b, a)
                expected = all(r.expected for r in analysis.reasons[frozen])
                why = analysis.reasons[frozen][0].text
                analysis.freeze(
                    other, Reason(f"grouped conv {link.layer!r} ties it to frozen channels ({why})", expected)
                )
                changed = True
                continue
            if analysis.frozen(a):
                continue
            units = _lcm(analysis.step[a] // link.a_unit, analysis.step[b] // link.b_unit)
            if analysis.step[a] != link.a_unit * units or analysis.step[b] != link.b_unit * units:
                analysis.step[a], analysis.step[b] = link.a_unit * units, link.b_unit * units
                changed = True


def _frozen_lines(groups: list[ChannelGroup]) -> str:
    """One line per reason, naming its groups: groups frozen by the same operation at the same source line
    (a function called in every block) are listed once, with their count."""
    by_site: dict[str, list[ChannelGroup]] = {}
    for group in groups:
        by_site.setdefault(re.sub(r"node '[^']*' ", "", group.frozen or ""), []).append(group)
    lines = []
    for members in by_site.values():
        first = members[0]
        if len(members) == 1:
            lines.append(f"  - {first.name!r} ({first.channels} channels): {first.frozen}")
            continue
        names = ", ".join(repr(g.name) for g in members[:3]) + (", ..." if len(members) > 3 else "")
        lines.append(f"  - {len(members)} groups ({names}) at the same source line, the first: {first.frozen}")
    return "\n".join(lines)


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _group_name(analysis: Analysis, atom: int) -> str:
    return analysis.labels[analysis.find(atom)]


def _unsupported_only(analysis: Analysis, root: int) -> bool:
    """Whether a group is frozen only for reasons worth a warning (not as an input or output)."""
    return bool(analysis.reasons[root]) and not any(r.expected for r in analysis.reasons[root])


def _build_space(
    analysis: Analysis, widths: tuple[float, ...], mode: str
) -> tuple[list[ChannelGroup], list[int], dict[str, GroupDim], SearchSpace]:
    roots = [a for a in range(len(analysis.parent)) if analysis.find(a) == a and analysis.layers[a]]
    elastic = [r for r in roots if not analysis.frozen(r)]
    # knobs: sets of groups one width dimension drives
    knob_of: dict[int, str] = {}
    if mode == "uniform":
        knob_of = dict.fromkeys(elastic, UNIFORM_DIM)
    else:
        linked = {r: r for r in elastic}

        def top(r: int) -> int:
            while linked[r] != r:
                r = linked[r]
            return r

        for link in analysis.links:
            a, b = analysis.find(link.a), analysis.find(link.b)
            if a in linked and b in linked:
                ta, tb = top(a), top(b)
                linked[max(ta, tb)] = min(ta, tb)
        knob_of = {r: analysis.labels[top(r)] for r in elastic}
    members: dict[str, list[int]] = {}
    for r in elastic:
        members.setdefault(knob_of[r], []).append(r)
    dims: list[WidthDim] = []
    group_dims: dict[str, GroupDim] = {}
    for knob, rs in members.items():
        dim, maps = _knob(analysis, knob, rs, widths)
        dims.append(dim)
        group_dims.update(maps)
    channel_groups = [
        ChannelGroup(
            name=analysis.labels[r],
            channels=analysis.channels[r],
            step=analysis.step[r],
            dimension=knob_of.get(r),
            frozen=None if r in knob_of else analysis.reasons[r][0].text,
            layers=tuple(analysis.layers[r]),
        )
        for r in roots
    ]
    return channel_groups, roots, group_dims, SearchSpace(dims)


def _knob(
    analysis: Analysis, knob: str, roots: list[int], widths: tuple[float, ...]
) -> tuple[WidthDim, dict[str, GroupDim]]:
    """The width dimension driving `roots`, and each group's place under it.

    One group: the dimension is the group's own (its channels and step). Several (uniform mode, or
    groups linked by a grouped conv): every group runs `step * ceil(w * channels / step)` channels at
    the dimension's multiplier w, and the dimension counts in units of 1/L, L the least common multiple
    of the groups' channels/step, so that two multipliers name one subnet exactly when every group
    runs the same channels. (Past `MAX_EXACT_KNOB_CHANNELS`, L is capped: multipliers closer than 1/L
    then share a name and run the channels of the smaller one.)
    """
    if len(roots) == 1:
        r = roots[0]
        group = GroupDim(knob, analysis.channels[r], analysis.step[r])
        return WidthDim(knob, group.channels, choices=widths, step=group.step), {analysis.labels[r]: group}
    lcm = min(math.lcm(*(analysis.channels[r] // analysis.step[r] for r in roots)), MAX_EXACT_KNOB_CHANNELS)
    maps = {analysis.labels[r]: GroupDim(knob, analysis.channels[r], analysis.step[r]) for r in roots}
    return WidthDim(knob, lcm, choices=widths), maps


# -- conversion ----------------------------------------------------------------------------------------


def _convert_layers(net: nn.Module, analysis: Analysis, dim_of: dict[int, str | None]) -> None:
    """Replace every layer the analysis recorded by its elastic op, adopting parameters and buffers."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}  # every registration, shared modules included
    for parent in net.modules():
        for child_name, child in parent._modules.items():
            if child is not None:
                owners.setdefault(id(child), []).append((parent, child_name))
    for use in analysis.uses.values():
        old = use.module
        segments = tuple((dim_of[analysis.find(atom)], channels) for atom, channels in use.in_layout.segments)
        layout = ChannelLayout(segments, use.in_layout.inner)
        out_dim = dim_of[analysis.find(use.out_atom)] if use.out_atom is not None else None
        if use.kind in ("attention", "mha"):
            heads_dim = dim_of[analysis.find(use.heads_atom)] if use.heads_atom is not None else None
            new = _elastic_attention(use.kind, old, layout.prefix_dim, heads_dim, out_dim)
        else:
            new = _elastic_layer(use.kind, old, layout, out_dim, use.norm_groups)
        new.train(old.training)
        for parent, child_name in owners.get(id(old), []):
            setattr(parent, child_name, new)


def _replace_module(net: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` wherever `old` is registered in `net` (shared modules included)."""
    new.train(old.training)
    for parent in list(net.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is old:
                parent._modules[child_name] = new


def _elastic_attention(
    kind: str, old: nn.Module, in_dim: str | None, heads_dim: str | None, out_dim: str | None
) -> nn.Module:
    """An `AttentionUnit` -> `ElasticSelfAttention`, an `nn.MultiheadAttention` -> `ElasticMultiheadAttention`,
    each holding the very parameters of the layers it replaces."""
    if kind == "mha":
        return ElasticMultiheadAttention.from_module(old, heads_dim=heads_dim, in_dim=in_dim, out_dim=out_dim)  # type: ignore[arg-type]
    unit: AttentionUnit = old  # type: ignore[assignment]
    qkv, proj = unit.qkv, unit.proj
    new = ElasticSelfAttention(
        qkv.in_features,
        unit.num_heads,
        heads_dim=heads_dim,
        embed_dim=in_dim,
        head_dim=unit.head_dim,
        qkv_bias=qkv.bias is not None,
        attn_drop=unit.attn_drop,
        proj_drop=unit.proj_drop,
    ).to(qkv.weight.device, qkv.weight.dtype)
    if proj.bias is None:
        new.proj.register_parameter("bias", None)
    new.proj.out_dim = out_dim  # the output may be another group than the input (no residual around it)
    _adopt(new.qkv, qkv, ("weight", "bias"))
    _adopt(new.proj, proj, ("weight", "bias"))
    return new


def _elastic_layer(
    kind: str, old: nn.Module, layout: ChannelLayout, out_dim: str | None, norm_groups: int | None
) -> nn.Module:
    """The elastic op replacing `old` (a conv, linear or norm layer), reading `layout`, holding its parameters."""
    build, adopted = _LAYER_BUILDERS[kind]
    return _adopt(build(old, layout, out_dim, norm_groups), old, adopted)


def _conv(conv: Any, layout: ChannelLayout, out_dim: str | None, _: int | None) -> nn.Module:
    sizes = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    factory = _factory(conv.weight)
    return ElasticConv2d(*sizes, conv.groups, conv.bias is not None, in_layout=layout, out_dim=out_dim, **factory)


def _linear(linear: Any, layout: ChannelLayout, out_dim: str | None, _: int | None) -> nn.Module:
    sizes, factory = (linear.in_features, linear.out_features), _factory(linear.weight)
    return ElasticLinear(*sizes, linear.bias is not None, in_layout=layout, out_dim=out_dim, **factory)


def _batch_norm(bn: Any, layout: ChannelLayout, _: str | None, __: int | None) -> nn.Module:
    factory = _factory(bn.running_mean)
    return ElasticBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, layout=layout, **factory)


def _layer_norm(ln: Any, layout: ChannelLayout, _: str | None, __: int | None) -> nn.Module:
    args = (ln.normalized_shape[0], ln.eps, ln.elementwise_affine, ln.bias is not None)
    return ElasticLayerNorm(*args, dim=layout.prefix_dim, **_factory(ln.weight))


def _group_norm(old: Any, layout: ChannelLayout, _: str | None, groups: int | None) -> nn.Module:
    """The user's GroupNorm, or a BatchNorm2d turned into Model Slicing's group norm."""
    ref = old.weight if old.affine and old.weight is not None else next(iter(old.buffers()), None)
    return ElasticGroupNorm(groups or 1, layout.channels, old.eps, old.affine, layout=layout, **_factory(ref))


#: analysis kind -> (builder of the elastic op, the parameters and buffers it adopts from the user's layer)
_LAYER_BUILDERS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "conv": (_conv, ("weight", "bias")),
    "linear": (_linear, ("weight", "bias")),
    "batchnorm": (_batch_norm, ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    "layernorm": (_layer_norm, ("weight", "bias")),
    "groupnorm": (_group_norm, ("weight", "bias")),
}


def _factory(reference: torch.Tensor | None) -> dict[str, Any]:
    """`device` and `dtype` of a new layer: those of the tensor it adopts (None: torch's defaults)."""
    if reference is None:
        return {"device": None, "dtype": None}
    return {"device": reference.device, "dtype": reference.dtype}


def _adopt(new: nn.Module, old: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """Give `new` the very parameters and buffers of `old` (no copies: tied weights stay tied)."""
    for name in names:
        value = getattr(old, name, None)
        if name in new._parameters:
            if value is not None and not isinstance(value, nn.Parameter):
                raise UnsupportedModelError(f"elasticize: {type(old).__name__}.{name} is not a parameter")
            new._parameters[name] = value
        elif name in new._buffers:
            new._buffers[name] = value
    if isinstance(new, ElasticOp):
        new.clear_cache()
    return new


# -- checks ----------------------------------------------------------------------------------------------


def _check_plans(model: ElasticizedModel) -> None:
    """Every op accepts every width the space offers (fails here, not at the user's first activate)."""
    choices = sorted({w for dim in model.space.widths for w in (dim.choices or ())})
    for width in choices:
        try:
            sub = model.space.uniform(width)
            model._plans.plan(sub)
        except InvalidSubnetError as exc:
            raise UnsupportedModelError(f"elasticize: width {width} cannot run: {exc}") from exc


def _check_full_width(model: ElasticizedModel, inputs: tuple[Any, ...], reference: Any, name: str) -> None:
    """The converted model at full width must compute what the original computed (eval mode)."""
    training = model.training
    try:
        model.eval()
        with torch.no_grad(), model.activated(model.space.largest()):
            result = model(*inputs)
    finally:
        model.train(training)
    got, want = _tensor_leaves(result), _tensor_leaves(reference)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        raise UnsupportedModelError(f"elasticize: the converted {name} returns different outputs than the original")
    for g, w in zip(got, want):
        if g.is_floating_point() and not torch.allclose(
            g, w, rtol=CHECK_RTOL, atol=CHECK_ATOL * max(1.0, float(w.abs().max()))
        ):
            diff = float((g - w).abs().max())
            raise UnsupportedModelError(
                f"elasticize: at full width the converted {name} differs from the original by {diff:.3g} "
                "(a layer it could not follow?); pass check=False to skip this check"
            )


def _tensor_leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensor_leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensor_leaves(v)]
    return []


__all__ = ["DEFAULT_WIDTHS", "FrozenChannelsWarning", "elasticize", "upgrade_dynamic_layers"]
