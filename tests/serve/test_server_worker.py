"""The worker side without HTTP: `ModelRunner` on both runtimes, and a worker pool that cannot load its model."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
from test_server_support import reference_outputs, shared_artifacts

from tailor.errors import InvalidSubnetError, ProfileError
from tailor.serve.server.app import resolve_runtime
from tailor.serve.server.worker import ModelRunner, WorkerPool, WorkerStartError


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


def test_both_runtimes_compute_what_the_supernet_computes(artifacts: tuple[Path, Path, dict]) -> None:
    checkpoint, _, subnets = artifacts
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    in_place = ModelRunner(checkpoint, subnets, runtime="torch")
    sessions = ModelRunner(checkpoint, subnets, runtime="onnxruntime")
    for subnet_id, sub in subnets.items():
        expected = reference_outputs(checkpoint, sub, x)
        torch_out, torch_ms = in_place.run(subnet_id, x)
        ort_out, ort_ms = sessions.run(subnet_id, x)
        np.testing.assert_allclose(torch_out, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ort_out, expected, rtol=1e-4, atol=1e-4)  # BatchNorm folded: rounding differs
        assert torch_ms > 0 and ort_ms > 0
    assert in_place.warmup((1, 2)) == (10,) and sessions.warmup((1,)) == (10,)
    assert in_place.uncalibrated() == []
    with pytest.raises(InvalidSubnetError, match="subnet 'huge' is not served"):
        in_place.run("huge", x)


def test_a_subnet_outside_the_space_is_refused_at_load(artifacts: tuple[Path, Path, dict]) -> None:
    checkpoint, _, subnets = artifacts
    wrong = subnets["full"].replace(widths={"stage1.out": 0.3})
    with pytest.raises(InvalidSubnetError, match="subnet 'odd' does not fit the checkpoint's space"):
        ModelRunner(checkpoint, {"odd": wrong})
    with pytest.raises(ValueError, match="runtime 'tensorrt'"):
        ModelRunner(checkpoint, subnets, runtime="tensorrt")


def test_the_runtime_follows_the_profile_unless_told(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_runtime(None, "torch") == "torch"
    assert resolve_runtime(None, "onnxruntime") == "onnxruntime"
    with pytest.raises(ProfileError, match="backend 'onnxruntime-int8', which the server cannot run"):
        resolve_runtime(None, "onnxruntime-int8")
    with caplog.at_level(logging.WARNING, logger="tailor.serve"):
        assert resolve_runtime("onnxruntime", "torch") == "onnxruntime"
    assert "plans with latencies of another runtime" in caplog.text


def test_a_worker_that_cannot_load_the_model_fails_the_start(tmp_path: Path, artifacts: tuple[Path, Path, dict]) -> None:
    _, _, subnets = artifacts

    async def start() -> None:
        pool = WorkerPool(tmp_path / "missing", subnets, workers=1, start_timeout_s=120)
        await pool.start()

    with pytest.raises(WorkerStartError, match="worker could not start: CheckpointError: .*missing.* not a directory"):
        asyncio.run(start())
