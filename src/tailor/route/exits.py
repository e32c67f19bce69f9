"""Early exits: intermediate classifiers after named stages of a supernet, composable with its widths.

`add_early_exits(model, after_stages=["stage1", "stage2"])` traces the model once with torch.fx,
keeping elastic ops and `ElasticStage`s whole, and cuts the graph after each named stage into
*segments*: segment k maps the tensor leaving exit k-1 (the input for k = 0) to the tensor leaving
stage k; the last segment ends in the model's own classifier. Nothing is looked up by position: a
stage is named by its depth dimension (`stage1`) or its module path (`stages.0`), and a cut is
refused (`UnsupportedModelError`) where more than one tensor crosses it.

Each exit gets an `ExitHead`: a 3x3 conv whose *input* width follows the stage's width dimension
(an `ElasticConv2d`, so the same head serves every width of the supernet), ReLU, average and max
pooling, and a linear classifier. The returned `EarlyExitModel` is itself an `ElasticModel` over the
same search space and the same weights: `activate(sub)` sets widths and depths of the backbone and
the heads at once, `forward` returns the final logits, `forward_exits` the logits of every exit, and
`exit_view(k)` is an extractable `ElasticModel` running only up to exit k (or from exit j to k), which
is what `tailor.cost.latency` and `tailor.cost.macs` measure.

`train_exits` trains the heads on a frozen, calibrated backbone, or heads and backbone jointly
(sum of the exits' cross-entropies, `ExitLoss`, then SubnetNorm recalibration), over a list of subnets:
an exit x width grid, with `tailor.train.Trainer`'s loop. `save_exits` / `load_exits` store the heads in safetensors plus JSON.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import fx, nn

from tailor.errors import CheckpointError, SubnetNormFallbackWarning, TailorError, UnsupportedModelError
from tailor.jsonio import default_file_mode
from tailor.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, ElasticModel, ElasticStage
from tailor.ops.base import ElasticOp
from tailor.space import Subnet
from tailor.train import EpochRecord, TrainConfig, Trainer
from tailor.validation import validate

FINAL = "final"
EXITS_SCHEMA = "tailor.exits/1"


class _StageTracer(fx.Tracer):
    """Keeps elastic ops and whole `ElasticStage`s as single calls (the graph then does not depend on the subnet)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (ElasticOp, ElasticStage)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _output_dim(stage: ElasticStage) -> str | None:
    """The width dimension of the stage's output: that of the last elastic op writing channels, in definition order."""
    found: str | None = None
    for module in stage.modules():
        if isinstance(module, (ElasticConv2d, ElasticLinear)) and module.out_dim is not None:
            found = module.out_dim
        elif isinstance(module, ElasticBatchNorm2d) and module.dim is not None:
            found = module.dim
    return found


def _resolve_stages(model: ElasticModel, names: Sequence[str]) -> list[tuple[str, str, ElasticStage]]:
    """(exit name = depth dimension, module path, stage) for every requested stage; unknown names are errors."""
    by_depth: dict[str, tuple[str, ElasticStage]] = {}
    by_path: dict[str, ElasticStage] = {}
    for path, module in model.named_modules():
        if isinstance(module, ElasticStage):
            by_depth[module.depth_dim] = (path, module)
            by_path[path] = module
    if not by_path:
        raise UnsupportedModelError(f"{type(model).__name__} has no ElasticStage to put an exit after")
    out = []
    for name in names:
        if not isinstance(name, str):
            raise UnsupportedModelError(f"after_stages: expected stage names, got {name!r}")
        if name in by_depth:
            path, stage = by_depth[name]
        elif name in by_path:
            path, stage = name, by_path[name]
        else:
            known = ", ".join(f"{s.depth_dim} ({p})" for p, s in by_path.items())
            raise UnsupportedModelError(f"after_stages: no stage {name!r} in {type(model).__name__}; stages: {known}")
        out.append((stage.depth_dim, path, stage))
    exit_names = [n for n, _, _ in out]
    if len(set(exit_names)) != len(exit_names):
        raise UnsupportedModelError(f"after_stages: a stage is named twice in {list(names)}")
    if FINAL in exit_names:
        raise UnsupportedModelError(f"after_stages: {FINAL!r} is reserved for the model's own output")
    return out


