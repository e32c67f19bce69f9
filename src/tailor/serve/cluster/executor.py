"""Workers as Ray actors, owned by the one ingress that holds the deadline queue (`RayExecutor`).

The ingress (the `tailor serve` process, connected to a Ray cluster as a driver) keeps what must be global
for deadline scheduling: the one EDF queue, the policy and the engine. Ray places the workers. Each
`WorkerActor` holds one `ModelRunner` (the supernet switched in place, or ONNX Runtime sessions), built
from the checkpoint's two files, which the ingress reads once and puts in Ray's object store, so machines
need no shared file system (the bytes are the safetensors and JSON files as written; nothing is unpickled
from them). The executor owns its actors, so its idle count is exact: a batch is dispatched only to an
actor known to be idle, never queued behind a busy replica (which Ray Serve's request routing would do,
and which would hide capacity from the policy).

Failures: an actor that dies (its process, or its node) fails its batch with `WorkerCrashed` (the engine
retries it once on another actor, or answers 504 past its deadline) and is replaced; a batch past its
watchdog gets its actor killed the same way. Nodes that join are noticed within `watch_s` and get an actor
each (up to `max_workers`); the `ScalingPolicy` adds and removes actors from tailor's own signals.

Written here because Ray Serve's features do not do this: `@serve.batch` batches by size and timeout and
cannot choose a subnet per batch, `@serve.multiplexed` would load the shared supernet once per subnet, and
its autoscaling counts requests, not deadlines.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.errors import TailorError
from tailor.serve.server.worker import RunResult, WorkerCrashed, WorkerError, WorkerStartError, check_runtimes
from tailor.space import Subnet
from tailor.train.checkpoint import CONFIG_FILE, WEIGHTS_FILE

logger = logging.getLogger("tailor.serve")


class ClusterError(TailorError):
    """Ray is missing, the cluster cannot be reached, or it has no room for a worker."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("serving on a Ray cluster needs Ray: pip install 'tailor[ray]'") from None
    return ray


