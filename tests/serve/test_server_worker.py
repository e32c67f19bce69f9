"""The worker side without HTTP: `ModelRunner` on the registry's runtimes (one each, or mixed per subnet), the
runtime each subnet is served on, and a worker pool that cannot load its model."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
from test_server_support import reference_outputs, shared_artifacts

from tailor.cost.profile import Profile
from tailor.errors import InvalidSubnetError
from tailor.serve.profile import ServingProfile
from tailor.serve.server.app import serving_runtimes
from tailor.serve.server.worker import ModelRunner, WorkerPool, WorkerStartError


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


def test_every_runtime_computes_what_the_supernet_computes(artifacts: tuple[Path, Path, dict]) -> None:
    checkpoint, _, subnets = artifacts
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    in_place = ModelRunner(checkpoint, subnets, runtime="torch-inplace")
    sessions = ModelRunner(checkpoint, subnets, runtime="onnxruntime")
    mixed = ModelRunner(checkpoint, subnets, runtime={"small": "onnxruntime", "half": "torch", "full": "openvino"})
    assert {sid: p.info.runtime for sid, p in mixed.prepared.items()} == mixed.runtimes
    for subnet_id, sub in subnets.items():
        np.testing.assert_allclose(mixed.run(subnet_id, x)[0], reference_outputs(checkpoint, sub, x), rtol=1e-4,
                                   atol=1e-4)
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
    with pytest.raises(ValueError, match="runtime 'tensorrt' is not one of"):
        ModelRunner(checkpoint, subnets, runtime="tensorrt")
    with pytest.raises(ValueError, match="needs calibration data"):
        ModelRunner(checkpoint, subnets, runtime="onnxruntime-int8")
    with pytest.raises(ValueError, match=r"no runtime given for subnets \['full'\]"):
        ModelRunner(checkpoint, subnets, runtime={"small": "torch", "half": "torch"})


def test_each_subnet_runs_on_the_runtime_the_profile_chose_unless_told(
    artifacts: tuple[Path, Path, dict], caplog: pytest.LogCaptureFixture
) -> None:
    _, profile_path, _ = artifacts
    view = ServingProfile(Profile.load(profile_path))
    assert serving_runtimes(view, None) == view.runtimes == dict.fromkeys(view.subnet_ids, "torch")
    with caplog.at_level(logging.WARNING, logger="tailor.serve"):
        assert serving_runtimes(view, "onnxruntime") == dict.fromkeys(view.subnet_ids, "onnxruntime")
    assert "plans with latencies of another runtime" in caplog.text


def test_a_worker_that_cannot_load_the_model_fails_the_start(tmp_path: Path, artifacts: tuple[Path, Path, dict]) -> None:
    _, _, subnets = artifacts

    async def start() -> None:
        pool = WorkerPool(tmp_path / "missing", subnets, workers=1, start_timeout_s=120)
        await pool.start()

    with pytest.raises(WorkerStartError, match="worker could not start: CheckpointError: .*missing.* not a directory"):
        asyncio.run(start())


def test_batches_reach_the_worker_through_its_shared_buffer_or_the_pipe_when_larger(
    artifacts: tuple[Path, Path, dict],
) -> None:
    """Inputs up to `max_batch_samples` go through the worker's shared buffer (a 0600 file), larger batches
    through the pipe; both compute what the supernet computes, and closing the pool removes the buffer."""
    checkpoint, _, subnets = artifacts
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)

    async def scenario() -> list[Path]:
        pool = WorkerPool(checkpoint, subnets, workers=1, input_shape=(3, 32, 32), max_batch_samples=2)
        await pool.start()
        try:
            buffers = [Path(slot.inputs_path) for slot in pool.slots]
            assert all(p.exists() and p.stat().st_mode & 0o777 == 0o600 for p in buffers)
            assert all(p.stat().st_size == 2 * 3 * 32 * 32 * 4 for p in buffers)
            for subnet_id, rows in (("small", 2), ("full", 5), ("half", 1)):  # shared, pipe, shared
                result = await pool.run(subnet_id, x[:rows])
                expected = reference_outputs(checkpoint, subnets[subnet_id], x[:rows])
                np.testing.assert_allclose(result.outputs, expected, rtol=1e-5, atol=1e-5)
        finally:
            await pool.close()
        return buffers

    buffers = asyncio.run(scenario())
    assert not any(p.exists() for p in buffers)


def test_a_worker_is_computing_while_it_runs_and_not_while_it_is_stopped() -> None:
    """The watchdog kills a stopped or blocked worker at once and gives a running one more time."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tailor.serve.server.worker import computing

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10
        while not computing(busy.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert computing(busy.pid)
        os.kill(busy.pid, signal.SIGSTOP)
        time.sleep(0.1)
        assert not computing(busy.pid)
    finally:
        busy.kill()
        busy.wait()
    assert not computing(busy.pid) and not computing(None)


def test_workers_and_spares_run_niced_below_the_server_and_a_bad_nice_is_refused(
    artifacts: tuple[Path, Path, dict],
) -> None:
    """Every worker process (the spare too) runs `nice` steps below the process that started it, so that on a
    shared core the front end is served first; a nice outside 0-19 is refused before anything starts."""
    import os

    from tailor.serve.server.app import ServerConfig, ServerConfigError

    checkpoint, _, subnets = artifacts
    base = os.getpriority(os.PRIO_PROCESS, 0)

    async def scenario() -> list[int]:
        pool = WorkerPool(checkpoint, subnets, workers=1, spares=1, nice=7)
        await pool.start()
        try:
            result = await pool.run("small", np.zeros((1, 3, 32, 32), np.float32))
            assert result.outputs.shape[0] == 1
            return [os.getpriority(os.PRIO_PROCESS, pid) for pid in pool.pids() if pid is not None]
        finally:
            await pool.close()

    priorities = asyncio.run(scenario())
    assert priorities == [min(19, base + 7)] * 2
    with pytest.raises(ValueError, match="nice must be in"):
        WorkerPool(checkpoint, subnets, nice=20)
    with pytest.raises(ServerConfigError, match="worker_nice"):
        ServerConfig(checkpoint, "p.json", worker_nice=-1).check()
    assert ServerConfig(checkpoint, "p.json").worker_nice is None  # by runtime: see the next test


@pytest.mark.parametrize("runtime, configured, expected", [
    ("torch-inplace", None, 5), ("torch", None, 5), ("onnxruntime", None, 10), ("openvino", None, 10),
    (None, None, 5), ("torch-inplace", 0, 0), ("onnxruntime", 3, 3)])
def test_the_workers_nice_defaults_by_the_runtime_they_serve_and_a_configured_one_wins(
    artifacts: tuple[Path, Path, dict], runtime: str | None, configured: int | None, expected: int,
) -> None:
    """Eager PyTorch workers starve at nice 10 under a burst (the front end is always runnable and CFS leaves them
    ~10% of the core), compiled runtimes do not need more; the server's workers get the default of what they run
    (the shared profile measured torch), unless one is configured."""
    from tailor.serve.server.app import InferenceServer, ServerConfig, default_worker_nice

    checkpoint, profile, _ = artifacts
    server = InferenceServer(ServerConfig(checkpoint, profile, workers=1, spare_workers=0, runtime=runtime,
                                          worker_nice=configured))
    assert server.worker_nice == expected and server.pool.nice == expected
    assert default_worker_nice(["torch", "onnxruntime"]) == 10  # mixed: the compiled runtime's
    assert default_worker_nice([]) == 10


def test_the_server_plans_with_its_workers_slowdown_unless_told_not_to(artifacts, monkeypatch) -> None:
    """`tailor serve` builds its policy again for a scaled profile (the same policy and options) and reports the
    factor in /metrics; `--no-profile-scaling` keeps the profile as measured."""
    from tailor.cli import main
    from tailor.serve.server import app
    from tailor.serve.server.app import InferenceServer, ServerConfig

    checkpoint, profile, _ = artifacts
    server = InferenceServer(ServerConfig(checkpoint, profile, slo_ms=40.0, workers=1, spare_workers=0,
                                          policy="slackfit", policy_options={"buckets": 4}))
    scheduler = server.scheduler
    assert scheduler.rescale(2.0)
    assert scheduler.policy.name == "slackfit" and len(scheduler.policy.choices) <= 4
    assert scheduler.policy.slo_ms == 40.0 and scheduler.profile.lat[0][0] == 2 * server.profile.lat[0][0]
    assert b"tailor_planning_slowdown 2.0" in server.metrics.render()
    configs: list[ServerConfig] = []
    monkeypatch.setattr(app, "run_server", lambda config, ready=None: configs.append(config) or {})
    for flags, scaled in (([], True), (["--no-profile-scaling"], False)):
        assert main(["serve", str(checkpoint), "--profile", str(profile), *flags]) == 0
        assert configs[-1].scale_profile is scaled
    unscaled = InferenceServer(ServerConfig(checkpoint, profile, workers=1, spare_workers=0, scale_profile=False))
    assert not unscaled.scheduler.rescale(2.0) and unscaled.scheduler.slowdown == 1.0
