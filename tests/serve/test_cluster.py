"""Serving on a Ray cluster: a local multi-node cluster (`ray.cluster_utils.Cluster`, 2 nodes), requests through
tritonclient, an actor killed under load, a node removed, scaling up and down; the scaling policy alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import tritonclient.http as triton
from ray.cluster_utils import Cluster
from test_server_support import MODEL, ServerThread, reference_outputs, shared_artifacts
from tritonclient.utils import InferenceServerException

from tailor.serve.cluster import (
    ClusterError,
    RayExecutor,
    ScalingPolicy,
    ScalingSignals,
    WorkerActorBody,
    checkpoint_files,
)
from tailor.serve.server.app import ServerConfig

SLOW = {"deadline_ms": 30_000}


def signals(**changes: int) -> ScalingSignals:
    base = {"workers": 2, "idle_workers": 0, "queue_length": 0, "requests": 100, "on_time": 100, "refused": 0}
    return ScalingSignals(**{**base, **changes})


def test_the_scaling_policy_follows_refusals_attainment_queue_and_idleness() -> None:
    policy = ScalingPolicy(down_after_s=3.0)
    assert policy.decide(signals(), 1.0) == 2  # busy and on time: stay
    assert policy.decide(signals(refused=1), 1.0) == 3  # requests refused for lack of capacity
    assert policy.decide(signals(on_time=90), 1.0) == 3  # attainment 0.9 < 0.99
    assert policy.decide(signals(queue_length=65), 1.0) == 3  # more than 32 waiting per worker
    assert policy.decide(signals(requests=0, on_time=0), 1.0) == 2  # nothing happened: attainment counts as met
    quiet = signals(idle_workers=1)
    assert [policy.decide(quiet, 1.0) for _ in range(3)] == [2, 2, 1]  # down after 3 quiet seconds
    assert policy.decide(quiet, 1.0) == 2  # the count restarts
    assert policy.decide(signals(idle_workers=1, queue_length=1), 1.0) == 2
    assert policy.decide(signals(workers=1, idle_workers=1), 5.0) == 1  # never below one


def test_an_actor_leaves_no_files_behind_and_computes_the_supernets_outputs(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The actor body (run here, without Ray) writes the checkpoint to a temporary directory only while it loads:
    an actor restarted many times must not fill the node's disk with copies of the weights."""
    import tempfile

    checkpoint, _, subnets = shared_artifacts(tmp_path_factory)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    body = WorkerActorBody(checkpoint_files(checkpoint), {k: v.to_dict() for k, v in subnets.items()}, 1, [1, 4],
                           None, "torch-inplace")
    assert list(scratch.iterdir()) == []
    x = _images(4, seed=3)
    outputs, elapsed_ms = body.run("half", x)
    np.testing.assert_allclose(outputs, reference_outputs(checkpoint, subnets["half"], x), rtol=1e-5, atol=1e-5)
    assert elapsed_ms > 0


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    """A head node (1 CPU) and a second node (2 CPUs) on this machine; this process is a driver."""
    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    local.add_node(num_cpus=2)
    ray.init(address=local.address, namespace="tailor-tests", log_to_driver=False, include_dashboard=False)
    local.wait_for_nodes()
    yield local
    ray.shutdown()
    local.shutdown()


