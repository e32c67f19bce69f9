"""tailor.cost.predict: graph features, blocks, the per-block lookup table, and the least-squares predictor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost import SCHEMA, Profile, Runner, macs
from tailor.cost.predict import FEATURES, LatencyPredictor, LatencyTable, LayerTable, features, subnet_blocks
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


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    name=st.sampled_from(["resnet20", "small_cnn", "mobilenet_v3_small"]),
    fold=st.booleans(),
)
def test_blocks_chained_compute_the_extracted_subnet(seed: int, name: str, fold: bool) -> None:
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=10).eval()
    sub = model.space.sample(seed)
    blocks = subnet_blocks(model, sub, input_shape=(3, 32, 32), fold=fold)
    assert len(blocks) >= 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.extract(sub).eval()(x)
        y = x
        for block in blocks:
            assert tuple(y.shape[1:]) == block.input_shape
            y = block.module(y)
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)
    # every block with weights holds a conv or linear; BatchNorm is gone exactly when folded
    kinds = {type(m).__name__ for b in blocks for m in b.module.modules()}
    assert ("BatchNorm2d" in kinds) != fold


def test_identical_blocks_share_a_key_and_different_ones_do_not() -> None:
    model = tailor.create_model("resnet20", num_classes=10).eval()
    blocks = subnet_blocks(model, model.space.largest())
    keys = [b.key for b in blocks]
    assert len(blocks) == 1 + 9 + 1  # stem, 3 stages x 3 residual blocks (+ pooling), classifier
    assert keys[2] == keys[3] and keys[1] != keys[4]  # stage1 blocks 1, 2 are alike; a strided block is not
    narrower = subnet_blocks(model, model.space.largest().replace(widths={"stage1.block1.mid": 0.5}))
    assert [b.key for b in narrower] != keys and narrower[2].key != keys[2] and narrower[3].key == keys[3]


def test_latency_table_measures_each_distinct_block_once_per_batch_size() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    table = LatencyTable(repeats=2, warmup=0, runtime="onnxruntime")
    sub = model.space.largest()
    first = table.estimate(model, sub)
    size = len(table)
    assert first > 0 and 0 < size <= len(subnet_blocks(model, sub))
    assert table.estimate(model, sub) == first and len(table) == size  # looked up, not re-measured
    table.estimate(model, sub, batch_size=4)
    assert len(table) == 2 * size  # one entry per (block, batch size)
    assert LayerTable is LatencyTable


def test_runners_cover_the_blocks_missing_from_the_table() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    table = LatencyTable(runtime="onnxruntime")
    sub = model.space.largest()
    runners = table.runners(model, [sub, sub], batch_sizes=[1, 8])
    assert set(runners) == {b.key for b in subnet_blocks(model, sub)}
    assert all(isinstance(r, Runner) and r.runtime == "onnxruntime" for r in runners.values())
    assert len(next(iter(runners.values())).samples(2, warmup=0, repeats=3)) == 3
    for key in runners:
        table.record(key, 1, 0.1)
    assert set(table.runners(model, [sub], batch_sizes=[1, 8])) == set(runners)  # batch 8 still missing
    assert table.runners(model, [sub], batch_sizes=[1]) == {}
    with pytest.raises(ProfileError, match="positive finite"):
        table.record(next(iter(runners)), 8, -1.0)


def test_recorded_entries_are_used_and_a_linear_latency_in_table_features_is_recovered() -> None:
    model = tailor.create_model("resnet20", num_classes=10).eval()
    table = LatencyTable(runtime="onnxruntime")
    subs = [model.space.sample(i) for i in range(11)]
    blocks = {s: table.blocks(model, s) for s in subs}
    keys = list(dict.fromkeys(b.key for s in subs for b in blocks[s]))
    for i, key in enumerate(keys):  # made-up entries: nothing is timed below
        table.record(key, 8, 0.05 + 0.01 * (i % 7))
    true = {s: 0.2 + 1.3 * table.estimate(model, s, 8) - 0.02 * len(blocks[s]) for s in subs}
    assert len(table) == len(keys)  # every block was found in the table, none measured
    assert true[subs[0]] == pytest.approx(
        0.2 + 1.3 * sum(table.table[(b.key, 8)] for b in blocks[subs[0]]) - 0.02 * len(blocks[subs[0]])
    )
    predictor = LatencyPredictor(model, batch_size=8, table=table).fit(subs[:8], true)
    assert predictor.feature_names == (*FEATURES, "table_ms", "blocks", "bias")
    report = predictor.error_report(subs[8:], true)
    assert report.n == 3 and report.mape < 1.0


def test_fit_profile_uses_the_measured_subnets_at_the_batch_size() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = [model.space.sample(i) for i in range(10)]
    subs = list(dict.fromkeys(subs))
    ms = {s: 0.1 + 3e-8 * features(model, s, 4)["macs"] for s in subs}
    entries = [
        {"id": f"s{i}", "subnet": s.to_dict(), "macs": 1, "params": 1,
         "latency_ms": {"4": {"p50": ms[s], "p90": ms[s] * 1.1, "p99": ms[s] * 1.2}}}
        for i, s in enumerate(subs)
    ]  # fmt: skip
    profile = Profile.from_dict({"schema": SCHEMA, "model": "small_cnn", "input_shape": [3, 32, 32],
                                 "device": "test", "backend": "onnxruntime", "threads": 1, "subnets": entries})  # fmt: skip
    predictor = LatencyPredictor(model, batch_size=4).fit_profile(profile)
    assert predictor.error_report(subs, ms).mape < 1.0
    p90 = LatencyPredictor(model, batch_size=4).fit_profile(profile, "p90")
    assert p90.predict(subs[0]) == pytest.approx(ms[subs[0]] * 1.1, rel=0.01)
    with pytest.raises(ProfileError, match="batch size 1"):
        LatencyPredictor(model, batch_size=1).fit_profile(profile)
    with pytest.raises(ProfileError, match="percentile"):
        LatencyPredictor(model, batch_size=4).fit_profile(profile, "p75")


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
    with pytest.raises(ProfileError, match="no measured latency"):
        LatencyPredictor(model).fit(subs, {subs[0]: 1.0})
    with pytest.raises(ProfileError, match="LatencyTable"):
        LatencyPredictor(model, table="table")  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="unknown runtime 'tvm'"):
        LatencyTable(runtime="tvm")
    with pytest.raises(ProfileError, match="batch_size"):
        LatencyTable().estimate(model, subs[0], batch_size=0)
    foreign = tailor.create_model("small_cnn").space.largest()
    for fn in (features, subnet_blocks, LatencyTable().estimate):
        with pytest.raises(InvalidSubnetError):
            fn(model, foreign)


def test_a_predictor_refits_against_another_table_without_extracting_again() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = list(dict.fromkeys(model.space.sample(i) for i in range(12)))
    tables = [LatencyTable(runtime="onnxruntime"), LatencyTable(runtime="onnxruntime")]
    keys = {b.key for s in subs for b in tables[0].blocks(model, s)}
    for scale, table in zip((1.0, 3.0), tables):
        for i, key in enumerate(sorted(keys, key=repr)):
            table.record(key, 1, scale * (0.01 + 0.001 * i))
    predictor = LatencyPredictor(model, table=tables[0])
    truth = [{s: 0.05 + 2 * t.estimate(model, s) for s in subs} for t in tables]
    first = predictor.fit(subs[:8], truth[0]).predict(subs[9])
    predictor.table = tables[1]
    assert predictor.coef is None  # fitted against the other table: refit first
    second = predictor.fit(subs[:8], truth[1]).predict(subs[9])
    assert first == pytest.approx(truth[0][subs[9]], rel=0.01) and second == pytest.approx(truth[1][subs[9]], rel=0.01)
    predictor.table = None
    assert predictor.feature_names == (*FEATURES, "bias")
    with pytest.raises(ProfileError, match="clock"):
        LatencyTable(threads=2, clock="cpu")