def _split_graph(model: ElasticModel, graph: fx.Graph, cut_paths: Sequence[str]) -> list[fx.GraphModule]:
    """GraphModules for the pieces of `graph` between the outputs of the stages at `cut_paths` (in that order)."""
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    cuts = []
    for path in cut_paths:
        calls = [n for n in nodes if n.op == "call_module" and n.target == path]
        if len(calls) != 1:
            raise UnsupportedModelError(f"stage {path!r} is called {len(calls)} times in the traced forward; need once")
        cuts.append(calls[0])
    order = sorted(cuts, key=position.__getitem__)
    if order != cuts:
        raise UnsupportedModelError(
            f"after_stages must follow the forward order; the model runs them as {[c.target for c in order]}"
        )
    bounds = [-1] + [position[c] for c in cuts] + [len(nodes) - 1]
    segments = []
    for k in range(len(bounds) - 1):
        start, stop = bounds[k], bounds[k + 1]
        entry = nodes[start] if start >= 0 else None
        piece = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if entry is not None:
            env[entry] = piece.placeholder("h")

        def lookup(node: fx.Node, env: dict[fx.Node, fx.Node] = env, piece: fx.Graph = piece) -> fx.Node:
            if node in env:
                return env[node]
            if node.op == "get_attr":  # constants may be read on either side of a cut
                env[node] = piece.node_copy(node, lookup)
                return env[node]
            where = cut_paths[len(segments) - 1] if segments else "the input"
            raise UnsupportedModelError(
                f"cannot cut after {where!r}: node {node.name!r} ({node.op} {node.target}) computed before the cut "
                "is used after it (more than one tensor crosses the cut)"
            )

        for node in nodes[start + 1 : stop + 1]:
            if node.op == "placeholder":
                if entry is not None:
                    raise UnsupportedModelError(f"the input {node.name!r} is used after a cut")
                env[node] = piece.placeholder(node.name)
                continue
            if node.op == "output":
                piece.output(fx.map_arg(node.args[0], lookup))
                continue
            env[node] = piece.node_copy(node, lookup)
        if stop != len(nodes) - 1:
            piece.output(env[nodes[stop]])
        segments.append(fx.GraphModule(model, piece, class_name=f"ExitSegment{k}"))
    return segments