def checkpoint_files(checkpoint: str | os.PathLike[str]) -> dict[str, bytes]:
    """The two files a worker needs (weights in safetensors, the rest in JSON), as bytes."""
    root = Path(checkpoint)
    return {name: (root / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}


class WorkerActorBody:
    """What runs inside a Ray actor: writes the checkpoint's files to a private temporary directory, loads a
    `ModelRunner` from them (verified hashes, never unpickled) and removes the directory (the runner holds the
    weights in memory, so an actor restarted many times leaves nothing behind), warms it up and runs batches."""

    def __init__(self, files: dict[str, bytes], subnets: dict[str, dict[str, Any]], threads: int,
                 warmup_batch_sizes: list[int], input_shape: list[int] | None, runtime: str | dict[str, str],
                 delay_ms: dict[str, list[float]] | None = None, device: str = "cpu") -> None:
        import tempfile

        from tailor.serve.server.worker import ModelRunner

        with tempfile.TemporaryDirectory(prefix="tailor-actor-") as directory:
            for name, data in files.items():
                Path(directory, name).write_bytes(data)
            self.runner = ModelRunner(directory, {k: Subnet.from_dict(v) for k, v in subnets.items()}, threads,
                                      input_shape, runtime, device)
        self.delay_ms = delay_ms  # benchmarks: sleep the profiled latency instead of computing
        self.output_shape = self.runner.warmup(warmup_batch_sizes)

    def ready(self) -> dict[str, Any]:
        import ray

        return {"output_shape": list(self.output_shape), "uncalibrated": self.runner.uncalibrated(),
                "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def run(self, subnet_id: str, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        if self.delay_ms is not None:
            start = time.perf_counter()
            sizes = self.delay_ms["batch_sizes"]
            latency = self.delay_ms[subnet_id][next((i for i, b in enumerate(sizes) if b >= len(inputs)), -1)]
            time.sleep(latency / 1e3)
            return np.zeros((len(inputs), *self.output_shape), np.float32), (time.perf_counter() - start) * 1e3
        return self.runner.run(subnet_id, inputs)

    def ping(self) -> int:
        return os.getpid()


@dataclass
class _Actor:
    handle: Any
    index: int
    node: str | None = None
    pid: int | None = None
    state: str = "starting"  # starting | idle | busy | dead
    started_at: float = field(default_factory=time.monotonic)
    batch: int | None = None


class RayExecutor:
    """The engine's `Executor` on a Ray cluster: `workers` actors (one supernet each), exact idle counts.

    `address`: None starts (or joins) a local Ray; "auto" or "ray://HOST:PORT" connects to a cluster (the
    `RAY_ADDRESS` environment variable is honoured when `address` is None). `actor_options`: extra
    `ray.remote` options per actor (e.g. `{"num_cpus": 1}`). `delay_ms`: the profiled latency per subnet and
    batch size, to sleep instead of computing (scaling benchmarks).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        subnets: Mapping[str, Subnet],
        workers: int = 1,
        threads: int = 1,
        warmup_batch_sizes: Sequence[int] = (1,),
        input_shape: Sequence[int] | None = None,
        runtime: str | Mapping[str, str] = "torch-inplace",
        address: str | None = None,
        min_workers: int | None = None,
        max_workers: int | None = None,
        actor_options: dict[str, Any] | None = None,
        start_timeout_s: float = 180.0,
        watch_s: float = 1.0,
        delay_ms: dict[str, list[float]] | None = None,
        on_change: Callable[[], None] | None = None,
        device: str = "cpu",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        check_runtimes(dict.fromkeys(subnets, runtime) if isinstance(runtime, str) else dict(runtime))
        self.min_workers = workers if min_workers is None else min_workers
        self.max_workers = workers if max_workers is None else max_workers
        if not 1 <= self.min_workers <= workers <= self.max_workers:
            raise ValueError(f"need 1 <= min_workers <= workers <= max_workers, got {self.min_workers}, {workers}, "
                             f"{self.max_workers}")
        self.target = workers
        self.checkpoint = checkpoint
        self.subnets = {sid: sub.to_dict() for sid, sub in subnets.items()}
        self.threads = threads
        self.warmup_batch_sizes = [int(b) for b in warmup_batch_sizes]
        self.input_shape = None if input_shape is None else [int(d) for d in input_shape]
        self.runtime = runtime if isinstance(runtime, str) else dict(runtime)
        self.device = device
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self.actor_options = {"num_cpus": 1, **(actor_options or {})}
        self.start_timeout_s = start_timeout_s
        self.watch_s = watch_s
        self.delay_ms = delay_ms
        self.on_change = on_change or (lambda: None)
        self.actors: list[_Actor] = []
        self.output_shape: tuple[int, ...] | None = None
        self.uncalibrated: list[str] = []
        self.restarts = 0
        self._indices = itertools.count()
        self._batches = itertools.count()
        self._files_ref: Any = None
        self._started_ray = False
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._actor_class: Any = None
        self._known_nodes: set[str] = set()

    # -- state (the Executor protocol) -------------------------------------------------------------------
    def idle_workers(self) -> int:
        return sum(1 for a in self.actors if a.state == "idle")

    def ready_workers(self) -> int:
        return sum(1 for a in self.actors if a.state in ("idle", "busy"))

    def states(self) -> dict[str, int]:
        counts = dict.fromkeys(("starting", "idle", "busy", "dead", "spare"), 0)
        for actor in self.actors:
            counts[actor.state] += 1
        return counts

    def nodes(self) -> dict[str, int]:
        """Live actors per Ray node id."""
        out: dict[str, int] = {}
        for actor in self.actors:
            if actor.state in ("idle", "busy") and actor.node is not None:
                out[actor.node] = out.get(actor.node, 0) + 1
        return out

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to Ray, put the checkpoint in the object store, start the actors and wait until all are ready."""
        ray = _ray()
        self._loop = asyncio.get_running_loop()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, namespace="tailor", log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
            except ConnectionError as exc:
                raise ClusterError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from None
            self._started_ray = True
        self._actor_class = ray.remote(WorkerActorBody)
        self._files_ref = ray.put(checkpoint_files(self.checkpoint))
        self._known_nodes = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for _ in range(self.target):
            self._start_actor()
        deadline = time.monotonic() + self.start_timeout_s
        while self.ready_workers() < self.target:
            failed = [a for a in self.actors if a.state == "dead"]
            if failed and not self.ready_workers() and len(failed) >= self.target:
                await self.close()
                raise WorkerStartError("no Ray worker could load the model (see the actor logs)")
            if time.monotonic() > deadline:
                await self.close()
                raise WorkerStartError(f"Ray workers not ready within {self.start_timeout_s:.0f} s "
                                       f"(states: {self.states()}; is there room in the cluster for "
                                       f"{self.target} actors with {self.actor_options}?)")
            await asyncio.sleep(0.05)
        self._watcher = asyncio.ensure_future(self._watch())

    def _start_actor(self, node: str | None = None) -> _Actor:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy: Any = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=True)
        handle = self._actor_class.options(scheduling_strategy=strategy, max_restarts=0,
                                           **self.actor_options).remote(
            self._files_ref, self.subnets, self.threads, self.warmup_batch_sizes, self.input_shape, self.runtime,
            self.delay_ms, self.device)
        actor = _Actor(handle, next(self._indices))
        self.actors.append(actor)
        self._spawn(self._await_ready(actor))
        return actor

    def _spawn(self, coroutine: Any) -> None:
        """Run `coroutine` on the executor's event loop, also when called from another thread (`scale_to`)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            return
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_ready(self, actor: _Actor) -> None:
        try:
            info = await asyncio.wrap_future(actor.handle.ready.remote().future())
        except Exception as exc:
            logger.warning("Ray worker %d could not start: %s", actor.index, str(exc).splitlines()[0])
            self._forget(actor)
            return
        if actor.state == "dead":
            return
        self.output_shape = tuple(info["output_shape"])
        self.uncalibrated = list(info["uncalibrated"])
        actor.node, actor.pid, actor.state = info["node"], info["pid"], "idle"
        self.on_change()

    def _forget(self, actor: _Actor) -> None:
        actor.state = "dead"
        if actor in self.actors:
            self.actors.remove(actor)
        self.on_change()

    def _replace(self, actor: _Actor) -> None:
        """An actor died: drop it and start another (Ray places it where there is room)."""
        ray = _ray()
        self._forget(actor)
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # already gone
            pass
        if not self._closing and len(self.live()) < self.target:
            self.restarts += 1
            self._start_actor()

    def live(self) -> list[_Actor]:
        return [a for a in self.actors if a.state != "dead"]

    async def _watch(self) -> None:
        """Every `watch_s`: actors on dead nodes are replaced; a node without an actor gets one (up to max)."""
        ray = _ray()
        while not self._closing:
            await asyncio.sleep(self.watch_s)
            try:
                nodes = await asyncio.get_running_loop().run_in_executor(None, ray.nodes)
                self._reconcile(nodes)
            except Exception:  # a hiccup of the cluster's state API must not stop the watching
                logger.exception("watching the Ray cluster's nodes failed; trying again in %.1f s", self.watch_s)

    def _reconcile(self, nodes: list[dict[str, Any]]) -> None:
        """Replace idle actors of dead nodes; give each node that joined an actor (raising the target, up to
        `max_workers`); start actors while fewer than the target are alive."""
        alive = {n["NodeID"] for n in nodes if n.get("Alive")}
        for actor in list(self.actors):
            if actor.node is not None and actor.node not in alive and actor.state == "idle":
                self._replace(actor)  # busy ones fail their batch and are replaced then
        joined, self._known_nodes = alive - self._known_nodes, self._known_nodes | alive
        for node in sorted(joined):
            if len(self.live()) >= self.max_workers:
                break
            resources = next((n.get("Resources", {}) for n in nodes if n["NodeID"] == node), {})
            if resources.get("CPU", 0) >= self.actor_options.get("num_cpus", 1):
                self.target = min(self.max_workers, max(self.target, len(self.live()) + 1))
                self._start_actor(node)
        while len(self.live()) < self.target:
            self._start_actor()

    def scale_to(self, workers: int) -> int:
        """Grow or shrink to `workers` actors (clipped to [min_workers, max_workers]); idle ones are removed first,
        busy ones never. Returns the new target."""
        workers = max(self.min_workers, min(self.max_workers, int(workers)))
        self.target = workers
        while len(self.live()) < workers:
            self._start_actor()
        surplus = len(self.live()) - workers
        for actor in [a for a in self.actors if a.state in ("idle", "starting")][:max(0, surplus)]:
            self._forget(actor)
            try:
                _ray().kill(actor.handle, no_restart=True)
            except Exception:
                pass
        return workers

    async def close(self, timeout_s: float = 5.0) -> None:
        """Kill every actor; pending batches fail; disconnect from Ray if this executor connected."""
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        ray = _ray()
        for actor in list(self.actors):
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
            actor.state = "dead"
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)
        if self._started_ray:
            ray.shutdown()

    # -- running batches -----------------------------------------------------------------------------------
    def dispatch(self, subnet_id: str, inputs: np.ndarray, timeout_s: float = 60.0) -> asyncio.Future[RunResult]:
        """Send a batch to an idle actor now; the future fails with `WorkerCrashed` if the actor dies or is silent
        for `timeout_s` (it is then killed and replaced), with `WorkerError` if the model raised."""
        actor = next((a for a in self.actors if a.state == "idle"), None)
        if actor is None:
            raise RuntimeError("RayExecutor.dispatch called with no idle worker (check idle_workers() first)")
        assert self._loop is not None
        actor.state, actor.batch = "busy", next(self._batches)
        future: asyncio.Future[RunResult] = self._loop.create_future()
        ref = actor.handle.run.remote(subnet_id, np.ascontiguousarray(inputs, dtype=np.float32))
        self._spawn(self._collect(actor, actor.batch, ref, future, timeout_s))
        return future

    async def _collect(self, actor: _Actor, batch: int, ref: Any, future: asyncio.Future[RunResult],
                       timeout_s: float) -> None:
        ray = _ray()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            outputs, compute_ms = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except (TimeoutError, GetTimeoutError):
            error: Exception = WorkerCrashed(f"Ray worker {actor.index} gave no answer within {timeout_s:.1f} s; it "
                                             "was killed and is being replaced")
            ray.cancel(ref, force=True)
            self._replace(actor)
        except RayActorError as exc:
            error = WorkerCrashed(f"Ray worker {actor.index} (pid {actor.pid}) died while running this request's batch "
                                  f"({type(exc).__name__})")
            self._replace(actor)
        except RayTaskError as exc:
            error = WorkerError(f"Ray worker {actor.index}: {str(exc).splitlines()[-1]}")
            if actor.state == "busy" and actor.batch == batch:
                actor.state, actor.batch = "idle", None
            self.on_change()
        except Exception as exc:  # the object store lost it, the connection dropped, ...
            error = WorkerCrashed(f"Ray worker {actor.index}: {type(exc).__name__}: {exc}")
            self._replace(actor)
        else:
            if actor.state == "busy" and actor.batch == batch:
                actor.state, actor.batch = "idle", None
            if not future.done():
                future.set_result(RunResult(np.asarray(outputs), float(compute_ms), actor.index))
            self.on_change()
            return
        if not future.done():
            future.set_exception(error)

    def kill_worker(self, index: int) -> None:
        """Kill the actor at position `index` (fault drills and tests); it is noticed and replaced."""
        _ray().kill(self.actors[index].handle, no_restart=True)
