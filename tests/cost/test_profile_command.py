"""`tailor profile`: a profile JSON of chosen subnets of a checkpoint or registry model, and its error messages."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import tailor
from tailor.cli import main
from tailor.cost import Profile


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn trained for one epoch on digits (8x8 grey) with `tailor train`: its recipe records the data."""
    out = tmp_path_factory.mktemp("ck") / "ck"
    args = ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "1", "--batch-size", "64"]
    assert main([*args, "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def test_profile_of_a_checkpoint_with_accuracy(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    out = tmp_path / "profile.json"
    args = ["profile", str(checkpoint), "--subnet", "smallest,largest,uniform:0.5", "--random", "2", "--seed", "3"]
    args += [
        "--latency-batch",
        "1,4",
        "--warmup",
        "1",
        "--repeats",
        "3",
        "--accuracy",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    profile = Profile.load(out)
    space = tailor.load(checkpoint).space
    rng = random.Random(3)
    expected = [space.smallest(), space.largest(), space.uniform(0.5), space.sample(rng), space.sample(rng)]
    assert [e.subnet for e in profile.subnets] == expected
    assert profile.model == "small_cnn" and profile.runtime == "onnxruntime" and profile.threads == 1
    assert profile.input_shape == (1, 8, 8)  # the data's image size, not the model's default (1, 32, 32)
    assert profile.batch_sizes == [1, 4]
    smallest, largest = profile.subnets[0], profile.subnets[1]
    assert all(e.accuracy is not None and 0 <= e.accuracy <= 1 for e in profile.subnets)
    assert largest.accuracy > 0.6, "one epoch on digits must beat chance (0.1) by far at full width"
    assert largest.macs > smallest.macs and largest.params > smallest.params
    printed = capsys.readouterr().out
    assert all(e.id in printed for e in profile.subnets) and str(out) in printed


def test_profile_reads_subnets_from_a_file_keeps_their_ids_and_alternates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tailor.create_model("small_cnn").space
    entries = [
        {"id": "tiny", "subnet": space.smallest().to_dict()},
        {"id": "full", "subnet": space.largest().to_dict()},
    ]
    (tmp_path / "subs.json").write_text(json.dumps(entries))
    out = tmp_path / "p.json"
    args = ["profile", "small_cnn", "--subnet", f"{tmp_path / 'subs.json'},largest", "--runtime", "torch"]
    assert main([*args, "--rounds", "2", "--repeats", "4", "--warmup", "0", "--out", str(out), "--no-progress"]) == 0
    profile = Profile.load(out)
    assert profile.ids == ["tiny", "full"], "the repeated 'largest' is measured once"
    assert "1 repeated subnet" in capsys.readouterr().err
    assert profile.runtime == "torch" and profile.input_shape == (3, 32, 32) and profile.batch_sizes == [1, 8]
    assert all(e.accuracy is None for e in profile.subnets)
    # a profile is itself a valid subnet file
    again = tmp_path / "again.json"
    assert main(["profile", "small_cnn", "--subnet", str(out), "--latency-batch", "2", "--repeats", "2",
                 "--out", str(again), "--no-progress"]) == 0  # fmt: skip
    assert Profile.load(again).ids == ["tiny", "full"] and Profile.load(again).batch_sizes == [2]


def test_default_subnets_are_smallest_uniform_widths_and_largest(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "small_cnn", "--repeats", "1", "--warmup", "0", "--out", str(out), "--no-progress"]) == 0
    space = tailor.create_model("small_cnn").space
    subs = [e.subnet for e in Profile.load(out).subnets]
    assert subs[0] == space.smallest() and subs[-1] == space.largest() and space.uniform(0.5) in subs


BAD = [
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
    (["--runtime", "torch,torch"], "--runtime must not repeat"),
    (["--runtime", "torch,"], "expected comma-separated runtime names"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--precision", "fp16"], "runtime 'onnxruntime' supports precision ['fp32'], not 'fp16'"),
    (["--runtime", "torch", "--min-agreement", "2"], "--min-agreement must be a number in [0, 1], got 2.0"),
    (["--check-samples", "0"], "--check-samples must be a positive integer, got 0"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--latency-batch", "1,0"], "--latency-batch must be positive"),
    (["--latency-batch", "-4"], "--latency-batch must be positive"),
    (["--latency-batch", "1,x"], "'x' is not an integer"),
    (["--latency-batch", "8,8"], "must not repeat"),
    (["--subnet", "uniform:0.3"], "subnet 'uniform:0.3': no width dimension allows 0.3 (allowed: 0.25, 0.5, 0.75, 1)"),
    (["--subnet", "uniform:big"], "'big' is not a number"),
    (["--subnet", "medium"], "unknown subnet 'medium'"),
    (["--subnet", "missing.json"], "missing.json"),
    (["--repeats", "0"], "--repeats must be a positive integer, got 0"),
    (["--rounds", "9", "--repeats", "4"], "--rounds (9) must not exceed --repeats (4)"),
    (["--warmup", "-1"], "--warmup must be a non-negative integer, got -1"),
    (["--accuracy"], "--accuracy needs held-out data"),
    (["--data", "mnist"], "--data must be one of ['digits'"),
    (["--input-shape", "3,0,32"], "--input-shape must be positive"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_exits_2_with_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "small_cnn", *extra, "--out", str(out), "--no-progress"]) == 2  # fails before measuring
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_subnet_file_outside_the_space_or_an_unknown_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tailor.create_model("resnet20").space.largest()
    (tmp_path / "subs.json").write_text(json.dumps([foreign.to_dict()]))
    assert main(["profile", "small_cnn", "--subnet", str(tmp_path / "subs.json"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "entry 0" in err and err.count("\n") == 1
    assert main(["profile", "no_such_model", "--out", str(tmp_path / "p")]) == 2
    assert "neither a checkpoint directory nor a registered model" in capsys.readouterr().err


def test_profile_on_several_runtimes_checks_outputs_on_held_out_images(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    args = ["profile", str(checkpoint), "--subnet", "smallest,largest", "--runtime", "torch,torch-inplace,onnxruntime"]
    args += ["--latency-batch", "1,2", "--repeats", "4", "--warmup", "0", "--check-samples", "40", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    profile = Profile.load(out)
    assert list(profile.runtimes) == ["torch", "torch-inplace", "onnxruntime"]
    for entry in profile.subnets:
        assert set(entry.checks) == {"torch", "torch-inplace", "onnxruntime"}
        check = entry.checks["onnxruntime"]
        assert check.samples == 40 and check.inputs == "40 held-out test images" and check.within_tolerance
        assert entry.checks["torch-inplace"].max_abs_diff < 1e-5  # the supernet computes what its extraction does
        assert profile.runtime_of(entry.id) in profile.runtimes
    captured = capsys.readouterr()
    assert "per runtime (p50 ms" in captured.out and "* " in captured.out
    assert "p99 rests on 4 repeats" in captured.err and "plans with p50" in captured.err


def test_the_deprecated_backend_flag_still_profiles_one_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "small_cnn", "--subnet", "smallest", "--backend", "torch", "--repeats", "2",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert Profile.load(out).runtime == "torch"
    assert "--backend is deprecated; use --runtime" in capsys.readouterr().err


def test_a_device_without_its_runtime_or_gpu_exits_2_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    out = tmp_path / "p.json"
    assert main(["profile", "small_cnn", "--runtime", "torch", "--device", "cuda", "--out", str(out)]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["profile", "small_cnn", "--runtime", "openvino", "--device", "cuda", "--out", str(out)]) == 2
    assert "runs on ['cpu'], not on 'cuda'" in capsys.readouterr().err
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert main(["profile", "small_cnn", "--runtime", "onnxruntime", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tailor[cuda]" in err and err.count("\n") == 1
    assert not out.exists()
