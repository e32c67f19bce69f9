"""The live server at its edges, on raw sockets and tritonclient: framing, limits, slow clients, too many
connections, shedding before parsing, a batch whose worker hangs past its deadline, and the OIP extensions
(statistics, repository index, FP16 inputs, classification)."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from test_server_support import (
    MODEL,
    ServerThread,
    patient_watchdog,
    reference_outputs,
    shared_artifacts,
    shared_live,
    signal_all,
)

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                               "data": [0.25] * 3072}]}).encode()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> ServerThread:
    return shared_live(tmp_path_factory, request)


def _connect(live: ServerThread) -> socket.socket:
    host, port = live.url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, lower-case headers, body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r:.200}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def _request(extra_headers: str = "", body: bytes = BODY, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n{extra_headers}\r\n").encode() + body


@pytest.fixture()
def config(live: ServerThread) -> Iterator:
    """The live server's config, restored after the test changes it."""
    saved = dict(vars(live.server.config))
    yield live.server.config
    vars(live.server.config).update(saved)


def test_headers_over_the_documented_cap_are_a_431(live: ServerThread) -> None:
    invalid = live.metric("tailor_requests_total", 'outcome="invalid"')
    with _connect(live) as sock:
        sock.sendall(_request("X-Padding: " + "a" * 20_000 + "\r\n"))  # 16 KiB is the cap
        status, headers, body = _answer(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert "over the limit of 16384" in json.loads(body)["error"]
    with _connect(live) as sock:  # just under the cap is fine
        sock.sendall(_request("X-Padding: " + "a" * 15_000 + "\r\n"))
        assert _answer(sock)[0] == 200
    assert live.metric("tailor_requests_total", 'outcome="invalid"') == invalid + 1


def test_conflicting_framing_is_a_json_400(live: ServerThread) -> None:
    invalid = live.metric("tailor_requests_total", 'outcome="invalid"')
    with _connect(live) as sock:
        sock.sendall(_request("Transfer-Encoding: chunked\r\n", body=b"5\r\nhello\r\n0\r\n\r\n", length=5))
        status, headers, body = _answer(sock)
    assert status == 400 and headers["content-type"] == "application/json"
    assert "invalid HTTP request" in json.loads(body)["error"] or "conflicting framing" in json.loads(body)["error"]
    assert live.metric("tailor_requests_total", 'outcome="invalid"') == invalid + 1


def test_a_slow_body_or_slow_headers_get_a_408_and_lose_the_connection(live: ServerThread, config) -> None:
    config.read_timeout_s = 0.5
    with _connect(live) as sock:
        sock.sendall(_request(length=len(BODY))[: -len(BODY) + 10])  # headers and 10 bytes of the body, then nothing
        start = time.monotonic()
        status, _, body = _answer(sock)
        assert status == 408 and "did not arrive within 0.5 s" in json.loads(body)["error"]
        assert time.monotonic() - start < 5
        assert sock.recv(1) == b""  # closed
    with _connect(live) as sock:
        sock.sendall(b"POST /v2/models/" + MODEL.encode() + b"/infer HTTP/1.1\r\nHost: x\r\n")  # headers never end
        status, _, body = _answer(sock)
        assert status == 408 and "headers did not arrive" in json.loads(body)["error"]


def test_too_many_connections_get_a_json_503_with_retry_after_that_is_counted(live: ServerThread, config) -> None:
    rejected = live.metric("tailor_rejections_total", 'reason="connections"')
    config.max_connections = 2
    socks = [_connect(live) for _ in range(2)]
    try:
        time.sleep(0.2)  # the server has accepted both
        with _connect(live) as extra:
            extra.sendall(_request())
            status, headers, body = _answer(extra)
        assert status == 503 and int(headers["retry-after"]) >= 1 and headers["connection"] == "close"
        assert "too many connections" in json.loads(body)["error"]
    finally:
        for sock in socks:
            sock.close()
    config.max_connections = 1024
    assert live.metric("tailor_rejections_total", 'reason="connections"') == rejected + 1
    live.wait_for(lambda: live.metric("tailor_connections") <= 2, what="connections to close")
    with _connect(live) as sock:
        sock.sendall(_request())
        assert _answer(sock)[0] == 200


def test_requests_the_queue_cannot_drain_in_time_are_shed_before_parsing(live: ServerThread) -> None:
    """Workers frozen with a full batch each: a request whose default deadline is shorter than the queue's least
    drain time is refused with 503 at once, and never queued; one with a longer deadline of its own is queued."""
    live.settle()
    engine = live.server.engine
    pids = live.server.pool.active_pids()
    shed = live.metric("tailor_rejections_total", 'reason="admission"')
    signal_all(pids, signal.SIGSTOP)
    socks = []
    with patient_watchdog(live):
        _shed_while_frozen(live, engine, pids, shed, socks)
    for sock in socks:
        status, _, _ = _answer(sock)
        assert status == 200
        sock.close()
    assert engine.reserved == 0  # every place held for a request between its headers and the queue was given back


def _shed_while_frozen(live: ServerThread, engine, pids: list, shed: float, socks: list) -> None:
    try:
        for _ in range(20):  # occupy both workers; whatever their batches take, some wait in the queue
            sock = _connect(live)
            sock.sendall(_request(body=BODY.replace(b'"inputs"', b'"parameters": {"deadline_ms": 60000}, "inputs"')))
            socks.append(sock)
        live.wait_for(lambda: len(engine.scheduler.queue) >= 2, what="queued requests")
        engine.scheduler.fastest_ms_per_sample = 2000.0  # pretend the fastest drain is slow: 2 queued = 2 s
        with _connect(live) as sock:
            sock.sendall(_request())  # default deadline: the server's SLO of 2 s
            status, headers, body = _answer(sock)
            assert status == 503 and int(headers["retry-after"]) >= 1, body
            assert "cannot be drained within the deadline of 2000 ms" in json.loads(body)["error"]
            assert live.metric("tailor_rejections_total", 'reason="admission"') == shed + 1
            # answered by the HTTP protocol itself, before any ASGI handler ran (uvicorn's responses carry a date)
            assert "date" not in headers and headers.get("connection") != "close"
            sock.sendall(_request(body=BODY[:100], length=len(BODY)))  # the same connection stays usable: a body in pieces
            time.sleep(0.05)
            sock.sendall(BODY[100:])
            status, headers, _ = _answer(sock)
            assert status == 503 and live.metric("tailor_rejections_total", 'reason="admission"') == shed + 2
            # a held request that sets its own, longer deadline is handed to the handler and queued
            own = BODY.replace(b'"inputs"', b'"parameters": {"deadline_ms": 60000}, "inputs"')
            queued = len(engine.scheduler.queue)
            sock.sendall(_request(body=own))
            live.wait_for(lambda: len(engine.scheduler.queue) == queued + 1, what="the request with its own deadline")
            socks.append(sock.dup())
        saved, live.server.config.read_timeout_s = live.server.config.read_timeout_s, 0.3
        try:  # a held body that stops arriving is answered 408, as in the handler
            with _connect(live) as slow:
                slow.sendall(_request(body=BODY[:10], length=len(BODY)))
                status, _, body = _answer(slow)
            assert status == 408 and "body did not arrive within 0.3 s" in json.loads(body)["error"]
        finally:
            live.server.config.read_timeout_s = saved
    finally:
        engine.scheduler.fastest_ms_per_sample = min(
            engine.scheduler.profile.latency_ms(s, engine.scheduler.max_batch_size) / engine.scheduler.max_batch_size
            for s in engine.scheduler.subnet_ids)
        signal_all(pids, signal.SIGCONT)


def test_a_hung_worker_is_answered_at_the_deadline_not_at_the_watchdog(live: ServerThread) -> None:
    live.settle()
    pids = live.server.pool.active_pids()
    late = live.metric("tailor_requests_total", 'outcome="late"')
    signal_all(pids, signal.SIGSTOP)
    try:
        body = BODY.replace(b'"inputs"', b'"parameters": {"deadline_ms": 300}, "inputs"')
        start = time.monotonic()
        with _connect(live) as sock:
            sock.sendall(_request(body=body))
            status, _, answer = _answer(sock)
        elapsed = time.monotonic() - start
    finally:
        signal_all(pids, signal.SIGCONT)
    assert status == 504 and "still running at its deadline of 300 ms" in json.loads(answer)["error"]
    assert 0.25 < elapsed < 1.5  # at its deadline, not after the 4 s watchdog
    assert live.metric("tailor_requests_total", 'outcome="late"') == late + 1


def test_statistics_and_repository_index_through_tritonclient(live: ServerThread) -> None:
    with triton.InferenceServerClient(live.url) as client:
        before = client.get_inference_statistics(MODEL)["model_stats"][0]
        tensor = triton.InferInput("input", [2, 3, 32, 32], "FP32")
        tensor.set_data_from_numpy(np.zeros((2, 3, 32, 32), np.float32))
        client.infer(MODEL, [tensor])
        after = client.get_inference_statistics(MODEL)["model_stats"][0]
        assert after["name"] == MODEL and after["version"] == "1"
        stats = after["inference_stats"]
        assert stats["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
        assert stats["success"]["ns"] > before["inference_stats"]["success"]["ns"]
        assert stats["compute_infer"]["ns"] > 0 and after["last_inference"] > 0
        assert any(b["batch_size"] >= 2 for b in after["batch_stats"])
        index = client.get_model_repository_index()
        assert index == [{"name": MODEL, "version": "1", "state": "READY"}]
        assert {"statistics", "model_repository", "classification"} <= set(client.get_server_metadata()["extensions"])
    # a POST that is not inference holds no place in admission (only requests the handler will queue do)
    assert live.server.engine.reserved == 0


def test_fp16_inputs_and_the_classification_extension(live: ServerThread, artifacts: tuple) -> None:
    checkpoint, _, subnets = artifacts
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float16)
    with triton.InferenceServerClient(live.url) as client:
        tensor = triton.InferInput("input", list(x.shape), "FP16")
        tensor.set_data_from_numpy(x)
        result = client.infer(MODEL, [tensor])
        expected = reference_outputs(checkpoint, subnets[result.get_response()["parameters"]["subnet"]],
                                     x.astype(np.float32))
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
        top = client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("logits", class_count=3)])
        classes = top.as_numpy("logits")
        assert classes.shape == (2, 3)
        order = np.argsort(-expected, axis=1)[:, :3]
        for row, ranks in zip(classes, order):
            assert [int(item.decode().split(":")[1]) for item in row] == list(ranks)


