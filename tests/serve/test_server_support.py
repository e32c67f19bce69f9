"""Helpers for the server tests (no tests here): a tiny calibrated supernet, its profile, a server in a thread,
the HTTP protocol on a fake transport."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tailor
from tailor.cost.measure import LatencyStats
from tailor.cost.profile import Profile, SubnetProfile
from tailor.serve.server.app import InferenceServer, ServerConfig, bind_socket, serve_async, uvicorn_server
from tailor.serve.server.loadgen import infer_requests
from tailor.serve.server.protocol import ModelSpec, TensorSpec
from tailor.space import Subnet

MODEL = "tiny_cnn"
BATCHES = (1, 2, 4, 8)
QUEUE_LIMIT = 24
BODY_LIMIT = 256 * 1024


def build_checkpoint(root: Path) -> tuple[Path, Path, dict[str, Subnet]]:
    """A small_cnn at 1/4 width, SubnetNorm-calibrated for three subnets, saved with `tailor.save`, and a profile.

    The profile's latencies are synthetic (p99 = base + per-sample cost, ms), ordered like real ones.
    """
    torch.manual_seed(0)
    model = tailor.create_model("small_cnn", num_classes=10, channels=(8, 16, 32))
    space = model.space
    subnets = {"small": space.smallest(), "half": space.uniform(0.5), "full": space.largest()}
    x = torch.randn(32, 3, 32, 32)
    tailor.calibrate(model, list(subnets.values()), [x[:16], x[16:]], batches=2)
    checkpoint = root / "ck"
    tailor.save(model, checkpoint)
    entries = []
    for rank, (sid, sub) in enumerate(subnets.items()):
        base, per_sample = 0.4 * (rank + 1), 0.08 * (rank + 1)
        table = {b: LatencyStats(0.8 * (base + per_sample * b), 0.9 * (base + per_sample * b), base + per_sample * b)
                 for b in BATCHES}
        entries.append(SubnetProfile(id=sid, macs=1000 * (rank + 1), params=100 * (rank + 1), latency_ms=table,
                                     subnet=sub, accuracy=0.6 + 0.1 * rank))
    profile = root / "profile.json"
    Profile(MODEL, (3, 32, 32), "test", "torch", 1, tuple(entries)).save(profile)
    return checkpoint, profile, subnets


def reference_outputs(checkpoint: Path, subnet: Subnet, inputs: np.ndarray) -> np.ndarray:
    """What the supernet computes for `inputs` on `subnet`, in this process."""
    model = tailor.load(checkpoint)
    with torch.inference_mode():
        model.activate(subnet)
        return model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()


class ServerThread:
    """An `InferenceServer` on 127.0.0.1 and a free port, served by uvicorn in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = InferenceServer(config)
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"127.0.0.1:{self.port}"
        self.runner = uvicorn_server(self.server, log_level="error")
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(serve_async(self.server, self.sock, self.runner, self._ready.set))
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc
            self._ready.set()

    def start(self, timeout_s: float = 120.0) -> ServerThread:
        self.thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"server did not start: {self.error!r}")
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self.runner.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("server thread did not stop")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics, e.g. metric("tailor_requests_total", 'outcome="on_time"')."""
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_for(self, predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def worker_pids(self) -> list[int | None]:
        return self.server.pool.pids()

    def settle(self, timeout_s: float = 120.0) -> None:
        """Wait until no worker process is starting or dead (a previous test may have killed some)."""
        def settled() -> bool:
            states = self.server.pool.states()
            return states["starting"] == 0 and states["dead"] == 0 and states["busy"] == 0
        self.wait_for(settled, timeout_s, what=f"workers settled ({self.server.pool.states()})")


def signal_all(pids: list[int | None], sig: signal.Signals) -> None:
    """Send `sig` to each live pid (one the watchdog has killed meanwhile is skipped)."""
    for pid in pids:
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


class patient_watchdog:
    """Within the block, a batch may run 60 s before its worker is declared hung (tests that freeze workers for
    longer than the server's 2-SLO watchdog)."""

    def __init__(self, live: ServerThread) -> None:
        self.engine = live.server.engine

    def __enter__(self) -> None:
        self.saved = (self.engine.watchdog_slo_factor, self.engine.max_timeout_s)
        self.engine.watchdog_slo_factor, self.engine.max_timeout_s = 1000.0, 60.0

    def __exit__(self, *exc: object) -> None:
        self.engine.watchdog_slo_factor, self.engine.max_timeout_s = self.saved


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """A raw POST (urllib), returning status, headers and body even for error statuses."""
    request = urllib.request.Request(f"http://{url}", data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def error_message(body: bytes) -> str:
    return json.loads(body)["error"]


_SHARED: dict[str, Any] = {}


def shared_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Subnet]]:
    """Checkpoint, profile and subnets, built once per test session."""
    if "artifacts" not in _SHARED:
        _SHARED["artifacts"] = build_checkpoint(tmp_path_factory.mktemp("server"))
    return _SHARED["artifacts"]


