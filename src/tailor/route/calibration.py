"""Calibration of stage confidences: ECE, reliability bins, temperature scaling, escalation breakdowns.

A cascade trusts a stage's softmax to decide whether to stop there, so that softmax should mean what
it says. `ece` measures the gap between confidence and accuracy (Guo et al. 2017: 15 equal-width
bins); `fit_temperature` fits one temperature per stage on held-out logits by minimising the negative
log-likelihood with L-BFGS (the argmax, hence accuracy, is unchanged). `per_class_escalation` and
`escalation_by_bins` say which inputs a cascade sends on (by class, or by any per-input value such as
the synthetic data's `difficulty`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tailor.checks import integer, positive_float, positive_int
from tailor.errors import TailorError

DEFAULT_BINS = 15


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TailorError(f"{where}: expected logits of shape [N, classes >= 2], got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(logits):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TailorError(f"{where}: expected {len(logits)} labels of shape [N], got {shape}")
    if len(labels) == 0:
        raise TailorError(f"{where}: no samples")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise TailorError(
            f"{where}: labels must lie in [0, {logits.shape[1] - 1}], got {int(labels.min())}..{int(labels.max())}"
        )
    if not torch.isfinite(logits).all():
        raise TailorError(f"{where}: logits contain NaN or infinity")


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its range, how many predictions fell in it, their mean confidence and accuracy."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float

    def to_dict(self) -> dict[str, float]:
        return {
            "low": self.low,
            "high": self.high,
            "count": self.count,
            "confidence": self.confidence,
            "accuracy": self.accuracy,
        }


def reliability(
    logits: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS, temperature: float = 1.0
) -> list[ReliabilityBin]:
    """Equal-width bins of max-softmax confidence over (0, 1]: count, mean confidence, accuracy per bin."""
    _check_logits_labels(logits, labels, "reliability")
    positive_int("bins", bins, TailorError)
    positive_float("temperature", temperature, TailorError)
    probs = F.softmax(logits.double() / temperature, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    # bin i holds confidences in (i / bins, (i + 1) / bins]; a confidence of exactly 0 cannot occur
    index = torch.clamp(torch.ceil(confidence * bins).long() - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        mask = index == i
        count = int(mask.sum())
        out.append(
            ReliabilityBin(
                i / bins,
                (i + 1) / bins,
                count,
                float(confidence[mask].mean()) if count else 0.0,
                float(correct[mask].mean()) if count else 0.0,
            )
        )
    return out


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS, temperature: float = 1.0) -> float:
    """Expected calibration error: sum over bins of (bin share) * |accuracy - mean confidence|, in [0, 1]."""
    table = reliability(logits, labels, bins, temperature)
    total = sum(b.count for b in table)
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in table))


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / temperature)."""
    _check_logits_labels(logits, labels, "nll")
    positive_float("temperature", temperature, TailorError)
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on held-out data (L-BFGS on log T).

    Fit on data the stage was not trained on; T > 1 softens an over-confident stage.
    """
    _check_logits_labels(logits, labels, "fit_temperature")
    positive_int("fit_temperature: max_iter", max_iter, TailorError)
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature) or temperature <= 0:  # pragma: no cover - L-BFGS diverging on finite logits
        raise TailorError(f"fit_temperature: the fit diverged (T = {temperature})")
    return temperature


def per_class_escalation(
    labels: torch.Tensor, answered_by: torch.Tensor, num_classes: int, num_stages: int
) -> torch.Tensor:
    """[num_classes, num_stages - 1]: the fraction of each class's inputs that went past stage k.

    `answered_by[i]` is the stage (0-based) that answered input i. A class without inputs gets NaN.
    """
    _check_stage_assignment(labels, answered_by, num_stages, "per_class_escalation")
    positive_int("per_class_escalation: num_classes", num_classes, TailorError)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise TailorError(f"per_class_escalation: labels must lie in [0, {num_classes - 1}]")
    out = torch.full((num_classes, num_stages - 1), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            reached = answered_by[mask]
            for k in range(num_stages - 1):
                out[c, k] = (reached > k).double().mean()
    return out


def escalation_by_bins(
    values: torch.Tensor, answered_by: torch.Tensor, edges: Sequence[float], num_stages: int
) -> list[dict[str, float]]:
    """Escalation past each stage for inputs grouped by `values` (e.g. difficulty) into [edges[i], edges[i+1]).

    The last bin includes its upper edge. Returns one dict per bin: low, high, count, and
    `escalated` (a list: fraction that went past stage k, for each k < num_stages - 1).
    """
    _check_stage_assignment(values, answered_by, num_stages, "escalation_by_bins")
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise TailorError(f"escalation_by_bins: edges must be at least two increasing numbers, got {edges}")
    values = values.double()
    rows = []
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        mask = (values >= low) & ((values <= high) if last else (values < high))
        count = int(mask.sum())
        reached = answered_by[mask]
        escalated = [float((reached > k).double().mean()) if count else float("nan") for k in range(num_stages - 1)]
        rows.append({"low": low, "high": high, "count": count, "escalated": escalated})
    return rows


def _check_stage_assignment(values: torch.Tensor, answered_by: torch.Tensor, num_stages: int, where: str) -> None:
    integer(f"{where}: num_stages", num_stages, TailorError, low=2)
    if values.dim() != 1 or answered_by.dim() != 1 or len(values) != len(answered_by):
        raise TailorError(
            f"{where}: expected two 1-D tensors of one length, got {tuple(values.shape)} and {tuple(answered_by.shape)}"
        )
    if len(answered_by) and (answered_by.min() < 0 or answered_by.max() >= num_stages):
        raise TailorError(f"{where}: stage indices must lie in [0, {num_stages - 1}]")