class ExitHead(nn.Module):
    """Intermediate classifier: 3x3 conv (elastic input width) + ReLU, avg and max pooling, linear."""

    def __init__(
        self, in_channels: int, in_dim: str | None, num_classes: int, hidden: int = 64, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = ElasticConv2d(in_channels, hidden, 3, stride, 1, bias=True, in_dim=in_dim)
        self.fc = nn.Linear(2 * hidden, num_classes)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, 2 * hidden] (what a learned router reads)."""
        h = F.relu(self.conv(x))
        return torch.cat([F.adaptive_avg_pool2d(h, 1), F.adaptive_max_pool2d(h, 1)], dim=1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class EarlyExitModel(ElasticModel):
    """A supernet with classifiers after some stages; an `ElasticModel` over the backbone's space and weights.

    Built by `add_early_exits`. `exits` lists the exit names in order, ending with `"final"`.
    """

    def __init__(self, backbone: ElasticModel, after_stages: Sequence[str], hidden: int = 64) -> None:
        if not isinstance(backbone, ElasticModel):
            raise UnsupportedModelError(f"add_early_exits needs a tailor ElasticModel, got {type(backbone).__name__}")
        if isinstance(backbone, EarlyExitModel):
            raise UnsupportedModelError("this model already has early exits")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise UnsupportedModelError(f"add_early_exits: hidden must be a positive integer, got {hidden!r}")
        if not after_stages:
            raise UnsupportedModelError("add_early_exits: name at least one stage in after_stages")
        super().__init__(backbone.space)
        self.training = backbone.training  # the flag only: the layers are the backbone's, already in its mode
        resolved = _resolve_stages(backbone, list(after_stages))
        try:
            graph = _StageTracer().trace(backbone)
        except UnsupportedModelError:
            raise
        except Exception as exc:  # fx raises many types for untraceable code
            raise UnsupportedModelError(
                f"{type(backbone).__name__}.forward cannot be traced by torch.fx: {exc}"
            ) from exc
        pieces = _split_graph(backbone, graph, [path for _, path, _ in resolved])
        names = [name for name, _, _ in resolved] + [FINAL]
        self._check_ops_once(pieces, names)
        object.__setattr__(self, "backbone", backbone)  # not a child: its modules are reached through the segments
        self.exits: tuple[str, ...] = tuple(names)
        self.after_stages = tuple(name for name, _, _ in resolved)
        self.hidden = hidden
        self.default_input_size = backbone.default_input_size
        self.num_classes = int(getattr(backbone, "num_classes", 0)) or self._probe_classes(pieces)
        self.segments = nn.ModuleDict(dict(zip(names, pieces)))
        shapes = self._probe_shapes()
        heads = {}
        for name, _path, stage in resolved:
            channels, height = shapes[name][0], shapes[name][1]
            dim = _output_dim(stage)
            self._check_output_dim(name, dim, channels)
            heads[name] = ExitHead(channels, dim, self.num_classes, hidden, stride=2 if height >= 16 else 1)
        self.heads = nn.ModuleDict(heads)
        self.heads.train(self.training)
        self.invalidate_plans()  # the probes above indexed the model before it had heads
        self._verify_head_widths()

    # -- construction checks ------------------------------------------------------------------------
    @staticmethod
    def _check_ops_once(pieces: Sequence[fx.GraphModule], names: Sequence[str]) -> None:
        owner: dict[int, str] = {}
        for name, piece in zip(names, pieces):
            for module in piece.modules():
                if isinstance(module, (ElasticOp, ElasticStage)):
                    if owner.setdefault(id(module), name) != name:
                        raise UnsupportedModelError(
                            f"an elastic layer runs both before and after exit {owner[id(module)]!r}; cannot cut there"
                        )

    def _probe_classes(self, pieces: Sequence[fx.GraphModule]) -> int:
        with torch.no_grad():
            h = torch.zeros(1, *self.default_input_size)
            for piece in pieces:
                h = piece(h)
        return int(h.shape[1])

    @torch.no_grad()
    def _probe_shapes(self, sub: Subnet | None = None) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of the tensor leaving each cut (full network, or `sub`), from one zero input."""
        was_training = self.training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            previous = self.active_subnet  # the largest if none was activated yet
            self.eval()
            self.activate(sub or self.space.largest())
            try:
                h = torch.zeros(1, *self.default_input_size, device=self._device())
                shapes = {}
                for name in self.exits[:-1]:
                    h = self.segments[name](h)
                    shapes[name] = tuple(h.shape[1:])
            finally:
                self.train(was_training)
                self.activate(previous)
        return shapes

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_output_dim(self, name: str, dim: str | None, channels: int) -> None:
        full = self.space.width_dim(dim).channels if dim is not None else channels
        if full != channels:
            raise UnsupportedModelError(
                f"exit {name!r}: the stage's output dimension {dim!r} has {full} channels, the stage writes {channels}"
            )

    def _verify_head_widths(self) -> None:
        """Each head's input width follows the stage output at the smallest width too (else the cut is wrong)."""
        smallest = self.space.smallest()
        shapes = self._probe_shapes(smallest)
        channels = self.space.channels(self.space.canonical(smallest))
        for name, head in self.heads.items():
            expected = channels[head.conv.in_dim] if head.conv.in_dim is not None else head.conv.in_channels
            if shapes[name][0] != expected:
                raise UnsupportedModelError(
                    f"exit {name!r}: the stage writes {shapes[name][0]} channels in the smallest subnet, "
                    f"its width dimension {head.conv.in_dim!r} says {expected}"
                )

    # -- running ------------------------------------------------------------------------------------
    def exit_index(self, name: str) -> int:
        """Position of exit `name` in `exits` (an unknown name raises, listing the exits)."""
        try:
            return self.exits.index(name)
        except ValueError:
            raise TailorError(f"no exit {name!r}; exits are {list(self.exits)}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own output (final logits) of the active subnet."""
        for name in self.exits:
            x = self.segments[name](x)
        return x

    def forward_exits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every exit, in order, from one pass of the active subnet."""
        out = {}
        for name in self.exits:
            x = self.segments[name](x)
            out[name] = self.heads[name](x) if name != FINAL else x
        return out

    def run_exits(
        self, x: torch.Tensor, start: int, stop: int, features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run segments `start..stop` on `x` (the input if start == 0, else the tensor leaving exit start-1).

        Returns (tensor leaving exit `stop`, logits of exit `stop`, its pooled features or None). At
        the final exit the tensor is the logits and there are no pooled features.
        """
        if not 0 <= start <= stop < len(self.exits):
            raise TailorError(f"run_exits: need 0 <= start <= stop < {len(self.exits)}, got {start}, {stop}")
        for name in self.exits[start : stop + 1]:
            x = self.segments[name](x)
        name = self.exits[stop]
        if name == FINAL:
            return x, x, None
        head = self.heads[name]
        if features:
            pooled = head.features(x)
            return x, head.fc(pooled), pooled
        return x, head(x), None

    def exit_view(self, stop: str | int, start: str | int | None = None) -> ElasticModel:
        """An extractable `ElasticModel` computing exit `stop`'s logits, from the input or from exit `start`'s tensor.

        Shares this model's modules (make a view when needed: it copies this model's train/eval flag once).
        Its `default_input_size` is the tensor it reads under the largest
        subnet; for another subnet pass `input_shape=model.boundary_shape(start, sub)` to the cost functions.
        """
        stop_index = stop if isinstance(stop, int) else self.exit_index(stop)
        start_index = 0 if start is None else (start if isinstance(start, int) else self.exit_index(start)) + 1
        if not 0 <= start_index <= stop_index < len(self.exits):
            raise TailorError(f"exit_view: exit {stop!r} does not come after {start!r}")
        return _ExitView(self, start_index, stop_index)

    def boundary_shape(self, after: str | int | None, sub: Subnet) -> tuple[int, ...]:
        """Per-sample shape of the tensor leaving exit `after` under `sub` (None: the model's input)."""
        if after is None:
            return tuple(self.default_input_size)
        name = self.exits[after] if isinstance(after, int) else after
        self.exit_index(name)
        if name == FINAL:
            return (self.num_classes,)
        return self._probe_shapes(sub)[name]

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The exit heads' tensors only (the backbone is saved with `tailor.save`)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}


class _ExitView(ElasticModel):
    """Segments `start..stop` of an `EarlyExitModel` and exit `stop`'s head, as an extractable model."""

    def __init__(self, parent: EarlyExitModel, start: int, stop: int) -> None:
        super().__init__(parent.space)
        self.training = parent.training  # shared layers: keep the parent's mode when cost functions restore it
        names = parent.exits[start : stop + 1]
        self.segments = nn.ModuleDict({name: parent.segments[name] for name in names})
        self.head = parent.heads[names[-1]] if names[-1] != FINAL else None
        self.names = names
        if start == 0:
            self.default_input_size = parent.default_input_size
        else:
            self.default_input_size = parent._probe_shapes()[parent.exits[start - 1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = self.segments[name](x)
        return x if self.head is None else self.head(x)


def add_early_exits(model: ElasticModel, after_stages: Sequence[str], hidden: int = 64) -> EarlyExitModel:
    """Add a classifier after each named stage (`"stage1"` or `"stages.0"`); returns the `EarlyExitModel`.

    The backbone's weights are shared, not copied. Heads start untrained: see `train_exits`.
    """
    exits = EarlyExitModel(model, after_stages, hidden)
    return exits.to(next(model.parameters()).device)


def _check_subnets(model: ElasticModel, subnets: Sequence[Subnet], where: str) -> list[Subnet]:
    subs = list(subnets)
    if not subs:
        raise TailorError(f"{where}: give at least one subnet")
    for sub in subs:
        if not isinstance(sub, Subnet):
            raise TailorError(f"{where}: expected Subnet values, got {type(sub).__name__}")
        model.space.validate(sub)
    return subs


def train_exits(
    model: EarlyExitModel,
    data: Any,
    subnets: Sequence[Subnet],
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float | None = None,
    freeze_backbone: bool = True,
    exit_weights: dict[str, float] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    calib_batches: int = 8,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[EpochRecord]:
    """Train the exit heads for every subnet in `subnets` (an exit x width grid); returns per-epoch losses.

    Each step runs every subnet on the same batch and sums the exits' cross-entropies (weighted by
    `exit_weights`, default 1). `freeze_backbone=True`: the backbone runs in eval mode with its
    SubnetNorm statistics (missing ones are calibrated first on `calib_batches` training batches) and
    only the heads learn (Adam, default lr 1e-3). `False`: backbone and heads learn together (SGD with
    Nesterov momentum, default lr 0.01, the final output included in the loss), after which the
    subnets' SubnetNorm statistics are recalibrated. The loop is `tailor.train.Trainer`'s (cosine
    learning-rate decay, data order and augmentation seeded by `seed`, progress); each `EpochRecord`'s
    `loss` holds the mean cross-entropy of every trained exit.
    """
    if not isinstance(model, EarlyExitModel):
        raise TailorError(f"train_exits needs an EarlyExitModel (from add_early_exits), got {type(model).__name__}")
    subs = _check_subnets(model, subnets, "train_exits")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("calib_batches", calib_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TailorError(f"train_exits: {name} must be a positive integer, got {value!r}")
    loss = ExitLoss(model, exit_weights, frozen=freeze_backbone)
    lr = (1e-3 if freeze_backbone else 0.01) if lr is None else lr
    config = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(data)), lr=lr, sampler="fixed",
                         augment=augment is not None, calib_batches=calib_batches, seed=seed)  # fmt: skip
    trainer = Trainer(model, data, config, subnets=subs, device=device or model._device(), progress=progress,
                      loss=loss, optimizer=_exit_optimizer(model, lr, freeze_backbone), augment=augment)  # fmt: skip
    if freeze_backbone:
        missing = [sub for sub in subs if not model.has_norm_stats(sub)]
        if missing:
            trainer.calibrate(missing)
    backbone = [p for name, p in model.named_parameters() if not name.startswith("heads.")]
    requires = [p.requires_grad for p in backbone]
    was_training, previous = model.training, model.active_subnet
    try:
        if freeze_backbone:
            for p in backbone:
                p.requires_grad_(False)
        history = trainer.fit()
    finally:
        for p, flag in zip(backbone, requires):
            p.requires_grad_(flag)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.train(was_training)
            model.activate(previous)
    if not freeze_backbone:
        trainer.calibrate(subs)
    return history


def _exit_optimizer(model: EarlyExitModel, lr: float, frozen: bool) -> torch.optim.Optimizer:
    """Adam on the heads (frozen backbone), or SGD with Nesterov momentum on heads and backbone (joint)."""
    heads = list(model.heads.parameters())
    if frozen:
        return torch.optim.Adam(heads, lr=lr)
    backbone = [p for name, p in model.named_parameters() if not name.startswith("heads.")]
    return torch.optim.SGD(heads + backbone, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


class ExitLoss:
    """The loss `train_exits` trains with: `{exit: (weight, cross-entropy)}` of one subnet on one batch.

    Frozen: the backbone runs in eval mode without a graph and the final output is not trained; the heads
    train. Joint: everything runs in train mode, the final output included. Exits of weight 0 are left out.
    """

    def __init__(self, model: EarlyExitModel, exit_weights: Mapping[str, float] | None, frozen: bool) -> None:
        self.weights = {name: 1.0 for name in model.exits}
        for name, value in (exit_weights or {}).items():
            model.exit_index(name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise TailorError(f"train_exits: exit weight of {name!r} must be a finite number >= 0, got {value!r}")
            self.weights[name] = float(value)
        self.frozen = frozen

    def __call__(
        self, model: ElasticModel, sub: Subnet, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        assert isinstance(model, EarlyExitModel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.train(not self.frozen)
            model.heads.train()
            model.activate(sub)
        losses = {}
        h = x
        for name in model.exits:
            if name == FINAL and self.frozen:
                break
            with torch.set_grad_enabled(not self.frozen):
                h = model.segments[name](h)
            logits = h if name == FINAL else model.heads[name](h)
            if self.weights[name] > 0:
                losses[name] = (self.weights[name], F.cross_entropy(logits, y))
        if not losses:
            raise TailorError("train_exits: every trainable exit has weight 0")
        return losses


class ExitsSchema(BaseModel):
    """`exits.json` (`save_exits`): where the exits sit, their hidden width, classes, and the weights' SHA-256."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: Annotated[Literal["tailor.exits/1"], Field(alias="schema")]
    after_stages: Annotated[list[Annotated[str, Field(strict=True, min_length=1)]], Field(min_length=1)]
    hidden: Annotated[int, Field(strict=True, ge=0)]
    num_classes: Annotated[int | None, Field(strict=True, ge=1)] = None
    sha256: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]


def save_exits(model: EarlyExitModel, path: str | os.PathLike[str]) -> Path:
    """Write the exit heads to `path/` (`exits.safetensors` + `exits.json`: stages, hidden width, sizes, hash)."""
    import hashlib

    if not isinstance(model, EarlyExitModel):
        raise TailorError(f"save_exits needs an EarlyExitModel, got {type(model).__name__}")
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    weights = target / "exits.safetensors"
    tmp = target / f".exits.{os.getpid()}.tmp"
    save_file(model.head_state_dict(), str(tmp))
    os.chmod(tmp, default_file_mode())  # safetensors creates files private to the owner
    os.replace(tmp, weights)
    meta = {
        "schema": EXITS_SCHEMA,
        "after_stages": list(model.after_stages),
        "hidden": model.hidden,
        "num_classes": model.num_classes,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (target / "exits.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return target


def load_exits(model: ElasticModel, path: str | os.PathLike[str]) -> EarlyExitModel:
    """Rebuild the exits saved by `save_exits` on `model` (the same backbone architecture) and load their heads."""
    import hashlib

    directory = Path(path)
    meta_path, weights = directory / "exits.json", directory / "exits.safetensors"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(meta_path)!r}: cannot read exit metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("schema") != EXITS_SCHEMA:
        raise CheckpointError(f"{str(meta_path)!r}: not a {EXITS_SCHEMA} file")
    meta = validate(ExitsSchema, meta, CheckpointError, repr(str(meta_path))).model_dump(by_alias=True)
    try:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    except OSError as exc:
        raise CheckpointError(f"{str(weights)!r}: {exc}") from None
    if digest != meta["sha256"]:
        raise CheckpointError(f"{str(weights)!r}: SHA-256 does not match exits.json (corrupt or edited)")
    exits = add_early_exits(model, meta["after_stages"], meta["hidden"])
    if exits.num_classes != meta.get("num_classes", exits.num_classes):
        raise CheckpointError(
            f"{str(meta_path)!r}: heads for {meta['num_classes']} classes, the model has {exits.num_classes}"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{str(weights)!r}: {exc}") from None
    try:
        exits.heads.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{str(weights)!r}: the heads do not fit this model: {exc}") from None
    return exits
