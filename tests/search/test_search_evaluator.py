"""Evaluator: calibrate-then-evaluate accuracy, the per-subnet cache, and the pluggable cost sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor.search.evaluator as evaluator_module
from tailor import InvalidSubnetError, ProfileError, create_model
from tailor.cost import LatencyPredictor, Profile, SubnetProfile, macs, params
from tailor.data import load_dataset
from tailor.errors import DataError
from tailor.search import (
    Evaluator,
    MeasuredCost,
    PredictedCost,
    ProfileCost,
    SearchError,
    estimate_memory,
)
from tailor.space import Subnet
from tailor.train import calibrate, evaluate
from train_helpers import NormFreeNet


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _model(widths=(0.5, 1.0)):
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=10, in_chans=1, channels=(4, 8, 8), widths=widths)


def _calib_batches(train) -> list[torch.Tensor]:
    x = train.normalize(train.images[:128])
    return [x[:64], x[64:]]


def _cheap_cost(model) -> MeasuredCost:
    return MeasuredCost(model, (1, 8, 8), memory="estimate", warmup=1, repeats=3)


def test_accuracy_is_calibrate_then_evaluate(digits_data) -> None:
    train, test = digits_data
    model = _model()
    batches = _calib_batches(train)
    ev = Evaluator(model, batches, test, cost=_cheap_cost(model))
    sub = Subnet({"stage1.out": 0.5, "stage2.out": 1.0, "stage3.out": 0.5}, {"stage1": 2, "stage2": 1, "stage3": 2})
    acc = ev.metrics(sub)["accuracy"]
    reference = _model()
    calibrate(reference, [sub], batches, batches=2)
    assert acc == evaluate(reference, [sub], test)[sub.id]
    conf, correct = ev.predictions(sub)
    assert len(conf) == len(test) and correct.mean() == acc
    assert ((conf > 0.1) & (conf <= 1.0)).all(), "max softmax of 10 classes lies in (0.1, 1]"


def test_each_architecture_is_evaluated_once(digits_data, monkeypatch) -> None:
    train, test = digits_data
    # 0.3 and 0.5 of 4 channels both keep 2: the same architecture under two names
    model = _model(widths=(0.3, 0.5, 1.0))
    ev = Evaluator(model, _calib_batches(train), test, cost=_cheap_cost(model))
    calls = []
    real = evaluator_module.calibrate
    monkeypatch.setattr(evaluator_module, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = Subnet({"stage1.out": 0.3, "stage2.out": 1.0, "stage3.out": 1.0}, {"stage1": 1, "stage2": 2, "stage3": 2})
    b = a.replace(widths={"stage1.out": 0.5})
    first = ev.metrics(a, ("accuracy", "macs"))
    assert ev.metrics(b, ("accuracy", "macs")) == first
    assert ev.metrics(a, ("macs", "accuracy")) == first
    assert len(calls) == 1 and ev.evaluations == 1 and ev.cost_calls == 1
    ev.metrics(b, ("params",))
    assert ev.cost_calls == 2


def test_statistics_are_left_as_they_were(digits_data) -> None:
    train, test = digits_data
    model = _model()
    space = model.space
    calibrate(model, [space.largest()], _calib_batches(train)[:1], batches=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ev = Evaluator(model, _calib_batches(train), test, cost=_cheap_cost(model))
    ev.metrics(space.largest())
    ev.metrics(space.smallest())
    after = model.state_dict()
    assert set(after) == set(before), "no statistics added or dropped"
    assert all(torch.equal(before[k], after[k]) for k in before), "the largest keeps its own statistics"
    keeping = Evaluator(model, _calib_batches(train), test, cost=_cheap_cost(model), keep_stats=True)
    keeping.metrics(space.smallest())
    assert model.has_norm_stats(space.smallest())


def test_bad_subnets_and_data_are_refused(digits_data) -> None:
    train, test = digits_data
    model = _model()
    ev = Evaluator(model, _calib_batches(train), test, cost=_cheap_cost(model))
    with pytest.raises(InvalidSubnetError, match="stage1.out"):
        ev.metrics(Subnet({"stage1.out": 0.7, "stage2.out": 1.0, "stage3.out": 1.0}, model.space.largest().depths))
    with pytest.raises(SearchError, match="unknown metric 'speed'"):
        ev.metrics(model.space.largest(), ("speed",))
    with pytest.raises(DataError, match="no batches"):
        Evaluator(model, [], test)
    with pytest.raises(DataError, match=r"\(inputs, labels\)"):
        Evaluator(model, _calib_batches(train), [torch.zeros(4, 1, 8, 8)])
    with pytest.raises(SearchError, match="calib_batches"):
        Evaluator(model, train, test, calib_batches=0)


def test_measured_costs_are_tailor_cost(digits_data) -> None:
    train, test = digits_data
    model = _model()
    ev = Evaluator(model, train, test, calib_batches=1, cost=_cheap_cost(model))
    sub = model.space.smallest()
    got = ev.metrics(sub, ("macs", "params", "latency", "memory"))
    assert got["macs"] == macs(model, sub, (1, 8, 8))
    assert got["params"] == params(model, sub)
    assert got["latency"] > 0
    assert got["memory"] == estimate_memory(model, sub, (1, 8, 8))
    assert ev.metrics(model.space.largest(), ("macs",))["macs"] > got["macs"]


def test_estimate_memory_is_weights_plus_peak_live_activations() -> None:
    model = NormFreeNet().eval()
    sub = model.space.largest()
    weights = sum(p.numel() * 4 for p in model.extract(sub).parameters())
    x, c1, c2 = 3 * 256 * 4, 8 * 256 * 4, 16 * 256 * 4
    # conv -> relu -> conv -> relu: the widest moment holds conv2's output and its relu
    peak = max(x + c1, c1 + c1, c1 + c2, c2 + c2)
    assert estimate_memory(model, sub) == weights + peak
    small = model.space.smallest()
    assert estimate_memory(model, small) < weights + peak


def _profile(model, subs) -> Profile:
    entries = [
        SubnetProfile(id=f"s{i}", macs=1000 * (i + 1), params=10 * (i + 1), subnet=s,
                      latency_ms={1: {"p50": 1.0 + i, "p90": 2.0 + i, "p99": 3.0 + i}})
        for i, s in enumerate(subs)
    ]  # fmt: skip
    return Profile("small_cnn", (1, 8, 8), "test cpu", "torch", 1, tuple(entries))


def test_profile_cost_looks_up_and_falls_back(digits_data) -> None:
    train, test = digits_data
    model = _model()
    space = model.space
    profile = _profile(model, [space.largest(), space.smallest()])
    source = ProfileCost(profile, percentile="p90", space=space)
    assert source.value(space.smallest(), "latency") == 3.0
    assert source.value(space.largest(), "macs") == 1000
    other = space.uniform(0.5)
    with pytest.raises(ProfileError, match=other.id):
        source.value(other, "latency")
    alone = Evaluator(model, train, test, calib_batches=1, cost=source)
    with pytest.raises(ProfileError, match="not in the profile"):
        alone.metrics(other, ("latency",))
    chained = Evaluator(model, train, test, calib_batches=1, cost=[source, _cheap_cost(model)])
    assert chained.metrics(space.smallest(), ("latency",))["latency"] == 3.0
    assert chained.metrics(other, ("macs",))["macs"] == macs(model, other, (1, 8, 8)), "measured where unprofiled"
    with pytest.raises(SearchError, match="no cost source supplies 'memory'"):
        alone.metrics(space.largest(), ("memory",))


def test_predicted_cost_uses_the_fitted_predictor(digits_data) -> None:
    train, test = digits_data
    model = _model()
    space = model.space
    subs = [space.largest(), space.smallest(), space.uniform(0.5)] + [space.sample(i) for i in range(5)]
    subs = list(dict.fromkeys(space.canonical(s) for s in subs))
    measured = [1e-6 * macs(model, s, (1, 8, 8)) + 0.05 for s in subs]  # stand-in latencies, linear in MACs
    predictor = LatencyPredictor(model, 1, (1, 8, 8)).fit(subs, measured)
    with pytest.raises(ProfileError, match="not fitted"):
        PredictedCost(LatencyPredictor(model, 1, (1, 8, 8)))
    source = PredictedCost(predictor, predictor.error_report(subs, measured))
    ev = Evaluator(model, train, test, calib_batches=1, cost=[source, _cheap_cost(model)])
    got = ev.metrics(subs[3], ("latency",))["latency"]
    assert got == pytest.approx(predictor.predict(subs[3]))
    assert got == pytest.approx(measured[3], rel=0.01)
    assert source.describe()["held_out_error"]["n"] == len(subs)
    assert np.isfinite(ev.metrics(subs[0], ("memory",))["memory"])


def test_measured_cost_takes_runtime_and_the_deprecated_backend_spelling() -> None:
    model = _model()
    cost = MeasuredCost(model, (1, 8, 8), runtime="onnxruntime", memory="estimate")
    assert cost.runtime == "onnxruntime" and "onnxruntime" in cost.describe()["latency"]
    with pytest.warns(DeprecationWarning, match="MeasuredCost: backend= is deprecated; use runtime="):
        old = MeasuredCost(model, (1, 8, 8), backend="onnxruntime", memory="estimate")
    assert old.runtime == "onnxruntime" and old.describe() == cost.describe()
    with pytest.warns(DeprecationWarning, match="MeasuredCost.backend is deprecated"):
        assert old.backend == "onnxruntime"
    with pytest.warns(DeprecationWarning), pytest.raises(ProfileError, match="disagree"):
        MeasuredCost(model, (1, 8, 8), runtime="torch", backend="onnxruntime")
    assert MeasuredCost(model, (1, 8, 8)).runtime == "torch"
