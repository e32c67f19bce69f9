"""tailor.cost.runtimes: the registry, each runtime's outputs and records, device synchronisation, output checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tailor
from tailor.cost import build_profile, latency
from tailor.cost.runtimes import (
    OutputCheck,
    PreparedModel,
    Runtime,
    RuntimeUnavailableError,
    Tolerance,
    compare_outputs,
    get_runtime,
    list_runtimes,
    register_runtime,
)
from tailor.cost.runtimes.base import _RUNTIMES, RuntimeInfo
from tailor.cost.runtimes.torch_eager import TorchPrepared, keep_freed_memory, prepared_count
from tailor.errors import InvalidSubnetError, ProfileError, SubnetNormFallbackWarning

FP32 = ["torch", "torch-inplace", "onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def model() -> tailor.ElasticModel:
    torch.manual_seed(0)
    return tailor.create_model("small_cnn", num_classes=10).eval()


def _reference(model: tailor.ElasticModel, sub: tailor.Subnet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.extract(sub).eval()(torch.from_numpy(x)).numpy()


def test_every_runtime_of_the_issue_is_registered_and_unknown_names_are_listed() -> None:
    assert {"torch", "torch-inplace", "torch-compile", "onnxruntime", "onnxruntime-int8", "openvino"} <= set(
        list_runtimes()
    )
    with pytest.raises(ProfileError, match=r"unknown runtime 'tvm'; expected one of \[.*'onnxruntime'"):
        get_runtime("tvm")
    with pytest.raises(ProfileError, match="unknown option"):
        get_runtime("onnxruntime", graph_level="all")
    with pytest.raises(ProfileError, match="graph_optimization 'max'"):
        get_runtime("onnxruntime", graph_optimization="max")
    with pytest.raises(ProfileError, match=r"mode must be one of \[.*\], got 'fastest'"):
        get_runtime("torch-compile", mode="fastest")
    configured = get_runtime("onnxruntime", graph_optimization="basic")
    assert get_runtime(configured) is configured and configured.options["graph_optimization"] == "basic"


@pytest.mark.parametrize("name", FP32)
def test_fp32_runtimes_compute_what_the_extracted_subnet_computes(model: tailor.ElasticModel, name: str) -> None:
    sub = model.space.sample(3)
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    prepared = get_runtime(name).prepare(model, sub, threads=1)
    try:
        out = prepared.run(x)
        assert out.dtype == np.float32 and out.shape == (5, 10)
        np.testing.assert_allclose(out, _reference(model, sub, x), atol=1e-4, rtol=0)
        np.testing.assert_allclose(prepared.run(torch.from_numpy(x)), out, atol=1e-6)  # torch input as well
        info = prepared.info
        assert (info.runtime, info.precision, info.device, info.threads) == (name, "fp32", "cpu", 1)
        assert info.version and info.version != "unknown"
        with pytest.raises(ProfileError, match=r"expected a batch of shape \(N, 3, 32, 32\)"):
            prepared.run(x[:, :, :16])
    finally:
        prepared.release()


def test_int8_runs_the_quantized_export_and_records_its_calibration(model: tailor.ElasticModel) -> None:
    sub = model.space.largest()
    x = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    prepared = get_runtime("onnxruntime-int8").prepare(model, sub)
    check = compare_outputs(prepared.run(x), _reference(model, sub, x), Tolerance())
    assert prepared.info.precision == "int8" and prepared.info.options["calibration"] == "random (timing only)"
    assert 0 < check.max_abs_diff < 0.5, "int8 is close to fp32 but not equal"
    with pytest.raises(ProfileError, match="supports precision \\['int8'\\], not 'fp32'"):
        get_runtime("onnxruntime-int8").prepare(model, sub, precision="fp32")


def test_openvino_is_pinned_to_fp32_unless_asked_and_records_it(model: tailor.ElasticModel) -> None:
    prepared = get_runtime("openvino").prepare(model, model.space.smallest())
    assert prepared.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert prepared.info.precision == "fp32" and prepared.info.options["performance_hint"] == "LATENCY"
    assert prepared.computes_on_calling_thread  # one thread: OpenVINO infers on the caller's thread
    assert not get_runtime("openvino").prepare(model, model.space.smallest(), threads=2).computes_on_calling_thread
    with pytest.raises(ProfileError, match="supports precision"):
        get_runtime("openvino").prepare(model, model.space.smallest(), precision="int8")


def test_torch_compile_compiles_at_prepare_and_matches_eager(model: tailor.ElasticModel) -> None:
    # aot_eager runs dynamo and AOTAutograd without Inductor's code generation (tens of seconds per subnet)
    runtime = get_runtime("torch-compile", compiler="aot_eager")
    sub = model.space.smallest()
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    prepared = runtime.prepare(model, sub)
    assert prepared.prepare_seconds is not None and prepared.prepare_seconds > 0
    np.testing.assert_allclose(prepared.run(x), _reference(model, sub, x), atol=1e-5)
    assert prepared.info.options == {"mode": "default", "compiler": "aot_eager", "dynamic": False, "allocator": "keep"}
    assert latency(model, sub, 2, runtime, warmup=1, repeats=3).repeats == 3


def test_in_place_subnets_share_the_supernet_and_switch_per_run() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).train()
    before = model.active_subnet
    runtime = get_runtime("torch-inplace")
    subs = [model.space.smallest(), model.space.uniform(0.5), model.space.largest()]
    prepared = [runtime.prepare(model, s) for s in subs]
    assert all(p.module is model for p in prepared), "no copy of the weights per subnet"
    assert not model.training
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for p, s in zip([*prepared, *reversed(prepared)], [*subs, *reversed(subs)]):
        np.testing.assert_allclose(p.run(x), _reference(model, s, x), atol=1e-5)
        assert model.active_subnet == model.space.canonical(s)
    for p in reversed(prepared):
        p.release()
    assert model.training and model.active_subnet == before
    with pytest.raises(InvalidSubnetError, match=r"stage1\.out"):
        runtime.prepare(model, subs[0].replace(widths={"stage1.out": 0.3}))
    with pytest.raises(ProfileError, match="supports precision \\['fp32'\\]"):
        runtime.prepare(model, subs[0], precision="bf16")


def test_in_place_weight_cache_holds_a_slice_for_every_prepared_subnet() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = list(dict.fromkeys(model.space.sample(i) for i in range(40)))[:12]
    prepared = [get_runtime("torch-inplace").prepare(model, s) for s in subs]
    assert prepared_count(model) == 12
    op = next(m for _, m in model.elastic_layers() if hasattr(m, "cache_entries"))
    assert op.cache_entries >= 12
    x = np.zeros((1, 3, 32, 32), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        for p in [*prepared, *prepared]:
            p.run(x)
    assert len(op._eval_cache) <= op.cache_entries
    versions = dict(op._eval_cache)
    for p in prepared:
        p.run(x)
    assert all(op._eval_cache[k] is v for k, v in versions.items()), "cycling through them copies nothing again"


def test_gpu_runs_are_synchronised_after_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch of a torch runtime, checked on CPU: `run` waits for the device before returning."""
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    prepared = TorchPrepared(module, RuntimeInfo("torch", device="cpu", threads=1), (3, 2, 2), torch.device("cpu"),
                             torch.float32)  # fmt: skip
    prepared._cuda = True
    timings = prepared.timings(2, warmup=1, repeats=3)
    assert len(timings.wall_ms) == 3 and len(calls) == 4  # every call, the warm-up included


