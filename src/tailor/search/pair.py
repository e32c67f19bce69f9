"""Pair search: the (little, big, threshold) cascade with the best accuracy under an expected-latency budget.

A cascade runs the little subnet on every input and sends an input on to the big one when the little
subnet's max-softmax confidence is below `threshold`. On held-out data with per-sample confidences
and correctness of every candidate, escalating the k least confident samples gives

    accuracy(k) = (big right among the k escalated + little right among the others) / n
    expected latency(k) = lat(little) + (k / n) * lat(big)

so each (little, big) pair is scored at every distinct threshold with two prefix sums, and all
ordered pairs of the candidates (plus every candidate alone) are compared: the "coupled objective"
chooses both subnets and the threshold together instead of taking the front's members one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tailor.checks import positive_float
from tailor.search.evaluator import BaseEvaluator
from tailor.search.metrics import SearchError
from tailor.search.pareto import ParetoFront
from tailor.space import Subnet


def cascade_table(
    confidence: np.ndarray, little_correct: np.ndarray, big_correct: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct cascade of two models on the same samples: (thresholds, escalation rates, accuracies).

    Threshold t escalates the samples with `confidence < t`; the first row (t = 0) escalates none. The
    all-escalated cascade is left out (the big model alone does better at lower latency).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    little = np.asarray(little_correct, dtype=np.float64)
    big = np.asarray(big_correct, dtype=np.float64)
    n = len(conf)
    if n == 0 or little.shape != (n,) or big.shape != (n,):
        raise SearchError(f"cascade_table: need equal non-empty per-sample arrays, got {conf.shape}, "
                          f"{little.shape}, {big.shape}")  # fmt: skip
    if not np.isfinite(conf).all():
        raise SearchError("cascade_table: confidences must be finite")
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    big_prefix = np.concatenate([[0.0], np.cumsum(big[order])])
    little_prefix = np.concatenate([[0.0], np.cumsum(little[order])])
    ks = np.concatenate([[0], np.flatnonzero(sorted_conf[1:] > sorted_conf[:-1]) + 1])
    accuracy = (big_prefix[ks] + little_prefix[-1] - little_prefix[ks]) / n
    thresholds = np.where(ks == 0, 0.0, sorted_conf[np.minimum(ks, n - 1)])
    return thresholds, ks / n, accuracy


@dataclass(frozen=True)
class PairChoice:
    """The chosen cascade: escalate from `little` to `big` when little's confidence < `threshold`.

    `big` is None when one subnet alone is best within the budget. Figures are on the evaluator's
    held-out data; `test` holds the same cascade's figures on a second evaluator's data, if given.
    """

    little: Subnet
    big: Subnet | None
    threshold: float
    accuracy: float
    expected_latency_ms: float
    escalation_rate: float
    little_latency_ms: float
    big_latency_ms: float | None
    little_accuracy: float
    big_accuracy: float | None
    latency_budget_ms: float
    pairs_scored: int
    test: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "little": self.little.to_dict(),
            "little_id": self.little.id,
            "big": None if self.big is None else self.big.to_dict(),
            "big_id": None if self.big is None else self.big.id,
        }
        for name in ("threshold", "accuracy", "expected_latency_ms", "escalation_rate", "little_latency_ms",
                     "big_latency_ms", "little_accuracy", "big_accuracy", "latency_budget_ms", "pairs_scored"):  # fmt: skip
            out[name] = getattr(self, name)
        out["test"] = dict(self.test) if self.test is not None else None
        return out


def _candidates(evaluator: BaseEvaluator, candidates: Sequence[Subnet] | ParetoFront) -> list[Subnet]:
    subs = candidates.subnets if isinstance(candidates, ParetoFront) else list(candidates)
    unique = list(dict.fromkeys(evaluator.canonical(s) for s in subs))
    if not unique:
        raise SearchError("pair_search: no candidate subnets")
    return unique


def pair_search(
    evaluator: BaseEvaluator,
    candidates: Sequence[Subnet] | ParetoFront,
    latency_budget_ms: float,
    *,
    test_evaluator: BaseEvaluator | None = None,
) -> PairChoice:
    """The most accurate cascade of two `candidates` (or one alone) whose expected latency fits the budget.

    Latency comes from `evaluator`'s cost sources; confidences from its held-out predictions. Ties go to
    the lower expected latency. Raises `SearchError` when even the fastest candidate exceeds the budget.
    """
    positive_float("pair_search: latency_budget_ms", latency_budget_ms, SearchError)
    subs = _candidates(evaluator, candidates)
    lat = {s: evaluator.metrics(s, ("latency",))["latency"] for s in subs}
    preds = {s: evaluator.predictions(s) for s in subs}
    sizes = {len(c) for c, _ in preds.values()}
    if len(sizes) != 1:
        raise SearchError(f"pair_search: candidates were evaluated on different sample counts {sorted(sizes)}")
    fastest = min(subs, key=lambda s: lat[s])
    if lat[fastest] > latency_budget_ms:
        raise SearchError(
            f"pair_search: no cascade fits {latency_budget_ms} ms; the fastest candidate ({fastest.id}) "
            f"takes {lat[fastest]:.4g} ms"
        )
    best: tuple[float, float] | None = None
    choice: dict[str, Any] = {}
    scored = 0
    for little in subs:
        conf, little_ok = preds[little]
        if lat[little] > latency_budget_ms:
            continue
        key = (float(little_ok.mean()), -lat[little])
        if best is None or key > best:
            best = key
            choice = {"little": little, "big": None, "threshold": 0.0, "rate": 0.0}
        for big in subs:
            if big == little:
                continue
            scored += 1
            thresholds, rates, accuracy = cascade_table(conf, little_ok, preds[big][1])
            expected = lat[little] + rates * lat[big]
            fits = np.flatnonzero(expected <= latency_budget_ms * (1 + 1e-12))
            if not len(fits):
                continue
            top = fits[np.lexsort((expected[fits], -accuracy[fits]))[0]]
            key = (float(accuracy[top]), -float(expected[top]))
            if key > best:
                best = key
                choice = {"little": little, "big": big, "threshold": float(thresholds[top]), "rate": float(rates[top])}
    assert best is not None
    little, big = choice["little"], choice["big"]
    test = None
    if test_evaluator is not None:
        conf_t, little_t = test_evaluator.predictions(little)
        escalate = conf_t < choice["threshold"] if big is not None else np.zeros(len(conf_t), dtype=bool)
        big_t = test_evaluator.predictions(big)[1] if big is not None else little_t
        rate_t = float(escalate.mean())
        test = {
            "accuracy": float(np.where(escalate, big_t, little_t).mean()),
            "escalation_rate": rate_t,
            "expected_latency_ms": lat[little] + rate_t * (lat[big] if big is not None else 0.0),
            "samples": len(conf_t),
        }
    return PairChoice(
        little=little,
        big=big,
        threshold=choice["threshold"],
        accuracy=best[0],
        expected_latency_ms=-best[1],
        escalation_rate=choice["rate"],
        little_latency_ms=lat[little],
        big_latency_ms=None if big is None else lat[big],
        little_accuracy=float(preds[little][1].mean()),
        big_accuracy=None if big is None else float(preds[big][1].mean()),
        latency_budget_ms=float(latency_budget_ms),
        pairs_scored=scored,
        test=test,
    )
