"""Failures: workers killed under load or hanging, retried once, restarted; `tailor serve` drains on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from test_server_support import MODEL, ServerThread, shared_artifacts, shared_live, signal_all, stop_shared_live
from tritonclient.utils import InferenceServerException

from tailor.cli import main

COMPUTE_TIMEOUT_S = 1.5
SLOW_DEADLINE = {"deadline_ms": 20_000}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> ServerThread:
    return shared_live(tmp_path_factory, request)


@pytest.fixture(scope="module", autouse=True)
def _stop_shared_server_after_this_module() -> None:
    yield
    stop_shared_live()  # its last user: free the worker processes before the rest of the suite runs


@pytest.fixture()
def short_watchdog(live: ServerThread) -> ServerThread:
    """A worker silent for COMPUTE_TIMEOUT_S on a batch is killed (the server's SLO of 2 s would give it 4 s)."""
    engine = live.server.engine
    saved, engine.max_timeout_s = engine.max_timeout_s, COMPUTE_TIMEOUT_S
    yield live
    engine.max_timeout_s = saved


def _input(seed: int) -> triton.InferInput:
    tensor = triton.InferInput("input", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32))
    return tensor


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_tailor_serve_drains_in_flight_requests_on_sigterm(artifacts: tuple[Path, Path, dict]) -> None:
    checkpoint, profile, _ = artifacts
    command = [sys.executable, "-m", "tailor.cli", "serve", str(checkpoint), "--profile", str(profile),
               "--port", "0", "--workers", "1", "--slo-ms", "20000", "--log-level", "error"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(process.stdout.readline())
        url = ready["url"]
        assert url.startswith("http://127.0.0.1:") and ready["subnets"] == ["small", "half", "full"]
        workers = [p for p in _children(process.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2  # the worker and its loaded spare
        signal_all(workers, signal.SIGSTOP)  # requests pile up in flight
        answers: list[int] = []
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                       "data": [0.25] * 3072}]}).encode()

        def one() -> None:
            response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=body, timeout=60.0)
            answers.append(response.status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()

        def pending() -> float:
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
                lines = response.read().decode().splitlines()
            values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if not line.startswith("#")}
            return values["tailor_queue_length"] + values["tailor_requests_running"]

        deadline = time.monotonic() + 30
        while pending() < 6:
            assert time.monotonic() < deadline, "requests did not arrive"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)  # shutdown begins with 6 requests unanswered
        time.sleep(0.3)
        signal_all(workers, signal.SIGCONT)
        for t in threads:
            t.join(60)
        assert answers == [200] * 6
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["stopped"] is True and summary["requests"]["on_time"] == 6
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/v2/health/live", timeout=5.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_tailor_serve_reports_a_bad_profile_and_exits_2(
    tmp_path: Path, artifacts: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, profile, _ = artifacts
    broken = tmp_path / "profile.json"
    data = json.loads(profile.read_text())
    data["subnets"][0]["latency_ms"]["1"]["p50"] = -1
    broken.write_text(json.dumps(data))
    assert main(["serve", str(checkpoint), "--profile", str(broken)]) == 2
    assert "subnets[0].latency_ms['1'].p50" in capsys.readouterr().err
    data = json.loads(profile.read_text())
    data["subnets"][0]["subnet"]["widths"]["stage1.out"] = 0.3  # not a width of the checkpoint's space
    broken.write_text(json.dumps(data))
    assert main(["serve", str(checkpoint), "--profile", str(broken)]) == 2
    assert "does not fit the checkpoint's space" in capsys.readouterr().err


def _all_idle(live: ServerThread) -> bool:
    return live.server.pool.states()["idle"] == 2


def test_killing_a_worker_under_load_loses_no_request(live: ServerThread) -> None:
    live.wait_for(lambda: _all_idle(live), what="both workers idle")
    outcomes: list[str] = []
    attempts: list[int] = []
    lock = threading.Lock()
    victim = live.server.pool.active_pids()[0]
    slot = next(s for s in live.server.pool.slots if s.pid == victim)
    retries = live.metric("tailor_request_retries_total")

    def load(seed: int) -> None:
        with triton.InferenceServerClient(live.url, network_timeout=60.0) as client:
            for i in range(40):
                try:
                    result = client.infer(MODEL, [_input(seed * 1000 + i)], parameters=SLOW_DEADLINE)
                    outcome, tries = "ok", result.get_response()["parameters"].get("attempts", 1)
                except InferenceServerException as exc:
                    outcome, tries = f"{exc.status()}: {exc.message()}", 0
                with lock:
                    outcomes.append(outcome)
                    attempts.append(tries)

    os.kill(victim, signal.SIGSTOP)  # the victim takes a batch and sits on it: it dies with work in flight
    threads = [threading.Thread(target=load, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    # the victim holds a batch while the others are served; if the first requests of all four clients went
    # to it in one batch, nothing is answered until the watchdog (2 SLOs = 4 s) kills it and the batch is
    # retried: then it is already gone when the load is under way
    live.wait_for(lambda: (slot.state == "busy" and len(outcomes) >= 10) or slot.pid != victim, what="load")
    with contextlib.suppress(ProcessLookupError):  # the watchdog (2 SLOs = 4 s) may have killed it first
        os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert len(outcomes) == 160  # every request answered exactly once
    assert outcomes == ["ok"] * 160  # the killed worker's batch was retried on the other worker
    assert attempts.count(2) >= 1 and live.metric("tailor_request_retries_total") - retries == attempts.count(2)
    live.wait_for(lambda: _all_idle(live), what="the killed worker to be replaced")
    assert slot.pid not in (None, victim) and victim not in live.worker_pids()
    assert live.server.pool.promotions >= 1  # the spare took the dead worker's place
    assert live.metric("tailor_worker_restarts_total") >= 1
    with triton.InferenceServerClient(live.url) as client:
        assert client.is_server_ready()
        assert client.infer(MODEL, [_input(7)]).as_numpy("logits").shape == (1, 10)


def test_hanging_workers_are_killed_and_a_request_fails_once_after_its_retry(short_watchdog: ServerThread) -> None:
    live = short_watchdog
    live.wait_for(lambda: _all_idle(live) and live.server.pool.states()["spare"] == 1, what="workers and spare idle")
    failed = live.metric("tailor_requests_total", 'outcome="failed"')
    restarts = live.metric("tailor_worker_restarts_total")
    pids = [p for p in live.worker_pids() if p is not None]  # the two workers and the spare
    signal_all(pids, signal.SIGSTOP)  # all hang: the watchdog kills the first, the retry hangs on another
    try:
        with triton.InferenceServerClient(live.url, network_timeout=60.0) as client:
            with pytest.raises(InferenceServerException, match=r"gave no answer within 1.5 s.*\(attempt 2\)") as info:
                client.infer(MODEL, [_input(12)], parameters=SLOW_DEADLINE)
        assert info.value.status() == "500"
        assert live.metric("tailor_requests_total", 'outcome="failed"') == failed + 1
        live.wait_for(lambda: live.metric("tailor_worker_restarts_total") >= restarts + 2, what="both restarted")
    finally:
        signal_all([p for p in pids if p in live.worker_pids()], signal.SIGCONT)  # the one that got no batch
    assert len(set(pids) - set(live.worker_pids())) >= 2
