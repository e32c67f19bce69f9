"""tailor.cost.predict: graph features, the per-layer lookup table, and the least-squares predictor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost import macs
from tailor.cost.predict import FEATURES, LatencyPredictor, LayerTable, features, subnet_layers
from tailor.errors import InvalidSubnetError, ProfileError


@pytest.fixture(scope="module")
def model() -> tailor.ElasticModel:
    torch.manual_seed(0)
    return tailor.create_model("resnet20", num_classes=10).eval()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4))
def test_feature_macs_agree_with_flop_counter(model: tailor.ElasticModel, seed: int, batch: int) -> None:
    sub = model.space.sample(seed)
    f = features(model, sub, batch_size=batch)
    assert f["macs"] == macs(model, sub) * batch
    assert f["weights"] == sum(p.numel() for p in model.extract(sub).parameters())
    assert f["ops"] > 0 and f["activations"] > 0


def test_predictor_recovers_an_exactly_linear_latency(model: tailor.ElasticModel) -> None:
    subs = [model.space.sample(i) for i in range(12)]
    true = {s: 0.5 + 2e-7 * features(model, s)["macs"] + 0.01 * features(model, s)["ops"] for s in subs}
    predictor = LatencyPredictor(model).fit(subs[:8], true)
    report = predictor.error_report(subs[8:], true)
    assert report.n == 4 and report.mape < 1.0 and report.max_ape < 2.0
    assert predictor.feature_names == (*FEATURES, "bias")


def test_layer_table_measures_each_distinct_layer_once(model: tailor.ElasticModel) -> None:
    table = LayerTable(repeats=2, warmup=0)
    sub = model.space.smallest()
    first = table.estimate(model, sub)
    size = len(table)
    assert 0 < size <= len(subnet_layers(model, sub))
    assert table.estimate(model, sub) == first and len(table) == size  # looked up, not re-measured
    assert first > 0
    predictor = LatencyPredictor(model, table=table)
    assert predictor.feature_names[-2:] == ("table_ms", "bias")


def test_predictor_errors(model: tailor.ElasticModel) -> None:
    subs = [model.space.smallest(), model.space.largest()]
    with pytest.raises(ProfileError, match="before fit"):
        LatencyPredictor(model).predict(subs[0])
    with pytest.raises(ProfileError, match="at least 2"):
        LatencyPredictor(model).fit(subs[:1], [1.0])
    with pytest.raises(ProfileError, match="2 subnets but 1"):
        LatencyPredictor(model).fit(subs, [1.0])
    with pytest.raises(ProfileError, match="positive"):
        LatencyPredictor(model).fit(subs, [1.0, -2.0])
    with pytest.raises(ProfileError, match="batch_size"):
        LatencyPredictor(model, batch_size=0)
    with pytest.raises(InvalidSubnetError):
        features(model, tailor.create_model("small_cnn").space.largest())
