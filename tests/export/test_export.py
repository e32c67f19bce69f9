"""tailor.export: BatchNorm folding, ONNX export (dynamic batch), int8 quantization, accuracy comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.errors import InvalidSubnetError, ProfileError, UnsupportedModelError
from tailor.export import compare_accuracy, export_module, fold_batchnorm, quantize_int8, run_onnx, to_onnx
from tailor.export.ort import GRAPH_OPTIMIZATION_LEVELS, providers_for, session


def _model(name: str = "resnet20") -> tailor.ElasticModel:
    """A model with random (not identity) BN statistics and affine terms, so folding mistakes show."""
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[tailor.ElasticModel, tailor.Subnet, Path]:
    model = _model()
    sub = model.space.sample(1)
    path = tmp_path_factory.mktemp("onnx") / "sub.onnx"
    to_onnx(model, sub, path)
    return model, sub, path


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(["resnet20", "small_cnn", "mobilenet_v3_small"]))
def test_folding_removes_every_batchnorm_and_keeps_outputs(seed: int, name: str) -> None:
    model = _model(name)
    sub = model.space.sample(seed)
    static = model.extract(sub).eval()
    folded, count = fold_batchnorm(static)
    assert count > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in static.modules())  # the input is not modified
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), static(x), atol=1e-4, rtol=1e-4)


def test_onnx_matches_pytorch_at_batch_1_and_5_without_batchnorm_nodes(exported: tuple) -> None:
    import onnx

    model, sub, path = exported
    graph = onnx.load(str(path)).graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    static = model.extract(sub).eval()
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = static(x).numpy()
        got = run_onnx(path, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_rejects_bad_input_and_leaves_no_file(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(InvalidSubnetError, match=r"stage2\.out"):
        to_onnx(model, model.space.largest().replace(widths={"stage2.out": 0.6}), tmp_path / "x.onnx")
    with pytest.raises(ProfileError, match="opset"):
        to_onnx(model, model.space.largest(), tmp_path / "x.onnx", opset=3)
    assert list(tmp_path.iterdir()) == []


def _train_briefly(model: tailor.ElasticModel, sub: tailor.Subnet, x: torch.Tensor, y: torch.Tensor) -> None:
    """A few steps on a separable toy task so the logits carry a clear decision, then BN statistics."""
    model.activate(sub)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def test_static_int8_runs_and_agrees_with_fp32_on_most_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tailor.create_model("small_cnn", num_classes=4)
    sub = model.space.largest()
    y = torch.arange(64) % 4
    x = torch.randn(64, 3, 32, 32) * 0.3 + y.view(-1, 1, 1, 1).float() - 1.5  # class = mean brightness
    _train_briefly(model, sub, x, y)
    fp32 = to_onnx(model, sub, tmp_path / "fp32.onnx").path
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", [x[:32], (x[32:], y[32:])], mode="static")
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = compare_accuracy(fp32, int8, [(x[:32], y[:32]), (x[32:], y[32:])])
    assert result.samples == 64
    assert result.fp32 > 0.5  # the toy task was learnt
    assert result.agreement >= 0.8
    assert result.drop == pytest.approx(result.fp32 - result.int8)
    assert set(result.to_dict()) == {"fp32", "int8", "drop", "agreement", "samples"}


def test_dynamic_int8_quantizes_weights_without_calibration(exported: tuple, tmp_path: Path) -> None:
    import onnx

    _, _, path = exported
    out = quantize_int8(path, tmp_path / "dyn.onnx", mode="dynamic")
    assert "ConvInteger" in {n.op_type for n in onnx.load(str(out)).graph.node}
    x = torch.randn(4, 3, 32, 32)
    got, ref = run_onnx(out, x), run_onnx(path, x)
    assert got.shape == ref.shape == (4, 10)
    assert np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


def test_quantize_rejects_bad_arguments(exported: tuple, tmp_path: Path) -> None:
    _, _, path = exported
    with pytest.raises(ProfileError, match="'float16'"):
        quantize_int8(path, tmp_path / "q.onnx", [torch.zeros(1, 3, 32, 32)], mode="float16")
    with pytest.raises(ProfileError, match="calibration"):
        quantize_int8(path, tmp_path / "q.onnx", [], mode="static")
    with pytest.raises(ProfileError, match="calibration"):
        quantize_int8(path, tmp_path / "q.onnx", None, mode="static")
    with pytest.raises(ProfileError, match="missing.onnx"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", mode="dynamic")
    with pytest.raises(ProfileError, match="empty"):
        compare_accuracy(path, path, [])


class _SingularValues(torch.nn.Module):
    """A block that scales by singular values: `torch.linalg.svdvals` has no ONNX export."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = x * torch.linalg.svdvals(x.mean(1)).mean()
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_a_subnet_torch_cannot_export_raises_unsupported_model_naming_the_op(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    net = tailor.elasticize(_SingularValues().eval(), example_inputs=(torch.randn(2, 3, 16, 16),))
    sub = net.space.largest()
    with pytest.raises(UnsupportedModelError) as raised:
        to_onnx(net, sub, tmp_path / "svd.onnx", input_shape=(3, 16, 16))
    message = str(raised.value)
    assert sub.id in message and "UnsupportedOperatorError" in message and "linalg_svdvals" in message
    assert len(message) < 1200 and "[Caused by" not in message
    assert "Torch IR graph" not in capfd.readouterr().out, "the exporter's graph dump is not printed"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnsupportedModelError, match=r"ONNX export of \w+ failed: UnsupportedOperatorError: .*svdvals"):
        export_module(net.extract(sub), tmp_path / "m.onnx", (3, 16, 16))


def test_sessions_take_their_settings_from_the_caller(exported: tuple) -> None:
    model, sub, path = exported
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        expected = model.extract(sub).eval()(x).numpy()
    for level in GRAPH_OPTIMIZATION_LEVELS:
        got = run_onnx(path, x, graph_optimization=level, providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert session(path, 1, graph_optimization="basic").get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ProfileError, match="graph_optimization 'max'"):
        run_onnx(path, x, graph_optimization="max")
    with pytest.raises(ProfileError, match="not in this onnxruntime build"):
        run_onnx(path, x, providers=["NoSuchExecutionProvider"])


def test_a_gpu_provider_missing_from_this_build_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProfileError, match=r"onnxruntime-gpu .*tailor\[cuda\]"):
        providers_for("cuda")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for("cuda:1") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: both)
    assert providers_for("cuda") == both and providers_for("cpu") == ["CPUExecutionProvider"]