def shared_live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> ServerThread:
    """One server (2 workers) per test session, whichever module asks first; stopped when the session ends.

    Starting worker processes is the slow part of these tests. test_server.py runs first;
    test_server_faults.py, which kills and freezes its workers, runs after it.
    """
    if "live" not in _SHARED:
        checkpoint, profile, _ = shared_artifacts(tmp_path_factory)
        config = ServerConfig(checkpoint, profile, slo_ms=2000.0, workers=2, queue_limit=QUEUE_LIMIT,
                              max_body_bytes=BODY_LIMIT, warmup_batch_sizes=(1, 8))
        _SHARED["live"] = ServerThread(config).start()
        request.addfinalizer(stop_shared_live)
    return _SHARED["live"]


def stop_shared_live() -> None:
    """Stop the shared server now if it runs (test_server_faults.py does, as its last user)."""
    server = _SHARED.pop("live", None)
    if server is not None:
        server.stop()


# -- the HTTP protocol without sockets ------------------------------------------------------------------------
class Transport(asyncio.Transport):
    """A transport that keeps what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection(artifacts: tuple[Path, Path, dict], read_timeout_s: float, keep_alive_s: float = 5.0,
               shedding: bool = True, server: InferenceServer | None = None) -> tuple[Any, Transport, InferenceServer]:
    """A protocol on a fake transport, its server's admission refusing everything when `shedding`; a new server
    unless one (from an earlier call) is given: another connection to it."""
    checkpoint, profile, _ = artifacts
    if server is None:
        server = InferenceServer(ServerConfig(checkpoint, profile, slo_ms=50.0, workers=1, spare_workers=0,
                                              read_timeout_s=read_timeout_s))
    runner = uvicorn_server(server, log_level="error")
    config = runner.config
    config.timeout_keep_alive = keep_alive_s
    config.load()
    server.engine.accepting = True
    server.engine.reserved = 100_000 if shedding else 0
    if server.spec is None:
        server.spec = ModelSpec(MODEL, TensorSpec("input", "FP32", (-1, 3, 32, 32)),
                                TensorSpec("logits", "FP32", (-1, 10)), 8)
    protocol = config.http_protocol_class(config=config, server_state=runner.server_state, app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, server


def status_and_error(data: bytes) -> tuple[int, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


REQUEST = infer_requests(MODEL, np.zeros((1, 3, 32, 32), np.float32))[0]


def with_lengths(request: bytes) -> bytes:
    """`request` with its Content-Length and Inference-Header-Content-Length set to what its parts now are."""
    head, _, body = request.partition(b"\r\n\r\n")
    json_end = body.index(b"}]}") + 3
    lines = [line for line in head.split(b"\r\n")
             if not line.lower().startswith((b"content-length:", b"inference-header-content-length:"))]
    lines += [b"Content-Length: %d" % len(body), b"Inference-Header-Content-Length: %d" % json_end]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