def test_a_cuda_device_without_a_gpu_is_a_clear_error(model: tailor.ElasticModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("torch", "torch-inplace", "torch-compile"):
        with pytest.raises(RuntimeUnavailableError, match="torch sees no CUDA GPU"):
            get_runtime(name).prepare(model, model.space.smallest(), device="cuda")
    with pytest.raises(ProfileError, match="runs on \\['cpu'\\], not on 'cuda:0'"):
        get_runtime("openvino").prepare(model, model.space.smallest(), device="cuda:0")
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailableError, match=r"'onnxruntime'.*onnxruntime-gpu"):
        get_runtime("onnxruntime").prepare(model, model.space.smallest(), device="cuda")
    with pytest.raises(ProfileError, match="unknown device 'tpu'"):
        get_runtime("torch").prepare(model, model.space.smallest(), device="tpu")


class _ChannelsLastRuntime(Runtime):
    """A runtime in a few lines, as a user adds one: eager PyTorch in channels-last memory format."""

    name = "test-channels-last"
    description = "eager PyTorch, channels-last"

    def prepare_module(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        dev, threads, precision = self.resolve(device, threads, precision)
        module = module.to(memory_format=torch.channels_last)
        return TorchPrepared(module, self.info(dev, threads, precision), input_shape, dev, torch.float32)


class _MissingRuntime(_ChannelsLastRuntime):
    name = "test-missing"
    requires = ("tailor_test_no_such_package",)
    extra = "nosuch"


def test_a_new_runtime_is_one_class_and_every_consumer_can_use_it(model: tailor.ElasticModel) -> None:
    register_runtime(_ChannelsLastRuntime)
    register_runtime(_MissingRuntime)
    try:
        assert "test-channels-last" in list_runtimes() and "test-missing" not in list_runtimes(available=True)
        sub = model.space.smallest()
        assert latency(model, sub, 2, "test-channels-last", warmup=0, repeats=2).repeats == 2
        profile = build_profile(model, [sub], [1], runtime=["test-channels-last", "torch"], warmup=0, repeats=2)
        assert profile[sub.id].checks["test-channels-last"].within_tolerance
        assert tailor.cost.LatencyTable(runtime="test-channels-last", repeats=1, warmup=0).estimate(model, sub) > 0
        with pytest.raises(RuntimeUnavailableError, match=r"'tailor_test_no_such_package'.*pip install 'tailor\[nosuch\]'"):
            latency(model, sub, runtime="test-missing")
        with pytest.raises(ProfileError, match="already registered"):

            @register_runtime
            class Again(_ChannelsLastRuntime):
                description = "another class under a taken name"
    finally:
        _RUNTIMES.pop("test-channels-last", None)
        _RUNTIMES.pop("test-missing", None)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0, 0.01),
    st.floats(0.1, 20),
    st.integers(0, 8),
    st.sampled_from([Tolerance(), Tolerance(1e-2, 0.0, 0.9), Tolerance(0.0, 1e-3, 1.0)]),
)
def test_an_output_check_passes_exactly_when_both_limits_hold(noise: float, scale: float, flips: int, tol: Tolerance) -> None:
    rng = np.random.default_rng(int(noise * 1e6) + flips)
    reference = rng.standard_normal((16, 10)) * scale
    outputs = reference + rng.uniform(-noise, noise, reference.shape)
    for row in range(flips):  # make the runtime pick another class on `flips` rows
        outputs[row] = np.roll(reference[row], 1)
    check = compare_outputs(outputs, reference, tol, "test")
    diff = float(np.abs(outputs - reference).max())
    agreement = float((outputs.argmax(1) == reference.argmax(1)).mean())
    assert check.max_abs_diff == pytest.approx(diff) and check.top1_agreement == agreement
    assert check.within_tolerance == (diff <= tol.atol + tol.rtol * np.abs(reference).max() and agreement >= tol.min_top1_agreement)
    assert OutputCheck.from_dict(check.to_dict()) == check
    nan = compare_outputs(np.full_like(reference, np.nan), reference, tol)
    assert not nan.within_tolerance


def test_tolerances_are_checked() -> None:
    with pytest.raises(ProfileError, match="atol"):
        Tolerance(atol=-1.0)
    with pytest.raises(ProfileError, match="min_top1_agreement"):
        Tolerance(min_top1_agreement=1.5)


def test_torch_runtimes_keep_freed_memory_for_reuse_and_record_it(model: tailor.ElasticModel) -> None:
    import ctypes.util

    glibc = ctypes.util.find_library("c") is not None and hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt")
    prepared = get_runtime("torch").prepare(model, model.space.smallest())
    expected = "keep" if glibc else prepared.info.options["allocator"]
    assert prepared.info.options["allocator"] == expected and keep_freed_memory() == expected
    if glibc:  # mallopt cannot be undone: "system" afterwards records the process as it is
        assert get_runtime("torch", allocator="system").prepare(model, model.space.smallest()).info.options == {
            "allocator": "keep"
        }
    with pytest.raises(ProfileError, match=r"allocator must be one of \['keep', 'system'\], got 'jemalloc'"):
        get_runtime("torch-inplace", allocator="jemalloc")