@pytest.mark.parametrize("reuse", ["lifo", "fifo"])
def test_the_open_loop_load_generator_records_one_answer_per_request(live: ServerThread, reuse: str) -> None:
    from tailor.serve.server.loadgen import LoadResult, infer_requests, run_open_loop, summary

    inputs = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    schedule = np.linspace(0.0, 0.5, 60)
    result = run_open_loop(f"http://{live.url}", infer_requests(MODEL, inputs), schedule, max_connections=64,
                           reuse=reuse)
    assert (result.status == 200).all() and np.isfinite(result.done_s).all()
    assert (result.sent_s >= result.scheduled_s - 1e-3).all() and (result.done_s >= result.sent_s).all()
    assert (result.server_on_time == 1).all() and set(result.subnets) <= {"small", "half", "full"}
    line = summary(result, slo_ms=2000.0)
    assert line["requests"] == 60 and line["on_time"] == 60 and line["status"] == {"200": 60}
    assert line["unsent"] == 0 and result.cpu_s > 0
    late = summary(result, slo_ms=1e-6)  # judged at the client: nothing is answered within a microsecond
    assert late["on_time"] == 0
    few = run_open_loop(f"http://{live.url}", infer_requests(MODEL, inputs), np.zeros(5), max_connections=2,
                        warm_connections=0, reuse=reuse)
    assert sorted(few.status.tolist()).count(-1) == 3  # two connections: three requests could not be sent
    path = result.save(Path(live.server.config.checkpoint).parent / "load.npz")
    again = LoadResult.load(path)
    assert np.array_equal(again.status, result.status) and again.subnets == result.subnets
