"""tailor.cost: params, MACs, latency (on each runtime), peak memory, energy, and their error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost import (
    LatencyStats,
    energy,
    energy_source,
    interleaved_samples,
    interleaved_timings,
    latency,
    latency_table,
    macs,
    measure_interleaved,
    params,
    peak_memory,
    prepare,
    prepare_module,
    prepare_onnx,
)
from tailor.errors import InvalidSubnetError, ProfileError, UnsupportedModelError


@pytest.fixture(scope="module")
def model() -> tailor.ElasticModel:
    torch.manual_seed(0)
    return tailor.create_model("resnet20", num_classes=10).eval()


def test_params_match_the_extracted_module_and_grow_with_width(model: tailor.ElasticModel) -> None:
    small, large = model.space.smallest(), model.space.largest()
    assert params(model, large) == sum(p.numel() for p in model.extract(large).parameters())
    assert params(model, large) == sum(p.numel() for p in model.parameters())  # full width: every weight
    assert params(model, small) < params(model, model.space.uniform(0.5)) < params(model, large)


def test_macs_of_the_full_resnet20_match_the_published_figure(model: tailor.ElasticModel) -> None:
    full = macs(model, model.space.largest())
    assert 40e6 < full < 42e6  # 41 M MACs (models/README.md); FLOPs would be twice that
    assert macs(model, model.space.smallest()) < full / 10
    assert macs(model, model.space.largest(), input_shape=(3, 64, 64)) == pytest.approx(4 * full, rel=0.01)


def test_cost_functions_leave_the_model_as_it_was(model: tailor.ElasticModel) -> None:
    model.activate(model.space.smallest())
    model.train()
    macs(model, model.space.largest())
    assert model.training and model.active_subnet == model.space.smallest()
    model.activate(model.space.largest())
    model.eval()


# torch-compile has its own test (tests/cost/test_runtimes.py): Inductor takes tens of seconds per subnet
@pytest.mark.parametrize("runtime", ["torch", "torch-inplace", "onnxruntime", "onnxruntime-int8", "openvino"])
def test_latency_reports_ordered_positive_percentiles(model: tailor.ElasticModel, runtime: str) -> None:
    stats = latency(model, model.space.smallest(), batch_size=2, runtime=runtime, threads=1, warmup=1, repeats=5)
    assert 0 < stats.p50 <= stats.p90 <= stats.p99
    assert stats.repeats == 5 and stats.mean is not None and stats.std is not None and stats.std >= 0
    assert set(stats.to_dict()) == {"p50", "p90", "p99", "mean", "std", "repeats"}


def test_backend_is_a_deprecated_spelling_of_runtime(model: tailor.ElasticModel) -> None:
    sub = model.space.smallest()
    with pytest.warns(DeprecationWarning, match="backend= is deprecated"):
        stats = latency(model, sub, 1, backend="torch", warmup=0, repeats=2)
    assert stats.repeats == 2
    assert latency(model, sub, 1, "torch", warmup=0, repeats=2).repeats == 2  # the fourth argument is the runtime
    with pytest.raises(ProfileError, match="disagree"), pytest.warns(DeprecationWarning):
        latency(model, sub, runtime="onnxruntime", backend="torch")
    with pytest.warns(DeprecationWarning, match="list_runtimes"):
        assert "onnxruntime" in tailor.cost.BACKENDS


def test_latency_restores_the_torch_thread_count(model: tailor.ElasticModel) -> None:
    torch.set_num_threads(1)
    latency(model, model.space.smallest(), threads=2, warmup=0, repeats=1)
    assert torch.get_num_threads() == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.001, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_latency_stats_percentiles_are_ordered_and_within_the_samples(samples: list[float]) -> None:
    stats = LatencyStats.from_samples(samples)
    assert min(samples) - 1e-9 <= stats.p50 <= stats.p90 <= stats.p99 <= max(samples) + 1e-9
    assert stats.repeats == len(samples)
    assert stats.mean == pytest.approx(np.mean(samples)) and stats.std == pytest.approx(np.std(samples), abs=1e-9)


def test_bad_arguments_name_the_value(model: tailor.ElasticModel) -> None:
    sub = model.space.smallest()
    with pytest.raises(ProfileError, match="unknown runtime 'tensorrt'"):
        latency(model, sub, runtime="tensorrt")
    with pytest.raises(ProfileError, match="unknown device 'tpu'"):
        latency(model, sub, device="tpu")
    with pytest.raises(ProfileError, match="precision"):
        latency(model, sub, runtime="onnxruntime", precision="fp16")
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ProfileError, match="batch_size"):
            latency(model, sub, batch_size=bad)
    with pytest.raises(ProfileError, match="batch_size"):
        peak_memory(model, sub, batch_size=0)
    with pytest.raises(ProfileError, match="threads"):
        latency(model, sub, threads=0)
    with pytest.raises(ProfileError, match="input_shape"):
        macs(model, sub, input_shape=(3, 0, 32))
    with pytest.raises(UnsupportedModelError, match="Conv2d"):
        params(torch.nn.Conv2d(3, 3, 3), sub)  # type: ignore[arg-type]


def test_a_subnet_outside_the_space_is_rejected_by_every_function(model: tailor.ElasticModel) -> None:
    outside = model.space.largest().replace(widths={"stage1.out": 0.3})
    foreign = tailor.create_model("small_cnn", num_classes=10).space.largest()
    for fn in (
        lambda s: params(model, s),
        lambda s: macs(model, s),
        lambda s: latency(model, s),
        lambda s: peak_memory(model, s),
        lambda s: energy(model, s),
    ):
        with pytest.raises(InvalidSubnetError, match=r"stage1\.out"):
            fn(outside)
        with pytest.raises(InvalidSubnetError):
            fn(foreign)


def test_peak_memory_is_measured_and_grows_with_batch_and_width(model: tailor.ElasticModel) -> None:
    small = peak_memory(model, model.space.smallest(), batch_size=1)
    large = peak_memory(model, model.space.largest(), batch_size=64)
    state = model.extract(model.space.smallest()).state_dict().values()
    assert small.weight_bytes == sum(t.numel() * t.element_size() for t in state)
    assert large.peak_bytes == large.weight_bytes + large.activation_bytes
    # batch 64 at full width: input (786 KB) and a 16x32x32 activation (4 MB) must both be resident at once
    assert large.activation_bytes > 64 * 16 * 32 * 32 * 4
    assert large.activation_bytes > small.activation_bytes
    assert large.device == "cpu" and "RSS" in large.method


def test_peak_memory_takes_batch_size_third_as_latency_does(model: tailor.ElasticModel) -> None:
    sub = model.space.smallest()
    third = peak_memory(model, sub, 8)
    assert third.activation_bytes > peak_memory(model, sub, 1).activation_bytes  # 8 inputs: more memory than 1
    with pytest.warns(DeprecationWarning, match="third argument is batch_size"):
        old = peak_memory(model, sub, (3, 16, 16))  # the earlier order: input_shape third
    assert old.weight_bytes == third.weight_bytes and old.activation_bytes > 0
    with pytest.raises(ProfileError, match="given twice"), pytest.warns(DeprecationWarning):
        peak_memory(model, sub, (3, 16, 16), input_shape=(3, 16, 16))


def test_energy_is_a_measurement_or_unavailable(model: tailor.ElasticModel) -> None:
    result = energy(model, model.space.smallest(), repeats=2)
    if energy_source() == "unavailable":
        assert result == "unavailable"
    else:
        assert isinstance(result, float) and math.isfinite(result) and result >= 0


def test_latency_table_measures_each_batch_size_from_one_export(model: tailor.ElasticModel) -> None:
    table = latency_table(model, model.space.smallest(), [1, 3], runtime="onnxruntime", warmup=0, repeats=3)
    assert sorted(table) == [1, 3]
    assert all(0 < s.p50 <= s.p90 <= s.p99 and s.repeats == 3 for s in table.values())
    with pytest.raises(ProfileError, match="batch_size must be a positive integer, got 0"):
        latency_table(model, model.space.smallest(), [1, 0])


def test_interleaved_measurement_takes_exactly_repeats_samples_in_rounds() -> None:
    small = tailor.create_model("small_cnn", num_classes=10).eval()
    runners = {
        name: prepare(small, sub, "torch")
        for name, sub in (("a", small.space.smallest()), ("b", small.space.largest()))
    }
    calls: list[tuple[int, int]] = []
    samples = interleaved_samples(
        runners, [1, 3], warmup=0, repeats=7, rounds=3, progress=lambda d, t: calls.append((d, t))
    )
    assert set(samples) == {"a", "b"} and all(sorted(per) == [1, 3] for per in samples.values())
    assert all(len(v) == 7 for per in samples.values() for v in per.values())
    assert calls == [(i, 12) for i in range(1, 13)]  # 3 rounds x 2 runners x 2 batch sizes
    stats = measure_interleaved(runners, [2], warmup=1, repeats=4, rounds=2)
    assert stats["b"][2].repeats == 4 and 0 < stats["b"][2].p50 <= stats["b"][2].p99
    with pytest.raises(ProfileError, match=r"rounds \(5\) must not exceed repeats \(4\)"):
        measure_interleaved(runners, [1], repeats=4, rounds=5)
    with pytest.raises(ProfileError, match="batch_size must be a positive integer, got 0"):
        measure_interleaved(runners, [1, 0])
    with pytest.raises(ProfileError, match="must not repeat"):
        measure_interleaved(runners, [2, 2])
    with pytest.raises(ProfileError, match="batch_size"):
        runners["a"].samples(-1)


def test_prepared_onnx_files_and_modules_run_on_their_runtime(model: tailor.ElasticModel, tmp_path) -> None:
    from tailor.export import to_onnx

    sub = model.space.smallest()
    path = to_onnx(model, sub, tmp_path / "m.onnx").path
    runner = prepare_onnx(path, (3, 32, 32))
    assert runner.runtime == "onnxruntime" and len(runner.samples(2, warmup=0, repeats=3)) == 3
    assert prepare_onnx(path, (3, 32, 32), runtime="openvino").runtime == "openvino"
    int8 = prepare_module(model.extract(sub).eval(), (3, 32, 32), "onnxruntime-int8")
    assert len(int8.samples(1, warmup=0, repeats=2)) == 2 and int8.info.precision == "int8"
    with pytest.raises(ProfileError, match="no ONNX model"):
        prepare_onnx(tmp_path / "missing.onnx", (3, 32, 32))
    with pytest.raises(ProfileError, match="'torch' does not run ONNX files"):
        prepare_onnx(path, (3, 32, 32), runtime="torch")
    with pytest.raises(ProfileError, match="unknown runtime 'cuda'"):
        prepare(model, sub, runtime="cuda")
    with pytest.raises(ProfileError, match="unknown runtime 'tvm'"):
        prepare_module(model.extract(sub), (3, 32, 32), runtime="tvm")
    with pytest.raises(InvalidSubnetError, match=r"stage1\.out"):
        prepare(model, sub.replace(widths={"stage1.out": 0.3}))


def test_each_call_is_timed_on_the_wall_and_the_thread_cpu_clock() -> None:
    small = tailor.create_model("small_cnn", num_classes=10).eval()
    runner = prepare(small, small.space.largest(), "onnxruntime", threads=1)
    timings = runner.timings(4, warmup=1, repeats=5)
    assert len(timings.wall_ms) == len(timings.cpu_ms) == 5
    assert all(0 < c <= w * 1.05 + 0.05 for w, c in zip(timings.wall_ms, timings.cpu_ms))  # CPU time within wall time
    assert timings.clock("cpu") is timings.cpu_ms and len(runner.samples(2, 0, 3, clock="cpu")) == 3
    both = interleaved_timings({"x": runner}, [1], warmup=0, repeats=4, rounds=2)
    assert len(both["x"][1].wall_ms) == len(both["x"][1].cpu_ms) == 4
    assert measure_interleaved({"x": runner}, [1], warmup=0, repeats=2, rounds=1, clock="cpu")["x"][1].repeats == 2
    with pytest.raises(ProfileError, match="unknown clock 'gpu'"):
        runner.samples(1, clock="gpu")
    pooled = prepare(small, small.space.largest(), "onnxruntime", threads=2)
    with pytest.raises(ProfileError, match="needs threads=1"):
        interleaved_samples({"y": pooled}, [1], repeats=1, rounds=1, clock="cpu")
    elsewhere = prepare(small, small.space.largest(), "openvino", threads=1)
    elsewhere.computes_on_calling_thread = False  # as a runtime computing on threads of its own
    with pytest.raises(ProfileError, match="does not run on the calling thread"):
        interleaved_samples({"z": elsewhere}, [1], repeats=1, rounds=1, clock="cpu")
