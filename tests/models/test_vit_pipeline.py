"""A transformer supernet through the CNNs' pipeline, unchanged: train, profile, search, route, `tailor serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton

import tailor
from tailor.cost import Profile, build_profile, macs
from tailor.data import load_dataset
from tailor.route import Cascade, Confidence
from tailor.search import Evaluator, search
from tailor.train import TrainConfig, Trainer

#: A small ViT on 32x32 synthetic images: 16 patches of 8x8, 4 blocks of 2 heads, depth 2..4 (every other).
KWARGS = {"embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 8, "num_classes": 10}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[tailor.ElasticModel, object, object, Path]:
    """A ViT supernet trained one epoch (sandwich rule, distillation, AdamW), saved with `tailor.save`."""
    torch.manual_seed(0)
    train = load_dataset("synthetic", "train", n=256)
    test = load_dataset("synthetic", "test", n=256)
    model = tailor.create_model("vit_micro", **KWARGS)
    config = TrainConfig(epochs=1, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.05, warmup_epochs=0.5)
    Trainer(model, train, config, device="cpu", progress=False).fit()
    model.eval()
    checkpoint = tmp_path_factory.mktemp("vit") / "ck"
    tailor.save(model, checkpoint)
    return model, train, test, checkpoint


def test_profile_search_and_cascade(trained: tuple) -> None:
    model, train, test, _ = trained
    space = model.space
    subs = [space.smallest(), space.from_wm([0.5] * space.search_dim), space.largest()]
    evaluator = Evaluator(model, train, test, calib_batches=1, batch_size=64)
    profile = build_profile(model, subs, (1, 4), "onnxruntime", warmup=1, repeats=3,
                            accuracy=lambda s: evaluator.metrics(s, ("accuracy",))["accuracy"])  # fmt: skip
    entries = {entry.subnet: entry for entry in profile.subnets}
    work = [entries[s].macs for s in subs]
    assert work == sorted(work) and len(set(work)) == 3
    assert work[-1] == macs(model, space.largest()) and entries[subs[-1]].params == sum(p.numel() for p in model.parameters())
    assert all(entries[s].latency_ms[b].p50 > 0 for s in subs for b in (1, 4))
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))).to_dict() == profile.to_dict()

    front = search(model, evaluator, objectives=("accuracy", "macs"), algorithm="random", budget=6, seed=0,
                   front_metrics=("accuracy", "macs", "params"))
    assert len(front) >= 1 and all(c.subnet in space for c in front)
    costs = [c.metrics["macs"] for c in front]
    accuracies = [c.metrics["accuracy"] for c in front]
    assert costs == sorted(costs) and accuracies == sorted(accuracies)  # a front: more MACs buy accuracy

    cascade = Cascade(model, [space.smallest(), space.largest()], Confidence(0.5), costs=[1.0, 4.0])
    x, _ = next(iter(torch.utils.data.DataLoader(test, batch_size=16)))
    result = cascade.run(x)
    with torch.no_grad(), model.activated(space.largest()):
        largest = model(x).argmax(1)
    escalated = result.stage == 1
    assert torch.equal(result.predictions[escalated], largest[escalated])


def test_tailor_serve_answers_tritonclient_with_the_named_subnet(trained: tuple, tmp_path: Path) -> None:
    model, _, _, checkpoint = trained
    space = model.space
    subs = {"small": space.smallest(), "full": space.largest()}
    profile = build_profile(model, subs.values(), (1, 2, 4), "torch", warmup=1, repeats=3,
                            ids={s: name for name, s in subs.items()}, accuracy={subs["small"]: 0.5, subs["full"]: 0.6})  # fmt: skip
    profile_path = tmp_path / "profile.json"
    profile.save(profile_path)
    command = [sys.executable, "-m", "tailor.cli", "serve", "--checkpoint", str(checkpoint), "--profile",
               str(profile_path), "--port", "0", "--workers", "1", "--slo-ms", "20000", "--log-level", "error"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(process.stdout.readline())
        assert set(ready["subnets"]) == {"small", "full"}
        client = triton.InferenceServerClient(ready["url"].removeprefix("http://"), network_timeout=60.0)
        assert client.is_model_ready(ready["serving"])
        x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(ready["serving"], [tensor], parameters={"deadline_ms": 15000})
        chosen = result.get_response()["parameters"]["subnet"]
        reloaded = tailor.load(checkpoint)
        with torch.inference_mode(), reloaded.activated(subs[chosen]):
            expected = reloaded(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode == 0
