"""`tailor export`: a subnet as ONNX (fp32, static or dynamic int8) with the held-out accuracy drop reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tailor
from tailor.cli import main
from tailor.data import load_dataset
from tailor.export import run_onnx
from tailor.export._cli import calibration_batches


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn trained for one epoch on digits (8x8 grey) with `tailor train`: its recipe records the data."""
    out = tmp_path_factory.mktemp("ck") / "ck"
    args = ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "1", "--batch-size", "64"]
    assert main([*args, "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def _ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_static_int8_export_of_a_checkpoint_reports_the_accuracy_drop(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--subnet", "largest", "--int8", "static", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    int8 = tmp_path / "model.int8.onnx"
    assert report["onnx"] == str(out) and report["int8"]["path"] == str(int8) and report["int8"]["mode"] == "static"
    assert "BatchNormalization" not in _ops(out) and {"QuantizeLinear", "DequantizeLinear"} <= _ops(int8)
    assert report["input_shape"] == [1, 8, 8] and report["folded_batchnorms"] > 0
    acc = report["accuracy"]
    test = load_dataset("digits", "test")
    assert acc["samples"] == len(test) and acc["data"] == "digits"
    assert acc["fp32"] > 0.6, "one epoch on digits must beat chance by far"
    assert acc["drop"] == pytest.approx(acc["fp32"] - acc["int8"]) and abs(acc["drop"]) < 0.1
    assert "drop" in captured.err
    # the fp32 file computes what the supernet computes for that subnet after the same calibration
    model = tailor.load(checkpoint)
    batches = calibration_batches(load_dataset("digits", "train"), batch_size=64, batches=8)
    tailor.calibrate(model, [model.space.largest()], batches, batches=len(batches))
    x = test.normalize(test.images[:16])
    model.eval()
    with torch.no_grad(), model.activated(model.space.largest()):
        expected = model(x).numpy()
    np.testing.assert_allclose(run_onnx(out, x), expected, atol=1e-4, rtol=0)


def test_dynamic_int8_export_of_a_registry_model_needs_no_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub.onnx"
    assert main(["export", "small_cnn", "--subnet", "uniform:0.5", "--int8", "dynamic", "--int8-out",
                 str(tmp_path / "q.onnx"), "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    space = tailor.create_model("small_cnn").space
    assert tailor.Subnet.from_dict(report["subnet"]) == space.uniform(0.5)
    assert report["accuracy"] is None and report["input_shape"] == [3, 32, 32]
    assert "ConvInteger" in _ops(tmp_path / "q.onnx")
    for batch in (1, 5):  # dynamic batch axis
        logits = run_onnx(tmp_path / "q.onnx", np.zeros((batch, 3, 32, 32), np.float32))
        assert logits.shape == (batch, 10)


def test_fp32_export_of_a_registry_model_for_given_data_reports_its_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "small_cnn", "--data", "digits", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [1, 8, 8]  # built for the data: one channel, its image size
    assert report["int8"] is None and set(report["accuracy"]) == {"fp32", "samples", "data"}
    assert 0 <= report["accuracy"]["fp32"] <= 1 and report["accuracy"]["samples"] == 359


BAD = [
    (["--int8", "float16"], "--int8 must be one of ['static', 'dynamic'], got 'float16'"),
    (["--int8", "static"], "--int8 static calibrates on training images: pass --data"),
    (["--subnet", "smallest,largest"], "names 2 subnets; export takes exactly one"),
    (["--subnet", "uniform:0.6"], "--subnet: subnet 'uniform:0.6': no width dimension allows 0.6"),
    (["--subnet", "largest@stage1"], "--subnet: 'largest@stage1' names an early exit"),
    (["--opset", "3"], "opset must be an integer >= 9"),
    (["--data", "digits", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--data", "digits", "--calib-batches", "0"], "--calib-batches must be a positive integer, got 0"),
    (["--data", "cifar10"], "root"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--int8", "dynamic", "--int8-out", "OUT"], "would overwrite the fp32 model"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    extra = [str(out) if e == "OUT" else e for e in extra]
    assert main(["export", "small_cnn", *extra, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []
