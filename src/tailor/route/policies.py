"""Routing policies: given a stage's output, which inputs go on to the next stage.

Every policy turns a stage's output into a per-input *score* in [0, 1] — how sure it is that the
stage's answer can stand — and escalates the inputs whose score is below the threshold for that
transition (one threshold per transition, or one for all). Higher thresholds escalate more.

- `Confidence`: max softmax probability (Hendrycks & Gimpel's baseline).
- `Entropy`: 1 - H(p) / log(classes): 1 for a one-hot softmax, 0 for a uniform one.
- `Margin`: top-1 minus top-2 probability.
- `LearnedRouter`: one small MLP per transition on the stage's pooled features plus its confidence
  and entropy (the Big/Little demo's hybrid router), trained by `fit_router` on held-out data with
  a latency-aware objective; its score is 1 - P(escalate).

A cascade may pass per-stage temperatures (see `tailor.route.calibration`): logits are divided by
them before any policy reads a probability.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import TailorError
from tailor.route.renamed import module_getattr


@dataclass
class StageOutput:
    """What one stage produced for a batch: logits [N, classes] and, when asked for, pooled features [N, F]."""

    logits: torch.Tensor
    features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.logits, torch.Tensor) or self.logits.dim() != 2:
            raise TailorError(
                f"StageOutput: logits must be [N, classes], got {getattr(self.logits, 'shape', self.logits)!r}"
            )
        if self.features is not None and (self.features.dim() != 2 or len(self.features) != len(self.logits)):
            raise TailorError(
                f"StageOutput: features must be [N, F] with N = {len(self.logits)}, got {tuple(self.features.shape)}"
            )

    def __len__(self) -> int:
        return len(self.logits)

    def index(self, rows: torch.Tensor) -> StageOutput:
        """The outputs of the selected rows (an index or a boolean mask)."""
        return StageOutput(self.logits[rows], None if self.features is None else self.features[rows])

    def scaled(self, temperature: float) -> StageOutput:
        """The same output with logits divided by `temperature` (features unchanged)."""
        if temperature == 1.0:
            return self
        return StageOutput(self.logits / temperature, self.features)


def softmax_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per row."""
    return F.softmax(logits.float(), dim=1).max(dim=1).values


def normalized_certainty(logits: torch.Tensor) -> torch.Tensor:
    """1 - entropy / log(classes) per row: 1 for one-hot, 0 for uniform."""
    log_p = F.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return (1.0 - entropy / math.log(logits.shape[1])).clamp(0.0, 1.0)


