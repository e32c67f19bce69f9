"""The HTTP front end: the Open Inference Protocol (KServe v2 / Triton REST) on Starlette + uvicorn.

Endpoints: `GET /v2` (server metadata), `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}`
(metadata), `/v2/models/{name}/ready`, `/v2/models/{name}/config`, `POST /v2/models/{name}/infer`
(JSON tensors or the binary-tensor extension), the same under `/versions/{version}`, and `GET /metrics`
(Prometheus text). The front end only reads bodies (bounded: Content-Length and the streamed bytes),
parses them with `tailor.serve.server.protocol`, hands the tensor to the `Engine` and encodes the answer;
scheduling and compute live in `scheduler.py` and `worker.py`.

Answers: 200 with `parameters.subnet` naming the subnet that served it (`on_time` says whether it met its
deadline); 4xx naming the problem for bad input (400), an unknown model (404), a body over the limit
(413), an unsupported encoding (415); 503 + Retry-After when the queue is full or the server is not
ready; 504 when the deadline passed before the request could run (it is not computed); 500 when its
worker died twice or the model raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tailor.cost.profile import Profile
from tailor.errors import ProfileError
from tailor.serve.policies import make_policy
from tailor.serve.profile import ServingProfile, load_profile
from tailor.serve.server import protocol
from tailor.serve.server.metrics import CONTENT_TYPE, ServingMetrics
from tailor.serve.server.protocol import ModelSpec, ProtocolError, TensorSpec
from tailor.serve.server.scheduler import DeadlineExceeded, Engine, Overloaded, RequestFailed, Scheduler, monotonic_ms
from tailor.serve.server.worker import RUNTIMES, WorkerPool
from tailor.space import SearchSpace, Subnet
from tailor.train.checkpoint import read_config

logger = logging.getLogger("tailor.serve")
_JSON = "application/json"


@dataclass
class ServerConfig:
    """Everything `tailor serve` configures; `profile` is a Profile, a ServingProfile or a JSON path."""

    checkpoint: str | os.PathLike[str]
    profile: Profile | ServingProfile | str | os.PathLike[str]
    slo_ms: float = 50.0
    workers: int = 1
    policy: str = "slackfit"
    policy_options: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1
    queue_limit: int = 1024
    max_body_bytes: int = 16 << 20
    max_connections: int = 1024
    model_name: str | None = None
    percentile: str = "p99"
    poll_ms: float = 1.0
    expire_hopeless: bool = True
    drain_timeout_s: float = 30.0
    compute_timeout_s: float = 10.0
    overhead_margin_ms: float | None = None  # None: measured (p90 of dispatch-to-answer minus compute)
    warmup_batch_sizes: tuple[int, ...] = (1,)
    runtime: str | None = None  # None: what the profile measured ("torch" -> in place; "onnxruntime" -> sessions)
    log_level: str = "warning"

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in ("workers", "threads", "queue_limit", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.slo_ms > 0:
            raise ValueError(f"slo_ms must be > 0, got {self.slo_ms!r}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        if not self.poll_ms > 0 or not self.drain_timeout_s > 0 or not self.compute_timeout_s > 0:
            raise ValueError("poll_ms, drain_timeout_s and compute_timeout_s must be > 0")


def served_subnets(profile: ServingProfile, checkpoint: str | os.PathLike[str]) -> dict[str, Subnet]:
    """The profile's Pareto subnets as `Subnet`s, checked against the checkpoint's search space (no weights read)."""
    config = read_config(checkpoint)
    space = SearchSpace.from_dict(config["space"])
    subnets: dict[str, Subnet] = {}
    for subnet_id in profile.subnet_ids:
        sub = profile.subnet(subnet_id)
        if sub is None:
            raise ProfileError(f"subnet {subnet_id!r} has no 'subnet' field in the profile: it can be simulated, not served")
        try:
            space.validate(sub)
        except ValueError as exc:
            raise ProfileError(f"subnet {subnet_id!r} of the profile does not fit the checkpoint's space: {exc}") from None
        subnets[subnet_id] = sub
    return subnets


def resolve_runtime(runtime: str | None, backend: str) -> str:
    """The workers' runtime: the one asked for, else the profile's backend (so that plans match execution)."""
    if runtime is None:
        if backend not in RUNTIMES:
            raise ProfileError(
                f"the profile was measured with backend {backend!r}, which the server cannot run "
                f"(int8 needs calibration data); pass a runtime: {list(RUNTIMES)}"
            )
        return backend
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {list(RUNTIMES)}")
    if runtime != backend:
        logger.warning("serving with runtime %r but the profile was measured with %r: the policy plans with "
                       "latencies of another runtime", runtime, backend)
    return runtime


class InferenceServer:
    """One served model: profile, policy, worker pool, engine, metrics and the Starlette app around them."""

    def __init__(self, config: ServerConfig) -> None:
        config.check()
        self.config = config
        self.profile = load_profile(config.profile, config.percentile)
        self.subnets = served_subnets(self.profile, config.checkpoint)
        self.runtime = resolve_runtime(config.runtime, self.profile.profile.backend)
        self.policy = make_policy(config.policy, self.profile, slo_ms=config.slo_ms, workers=config.workers,
                                  **config.policy_options)
        self.scheduler = Scheduler(self.profile, self.policy, config.queue_limit, config.expire_hopeless)
        self.pool = WorkerPool(
            config.checkpoint,
            self.subnets,
            workers=config.workers,
            threads=config.threads,
            warmup_batch_sizes=config.warmup_batch_sizes,
            input_shape=tuple(self.profile.profile.input_shape),
            runtime=self.runtime,
        )
        self.metrics = ServingMetrics(
            self.scheduler.max_batch_size,
            queue_length=lambda: len(self.scheduler.queue),
            workers=self.pool.states,
            running=lambda: self.engine.running,
            restarts=lambda: self.pool.restarts,
            margin_ms=lambda: self.engine.margin_ms,
        )
        self.engine = Engine(self.scheduler, self.pool, config.slo_ms, self.metrics, poll_ms=config.poll_ms,
                             min_timeout_s=config.compute_timeout_s, overhead_margin_ms=config.overhead_margin_ms)
        self.name = config.model_name or self.profile.profile.model
        self.spec: ModelSpec | None = None
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers (they load the checkpoint) and the scheduler; the model spec is known after."""
        await self.engine.start()
        assert self.pool.output_shape is not None
        input_shape = tuple(self.profile.profile.input_shape)
        self.spec = ModelSpec(
            name=self.name,
            input=TensorSpec("input", "FP32", (-1, *input_shape)),
            output=TensorSpec("logits", "FP32", (-1, *self.pool.output_shape)),
            max_batch_size=self.scheduler.max_batch_size,
            parameters={"policy": self.policy.describe(), "slo_ms": self.config.slo_ms, "runtime": self.runtime,
                        "subnets": ",".join(self.profile.subnet_ids)},
        )
        if self.pool.uncalibrated:
            logger.warning("subnets without their own SubnetNorm statistics (accuracy suffers): %s",
                           ", ".join(self.pool.uncalibrated))

    async def stop(self) -> None:
        """Drain: answer what is queued or running (bounded by the drain timeout), then stop the workers."""
        await self.engine.close(self.config.drain_timeout_s)

    def summary(self) -> dict[str, Any]:
        """Requests by outcome, SLO attainment, requests per subnet, worker restarts (for the end of a run)."""
        metrics = self.metrics
        return {
            "requests": {outcome: int(v) for (outcome,), v in sorted(metrics.requests.values.items())},
            "slo_attainment": metrics.slo_attainment(),
            "subnet_requests": {sid: int(v) for (sid,), v in sorted(metrics.subnet_requests.values.items())},
            "worker_restarts": self.pool.restarts,
        }

    # -- the app -------------------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        model = "/v2/models/{name}"
        version = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        for prefix in (model, version):
            routes += [
                Route(prefix, self.model_metadata, methods=["GET"]),
                Route(prefix + "/ready", self.model_ready, methods=["GET"]),
                Route(prefix + "/config", self.model_config, methods=["GET"]),
                Route(prefix + "/infer", self.infer, methods=["POST"]),
            ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
        )

    @staticmethod
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)

    def _model(self, request: Request) -> ModelSpec:
        """The spec if the path names our model (and version); else raise a 404 naming what exists."""
        name = request.path_params["name"]
        if name != self.name:
            raise _NotFound(f"unknown model {name!r}; this server serves {self.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            raise _NotFound(f"model {self.name!r} has no version {version!r}; its versions: ['1']")
        if self.spec is None:
            raise _NotFound(f"model {self.name!r} is still loading")
        return self.spec

    async def server_metadata(self, request: Request) -> Response:
        from tailor import __version__

        return _json({"name": "tailor", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        return Response(b"", 200)

    async def ready(self, request: Request) -> Response:
        return Response(b"", 200 if self.engine.ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        try:
            return _json(self._model(request).metadata())
        except _NotFound as exc:
            return _error(404, str(exc))

    async def model_config(self, request: Request) -> Response:
        try:
            return _json(self._model(request).config())
        except _NotFound as exc:
            return _error(404, str(exc))

    async def model_ready(self, request: Request) -> Response:
        try:
            self._model(request)
        except _NotFound as exc:
            return _error(404, str(exc))
        return Response(b"", 200 if self.engine.ready else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render().encode(), 200, media_type=CONTENT_TYPE)

    async def infer(self, request: Request) -> Response:
        """Parse, queue, await the engine's answer, encode; exactly one response per request."""
        arrival = monotonic_ms()
        try:
            spec = self._model(request)
        except _NotFound as exc:
            await _discard(request.stream(), self.config.max_body_bytes)
            return self._invalid(404, str(exc), arrival)
        try:
            body = await read_body(request, self.config.max_body_bytes)
            body = protocol.decode_content(body, request.headers.get("content-encoding"), self.config.max_body_bytes)
            parsed = protocol.parse_infer_request(body, spec, request.headers.get(protocol.HEADER_LENGTH))
        except ProtocolError as exc:
            return self._invalid(exc.status, exc.message, arrival)
        try:
            served = await self.engine.submit(parsed.inputs, parsed.deadline_ms, arrival)
        except Overloaded as exc:
            self._observe("rejected", arrival)
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        except DeadlineExceeded as exc:
            self._observe("expired", arrival)
            return _error(504, str(exc))
        except RequestFailed as exc:
            self._observe("failed", arrival)
            return _error(500, str(exc))
        server_ms = monotonic_ms() - arrival
        parameters = {
            "subnet": served.subnet_id,
            "subnet_accuracy": served.accuracy,
            "batch_size": served.batch_size,
            "on_time": served.on_time,
            "deadline_ms": served.deadline_ms - arrival,
            "queue_ms": round(served.queue_ms, 4),
            "compute_ms": round(served.compute_ms, 4),
            "worker_ms": round(served.worker_ms, 4),
            "server_ms": round(server_ms, 4),
        }
        if served.attempts:
            parameters["attempts"] = served.attempts + 1
        body, headers = protocol.encode_infer_response(spec, parsed, served.outputs, parameters)
        total_ms = monotonic_ms() - arrival
        self.metrics.overhead.observe(max(0.0, total_ms - served.queue_ms - served.compute_ms) / 1e3)
        self.metrics.latency.observe(total_ms / 1e3, "on_time" if served.on_time else "late")
        return Response(body, 200, headers=headers)

    def _invalid(self, status: int, message: str, arrival: float) -> Response:
        self.metrics.requests.inc("invalid")
        self._observe("invalid", arrival)
        return _error(status, message)

    def _observe(self, outcome: str, arrival: float) -> None:
        self.metrics.latency.observe((monotonic_ms() - arrival) / 1e3, outcome)


class _NotFound(Exception):
    pass


def _json(data: Any) -> Response:
    return Response(json.dumps(data).encode(), 200, media_type=_JSON)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(protocol.error_body(message), status, headers=headers, media_type=_JSON)


async def _discard(stream: AsyncIterator[bytes], limit: int) -> None:
    """Read and drop up to `limit` more bytes so that the client sees our answer rather than a reset."""
    seen = 0
    with contextlib.suppress(Exception):
        async for chunk in stream:
            seen += len(chunk)
            if seen > limit:
                break


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) when Content-Length says or the streamed bytes prove it is over `limit`."""
    declared = request.headers.get("content-length")
    stream = request.stream()
    if declared is not None:
        if not (declared.strip().isascii() and declared.strip().isdigit()):
            raise ProtocolError(f"Content-Length {declared!r:.40} is not a non-negative integer")
        if int(declared) > limit:
            await _discard(stream, 4 * limit)
            raise ProtocolError(f"request body of {int(declared)} bytes is over the limit of {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await _discard(stream, 4 * limit)
            raise ProtocolError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one (read it with `getsockname()`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only disables Nagle (TCP_NODELAY) on sockets that say they are TCP; without it
    # a response written as headers + body waits for the client's delayed ACK (40 ms on Linux)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(server: InferenceServer, log_level: str | None = None) -> uvicorn.Server:
    """A uvicorn server for the app: no access log, at most `max_connections`, shutdown bounded by the drain timeout."""
    config = uvicorn.Config(
        server.app,
        lifespan="off",  # the engine is started before and stopped after uvicorn runs: see `serve_async`
        log_level=log_level or server.config.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(server.config.drain_timeout_s) + 1,
        limit_concurrency=server.config.max_connections,  # beyond: 503 (bounds memory: connections x body limit)
        loop="auto",  # uvloop and httptools when installed (uvicorn[standard]); asyncio and h11 otherwise
        http="auto",
    )
    return uvicorn.Server(config)


async def serve_async(
    server: InferenceServer, sock: socket.socket, runner: uvicorn.Server, on_ready: Callable[[], None] | None = None
) -> None:
    """Start the workers, serve on `sock` until `runner.should_exit` (set by SIGINT/SIGTERM), then drain and stop.

    uvicorn's shutdown stops accepting, lets every open request finish (they are answered by the engine,
    which keeps running), and only then does `server.stop()` drain what is left and stop the workers.
    """
    await server.start()
    try:
        if on_ready is not None:
            on_ready()
        await runner.serve(sockets=[sock])
    finally:
        await server.stop()


def run_server(config: ServerConfig, on_ready: Callable[[InferenceServer, str], None] | None = None) -> dict[str, Any]:
    """Serve until SIGINT/SIGTERM, then drain; `on_ready(server, url)` runs once the workers are loaded.

    Returns the outcome counts and SLO attainment of the whole run.
    """
    server = InferenceServer(config)
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    runner = uvicorn_server(server)

    def stop(signum: int, frame: Any) -> None:  # what uvicorn does, also while the workers are still loading
        if runner.should_exit and signum == signal.SIGINT:
            runner.force_exit = True
        runner.should_exit = True

    # uvicorn restores the handlers it found and re-raises the signal after draining; with these in place that
    # re-raise lands here instead of killing the process, so the run ends normally (exit 0, summary printed)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(serve_async(server, sock, runner, None if on_ready is None else lambda: on_ready(server, url)))
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server.summary()
