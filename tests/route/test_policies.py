"""tailor.route.policies: scores, threshold semantics, and the learned router's objective."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.errors import TailorError
from tailor.route import Confidence, Entropy, LearnedRouter, Margin, StageOutput, fit_router, make_routing_policy

POLICY_TYPES = (Confidence, Entropy, Margin)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), classes=st.integers(2, 8), scale=st.floats(0.0, 20.0), seed=st.integers(0, 10_000))
def test_scores_lie_in_unit_range_and_thresholds_nest(n: int, classes: int, scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    out = StageOutput(torch.randn(n, classes, generator=generator) * scale)
    for kind in POLICY_TYPES:
        scores = kind(0.5).score(out, 0)
        assert scores.shape == (n,)
        assert bool(((scores >= -1e-6) & (scores <= 1 + 1e-6)).all())
        # a higher threshold escalates every input a lower one does, and more
        low, high = sorted(torch.rand(2, generator=generator).tolist())
        assert bool((kind(low).escalate(out, 0) <= kind(high).escalate(out, 0)).all())
        assert not kind(0.0).escalate(out, 0).any()
        assert kind(1.01).escalate(out, 0).all()


def test_scores_of_sure_and_unsure_outputs() -> None:
    sure = StageOutput(torch.tensor([[50.0, 0.0, 0.0]]))
    unsure = StageOutput(torch.zeros(1, 3))
    two_way = StageOutput(torch.tensor([[5.0, 5.0, -50.0]]))
    for kind in POLICY_TYPES:
        assert float(kind().score(sure, 0)) == pytest.approx(1.0, abs=1e-6)
    assert float(Confidence().score(unsure, 0)) == pytest.approx(1 / 3)
    assert float(Entropy().score(unsure, 0)) == pytest.approx(0.0, abs=1e-6)
    assert float(Margin().score(unsure, 0)) == pytest.approx(0.0, abs=1e-6)
    # a tie between two classes: confidence 0.5, margin 0, certainty 1 - log 2 / log 3
    assert float(Confidence().score(two_way, 0)) == pytest.approx(0.5, abs=1e-6)
    assert float(Margin().score(two_way, 0)) == pytest.approx(0.0, abs=1e-6)
    assert float(Entropy().score(two_way, 0)) == pytest.approx(1 - math.log(2) / math.log(3), abs=1e-5)


def test_per_transition_thresholds_and_their_errors() -> None:
    policy = Confidence((0.3, 0.9))
    assert policy.threshold(0) == 0.3 and policy.threshold(1) == 0.9
    policy.check_transitions(2)
    with pytest.raises(TailorError, match="2 thresholds for a cascade with 1"):
        policy.check_transitions(1)
    with pytest.raises(TailorError, match="finite"):
        Confidence(float("nan"))
    with pytest.raises(TailorError, match="empty"):
        Margin(())
    assert policy.with_thresholds(0.7).thresholds == 0.7
    with pytest.raises(TailorError, match="unknown policy"):
        make_routing_policy("oracle")
    with pytest.raises(TailorError, match="fit_router"):
        make_routing_policy("learned")
    assert isinstance(make_routing_policy("entropy", 0.2), Entropy)


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("tailor.route", "Policy", "RoutingPolicy"),
        ("tailor.route", "make_policy", "make_routing_policy"),
        ("tailor.route", "simulate", "simulate_cascade"),
        ("tailor.route.policies", "Policy", "RoutingPolicy"),
        ("tailor.route.policies", "make_policy", "make_routing_policy"),
        ("tailor.route.cascade", "simulate", "simulate_cascade"),
    ],
)
def test_the_names_shared_with_serve_are_deprecated_aliases(module: str, old: str, new: str) -> None:
    imported = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{old} is deprecated.*use {new}"):
        alias = getattr(imported, old)
    assert alias is getattr(imported, new)
    assert old not in getattr(imported, "__all__", ()), "star imports do not warn"
    with pytest.raises(AttributeError, match="no attribute 'make_policy'"):
        importlib.import_module("tailor.route.cascade").make_policy  # noqa: B018  (never a name there)
    with pytest.warns(DeprecationWarning):
        from tailor.route import Policy
    assert issubclass(Confidence, Policy)


def router_problem(n: int, seed: int) -> tuple[StageOutput, torch.Tensor, torch.Tensor]:
    """A stage whose answers are wrong exactly where feature 0 is positive; a later stage is always right.

    Its logits are equally confident everywhere, so only the features tell the two groups apart.
    """
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 6, generator=generator)
    labels = torch.randint(0, 4, (n,), generator=generator)
    wrong = features[:, 0] > 0
    predicted = torch.where(wrong, (labels + 1) % 4, labels)
    logits = torch.nn.functional.one_hot(predicted, 4).float() * 2.0
    return StageOutput(logits, features), labels, torch.ones(n, dtype=torch.bool)


def test_the_learned_router_finds_errors_that_confidence_cannot_see() -> None:
    out, labels, later = router_problem(600, 0)
    router = fit_router(out, labels, later, escalation_cost=0.5, epochs=200, seed=0)
    test_out, test_labels, _ = router_problem(400, 1)
    p = router.escalation_probability(test_out)
    wrong = test_out.logits.argmax(1) != test_labels
    assert float(((p > 0.5) == wrong).double().mean()) > 0.95
    policy = LearnedRouter(0.5, routers=(router,))
    assert policy.needs_features
    escalated = policy.escalate(test_out, 0)
    assert float((escalated == wrong).double().mean()) > 0.95
    # max-softmax confidence is the same for every input here: it cannot separate them
    assert Confidence(0.5).score(test_out, 0).std() < 1e-6


def test_a_higher_latency_weight_makes_the_router_escalate_less() -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(800, 4, generator=generator)
    labels = torch.randint(0, 3, (800,), generator=generator)
    # errors are only partly predictable from the features: the penalty decides where to draw the line
    wrong = (features[:, 0] + torch.randn(800, generator=generator)) > 0.5
    logits = torch.nn.functional.one_hot(torch.where(wrong, (labels + 1) % 3, labels), 3).float()
    out = StageOutput(logits, features)
    later = torch.ones(800, dtype=torch.bool)
    rates = []
    for weight in (0.0, 2.0, 8.0):
        router = fit_router(out, labels, later, escalation_cost=1.0, latency_weight=weight, epochs=150, seed=0)
        rates.append(float((router.escalation_probability(out) > 0.5).double().mean()))
    assert rates[0] > rates[1] > rates[2]


def test_inputs_escalation_cannot_fix_are_not_targets() -> None:
    out, labels, _ = router_problem(400, 2)
    hopeless = torch.zeros(400, dtype=torch.bool)  # later stages are always wrong too
    router = fit_router(out, labels, hopeless, escalation_cost=0.5, epochs=100, seed=0)
    assert float((router.escalation_probability(out) > 0.5).double().mean()) < 0.02


def test_router_input_errors() -> None:
    out, labels, later = router_problem(20, 0)
    with pytest.raises(TailorError, match="differ"):
        fit_router(out, labels[:10], later, escalation_cost=0.5)
    with pytest.raises(TailorError, match="no features"):
        fit_router(StageOutput(out.logits), labels, later, escalation_cost=0.5)
    router = fit_router(out, labels, later, escalation_cost=0.5, epochs=2)
    with pytest.raises(TailorError, match="expected 6 pooled features"):
        router.escalation_probability(StageOutput(out.logits, out.features[:, :3]))
    with pytest.raises(TailorError, match="one RouterMLP per transition"):
        LearnedRouter(0.5, routers=())
    logits_only = fit_router(StageOutput(out.logits), labels, later, escalation_cost=0.5, use_features=False, epochs=2)
    assert not LearnedRouter(0.5, routers=(logits_only,)).needs_features
