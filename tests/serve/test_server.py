"""The live server against the standard OIP client (`tritonclient.http`): health, metadata, inference, errors.

One server (2 worker processes, a tiny calibrated supernet) is shared with test_server_faults.py.
"""

from __future__ import annotations

import gzip
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from test_server_support import (
    BODY_LIMIT,
    MODEL,
    QUEUE_LIMIT,
    ServerThread,
    patient_watchdog,
    post,
    reference_outputs,
    shared_artifacts,
    shared_live,
    signal_all,
)
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> ServerThread:
    return shared_live(tmp_path_factory, request)


@pytest.fixture()
def client(live: ServerThread) -> triton.InferenceServerClient:
    c = triton.InferenceServerClient(live.url, concurrency=16, network_timeout=60.0)
    yield c
    c.close()


def _input(x: np.ndarray, binary: bool = True, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_health_and_metadata(client: triton.InferenceServerClient, live: ServerThread) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_config(MODEL)["max_batch_size"] == 8
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException, match="unknown model 'resnet'") as info:
        client.get_model_metadata("resnet")
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException, match="no version '7'"):
        client.get_model_metadata(MODEL, "7")


@pytest.mark.parametrize("binary", [True, False])
def test_inference_matches_the_named_subnet(client: triton.InferenceServerClient, artifacts: tuple, binary: bool) -> None:
    checkpoint, _, subnets = artifacts
    x = _images(3, seed=1)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
    result = client.infer(MODEL, [_input(x, binary)], outputs=outputs, request_id="r-1",
                          parameters={"deadline_ms": 1500})
    response = result.get_response()
    params = response["parameters"]
    assert response["id"] == "r-1"
    assert params["subnet"] in subnets and params["on_time"] is True
    assert params["deadline_ms"] == pytest.approx(1500.0)
    assert params["batch_size"] >= 3
    got = result.as_numpy("logits")
    assert got.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_outputs(checkpoint, subnets[params["subnet"]], x), rtol=1e-4, atol=1e-4)


def test_triton_timeout_parameter_is_the_deadline(client: triton.InferenceServerClient) -> None:
    result = client.infer(MODEL, [_input(_images(1, 2))], timeout=750_000)  # microseconds, as Triton defines it
    assert result.get_response()["parameters"]["deadline_ms"] == pytest.approx(750.0)


def test_concurrent_requests_each_get_their_own_rows(client: triton.InferenceServerClient, artifacts: tuple) -> None:
    checkpoint, _, subnets = artifacts
    inputs = [_images(1 + i % 3, seed=100 + i) for i in range(16)]
    pending = [client.async_infer(MODEL, [_input(x)]) for x in inputs]
    results = [p.get_result() for p in pending]
    for x, result in zip(inputs, results):
        params = result.get_response()["parameters"]
        expected = reference_outputs(checkpoint, subnets[params["subnet"]], x)
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
        assert params["batch_size"] >= len(x)


@pytest.mark.parametrize(
    ("shape", "datatype", "message"),
    [
        ([1, 3, 16, 16], "FP32", r"shape: expected \[N, 3, 32, 32\]"),
        ([1, 3, 32], "FP32", r"shape: expected \[N, 3, 32, 32\]"),
        ([9, 3, 32, 32], "FP32", "batch dimension 9 is outside 1..8"),
        ([1, 3, 32, 32], "FP64", r"datatype 'FP64' is not accepted; expected one of \['FP16', 'FP32'\]"),
        ([1, 3, 32, 32], "INT32", "datatype 'INT32' is not accepted"),
    ],
)
def test_wrong_shape_or_datatype_is_a_400_naming_it(
    client: triton.InferenceServerClient, shape: list, datatype: str, message: str
) -> None:
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32}[datatype]
    x = np.zeros(shape, dtype=dtype)
    with pytest.raises(InferenceServerException, match=message) as info:
        client.infer(MODEL, [_input(x, datatype=datatype)])
    assert info.value.status() == "400"


@pytest.mark.parametrize("binary", [True, False])
def test_nan_and_infinity_are_refused(client: triton.InferenceServerClient, binary: bool) -> None:
    x = _images(2, 3)
    x[1, 2, 3, 4] = np.nan
    with pytest.raises(InferenceServerException, match=r"element \d+ \(row-major\) is NaN") as info:
        client.infer(MODEL, [_input(x, binary)])
    assert info.value.status() == "400"
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(InferenceServerException, match="infinite"):
        client.infer(MODEL, [_input(x, binary)])


