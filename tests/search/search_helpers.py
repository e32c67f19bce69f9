"""An analytic evaluator for the search tests: deterministic accuracy and costs, every call counted.

Accuracy rises with capacity (widths, with an interaction between neighbouring layers, and depth)
and saturates; a small hash-derived term breaks ties, so fronts are neither trivial nor degenerate.
MACs grow with products of neighbouring widths; latency follows MACs and depth. Per-sample predictions
mark the easiest `accuracy * n` samples right, with confidence falling with difficulty.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections import Counter
from typing import Any

import numpy as np

from tailor.search import BaseEvaluator
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim

SAMPLES = 200


def analytic_space(
    widths: int = 4, choices: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0), depths: int = 2
) -> SearchSpace:
    """`widths` width dimensions of 8 channels and `depths` depth dimensions with choices 1, 2."""
    return SearchSpace(
        [WidthDim(f"layer{i}", 8, choices) for i in range(widths)],
        [DepthDim(f"stage{i}", (1, 2)) for i in range(depths)],
    )


def _jitter(sub: Subnet) -> float:
    digest = hashlib.sha256(sub.to_json().encode()).digest()
    return (digest[0] / 255.0 - 0.5) * 0.01


class AnalyticEvaluator(BaseEvaluator):
    """Deterministic metrics of subnets of `space`; `calls[subnet]` counts accuracy computations."""

    def __init__(self, space: SearchSpace | None = None, delay_s: float = 0.0) -> None:
        super().__init__(space or analytic_space())
        self.delay_s = delay_s
        self.calls: Counter[Subnet] = Counter()
        self.cost_calls_by_metric: Counter[str] = Counter()

    def capacity(self, sub: Subnet) -> float:
        w = [sub.width(d.name) for d in self.space.widths]
        d = [sub.depth(x.name) for x in self.space.depths]
        pairs = sum(a * b for a, b in itertools.pairwise(w)) / max(1, len(w) - 1)
        return 0.5 * float(np.mean(w)) + 0.3 * pairs + 0.2 * (float(np.mean(d)) - 1.0 if d else 0.0)

    def _accuracy(self, sub: Subnet) -> float:
        self.calls[sub] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return round(0.5 + 0.45 * (1 - math.exp(-3 * self.capacity(sub))) + _jitter(sub), 6)

    def _cost(self, sub: Subnet, metric: str) -> float:
        self.cost_calls_by_metric[metric] += 1
        w = [sub.width(d.name) for d in self.space.widths]
        depth = sum(sub.depth(x.name) for x in self.space.depths) or 1
        macs = 1000 * (sum(a * b for a, b in zip([0.25, *w], w)) * 64) * (1 + 0.5 * depth)
        if metric == "macs":
            return float(round(macs))
        if metric == "latency":
            return 0.05 + macs / 1e5 + 0.02 * depth
        if metric == "memory":
            return float(4096 + round(4 * 64 * max(w) * 8))
        if metric == "params":
            return float(round(macs / 64))
        raise ValueError(metric)

    def _predictions(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        acc = self.metrics(sub, ("accuracy",))["accuracy"]
        difficulty = (np.arange(SAMPLES) + 0.5) / SAMPLES
        correct = difficulty < acc
        confidence = np.clip(1.0 - 0.8 * difficulty + 0.1 * self.capacity(sub), 0.0, 1.0)
        return confidence, correct

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": "analytic"}