def softmax_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 softmax probability per row."""
    top2 = F.softmax(logits.float(), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def _check_thresholds(value: float | Sequence[float], name: str) -> float | tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) else list(value)
    if not values:
        raise TailorError(f"{name}: thresholds must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TailorError(f"{name}: thresholds must be finite numbers, got {v!r}")
    return float(values[0]) if isinstance(value, (int, float)) else tuple(float(v) for v in values)


@dataclass(frozen=True)
class RoutingPolicy:
    """How a cascade routes (base class): `score(out, stage)` in [0, 1]; inputs scoring below `threshold(stage)` are escalated."""

    thresholds: float | tuple[float, ...] = 0.5
    name: str = field(default="policy", init=False)
    #: Whether `score` reads pooled features (the cascade computes them only then).
    needs_features: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _check_thresholds(self.thresholds, type(self).__name__))

    def score(self, out: StageOutput, stage: int) -> torch.Tensor:
        raise NotImplementedError

    def threshold(self, stage: int) -> float:
        """The threshold of the transition after `stage` (0-based)."""
        if isinstance(self.thresholds, float):
            return self.thresholds
        if not 0 <= stage < len(self.thresholds):
            raise TailorError(f"{type(self).__name__}: no threshold for the transition after stage {stage}")
        return self.thresholds[stage]

    def escalate(self, out: StageOutput, stage: int) -> torch.Tensor:
        """Boolean mask of the inputs that go on to stage `stage + 1`."""
        return self.score(out, stage) < self.threshold(stage)

    def check_transitions(self, transitions: int) -> None:
        """Raise unless there is one threshold for every transition (or one shared by all)."""
        if not isinstance(self.thresholds, float) and len(self.thresholds) != transitions:
            raise TailorError(
                f"{type(self).__name__}: {len(self.thresholds)} thresholds for a cascade with {transitions} "
                "transitions; give one per transition or a single number"
            )

    def with_thresholds(self, thresholds: float | Sequence[float]) -> RoutingPolicy:
        """A copy of this policy with other thresholds (for sweeps)."""
        return dataclasses.replace(self, thresholds=thresholds)


@dataclass(frozen=True)
class Confidence(RoutingPolicy):
    """Stop where the max softmax probability reaches the threshold."""

    name: str = field(default="confidence", init=False)

    def score(self, out: StageOutput, stage: int) -> torch.Tensor:
        return softmax_confidence(out.logits)


@dataclass(frozen=True)
class Entropy(RoutingPolicy):
    """Stop where 1 - entropy / log(classes) reaches the threshold."""

    name: str = field(default="entropy", init=False)

    def score(self, out: StageOutput, stage: int) -> torch.Tensor:
        return normalized_certainty(out.logits)


@dataclass(frozen=True)
class Margin(RoutingPolicy):
    """Stop where top-1 minus top-2 probability reaches the threshold."""

    name: str = field(default="margin", init=False)

    def score(self, out: StageOutput, stage: int) -> torch.Tensor:
        return softmax_margin(out.logits)


class RouterMLP(nn.Module):
    """P(escalate) from [standardised pooled features, confidence, certainty]: Linear, ReLU, Linear."""

    def __init__(self, num_features: int, hidden: int = 64) -> None:
        super().__init__()
        if num_features < 0 or hidden < 1:
            raise TailorError(f"RouterMLP: num_features must be >= 0 and hidden >= 1, got {num_features}, {hidden}")
        self.num_features = num_features
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features + 2, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def inputs(self, out: StageOutput) -> torch.Tensor:
        """The router's input rows for a stage output (features standardised with the training statistics)."""
        parts = []
        if self.num_features:
            if out.features is None or out.features.shape[1] != self.num_features:
                got = None if out.features is None else out.features.shape[1]
                raise TailorError(f"RouterMLP: expected {self.num_features} pooled features per input, got {got}")
            parts.append((out.features.float() - self.feature_mean) / self.feature_std)
        parts.append(softmax_confidence(out.logits).unsqueeze(1))
        parts.append(normalized_certainty(out.logits).unsqueeze(1))
        return torch.cat(parts, dim=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Escalation logits [N] for rows built by `inputs`."""
        return self.net(inputs).squeeze(1)

    @torch.no_grad()
    def escalation_probability(self, out: StageOutput) -> torch.Tensor:
        return torch.sigmoid(self(self.inputs(out)))


@dataclass(frozen=True)
class LearnedRouter(RoutingPolicy):
    """One `RouterMLP` per transition; score = 1 - P(escalate)."""

    routers: tuple[RouterMLP, ...] = ()
    name: str = field(default="learned", init=False)
    needs_features: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        routers = tuple(self.routers)
        if not routers or not all(isinstance(r, RouterMLP) for r in routers):
            raise TailorError("LearnedRouter: give one RouterMLP per transition (fit them with fit_router)")
        object.__setattr__(self, "routers", routers)
        object.__setattr__(self, "needs_features", any(r.num_features for r in routers))

    def check_transitions(self, transitions: int) -> None:
        super().check_transitions(transitions)
        if len(self.routers) != transitions:
            raise TailorError(
                f"LearnedRouter: {len(self.routers)} routers for a cascade with {transitions} transitions"
            )

    def score(self, out: StageOutput, stage: int) -> torch.Tensor:
        if not 0 <= stage < len(self.routers):
            raise TailorError(f"LearnedRouter: no router for the transition after stage {stage}")
        router = self.routers[stage]
        was_training = router.training
        router.eval()
        try:
            return 1.0 - router.escalation_probability(out)
        finally:
            router.train(was_training)


POLICIES = ("confidence", "entropy", "margin", "learned")


def make_routing_policy(name: str, thresholds: float | Sequence[float] = 0.5) -> RoutingPolicy:
    """A threshold policy by name (`confidence`, `entropy`, `margin`); learned routers come from `fit_router`."""
    table: dict[str, type[RoutingPolicy]] = {"confidence": Confidence, "entropy": Entropy, "margin": Margin}
    if name == "learned":
        raise TailorError("the learned policy needs trained routers: use tailor.route.fit_router")
    if name not in table:
        raise TailorError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return table[name](thresholds)


def fit_router(
    out: StageOutput,
    labels: torch.Tensor,
    later_correct: torch.Tensor,
    *,
    escalation_cost: float,
    latency_weight: float = 1.0,
    use_features: bool = True,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> RouterMLP:
    """Train the router of one transition on held-out outputs of its stage (full-batch Adam).

    The target is "escalating helps": this stage is wrong and a later stage is right (`later_correct`).
    The loss is binary cross-entropy in which each input that escalation would not fix weighs
    `1 + latency_weight * escalation_cost`, where `escalation_cost` is the cost of the rest of the
    cascade relative to its most expensive path (0..1): the dearer escalating is, the more a needless
    escalation costs. Thresholds on the router's score are swept afterwards.
    """
    if len(out) != len(labels) or len(labels) != len(later_correct):
        raise TailorError(
            f"fit_router: {len(out)} outputs, {len(labels)} labels and {len(later_correct)} later_correct flags differ"
        )
    if len(labels) < 2:
        raise TailorError("fit_router: need at least two held-out inputs")
    if not (math.isfinite(escalation_cost) and escalation_cost >= 0 and latency_weight >= 0):
        raise TailorError(
            f"fit_router: escalation_cost and latency_weight must be finite and >= 0, got {escalation_cost}, {latency_weight}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TailorError(f"fit_router: epochs must be a positive integer, got {epochs!r}")
    if use_features and out.features is None:
        raise TailorError("fit_router: use_features=True but the stage output has no features")
    wrong = out.logits.argmax(1) != labels
    target = (wrong & later_correct.bool()).float()
    weight = torch.where(
        target > 0, torch.ones_like(target), torch.full_like(target, 1.0 + latency_weight * escalation_cost)
    )
    num_features = out.features.shape[1] if use_features and out.features is not None else 0
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        router = RouterMLP(num_features, hidden)
    if num_features:
        feats = out.features.float()
        router.feature_mean.copy_(feats.mean(0))
        router.feature_std.copy_(feats.std(0).clamp_min(1e-6))
    rows = router.inputs(out if num_features else StageOutput(out.logits)).detach()
    optimizer = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=weight_decay)
    router.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(router(rows), target, weight=weight)
        loss.backward()
        optimizer.step()
    router.eval()
    return router


__getattr__ = module_getattr(__name__)  # Policy, make_policy, simulate: the earlier names (deprecated)
