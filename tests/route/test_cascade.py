"""tailor.route.Cascade: batch-wise execution, agreement with simulation, costs, resumed early exits, errors."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from route_helpers import stage_subnets

import tailor
from tailor.errors import TailorError
from tailor.route import (
    Cascade,
    Confidence,
    EarlyExitModel,
    Entropy,
    LearnedRouter,
    Margin,
    Stage,
    StageOutput,
    ensemble_outputs,
    fit_router,
    simulate_cascade,
)


def quantile_thresholds(cascade: Cascade, outputs: list[StageOutput], qs: list[float]) -> tuple[float, ...]:
    """Thresholds half-way between neighbouring scores near the given quantiles (no score sits on one)."""
    out = []
    for k, q in enumerate(qs):
        scores = cascade.policy.score(outputs[k], k).sort().values
        i = min(len(scores) - 2, int(q * (len(scores) - 1)))
        out.append(float(scores[i] + scores[i + 1]) / 2)
    return tuple(out)


class RowCounter:
    """Counts the rows of every batch a module sees (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = module.register_forward_pre_hook(lambda _m, args: self.sizes.append(len(args[0])))

    def close(self) -> None:
        self.handle.remove()


def test_later_stages_run_only_on_escalated_rows_and_run_matches_simulation(
    resnet: tailor.ElasticModel, images: torch.Tensor
) -> None:
    subs = stage_subnets(resnet)
    probe = Cascade(resnet, subs, Confidence(0.5), costs=[1.0, 2.5, 6.0])
    outputs = probe.stage_outputs(images)
    cascade = probe.with_policy(Confidence(quantile_thresholds(probe, outputs, [0.6, 0.5])))
    expected = cascade.simulate(outputs)
    counter = RowCounter(resnet.fc)
    try:
        result = cascade.run(images)
    finally:
        counter.close()
    reached = [int((expected.stage >= k).sum()) for k in range(3)]
    assert reached[0] == 48 and 0 < reached[2] < reached[1] < 48  # every stage answers some inputs
    assert counter.sizes == reached  # stage k ran on exactly the rows that reached it
    assert torch.equal(result.predictions, expected.predictions)
    assert torch.equal(result.stage, expected.stage)
    assert torch.allclose(result.cost, expected.cost)
    # an input's cost is the sum of the stages it ran
    assert sorted(set(result.cost.tolist())) == [1.0, 3.5, 9.5]
    assert result.mean_cost == pytest.approx((48 * 1.0 + reached[1] * 2.5 + reached[2] * 6.0) / 48)
    # each answer is the answering stage's own prediction
    for k in range(3):
        rows = result.stage == k
        assert torch.equal(result.predictions[rows], outputs[k].logits[rows].argmax(1))
        assert torch.allclose(result.logits[rows], outputs[k].logits[rows], atol=1e-5)


def test_mean_combination_answers_with_the_ensemble_of_the_stages_run(
    resnet: tailor.ElasticModel, images: torch.Tensor
) -> None:
    subs = stage_subnets(resnet)
    temps = [1.5, 0.8, 1.2]
    probe = Cascade(resnet, subs, Confidence(0.5), costs=[1.0, 2.5, 6.0], temperatures=temps, combine="mean")
    outputs = probe.stage_outputs(images)
    combined = ensemble_outputs(outputs, temps)
    cascade = probe.with_policy(Confidence(quantile_thresholds(probe, combined, [0.6, 0.5])))
    assert cascade.combine == "mean"
    result, expected = cascade.run(images), cascade.simulate(outputs)
    assert torch.equal(result.stage, expected.stage) and torch.equal(result.predictions, expected.predictions)
    assert torch.allclose(result.logits, expected.logits, atol=1e-5)
    assert len(set(result.stage.tolist())) == 3
    probs = [torch.softmax(o.logits.double() / t, dim=1) for o, t in zip(outputs, temps)]
    for k in range(3):  # stage k answers with the mean of the scaled softmax of stages 0..k
        rows = result.stage == k
        mean = torch.stack(probs[: k + 1]).mean(0)[rows]
        assert torch.allclose(result.logits[rows].exp(), mean, atol=1e-5)
        assert torch.equal(result.predictions[rows], mean.argmax(1))
    # the first stage's decisions read its own scaled output; "last" and "mean" differ only after it
    last = Cascade(resnet, subs, cascade.policy, costs=[1.0, 2.5, 6.0], temperatures=temps).simulate(outputs)
    assert torch.equal(last.stage == 0, result.stage == 0)
    with pytest.raises(TailorError, match="combine"):
        Cascade(resnet, subs, Confidence(0.5), combine="vote")


def test_extreme_thresholds_give_the_first_or_the_last_stage(resnet: tailor.ElasticModel, images: torch.Tensor) -> None:
    small, _, large = stage_subnets(resnet)
    none = Cascade(resnet, [small, large], Margin(0.0)).run(images)
    every = Cascade(resnet, [small, large], Margin(1.5)).run(images)
    with torch.no_grad():
        with resnet.activated(small):
            first = resnet(images).argmax(1)
        with resnet.activated(large):
            last = resnet(images).argmax(1)
    assert torch.equal(none.predictions, first) and bool((none.stage == 0).all())
    assert torch.equal(every.predictions, last) and bool((every.stage == 1).all())
    assert none.reached() == [1.0, 0.0] and every.answered() == [0.0, 1.0]


@settings(max_examples=5, deadline=None)
@given(q1=st.floats(0.05, 0.95), q2=st.floats(0.05, 0.95), kind=st.sampled_from([Confidence, Entropy, Margin]))
def test_predict_over_a_data_set_equals_simulation(
    resnet: tailor.ElasticModel, images: torch.Tensor, q1: float, q2: float, kind: type
) -> None:
    probe = Cascade(resnet, stage_subnets(resnet), kind(0.5), costs=[1.0, 2.0, 3.0])
    outputs = probe.stage_outputs(images, batch_size=20)
    cascade = probe.with_policy(kind(quantile_thresholds(probe, outputs, [q1, q2])))
    result = cascade.predict(images, batch_size=13)  # batches of 13 rows: the decisions do not depend on them
    expected = simulate_cascade(outputs, cascade.policy, cascade.costs)
    assert torch.equal(result.stage, expected.stage)
    assert torch.equal(result.predictions, expected.predictions)


def test_the_model_is_left_as_it_was(resnet: tailor.ElasticModel, images: torch.Tensor) -> None:
    small, mid, large = stage_subnets(resnet)
    resnet.activate(mid)
    Cascade(resnet, [small, large], Confidence(0.9)).run(images[:4])
    assert resnet.active_subnet == resnet.space.canonical(mid) and not resnet.training
    resnet.activate(large)


def test_temperatures_change_decisions_not_answers(resnet: tailor.ElasticModel, images: torch.Tensor) -> None:
    small, _, large = stage_subnets(resnet)
    probe = Cascade(resnet, [small, large], Confidence(0.5))
    outputs = probe.stage_outputs(images)
    threshold = quantile_thresholds(probe, outputs, [0.5])
    plain = probe.with_policy(Confidence(threshold)).run(images)
    hot = Cascade(resnet, [small, large], Confidence(threshold), temperatures=[4.0, 1.0]).run(images)
    # a higher temperature lowers every confidence: at least as many inputs escalate
    assert int((hot.stage == 1).sum()) > int((plain.stage == 1).sum())
    stays = hot.stage == 0
    assert bool((plain.stage[stays] == 0).all())


def test_the_learned_router_reads_pooled_features(resnet: tailor.ElasticModel, images: torch.Tensor) -> None:
    small, _, large = stage_subnets(resnet)
    probe = Cascade(resnet, [small, large], Confidence(0.5))
    outputs = probe.stage_outputs(images, features=True)
    width = resnet.space.channels(resnet.space.canonical(small))["stage3.out"]
    assert outputs[0].features is not None and outputs[0].features.shape == (48, width)
    assert outputs[1].features is None  # the last stage never routes
    labels = outputs[1].logits.argmax(1)  # pretend the largest subnet is right
    router = fit_router(outputs[0], labels, torch.ones(48, dtype=torch.bool), escalation_cost=0.5, epochs=50)
    cascade = probe.with_policy(LearnedRouter(0.5, routers=(router,)))
    result = cascade.run(images)
    assert torch.equal(result.stage, cascade.simulate(outputs).stage)


def test_early_exit_stages_resume_from_the_previous_exit(resnet_exits: EarlyExitModel, images: torch.Tensor) -> None:
    large = resnet_exits.space.largest()
    stages = [Stage(large, "stage1"), Stage(large, "stage2"), Stage(large)]
    probe = Cascade(resnet_exits, stages, Entropy(0.5))
    assert probe.resumes == (False, True, True)
    outputs = probe.stage_outputs(images)
    with torch.no_grad(), resnet_exits.activated(large):
        direct = resnet_exits.forward_exits(images)
    for k, name in enumerate(resnet_exits.exits):
        assert torch.allclose(outputs[k].logits, direct[name], atol=1e-5)
    cascade = probe.with_policy(Entropy(quantile_thresholds(probe, outputs, [0.5, 0.5])))
    counters = {name: RowCounter(resnet_exits.segments[name]) for name in resnet_exits.exits}
    try:
        result = cascade.run(images)
    finally:
        for counter in counters.values():
            counter.close()
    expected = cascade.simulate(outputs)
    assert torch.equal(result.stage, expected.stage) and torch.equal(result.predictions, expected.predictions)
    # each segment ran once, on the rows that reached it (no recomputation of earlier segments)
    assert [counters[n].sizes for n in resnet_exits.exits] == [[int((expected.stage >= k).sum())] for k in range(3)]


def test_a_different_subnet_restarts_from_the_input(resnet_exits: EarlyExitModel, images: torch.Tensor) -> None:
    space = resnet_exits.space
    stages = [Stage(space.smallest()), Stage(space.largest(), "stage2"), Stage(space.largest())]
    cascade = Cascade(resnet_exits, stages, Confidence((0.5, 0.5)))
    assert cascade.resumes == (False, False, True)
    outputs = cascade.stage_outputs(images, features=True)
    assert outputs[0].features is not None and outputs[1].features.shape == (48, 2 * resnet_exits.hidden)
    assert torch.equal(cascade.run(images).stage, cascade.simulate(outputs).stage)


def test_cascade_errors(resnet: tailor.ElasticModel, resnet_exits: EarlyExitModel) -> None:
    small, _, large = stage_subnets(resnet)
    with pytest.raises(TailorError, match="at least 2 stages"):
        Cascade(resnet, [large], Confidence(0.5))
    with pytest.raises(TailorError, match="3 thresholds for a cascade with 1"):
        Cascade(resnet, [small, large], Confidence((0.1, 0.2, 0.3)))
    with pytest.raises(TailorError, match="no early exits"):
        Cascade(resnet, [Stage(small, "stage1"), large], Confidence(0.5))
    with pytest.raises(TailorError, match="no exit 'stage9'"):
        Cascade(resnet_exits, [Stage(small, "stage9"), large], Confidence(0.5))
    with pytest.raises(TailorError, match="stage 1"):
        Cascade(resnet, [small, tailor.Subnet({"stage1.out": 0.3}, {})], Confidence(0.5))
    with pytest.raises(TailorError, match="2 costs for 3 stages"):
        Cascade(resnet, stage_subnets(resnet), Confidence(0.5), costs=[1.0, 2.0])
    with pytest.raises(TailorError, match="temperatures"):
        Cascade(resnet, [small, large], Confidence(0.5), temperatures=[1.0, -1.0])
    with pytest.raises(TailorError, match="policy"):
        Cascade(resnet, [small, large], "confidence")  # type: ignore[arg-type]
    with pytest.raises(TailorError, match="batch"):
        Cascade(resnet, [small, large], Confidence(0.5)).run(torch.randn(5))


def test_stages_round_trip_through_json(resnet: tailor.ElasticModel) -> None:
    sub = resnet.space.smallest()
    stage = Stage(sub, "stage2")
    assert Stage.from_dict(json.loads(json.dumps(stage.to_dict()))) == stage
    assert Stage.from_dict(sub.to_dict()) == Stage(sub)  # a bare subnet: the final exit
    with pytest.raises(TailorError, match="unknown field"):
        Stage.from_dict({"subnet": sub.to_dict(), "exits": "stage2"})
    with pytest.raises(TailorError, match="expected a Subnet"):
        Stage("smallest")  # type: ignore[arg-type]
