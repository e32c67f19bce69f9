"""The chain a user runs, on the command line: train -> search -> profile --subnet front.json -> export -> serve
-> tritonclient infer -> replay --sim; and a data set whose channels do not fit the model is one line, exit 2.

Small and fast: small_cnn on digits (1-channel 8x8 images), one epoch, a handful of subnets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

import tailor
from tailor.cli import main
from tailor.cost import Profile
from tailor.data import load_dataset
from tailor.search import ParetoFront

RECIPE = """
[model]
name = "small_cnn"
kwargs = { channels = [8, 16, 16] }
[data]
name = "digits"
[train]
epochs = 1
batch_size = 64
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tailor train --config recipe.toml`: the chain's first step (digits, 1 channel)."""
    root = tmp_path_factory.mktemp("chain")
    (root / "recipe.toml").write_text(RECIPE)
    assert main(["train", "--config", str(root / "recipe.toml"), "--out", str(root / "ck"), "--no-progress",
                 "--threads", "1"]) == 0  # fmt: skip
    return root


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_train_search_profile_export_serve_infer_replay(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck, front_path, prof = trained / "ck", trained / "front.json", trained / "prof.json"
    summary = json.loads(_run(["search", str(ck), "--out", str(front_path), "--algorithm", "random", "--budget", "5",
                               "--repeats", "5", "--no-progress"], capsys))  # fmt: skip
    front = ParetoFront.load(front_path)
    assert len(front) >= 1 and [e["id"] for e in summary["front"]] == [e.subnet.id for e in front]

    # the front feeds on: profile the front's subnets (with their accuracy), export one of them
    _run(["profile", str(ck), "--subnet", str(front_path), "--latency-batch", "1,4", "--warmup", "1", "--repeats",
          "5", "--accuracy", "--out", str(prof), "--no-progress"], capsys)  # fmt: skip
    profile = Profile.load(prof)
    assert [e.subnet for e in profile.subnets] == front.subnets
    assert profile.input_shape == (1, 8, 8) and all(e.accuracy is not None for e in profile.subnets)
    chosen = front[-1].subnet
    report = json.loads(_run(["export", str(ck), "--subnet", f"{front_path}#-1", "--out",
                              str(trained / "sub.onnx"), "--no-progress"], capsys))  # fmt: skip
    assert report["id"] == chosen.id and (trained / "sub.onnx").is_file()
    assert report["max_abs_diff_vs_pytorch"] < 1e-3 and report["accuracy"] is not None

    # serve the checkpoint with that profile; a standard OIP client gets answers
    command = [sys.executable, "-m", "tailor.cli", "serve", str(ck), "--profile", str(prof),
               "--port", "0", "--workers", "1", "--slo-ms", "5000", "--log-level", "error"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(server.stdout.readline() or "{}")
        assert ready.get("subnets"), server.stderr.read()
        test = load_dataset("digits", "test")
        images = test.normalize(test.images[:4]).numpy().astype(np.float32)  # the profile goes up to batch 4
        with triton.InferenceServerClient(ready["url"].removeprefix("http://"), network_timeout=60.0) as client:
            tensor = triton.InferInput("input", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images)
            result = client.infer(ready["serving"], [tensor])
        logits = result.as_numpy("logits")
        assert logits.shape == (4, 10)
        served = result.get_response()["parameters"]["subnet"]
        assert served in {e.id for e in profile.subnets}
        model = tailor.load(ck)  # the server answers what the checkpoint computes for the subnet it chose
        model.activate(next(e.subnet for e in profile.subnets if e.id == served))
        import torch

        with torch.inference_mode():
            expected = model(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    replay = json.loads(_run(["replay", "--sim", "--profile", str(prof), "--trace", "poisson", "--rate", "50",
                              "--duration", "2", "--slo-ms", "100", "--json", "--no-progress"], capsys))  # fmt: skip
    assert replay and "error" not in json.dumps(replay).lower()


DATA_COMMANDS = [
    ["calibrate", "CK", "--random", "1"],
    ["profile", "CK", "--subnet", "largest", "--out", "OUT/p.json"],
    ["export", "CK", "--out", "OUT/m.onnx"],
    ["search", "CK", "--out", "OUT/f.json", "--budget", "2"],
    ["route", "CK", "--cost", "macs"],
]


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=[c[0] for c in DATA_COMMANDS])
def test_data_whose_channels_do_not_fit_is_one_line_exit_2(
    trained: Path, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(trained / "ck") if a == "CK" else a.replace("OUT", str(tmp_path)) for a in command]
    capsys.readouterr()
    assert main([*args, "--data", "synthetic", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "--data synthetic has 3-channel images but the model takes 1 channel" in err
    assert "trained on digits; pass --data digits" in err
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_calibrate_random_keeps_the_subnets_calibrated_before(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    before = tailor.load(trained / "ck")
    keys = before.calibrated_subnet_keys()
    assert keys
    out = tmp_path / "ck2"
    _run(["calibrate", str(trained / "ck"), "--random", "3", "--seed", "5", "--out", str(out), "--no-progress"], capsys)
    after = tailor.load(out)
    assert after.calibrated_subnet_keys() >= keys and len(after.calibrated_subnet_keys()) >= len(keys) + 3
    old, new = load_file(str(trained / "ck" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = [k for k in old if any(key in k for key in keys) and not np.array_equal(old[k].numpy(), new[k].numpy())]
    assert changed == [], f"statistics of subnets calibrated before changed: {changed[:3]}"