@pytest.fixture(scope="module")
def live(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> ServerThread:
    checkpoint, profile, _ = shared_artifacts(tmp_path_factory)
    config = ServerConfig(checkpoint, profile, slo_ms=2000.0, workers=2, cluster="auto", min_workers=1,
                          max_workers=3, warmup_batch_sizes=(1, 8))
    server = ServerThread(config).start(timeout_s=240)
    yield server
    server.stop()


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _infer(client: triton.InferenceServerClient, x: np.ndarray) -> triton.InferResult:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(MODEL, [tensor], parameters=SLOW)


def test_requests_are_served_by_actors_spread_over_both_nodes(live: ServerThread, tmp_path_factory) -> None:
    checkpoint, _, subnets = shared_artifacts(tmp_path_factory)
    executor: RayExecutor = live.server.pool
    assert len(executor.nodes()) == 2 and sum(executor.nodes().values()) == 2  # SPREAD: one per node
    with triton.InferenceServerClient(live.url) as client:
        assert client.is_server_ready()
        assert client.get_model_metadata(MODEL)["name"] == MODEL
        for seed in range(4):
            x = _images(1 + seed, seed)
            result = _infer(client, x)
            subnet = result.get_response()["parameters"]["subnet"]
            np.testing.assert_allclose(result.as_numpy("logits"), reference_outputs(checkpoint, subnets[subnet], x),
                                       rtol=1e-4, atol=1e-5)
    assert live.metric("tailor_workers", 'state="idle"') == 2


def _load(live: ServerThread, threads: int, count: int) -> tuple[list[str], list[threading.Thread]]:
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(seed: int) -> None:
        with triton.InferenceServerClient(live.url, network_timeout=120.0) as client:
            for i in range(count):
                try:
                    _infer(client, _images(1, seed * 1000 + i))
                    outcome = "ok"
                except InferenceServerException as exc:
                    outcome = f"{exc.status()}: {exc.message()}"
                with lock:
                    outcomes.append(outcome)

    workers = [threading.Thread(target=run, args=(seed,)) for seed in range(threads)]
    for t in workers:
        t.start()
    return outcomes, workers


def test_an_actor_killed_under_load_loses_no_request(live: ServerThread) -> None:
    executor: RayExecutor = live.server.pool
    restarts = executor.restarts
    outcomes, threads = _load(live, threads=4, count=25)
    live.wait_for(lambda: len(outcomes) >= 10, timeout_s=120, what="load")
    executor.kill_worker(0)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert len(outcomes) == 100 and outcomes == ["ok"] * 100  # exactly one answer each, all computed
    live.wait_for(lambda: executor.ready_workers() >= 2, timeout_s=120, what="the actor to be replaced")
    assert executor.restarts == restarts + 1


def test_a_node_removed_serving_continues_on_the_rest(live: ServerThread, cluster: Cluster) -> None:
    executor: RayExecutor = live.server.pool
    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    live.wait_for(lambda: extra.node_id in executor.nodes(), timeout_s=180,
                  what=f"an actor on the node that joined ({executor.states()}, {executor.nodes()})")
    assert sum(executor.nodes().values()) == 3  # max_workers: the third actor went to the new node
    outcomes, threads = _load(live, threads=2, count=20)
    live.wait_for(lambda: len(outcomes) >= 5, timeout_s=120, what="load")
    cluster.remove_node(extra)
    for t in threads:
        t.join(180)
    assert len(outcomes) == 40 and outcomes == ["ok"] * 40
    live.wait_for(lambda: extra.node_id not in executor.nodes() and executor.ready_workers() >= 2, timeout_s=120,
                  what="the removed node's actor to be replaced")
    with triton.InferenceServerClient(live.url) as client:
        assert _infer(client, _images(2, 9)).as_numpy("logits").shape == (2, 10)


def test_scaling_up_and_down_within_bounds(live: ServerThread) -> None:
    executor: RayExecutor = live.server.pool
    autoscaler = live.server.autoscaler
    assert autoscaler is not None  # min_workers < max_workers
    autoscaler.stop()  # scale by hand first
    assert executor.scale_to(10) == 3  # clipped to max_workers
    live.wait_for(lambda: executor.ready_workers() == 3, timeout_s=180, what="three actors")
    assert executor.scale_to(0) == 1  # clipped to min_workers; idle actors go first
    live.wait_for(lambda: executor.ready_workers() == 1, timeout_s=60, what="one actor")
    with triton.InferenceServerClient(live.url) as client:
        assert _infer(client, _images(1, 3)).as_numpy("logits").shape == (1, 10)
    executor.scale_to(3)
    live.wait_for(lambda: executor.ready_workers() == 3, timeout_s=180,
                  what=f"three actors again ({executor.states()}, {ray.available_resources()})")
    # the autoscaler, on tailor's signals: an idle server with an empty queue sheds a worker per quiet period
    autoscaler.policy = ScalingPolicy(down_after_s=1.0)
    autoscaler.start()
    live.wait_for(lambda: executor.ready_workers() == 1 and autoscaler.history and autoscaler.history[-1][1] == 1,
                  timeout_s=60, what="the autoscaler to scale down to one")
    assert [count for _, count in autoscaler.history][-2:] == [2, 1]


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path, tmp_path_factory) -> None:
    checkpoint, _, subnets = shared_artifacts(tmp_path_factory)
    with pytest.raises(ValueError, match="expected 'ray'"):
        ServerConfig(checkpoint, "p.json", cluster="kubernetes").check()
    executor = RayExecutor(checkpoint, subnets, workers=1)
    assert executor.address is None or isinstance(executor.address, str)
    with pytest.raises(ValueError, match="min_workers <= workers <= max_workers"):
        RayExecutor(checkpoint, subnets, workers=2, max_workers=1)
    assert issubclass(ClusterError, Exception)
    time.sleep(0)