def test_unknown_model_and_input_names(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'resnet50'") as info:
        client.infer("resnet50", [_input(_images(1, 4))])
    assert info.value.status() == "404"
    wrong = triton.InferInput("image", [1, 3, 32, 32], "FP32")
    wrong.set_data_from_numpy(_images(1, 4))
    with pytest.raises(InferenceServerException, match="no input 'image'; its input is 'input'"):
        client.infer(MODEL, [wrong])
    with pytest.raises(InferenceServerException, match="no output 'probs'"):
        client.infer(MODEL, [_input(_images(1, 4))], outputs=[triton.InferRequestedOutput("probs")])


def test_malformed_json_and_bodies_over_the_limit(live: ServerThread) -> None:
    url = f"http://{live.url}/v2/models/{MODEL}/infer"
    with httpx.Client(timeout=30.0) as http:
        response = http.post(url, content=b'{"inputs": [ {"name": "input",')
        assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
        response = http.post(url, content=b"[1, 2, 3]")
        assert response.status_code == 400 and "expected a JSON object" in response.json()["error"]
        big = json.dumps({"inputs": [{"name": "input", "data": [0.0] * 60_000}]}).encode()
        assert len(big) > BODY_LIMIT
        response = http.post(url, content=big)  # Content-Length says it
        assert response.status_code == 413 and "over the limit of 262144 bytes" in response.json()["error"]

        def chunks():  # no Content-Length: the streamed bytes prove it
            for start in range(0, len(big), 32 * 1024):
                yield big[start : start + 32 * 1024]

        response = http.post(url, content=chunks())
        assert response.status_code == 413 and "over the limit" in response.json()["error"]
        bomb = gzip.compress(b" " * (4 * BODY_LIMIT))
        response = http.post(url, content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413 and "inflates" in response.json()["error"]
        response = http.post(url, content=b"{}", headers={"Content-Encoding": "br"})
        assert response.status_code == 415
        response = http.get(url)
        assert response.status_code == 405 and "error" in response.json()
        # the server still answers normally afterwards
        body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}
        response = http.post(url, content=gzip.compress(json.dumps(body).encode()), headers={"Content-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.json()["outputs"][0]["shape"] == [1, 10]


def test_a_hopeless_deadline_is_answered_without_computing(
    live: ServerThread, client: triton.InferenceServerClient
) -> None:
    computed = sum(live.metric("tailor_subnet_requests_total", f'subnet="{s}"') for s in ("small", "half", "full"))
    expired = live.metric("tailor_requests_total", 'outcome="expired"')
    # 0.3 ms is less than the fastest subnet's profiled 0.48 ms: it cannot be on time, so it is not run
    with pytest.raises(InferenceServerException, match="deadline (cannot be met|exceeded).*not computed") as info:
        client.infer(MODEL, [_input(_images(1, 5))], parameters={"deadline_ms": 0.3})
    assert info.value.status() == "504"
    assert live.metric("tailor_requests_total", 'outcome="expired"') == expired + 1
    assert sum(live.metric("tailor_subnet_requests_total", f'subnet="{s}"') for s in ("small", "half", "full")) == computed


def _fire(url: str, count: int, deadline_ms: float) -> tuple[list[tuple[int, dict, dict]], list[threading.Thread]]:
    """`count` requests at once from threads; each appends (status, headers, json) when answered."""
    answers: list[tuple[int, dict, dict]] = []
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.1] * 3072}],
                       "parameters": {"deadline_ms": deadline_ms}}).encode()

    def one() -> None:
        status, headers, answer = post(f"{url}/v2/models/{MODEL}/infer", body, timeout=60.0)
        answers.append((status, {k.lower(): v for k, v in headers.items()}, json.loads(answer)))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    return answers, threads


@pytest.fixture()
def frozen_ok(live: ServerThread) -> ServerThread:
    """The live server with a watchdog patient enough for tests that freeze its workers."""
    with patient_watchdog(live):
        yield live


