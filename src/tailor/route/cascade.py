"""`Cascade`: route each input through stages of one supernet, stopping at the first stage the policy trusts.

A stage is a subnet of the supernet, optionally cut at an early exit (`Stage(sub, exit="stage2")`).
Execution is batch-wise: the whole batch runs stage 1, the policy marks the rows to escalate, only
those rows are gathered and run through stage 2, and so on; the last stage answers whatever is left.
Consecutive stages of one subnet at later exits resume from the tensor the previous exit left
(early exits save compute); any other stage starts again from the input, since a wider subnet's
activations differ from a narrower one's everywhere.

Every input is charged the summed cost of the stages it ran (`costs`: per-input cost of each stage as
run in this cascade, e.g. milliseconds per image measured by `stage_costs`). The outputs of a stage for
an input do not depend on which other inputs share its batch (eval mode, SubnetNorm statistics), so
`simulate_cascade` reproduces `run` from each stage's outputs on the whole data set, which is how thresholds
are swept without re-running the network.

`combine="mean"` makes an escalated input's answer the average of the (temperature-scaled) softmax
outputs of every stage it ran, not the last stage's alone: the cheap stages' work is not thrown away,
and the policy reads that running ensemble too. `ensemble_outputs` gives the same outputs for sweeps.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tailor.checks import non_negative_float, one_of, positive_float, positive_int
from tailor.errors import SubnetNormFallbackWarning, TailorError
from tailor.ops import ElasticModel
from tailor.route.exits import FINAL, EarlyExitModel
from tailor.route.policies import RoutingPolicy, StageOutput
from tailor.route.renamed import module_getattr
from tailor.space import Subnet
from tailor.train import BatchSource


@dataclass(frozen=True)
class Stage:
    """One cascade stage: a subnet, answered at `exit` (`"final"`: the network's own output)."""

    subnet: Subnet
    exit: str = FINAL

    def __post_init__(self) -> None:
        if not isinstance(self.subnet, Subnet):
            raise TailorError(f"Stage: expected a Subnet, got {type(self.subnet).__name__}")
        if not isinstance(self.exit, str) or not self.exit:
            raise TailorError(f"Stage: exit must be an exit name, got {self.exit!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet.to_dict(), "exit": self.exit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        """From `to_dict()` output, or a bare `Subnet.to_dict()` (then the final exit)."""
        if not isinstance(data, Mapping):
            raise TailorError(f"Stage.from_dict: expected a mapping, got {type(data).__name__}")
        if "subnet" in data:
            unknown = set(data) - {"subnet", "exit"}
            if unknown:
                raise TailorError(f"Stage.from_dict: unknown field(s) {sorted(unknown)}")
            return cls(Subnet.from_dict(data["subnet"]), data.get("exit", FINAL))
        return cls(Subnet.from_dict(data))


def as_stage(item: Stage | Subnet | tuple[Subnet, str]) -> Stage:
    """A `Stage` from a Stage, a Subnet (final exit) or a (Subnet, exit) pair."""
    if isinstance(item, Stage):
        return item
    if isinstance(item, Subnet):
        return Stage(item)
    if isinstance(item, tuple) and len(item) == 2:
        return Stage(item[0], item[1])
    raise TailorError(f"a cascade stage must be a Stage, a Subnet or (Subnet, exit), got {type(item).__name__}")


@dataclass
class CascadeResult:
    """Per input: the predicted class, the stage (0-based) that answered, its logits, and the cost it incurred."""

    predictions: torch.Tensor
    stage: torch.Tensor
    logits: torch.Tensor
    cost: torch.Tensor
    num_stages: int

    def __len__(self) -> int:
        return len(self.predictions)

    def accuracy(self, labels: torch.Tensor) -> float:
        if len(labels) != len(self):
            raise TailorError(f"accuracy: {len(labels)} labels for {len(self)} predictions")
        return float((self.predictions == labels.to(self.predictions.device)).double().mean())

    @property
    def mean_cost(self) -> float:
        return float(self.cost.double().mean())

    def reached(self) -> list[float]:
        """Fraction of inputs that ran each stage (1.0 for stage 0)."""
        return [float((self.stage >= k).double().mean()) for k in range(self.num_stages)]

    def answered(self) -> list[float]:
        """Fraction of inputs answered by each stage."""
        return [float((self.stage == k).double().mean()) for k in range(self.num_stages)]

    @staticmethod
    def concat(parts: Sequence[CascadeResult]) -> CascadeResult:
        if not parts:
            raise TailorError("CascadeResult.concat: nothing to concatenate")
        return CascadeResult(
            torch.cat([p.predictions for p in parts]),
            torch.cat([p.stage for p in parts]),
            torch.cat([p.logits for p in parts]),
            torch.cat([p.cost for p in parts]),
            parts[0].num_stages,
        )


def _check_costs(costs: Sequence[float], stages: int, where: str) -> tuple[float, ...]:
    values = tuple(costs)
    if len(values) != stages:
        raise TailorError(f"{where}: {len(values)} costs for {stages} stages")
    return tuple(non_negative_float(f"{where}: costs[{k}]", v, TailorError) for k, v in enumerate(values))


def _check_temperatures(temperatures: Sequence[float] | None, stages: int, where: str) -> tuple[float, ...]:
    if temperatures is None:
        return (1.0,) * stages
    values = tuple(temperatures)
    if len(values) != stages:
        raise TailorError(f"{where}: {len(values)} temperatures for {stages} stages")
    return tuple(positive_float(f"{where}: temperatures[{k}]", v, TailorError) for k, v in enumerate(values))


COMBINES = ("last", "mean")


def _check_combine(combine: str, where: str) -> str:
    return one_of(f"{where}: combine", combine, COMBINES, TailorError)


def _ensemble_step(
    running: torch.Tensor | None, out: StageOutput, temperature: float, k: int
) -> tuple[torch.Tensor, StageOutput]:
    """Add stage k's scaled probabilities to `running` (log of the sum so far); return it and the mean as logits.

    Float64 log space: a large fitted temperature leaves class differences that float32 rounds to ties.
    """
    log_p = F.log_softmax(out.logits.double() / temperature, dim=1)
    if running is not None and running.shape != log_p.shape:
        raise TailorError(
            f"ensemble: stage {k} has outputs {tuple(log_p.shape)}, earlier stages {tuple(running.shape)}"
        )
    running = log_p if running is None else torch.logaddexp(running, log_p)
    return running, StageOutput(running - math.log(k + 1), out.features)


def ensemble_outputs(outputs: Sequence[StageOutput], temperatures: Sequence[float] | None = None) -> list[StageOutput]:
    """Stage k's output as `combine="mean"` sees it: log of the mean softmax of stages 0..k, each divided
    by its temperature (float64; features stay stage k's own). Already scaled: read it at T = 1."""
    temps = _check_temperatures(temperatures, len(outputs), "ensemble_outputs")
    combined: list[StageOutput] = []
    running: torch.Tensor | None = None
    for k, out in enumerate(outputs):
        running, mean = _ensemble_step(running, out, temps[k], k)
        combined.append(mean)
    return combined


class Cascade:
    """Stages of one supernet and a policy deciding, per input, whether to stop or escalate.

    `costs` are per-input costs of each stage as it runs here (a resumed early-exit stage costs only its
    increment); None charges nothing (all costs 0) — measure them with `stage_costs`. `temperatures`
    divide each stage's logits before the policy reads them (fitted with `fit_temperature`). `combine`:
    "last" answers with the stage that stopped, "mean" with the mean softmax of all stages run so far.
    """

    def __init__(
        self,
        model: ElasticModel,
        stages: Sequence[Stage | Subnet | tuple[Subnet, str]],
        policy: RoutingPolicy,
        *,
        costs: Sequence[float] | None = None,
        temperatures: Sequence[float] | None = None,
        combine: str = "last",
    ) -> None:
        if not isinstance(model, ElasticModel):
            raise TailorError(f"Cascade needs a tailor ElasticModel, got {type(model).__name__}")
        if not isinstance(policy, RoutingPolicy):
            raise TailorError(f"Cascade: policy must be a tailor.route RoutingPolicy, got {type(policy).__name__}")
        self.stages = [as_stage(s) for s in stages]
        if len(self.stages) < 2:
            raise TailorError(f"a cascade needs at least 2 stages, got {len(self.stages)}")
        for index, stage in enumerate(self.stages):
            try:
                model.space.validate(stage.subnet)
            except TailorError as exc:
                raise TailorError(f"stage {index}: {exc}") from None
            if stage.exit != FINAL:
                if not isinstance(model, EarlyExitModel):
                    raise TailorError(
                        f"stage {index} answers at exit {stage.exit!r}, but the model has no early exits "
                        "(see tailor.route.add_early_exits)"
                    )
                model.exit_index(stage.exit)
        policy.check_transitions(len(self.stages) - 1)
        self.model = model
        self.policy = policy
        self.costs = _check_costs(costs if costs is not None else [0.0] * len(self.stages), len(self.stages), "Cascade")
        self.temperatures = _check_temperatures(temperatures, len(self.stages), "Cascade")
        self.combine = _check_combine(combine, "Cascade")
        self.resumes = resume_flags(model, self.stages)

    def with_policy(self, policy: RoutingPolicy) -> Cascade:
        """The same stages, costs, temperatures and combination under another policy (or thresholds)."""
        return Cascade(
            self.model, self.stages, policy, costs=self.costs, temperatures=self.temperatures, combine=self.combine
        )

    @property
    def cumulative_costs(self) -> tuple[float, ...]:
        """Cost of an input answered at each stage (the sum of the stages it ran)."""
        total, out = 0.0, []
        for c in self.costs:
            total += c
            out.append(total)
        return tuple(out)

    # -- execution ----------------------------------------------------------------------------------
    def _start(self) -> tuple[bool, Subnet]:
        """Remember the model's mode and subnet, then switch to eval mode (the stages' subnets warn, if any)."""
        state = self.model.training, self.model.active_subnet
        with warnings.catch_warnings():  # the subnet active before the cascade is not one it runs
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            self.model.eval()
        return state

    def _restore(self, state: tuple[bool, Subnet]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            self.model.train(state[0])
            self.model.activate(state[1])

    def _run_stage(self, index: int, inputs: torch.Tensor, features: bool) -> tuple[torch.Tensor | None, StageOutput]:
        """Run stage `index` on `inputs` (images, or the tensor its predecessor left when it resumes)."""
        return run_stage(self.model, self.stages, index, inputs, features, self.resumes[index])

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> CascadeResult:
        """Route one batch: stage 1 on all rows, then each later stage on the rows still escalated."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise TailorError(f"Cascade.run: expected a batch tensor [N, ...], got {getattr(x, 'shape', type(x))!r}")
        state = self._start()
        n = len(x)
        last = len(self.stages) - 1
        device = x.device
        predictions = torch.zeros(n, dtype=torch.long, device=device)
        answered = torch.full((n,), last, dtype=torch.long, device=device)
        logits_out: torch.Tensor | None = None
        rows = torch.arange(n, device=device)
        inputs = x
        running: torch.Tensor | None = None  # combine="mean": log of the summed probabilities of the open rows
        try:
            for k in range(len(self.stages)):
                needs = self.policy.needs_features and k < last
                carry, out = self._run_stage(k, inputs, needs)
                if self.combine == "mean":
                    running, out = _ensemble_step(running, out, self.temperatures[k], k)
                    read = out
                else:
                    read = out.scaled(self.temperatures[k])
                if logits_out is None:
                    logits_out = torch.zeros(n, out.logits.shape[1], dtype=out.logits.dtype, device=device)
                escalate = (
                    self.policy.escalate(read, k).to(device)
                    if k < last
                    else torch.zeros(len(rows), dtype=torch.bool, device=device)
                )
                stop = ~escalate
                done = rows[stop]
                predictions[done] = out.logits[stop].argmax(1)
                answered[done] = k
                logits_out[done] = out.logits[stop]
                rows = rows[escalate]
                if running is not None:
                    running = running[escalate]
                if rows.numel() == 0:
                    break
                inputs = carry[escalate] if k < last and self.resumes[k + 1] and carry is not None else x[rows]
        finally:
            self._restore(state)
        assert logits_out is not None
        cumulative = torch.tensor(self.cumulative_costs, dtype=torch.float64, device=device)
        return CascadeResult(predictions, answered, logits_out, cumulative[answered], len(self.stages))

    def predict(self, data: Any, batch_size: int = 256) -> CascadeResult:
        """`run` over a data set (normalised as its items are) or a tensor, `batch_size` inputs at a time."""
        return CascadeResult.concat([self.run(x) for x, _ in iterate_batches(data, batch_size, self._device())])

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def stage_outputs(self, data: Any, batch_size: int = 256, features: bool | None = None) -> list[StageOutput]:
        """Every stage's outputs on every input of `data` (for `simulate`, sweeps, calibration and routers).

        Features are kept for all but the last stage when `features` is True (default: when the policy
        reads them). Stages that resume their predecessor reuse its tensor, as in `run`.
        """
        want = self.policy.needs_features if features is None else features
        state = self._start()
        logits: list[list[torch.Tensor]] = [[] for _ in self.stages]
        feats: list[list[torch.Tensor]] = [[] for _ in self.stages]
        last = len(self.stages) - 1
        try:
            for x, _ in iterate_batches(data, batch_size, self._device()):
                carry: torch.Tensor | None = None
                for k in range(len(self.stages)):
                    inputs = carry if self.resumes[k] and carry is not None else x
                    carry, out = self._run_stage(k, inputs, want and k < last)
                    logits[k].append(out.logits.cpu())
                    if out.features is not None:
                        feats[k].append(out.features.cpu())
        finally:
            self._restore(state)
        return [
            StageOutput(torch.cat(logits[k]), torch.cat(feats[k]) if feats[k] else None)
            for k in range(len(self.stages))
        ]

    def simulate(self, outputs: Sequence[StageOutput]) -> CascadeResult:
        """What `run` would return, computed from `stage_outputs` of the same inputs."""
        return simulate_cascade(outputs, self.policy, self.costs, self.temperatures, combine=self.combine)


def resume_flags(model: ElasticModel, stages: Sequence[Stage]) -> tuple[bool, ...]:
    """Per stage: whether it continues from the previous stage's tensor (same subnet, a later exit)."""
    flags = [False]
    for prev, stage in itertools.pairwise(stages):
        same = isinstance(model, EarlyExitModel) and model.space.canonical(prev.subnet) == model.space.canonical(
            stage.subnet
        )
        flags.append(bool(same and model.exit_index(stage.exit) > model.exit_index(prev.exit)))
    return tuple(flags)


def run_stage(
    model: ElasticModel, stages: Sequence[Stage], index: int, inputs: torch.Tensor, features: bool, resumes: bool
) -> tuple[torch.Tensor | None, StageOutput]:
    """(tensor left at the stage's exit, StageOutput) of one stage; the model is switched to the stage's subnet."""
    stage = stages[index]
    model.activate(stage.subnet)
    if isinstance(model, EarlyExitModel):
        stop = model.exit_index(stage.exit)
        start = model.exit_index(stages[index - 1].exit) + 1 if resumes else 0
        if features and start == 0 and model.exits[stop] == FINAL:
            out = _whole_network(model.backbone, inputs, features=True)
            return out.logits, out
        carry, logits, pooled = model.run_exits(inputs, start, stop, features=features)
        if features and pooled is None:  # a resumed final exit: no pooled features to read, use the logits
            pooled = logits
        return carry, StageOutput(logits, pooled if features else None)
    return None, _whole_network(model, inputs, features)


def _whole_network(model: ElasticModel, x: torch.Tensor, features: bool) -> StageOutput:
    """Logits of the active subnet and, if asked, its pooled pre-logit features (`forward_features` +
    `forward_head(pre_logits=True)` where the model has them, else the logits themselves)."""
    if not features:
        return StageOutput(model(x))
    forward_features = getattr(model, "forward_features", None)
    forward_head = getattr(model, "forward_head", None)
    if forward_features is not None and forward_head is not None:
        fmap = forward_features(x)
        return StageOutput(forward_head(fmap), forward_head(fmap, pre_logits=True))
    logits = model(x)
    return StageOutput(logits, logits)


def simulate_cascade(
    outputs: Sequence[StageOutput],
    policy: RoutingPolicy,
    costs: Sequence[float],
    temperatures: Sequence[float] | None = None,
    combine: str = "last",
) -> CascadeResult:
    """Cascade decisions from precomputed stage outputs (each stage on every input), exactly as `run` makes them."""
    if _check_combine(combine, "simulate_cascade") == "mean":
        return simulate_cascade(ensemble_outputs(outputs, temperatures), policy, costs)
    stages = len(outputs)
    if stages < 2:
        raise TailorError(f"simulate_cascade: a cascade needs at least 2 stages, got {stages}")
    n = len(outputs[0])
    if any(len(o) != n for o in outputs):
        raise TailorError(f"simulate_cascade: stages have different numbers of outputs {[len(o) for o in outputs]}")
    policy.check_transitions(stages - 1)
    costs = _check_costs(costs, stages, "simulate_cascade")
    temps = _check_temperatures(temperatures, stages, "simulate_cascade")
    answered = torch.full((n,), stages - 1, dtype=torch.long)
    open_rows = torch.ones(n, dtype=torch.bool)
    for k in range(stages - 1):
        stop = ~policy.escalate(outputs[k].scaled(temps[k]), k).cpu() & open_rows
        answered[stop] = k
        open_rows &= ~stop
    stacked = torch.stack([o.logits.cpu() for o in outputs])  # [stages, N, classes]
    logits = stacked[answered, torch.arange(n)]
    cumulative = torch.tensor(costs, dtype=torch.float64).cumsum(0)
    return CascadeResult(logits.argmax(1), answered, logits, cumulative[answered], stages)


def iterate_batches(
    data: Any, batch_size: int, device: torch.device | None = None
) -> Iterator[tuple[torch.Tensor, Any]]:
    """(inputs, labels or None) batches of a tensor or a data set, in order, nothing dropped."""
    positive_int("batch_size", batch_size, TailorError)
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            chunk = data[i : i + batch_size]
            yield (chunk.to(device) if device is not None else chunk), None
        return
    if len(data) == 0:
        raise TailorError("the data set is empty")
    source = BatchSource(data, min(batch_size, len(data)), 0, drop_last=False)
    for x, y in source.batches(None):
        yield (x.to(device) if device is not None else x), y


def dataset_labels(data: Any) -> torch.Tensor:
    """The labels of a data set, in order (from `labels` when it has them)."""
    labels = getattr(data, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels.long()
    return torch.as_tensor([int(data[i][1]) for i in range(len(data))], dtype=torch.long)


__getattr__ = module_getattr(__name__)  # Policy, make_policy, simulate: the earlier names (deprecated)