def test_overload_is_a_503_with_retry_after_and_nothing_is_lost(frozen_ok: ServerThread) -> None:
    live = frozen_ok
    live.settle()
    rejected = live.metric("tailor_requests_total", 'outcome="rejected"')
    pids = live.worker_pids()
    signal_all(pids, signal.SIGSTOP)  # workers frozen: the queue can only grow
    try:
        answers, threads = _fire(live.url, QUEUE_LIMIT + 3 * 8, deadline_ms=20_000)
        live.wait_for(lambda: len(answers) >= 8, what="503 answers while the workers are stopped")
        assert live.metric("tailor_queue_length") == QUEUE_LIMIT
    finally:
        signal_all(pids, signal.SIGCONT)
    for t in threads:
        t.join(60)
    statuses = sorted(status for status, _, _ in answers)
    assert len(answers) == QUEUE_LIMIT + 24  # exactly one answer each
    assert set(statuses) == {200, 503}
    for status, headers, body in answers:
        if status == 503:
            assert int(headers["retry-after"]) >= 1 and "queue holds its limit of 24" in body["error"]
    assert statuses.count(503) == live.metric("tailor_requests_total", 'outcome="rejected"') - rejected
    assert statuses.count(200) >= QUEUE_LIMIT


def test_deadline_passing_in_the_queue_is_a_504_and_not_computed(frozen_ok: ServerThread) -> None:
    live = frozen_ok
    live.settle()
    pids = live.worker_pids()
    before = {o: live.metric("tailor_requests_total", f'outcome="{o}"') for o in ("expired", "late", "on_time")}
    # admission off: what the engine learned in earlier tests on this server (a slowdown, a wide margin) may refuse
    # some of these 300 ms requests behind two frozen workers, and this test is about what happens once queued
    admission, live.server.engine.admission = live.server.engine.admission, False
    signal_all(pids, signal.SIGSTOP)
    try:
        answers, threads = _fire(live.url, 20, deadline_ms=300)
        # every request has arrived and is either expired or in a batch sent to a frozen worker
        live.wait_for(lambda: live.metric("tailor_requests_total", 'outcome="expired"') - before["expired"]
                      + live.metric("tailor_requests_running") == 20, what="20 requests expired or running")
    finally:
        signal_all(pids, signal.SIGCONT)
        live.server.engine.admission = admission
    for t in threads:
        t.join(60)
    assert len(answers) == 20 and {status for status, _, _ in answers} == {504}
    expired = [body for _, _, body in answers if "not computed" in body["error"]]
    late = [body for _, _, body in answers if "still running at its deadline" in body["error"]]
    # queued ones expire uncomputed; those in batches on the frozen workers are answered at their deadline
    assert expired and late and len(expired) + len(late) == 20
    after = {o: live.metric("tailor_requests_total", f'outcome="{o}"') for o in before}
    assert after["expired"] - before["expired"] == len(expired)
    assert after["late"] - before["late"] == len(late)
    assert after["on_time"] == before["on_time"]


def test_metrics_report_outcomes_queue_batches_and_subnets(live: ServerThread, client: triton.InferenceServerClient) -> None:
    delivered = live.server.engine._delivered
    client.infer(MODEL, [_input(_images(2, 6))])
    # the on-time answer's way out (engine to connection) was measured for the planning margin: once written, so
    # the client can hold the answer a moment before the server's thread records it
    waited = time.monotonic() + 5.0
    while live.server.engine._delivered == delivered and time.monotonic() < waited:
        time.sleep(0.005)
    assert live.server.engine._delivered == delivered + 1
    text = live.metrics()
    for name in ("tailor_requests_total", "tailor_request_latency_seconds_bucket", "tailor_queue_length",
                 "tailor_batch_size_bucket", "tailor_subnet_requests_total", "tailor_slo_attainment",
                 "tailor_workers", "tailor_server_overhead_seconds_count"):
        assert f"\n{name}" in text, name
    assert live.metric("tailor_workers", 'state="idle"') + live.metric("tailor_workers", 'state="busy"') == 2
    served = sum(live.metric("tailor_subnet_requests_total", f'subnet="{s}"') for s in ("small", "half", "full"))
    answered = live.metric("tailor_requests_total", 'outcome="on_time"') + live.metric(
        "tailor_requests_total", 'outcome="late"')
    assert served == answered
    attainment = live.metric("tailor_slo_attainment")
    outcomes = {o: live.metric("tailor_requests_total", f'outcome="{o}"')
                for o in ("on_time", "late", "expired", "rejected", "failed")}
    assert attainment == pytest.approx(outcomes["on_time"] / sum(outcomes.values()))
