"""The HTTP front end: the Open Inference Protocol (KServe v2 / Triton REST) on uvicorn (+ Starlette).

Endpoints: `GET /v2` (server metadata), `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}`
(metadata), `/v2/models/{name}/ready`, `/v2/models/{name}/config`, `/v2/models/{name}/stats` (Triton's
statistics extension), `POST /v2/repository/index`, `POST /v2/models/{name}/infer` (JSON tensors or the
binary-tensor extension), the same under `/versions/{version}`, and `GET /metrics` (Prometheus text).

The inference path is a plain ASGI handler in front of Starlette (which serves the rest): under overload
it is what runs thousands of times a second, so it does the cheap checks first and sheds before parsing.
A request's clock starts when the server reads its first byte, moved back by the event loop's current lag
(`ArrivalStampingProtocol`, a subclass of uvicorn's httptools protocol that also bounds the time to receive
the headers and body; `LoopLag`). Under overload most requests are refused, so refusing must be cheap: the
protocol asks admission at the headers and answers a refused request 503 itself, without an ASGI task
(`InferenceServer.sheds`); a request let through holds a place in admission until it is queued. A read that
holds one whole request whose header block is byte for byte one the parser has read before (a client sends
the same headers with every request of one size) is refused from its raw bytes, without the parser's callbacks
(`ArrivalStampingProtocol._refuse_known`). The event loop is uvloop's when installed.

Answers: 200 with `parameters.subnet` naming the subnet that served it; 4xx naming the problem for bad
input (400), an unknown model (404), a slow body (408), a body over the limit (413), an unsupported
encoding (415), headers over the limit (431); 503 + Retry-After when the queue is full, the deadline cannot
be met behind the queue, there are too many connections, or the server is not ready; 504 when the
deadline passed (before the request could run: not computed; or while its batch ran: answered at the
deadline); 500 when its worker died twice or the model raised. Every error is JSON `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tailor.checks import integer, non_negative_int, number, positive_float, positive_int
from tailor.cost.profile import Profile
from tailor.errors import ProfileError, TailorError
from tailor.serve.policies import DEFAULT_POLICY, Policy, make_policy
from tailor.serve.profile import ServingProfile, load_profile
from tailor.serve.server import protocol
from tailor.serve.server.metrics import CONTENT_TYPE, ServingMetrics
from tailor.serve.server.protocol import ModelSpec, ProtocolError, TensorSpec
from tailor.serve.server.scheduler import (
    DeadlineExceeded,
    Engine,
    Overloaded,
    RequestFailed,
    Scheduler,
    monotonic_ms,
)
from tailor.serve.server.worker import WorkerPool, check_runtimes
from tailor.space import SearchSpace, Subnet
from tailor.train.checkpoint import read_config

logger = logging.getLogger("tailor.serve")
_JSON = "application/json"
ARRIVAL_KEY = "tailor.arrival_ms"
RESERVED_KEY = "tailor.reserved"  # the protocol admitted it at its headers: its ticket (see `InferenceServer.infer`)
BODY_COMPLETE_KEY = "tailor.body_complete"  # the protocol has the whole body: reading it cannot wait
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
KNOWN_HEADER_BYTES = 4096  # a header block longer than this is always parsed (see `_refuse_known`)
SHED_ANSWER_MS = 100.0  # a shed answer is reused this long (its Retry-After is whole seconds)
SERVING_GC_THRESHOLDS = (35_000, 10, 10)  # the collector's thresholds in a serving process (`settle_heap_for_serving`)


# Where a worker shares its core with the front end, how far below the front end's priority it runs by default.
# Under a burst the front end is always runnable, and CFS then leaves a worker at nice n a share of
# 1024 / 1.25**n of 1024 + that: ~10% at nice 10, ~25% at nice 5. ONNX Runtime's compiled graph needs little CPU a
# sample, and the front end's reads come first (10 beat 5 and 7 at 3x and 10x); eager PyTorch runs Python per
# layer, and at nice 10 its worker starves under a burst (5 beat 7 and 10: 3x 0.97-1.03 C against 0.90-0.91 C,
# 10x 0.55-0.58 C against 0.43-0.46 C; see the server README). Measured on one 2-core Intel machine;
# `--worker-nice` overrides it.
EAGER_TORCH_RUNTIMES = frozenset({"torch", "torch-inplace"})
EAGER_TORCH_WORKER_NICE, COMPILED_WORKER_NICE = 5, 10


def default_worker_nice(runtimes: Iterable[str]) -> int:
    """The workers' nice when none is configured: 5 where every subnet runs eager PyTorch, else 10."""
    names = set(runtimes)
    return EAGER_TORCH_WORKER_NICE if names and names <= EAGER_TORCH_RUNTIMES else COMPILED_WORKER_NICE


class ServerConfigError(TailorError, ValueError):
    """A `ServerConfig` setting is of the wrong type or out of range."""


@dataclass
class ServerConfig:
    """Everything `tailor serve` configures; `profile` is a Profile, a ServingProfile or a JSON path."""

    checkpoint: str | os.PathLike[str]
    profile: Profile | ServingProfile | str | os.PathLike[str]
    slo_ms: float = 50.0
    workers: int = 1
    policy: str = DEFAULT_POLICY
    policy_options: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1
    queue_limit: int = 1024
    max_body_bytes: int = 16 << 20
    max_header_bytes: int = 16 << 10
    max_connections: int = 1024
    read_timeout_s: float = 10.0  # headers and body must arrive within this (408 otherwise)
    model_name: str | None = None
    percentile: str = "auto"  # the highest percentile the profile's repeats support (p99, p90 or p50); or one of them
    poll_ms: float = 1.0
    expire_hopeless: bool = True
    admission: bool = True  # refuse (503) a request the queue cannot drain within its deadline, before parsing it
    worker_nice: int | None = None  # local workers' priority below the front end's (0-19); None: by runtime
    drain_timeout_s: float = 30.0
    compute_timeout_s: float = 10.0  # the longest a batch may run before its worker is declared hung
    watchdog_slo_factor: float = 2.0  # ... and at least this many SLOs (or 10 x its planned latency)
    spare_workers: int = 1  # loaded processes that replace a dead worker at once
    overhead_margin_ms: float | None = None  # None: measured (dispatch-to-answer minus compute, + delivery)
    margin_percentile: float = 99.9  # ... at this percentile of the last 256 batches and answers (99.9: the largest)
    scale_profile: bool = True  # plan with the profile's latencies x the workers' measured slowdown (>= 1)
    warmup_batch_sizes: tuple[int, ...] = (1,)
    runtime: str | None = None  # None: each subnet on the runtime the profile chose for it; a name: all on that one
    device: str = "cpu"  # what the workers prepare subnets on (the profile should be measured there)
    log_level: str = "warning"
    cluster: str | None = None  # None: local worker processes; "ray" (local or RAY_ADDRESS), "ray://HOST:PORT"
    min_workers: int | None = None  # cluster: the autoscaler's bounds (default: `workers`, i.e. no scaling)
    max_workers: int | None = None
    actor_options: dict[str, Any] = field(default_factory=dict)  # cluster: extra ray.remote options per worker
    simulated_compute: bool = False  # cluster: workers sleep the profiled latency instead of computing (scaling studies)

    def check(self) -> None:
        """Raise `ServerConfigError` (a ValueError) naming the first bad setting."""
        for name in ("workers", "threads", "queue_limit", "max_connections"):
            positive_int(name, getattr(self, name), ServerConfigError)
        non_negative_int("spare_workers", self.spare_workers, ServerConfigError)
        if self.worker_nice is not None:
            integer("worker_nice", self.worker_nice, ServerConfigError, low=0, high=19)
        for name in ("slo_ms", "poll_ms", "drain_timeout_s", "compute_timeout_s", "read_timeout_s", "watchdog_slo_factor"):
            positive_float(name, getattr(self, name), ServerConfigError)
        number("margin_percentile", self.margin_percentile, ServerConfigError, low=50, high=100)
        for name in ("max_body_bytes", "max_header_bytes"):
            integer(name, getattr(self, name), ServerConfigError, low=1024)
        integer("port", self.port, ServerConfigError, low=0, high=65535)
        if self.cluster is not None and not (self.cluster in ("ray", "auto") or self.cluster.startswith("ray://")):
            raise ServerConfigError(f"cluster {self.cluster!r}: expected 'ray' (local, or the cluster in RAY_ADDRESS), "
                                    "'auto' or 'ray://HOST:PORT'")


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


def serving_runtimes(profile: ServingProfile, runtime: str | None) -> dict[str, str]:
    """{subnet id: the runtime its workers prepare it on}: the profile's choice per subnet (the fastest it measured
    within tolerance), or `runtime` for all (the profile then plans with that runtime's latencies when it measured
    it; otherwise with its own, which is logged)."""
    if runtime is None:
        return profile.runtimes
    if runtime not in profile.profile.measured_runtimes:
        logger.warning("serving every subnet on %r, which the profile did not measure (it measured %s): the policy "
                       "plans with latencies of another runtime", runtime, profile.profile.measured_runtimes)
    return dict.fromkeys(profile.subnet_ids, runtime)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of header `name` (lower-case bytes), or None; a repeated header's values joined by ','."""
    values = [v for k, v in headers if k == name]
    if not values:
        return None
    return b",".join(values).decode("latin-1")


class LoopLag:
    """How long a request's bytes wait for the event loop before they are read: every `interval_s` a byte is
    written to a socket pair the loop watches, and the time until its read callback runs is the wait of what
    became readable then (a smoothed maximum, in ms).

    A request's first byte is read only when the loop gets to its socket; under overload one pass of the loop
    reads hundreds of sockets and takes milliseconds, and that wait is invisible to a clock started in
    `data_received` while the client has been waiting all along. Arrival stamps are moved back by this lag, so
    deadlines, admission and the policy count it. The probe's byte is read among the other sockets' data, in
    the order the kernel reported them ready, so the figure includes the pass's reads ahead of it (a callback
    put on the ready queue with `call_soon`, as this probe was until now, runs before the pass reads any socket
    and read 1-2 ms where a refusal's round trip at the client took 10). Written here because no kept library
    measures asyncio's lag (Node's `monitorEventLoopDelay` is the same idea); the probe costs a send and a recv
    `1 / interval_s` times a second.
    """

    def __init__(self, interval_s: float = 0.005, decay: float = 0.9,
                 clock: Callable[[], float] = monotonic_ms) -> None:
        self.interval_s = interval_s
        self.decay = decay
        self.clock = clock
        self.lag_ms = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._written_ms = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        reader, writer = self._pair = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._loop.add_reader(reader.fileno(), self._readable)
        self._handle = self._loop.call_later(self.interval_s, self._probe)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pair is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._pair[0].fileno())
            for end in self._pair:
                end.close()
            self._pair = None

    def _probe(self) -> None:
        self._handle = None
        if self._pair is None:
            return
        self._written_ms = self.clock()
        try:
            self._pair[1].send(b"\0")
        except OSError:  # the pair's buffer is full (cannot be, one byte at a time): look again later
            self._next()

    def _readable(self) -> None:
        if self._pair is None:
            return
        try:
            self._pair[0].recv(64)
        except OSError:
            return
        late = self.clock() - self._written_ms
        self.lag_ms = late if late > self.lag_ms else self.decay * self.lag_ms + (1 - self.decay) * late
        self._next()

    def _next(self) -> None:
        if self._loop is not None and self._pair is not None:
            self._handle = self._loop.call_later(self.interval_s, self._probe)

    def arrival_ms(self) -> float:
        """Now, moved back by the loop's current lag: when a request read now most likely reached the socket."""
        return self.clock() - self.lag_ms


@dataclass(slots=True)
class _RefusalRun:
    """What `InferenceServer.refusal` keeps within one pass of the event loop: admission's horizon, until when
    it holds, the state it was taken in (executor changes, places held, queued samples) and the 503 to send.
    `read_length` and `prefix`: the first read the protocol refused with it, its length and its bytes up to the
    end of its JSON part (headers and JSON, not the tensor): a read of that length that begins with them is a
    repeat of that request (`InferenceServer.refuses_repeat`); -1 and empty until one is refused."""

    horizon_ms: float
    until_ms: float
    executor_changes: int
    reserved: int
    queued_samples: int
    answer: bytes
    read_length: int = -1
    prefix: bytes = b""


class InferenceServer:
    """One served model: profile, policy, worker pool, engine, metrics, and the ASGI app around them.

    The server is itself the ASGI application: inference requests take a lean path; everything else goes
    to a Starlette app.
    """

    refusal_run_ms = 1.0  # within a pass of the loop, admission's horizon is asked again at least this often

    def __init__(self, config: ServerConfig) -> None:
        config.check()
        self.config = config
        source = config.profile if isinstance(config.profile, (Profile, ServingProfile)) else Profile.load(config.profile)
        only = None
        if config.runtime is not None and not isinstance(source, ServingProfile):
            only = [config.runtime] if config.runtime in source.measured_runtimes else None
        self.profile = load_profile(source, config.percentile, runtimes=only)
        logger.info("planning with latency %s", self.profile.percentile_reason)
        for issue in self.profile.issues()[:5]:
            logger.warning("profile: %s", issue)
        self.subnets = served_subnets(self.profile, config.checkpoint)
        self.runtimes = serving_runtimes(self.profile, config.runtime)
        try:
            check_runtimes(self.runtimes)
        except ValueError as exc:
            raise ProfileError(str(exc)) from None
        self.runtime = ",".join(sorted(set(self.runtimes.values())))
        self.worker_nice = (default_worker_nice(self.runtimes.values()) if config.worker_nice is None
                            else config.worker_nice)
        self.policy = self._policy_for(self.profile)
        self.scheduler = Scheduler(self.profile, self.policy, config.queue_limit, config.expire_hopeless,
                                   policy_factory=self._policy_for if config.scale_profile else None)
        self.pool: Any = self._executor(config)
        self.autoscaler: Any = None
        self.server_state: Any = None  # uvicorn's ServerState (open connections), set when served by uvicorn
        self.loop_lag = LoopLag()
        self.metrics = ServingMetrics(
            self.scheduler.max_batch_size,
            queue_length=lambda: len(self.scheduler.queue),
            workers=self.pool.states,
            running=lambda: self.engine.running,
            restarts=lambda: self.pool.restarts,
            margin_ms=lambda: self.engine.margin_ms,
            slowdown=lambda: self.scheduler.slowdown,
            connections=self.connections,
            loop_lag_ms=lambda: self.loop_lag.lag_ms,
        )
        self.engine = Engine(self.scheduler, self.pool, config.slo_ms, self.metrics, poll_ms=config.poll_ms,
                             max_timeout_s=config.compute_timeout_s, watchdog_slo_factor=config.watchdog_slo_factor,
                             overhead_margin_ms=config.overhead_margin_ms,
                             margin_percentile=config.margin_percentile, admission=config.admission)
        self.name = config.model_name or self.profile.profile.model
        self.spec: ModelSpec | None = None
        self.statistics = protocol.ModelStatistics()
        # (queued requests, deadline) -> (the 503, when it was built)
        self._shed_answers: dict[tuple[int, float], tuple[bytes, float]] = {}
        # admission's horizon for this pass of the loop (`refusal`); the protocol reads it for repeats
        self.refusal_run: _RefusalRun | None = None
        self._refusal_run_ends = False  # the callback that forgets it is queued
        self._served_paths: dict[bytes, bool] = {}  # serves_path's answers for `_paths_of`
        # header blocks of inference requests the HTTP parser has read (for `_paths_of`): (Content-Length, where the
        # JSON part ends or None); see `known_request`
        self._known_requests: dict[bytes, tuple[int, int | None]] = {}
        self._paths_of: ModelSpec | None = None
        self.app = self._build_app()

    def _policy_for(self, profile: ServingProfile) -> Policy:
        """The configured policy, planning over `profile` (the served profile scaled by the workers' slowdown)."""
        config = self.config
        return make_policy(config.policy, profile, slo_ms=config.slo_ms, workers=config.workers,
                           **config.policy_options)

    def _executor(self, config: ServerConfig) -> Any:
        """Local worker processes, or Ray actors when `config.cluster` names a cluster."""
        common = {"threads": config.threads, "warmup_batch_sizes": config.warmup_batch_sizes,
                  "input_shape": tuple(self.profile.profile.input_shape), "runtime": self.runtimes,
                  "device": config.device}
        if config.cluster is None:
            return WorkerPool(config.checkpoint, self.subnets, workers=config.workers, spares=config.spare_workers,
                              max_batch_samples=self.scheduler.max_batch_size, nice=self.worker_nice,
                              **common)
        from tailor.serve.cluster import RayExecutor

        address = None if config.cluster == "ray" else config.cluster
        delay = None
        if config.simulated_compute:
            p = self.profile
            delay = {"batch_sizes": list(p.batch_sizes), **{sid: list(row) for sid, row in zip(p.subnet_ids, p.lat)}}
        return RayExecutor(config.checkpoint, self.subnets, workers=config.workers, address=address,
                           min_workers=config.min_workers, max_workers=config.max_workers,
                           actor_options=config.actor_options, delay_ms=delay, **common)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers (they load the checkpoint) and the scheduler; the model spec is known after."""
        await self.engine.start()
        self.loop_lag.start()
        if self.config.cluster is not None and self.pool.min_workers < self.pool.max_workers:
            from tailor.serve.cluster import Autoscaler

            self.autoscaler = Autoscaler(self.engine, self.pool)
            self.autoscaler.start()
        assert self.pool.output_shape is not None
        input_shape = tuple(self.profile.profile.input_shape)
        self.spec = ModelSpec(
            name=self.name,
            input=TensorSpec("input", "FP32", (-1, *input_shape)),
            output=TensorSpec("logits", "FP32", (-1, *self.pool.output_shape)),
            max_batch_size=self.scheduler.max_batch_size,
            parameters={"policy": self.policy.describe(), "slo_ms": self.config.slo_ms, "runtime": self.runtime,
                        "latency_percentile": self.profile.percentile,
                        "subnets": ",".join(self.profile.subnet_ids), "cluster": self.config.cluster or "local"},
        )
        if self.pool.uncalibrated:
            logger.warning("subnets without their own SubnetNorm statistics (accuracy suffers): %s",
                           ", ".join(self.pool.uncalibrated))

    async def stop(self) -> None:
        """Drain: answer what is queued or running (bounded by the drain timeout), then stop the workers."""
        if self.autoscaler is not None:
            self.autoscaler.stop()
        self.loop_lag.stop()
        await self.engine.close(self.config.drain_timeout_s)

    def over_connection_limit(self) -> bool:
        """Whether more connections are open than `max_connections` (a request on one is refused, 503)."""
        state = self.server_state  # asked for every refusal under a burst: one call, not two
        return state is not None and len(state.connections) > self.config.max_connections

    def connection_limit_message(self) -> str:
        return (f"too many connections: the server keeps at most {self.config.max_connections} open; retry on a "
                "new one")

    def connection_refusal(self, arrival_ms: float) -> bytes:
        """The complete 503 for a request on a connection over the limit (closing it), counted as rejected."""
        self.engine.count_refusal("connections", (monotonic_ms() - arrival_ms) / 1e3)
        return _raw_response(503, "Service Unavailable", self.connection_limit_message(), {"retry-after": "1"})

    def serves_path(self, raw_path: bytes) -> bool:
        """Whether `raw_path` is this server's inference path (else the handler answers, e.g. 404 naming what exists).
        Remembered per path: a burst asks it for the same few paths thousands of times a second."""
        self._forget_other_models()
        known = self._served_paths.get(raw_path)
        if known is None:
            if len(self._served_paths) >= 64:
                self._served_paths.clear()
            known = self._served_paths[raw_path] = self._is_inference_path(raw_path)
        return known

    def _forget_other_models(self) -> None:
        if self._paths_of is not self.spec:  # answers for another model (or none yet)
            self._served_paths.clear()
            self._known_requests.clear()
            self._paths_of = self.spec

    def remember_request(self, header_block: bytes, content_length: int, json_length: int | None) -> None:
        """Remember the raw header block of an inference request the HTTP parser read whole and found answerable
        here (a keep-alive POST to the inference path with this Content-Length, no other framing, no encoding, no
        Expect), for `known_request`. At most 64 are kept: a client sends the same few again and again."""
        self._forget_other_models()
        if len(self._known_requests) >= 64:
            self._known_requests.clear()
        self._known_requests[header_block] = (content_length, json_length)

    def known_request(self, header_block: bytes) -> tuple[int, int | None] | None:
        """(Content-Length, where the JSON part ends or None) of a header block byte for byte equal to one
        `remember_request` was given for this model; None otherwise."""
        if self._paths_of is not self.spec:
            return None
        return self._known_requests.get(header_block)

    def _is_inference_path(self, raw_path: bytes) -> bool:
        if self.spec is None or not raw_path.endswith(b"/infer"):
            return False
        parts = raw_path.split(b"/")
        if not (len(parts) == 5 or (len(parts) == 7 and parts[4] == b"versions")) or parts[:3] != [b"", b"v2", b"models"]:
            return False
        return parts[3] == self.name.encode() and (len(parts) == 5 or parts[5] == b"1")

    def sheds(self, arrival_ms: float) -> bool:
        """Whether admission would refuse an inference request that arrived at `arrival_ms` with the default
        deadline (the protocol then holds its body instead of starting the ASGI handler)."""
        return self.engine.accepting and not self.engine.admits(arrival_ms + self.config.slo_ms)

    def shed_response(self, arrival_ms: float, json_header: bytes = b"", refused: bool = False) -> bytes | None:
        """The complete 503 (JSON, Retry-After, keep-alive) for a held request that admission still refuses,
        counted as rejected; None when it would now be admitted, or when its JSON part (`json_header`) is not
        valid where a deadline of its own may be set (the protocol then hands it to the handler, which answers
        it). A request with its own deadline is judged by that deadline, as the handler would judge it.
        `refused`: `sheds` said so for this request and nothing has run since (its body came in the same read as
        its headers); with the default deadline it is not asked again (later, it could only refuse more).
        Thousands a second under a burst: the few distinct answers are built once and kept for `SHED_ANSWER_MS`
        (the message names the queue's length, Retry-After its drain time in whole seconds)."""
        engine = self.engine
        if not (refused or engine.accepting):
            return None
        own_ms = None
        if json_header and protocol.may_set_deadline(json_header):
            try:
                own_ms = protocol.request_deadline_ms(json_header)
            except ProtocolError:
                return None  # the handler answers 400 naming the problem
        if own_ms is None:
            budget_ms = self.config.slo_ms
            if not refused and engine.admits(arrival_ms + budget_ms):
                return None
        else:  # one sample: refused with one, a request is refused with any number (the handler's check)
            budget_ms = own_ms
            if engine.admits(arrival_ms + own_ms, 1, own_ms):
                return None
        now = monotonic_ms()
        engine.count_refusal("admission", (now - arrival_ms) / 1e3)
        return self._shed_answer(budget_ms, own_ms is not None, now)

    def _shed_answer(self, budget_ms: float, own: bool, now: float) -> bytes:
        """The 503 for a request refused against a deadline of `budget_ms` (its `own`, or the default), kept
        for `SHED_ANSWER_MS` per queue length."""
        key = (len(self.scheduler.queue), budget_ms)
        kept = self._shed_answers.get(key)
        if kept is not None and now - kept[1] < SHED_ANSWER_MS:
            return kept[0]
        if len(self._shed_answers) >= 256:
            self._shed_answers.clear()
        whose = "this request's" if own else "the"
        message = (f"overloaded: the {key[0]} queued requests cannot be drained within {whose} deadline of "
                   f"{budget_ms:.6g} ms")
        answer = _raw_response(503, "Service Unavailable", message,
                               {"retry-after": str(self.engine.retry_after_s())}, close=False)
        self._shed_answers[key] = (answer, now)
        return answer

    def refusal(self, arrival_ms: float) -> bytes | None:
        """The counted 503 for an inference request with the default deadline that arrived at `arrival_ms`, when
        admission refuses it now (None when it is admitted, the server is not accepting, or there are too many
        connections: the usual path answers those).

        Under a burst this is asked thousands of times a second, mostly within one pass of the event loop, where
        nothing that makes admission more lenient runs: no task (the queue, the places held, the batches, the
        planning margin and the drain rate change only in tasks) and nothing the executor reports (a worker's state, counted by
        `Engine.executor_changes`). So admission's horizon (`Engine.admission_horizon_ms`) and the answer are
        taken once and kept until the pass ends (a callback queued behind it), for at most `refusal_run_ms`, and
        while the queue and the places held have not shrunk. A request due at or after the horizon takes it again
        if places were taken since (which moves it later), and is asked in full only if it is due after that one
        too."""
        if self.over_connection_limit():
            return None
        engine = self.engine
        if not engine.accepting:
            return None
        now = monotonic_ms()
        run = self.refusal_run
        if run is None or not self._run_holds(run, now):
            run = self._begin_refusal_run(now)
        if arrival_ms + self.config.slo_ms >= run.horizon_ms:
            if engine.reserved > run.reserved or self.scheduler.queued_samples > run.queued_samples:
                # places taken (or requests queued) since the horizon was taken move it later: take it again
                # rather than ask in full (under a burst, after each request admitted at the horizon, the
                # requests read next in the pass fall between the old horizon and the new one)
                run = self._begin_refusal_run(now)
            if arrival_ms + self.config.slo_ms >= run.horizon_ms:
                return self.shed_response(arrival_ms)  # may be admitted: asked in full
        engine.count_refusal("admission", (now - arrival_ms) / 1e3)
        return run.answer

    def _begin_refusal_run(self, now: float) -> _RefusalRun:
        engine = self.engine
        horizon = engine.admission_horizon_ms(now, self.refusal_run_ms)
        run = self.refusal_run = _RefusalRun(
            horizon, now + self.refusal_run_ms, engine.executor_changes, engine.reserved, self.scheduler.queued_samples,
            self._shed_answer(self.config.slo_ms, False, now))
        if not self._refusal_run_ends:
            self._refusal_run_ends = True
            asyncio.get_running_loop().call_soon(self._end_refusal_run)
        return run

    def refuses_repeat(self, run: _RefusalRun, arrival_ms: float) -> bool:
        """Whether this pass's `run` still refuses, from its kept horizon, a repeat of the request the protocol
        first refused with it (the same header block and JSON part, so the same Content-Length and no deadline
        of its own) that arrived at `arrival_ms`; counted, as `refusal` counts, when it does. False whenever
        `refusal` would not answer from the run (too many connections, not accepting, the run past its time, a
        worker's change reported, the queue or the places held shrunk, a request due at or after the horizon):
        the usual path then decides. Tens of thousands a second under a burst: nothing built."""
        now = monotonic_ms()
        if (arrival_ms + self.config.slo_ms >= run.horizon_ms or not self.engine.accepting
                or self.over_connection_limit() or not self._run_holds(run, now)):
            return False
        self.engine.count_refusal("admission", (now - arrival_ms) / 1e3)
        return True

    def _run_holds(self, run: _RefusalRun, now: float) -> bool:
        """Whether admission's horizon kept in `run` still holds at `now`: within its time, no worker's change
        reported since, and neither the queue nor the places held shrunk (growing, they only move it later)."""
        engine = self.engine
        return (now <= run.until_ms and engine.executor_changes == run.executor_changes
                and engine.reserved >= run.reserved and self.scheduler.queued_samples >= run.queued_samples)

    def _end_refusal_run(self) -> None:
        self.refusal_run, self._refusal_run_ends = None, False

    def release(self, scope: Scope) -> int | None:
        """Give back the place in admission the protocol held for this request (once; no-op if it held none);
        its ticket (`Engine.reserve`), None if it held none."""
        ticket = scope.get("state", {}).pop(RESERVED_KEY, None)
        if ticket is not None:
            self.engine.reserved -= 1
        return ticket

    def connections(self) -> int:
        """Open client connections (0 when not served by uvicorn)."""
        return len(self.server_state.connections) if self.server_state is not None else 0

    def summary(self) -> dict[str, Any]:
        """Requests by outcome, SLO attainment, requests per subnet, worker restarts (for the end of a run)."""
        metrics = self.metrics
        return {
            "requests": dict(sorted(metrics.counts.items())),
            "rejections": dict(sorted(metrics.rejections.items())),
            "slo_attainment": metrics.slo_attainment(),
            "subnet_requests": dict(sorted(metrics.subnet_counts.items())),
            "worker_restarts": self.pool.restarts,
        }

    # -- ASGI ------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.server_state is not None and self.connections() > self.config.max_connections:
                self.release(scope)
                arrival = scope.get("state", {}).get(ARRIVAL_KEY) or monotonic_ms()
                self.engine.count_refusal("connections", (monotonic_ms() - arrival) / 1e3)
                await _send_error(send, 503, self.connection_limit_message(), {"retry-after": "1", "connection": "close"})
                return
            if scope["method"] == "POST" and scope["path"].endswith("/infer"):
                await self.infer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _build_app(self) -> Starlette:
        model = "/v2/models/{name}"
        version = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/models/stats", self.all_statistics, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        for prefix in (model, version):
            routes += [
                Route(prefix, self.model_metadata, methods=["GET"]),
                Route(prefix + "/ready", self.model_ready, methods=["GET"]),
                Route(prefix + "/config", self.model_config, methods=["GET"]),
                Route(prefix + "/stats", self.model_statistics, methods=["GET"]),
                Route(prefix + "/infer", self._post_only, methods=["POST"]),  # POSTs never get here: others 405
            ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
        )

    @staticmethod
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)

    def _model(self, name: str, version: str | None) -> ModelSpec:
        """The spec if the path names our model (and version); else raise a 404 naming what exists."""
        if name != self.name:
            raise _NotFound(f"unknown model {name!r}; this server serves {self.name!r}")
        if version is not None and version != "1":
            raise _NotFound(f"model {self.name!r} has no version {version!r}; its versions: ['1']")
        if self.spec is None:
            raise _NotFound(f"model {self.name!r} is still loading")
        return self.spec

    def _model_of(self, request: Request) -> ModelSpec:
        return self._model(request.path_params["name"], request.path_params.get("version"))

    async def server_metadata(self, request: Request) -> Response:
        from tailor import __version__

        return _json({"name": "tailor", "version": __version__, "extensions": list(protocol.EXTENSIONS)})

    async def live(self, request: Request) -> Response:
        return Response(b"", 200)

    async def ready(self, request: Request) -> Response:
        return Response(b"", 200 if self.engine.ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        try:
            return _json(self._model_of(request).metadata())
        except _NotFound as exc:
            return _error(404, str(exc))

    async def model_config(self, request: Request) -> Response:
        try:
            return _json(self._model_of(request).config())
        except _NotFound as exc:
            return _error(404, str(exc))

    async def model_ready(self, request: Request) -> Response:
        try:
            self._model_of(request)
        except _NotFound as exc:
            return _error(404, str(exc))
        return Response(b"", 200 if self.engine.ready else 503)

    async def model_statistics(self, request: Request) -> Response:
        try:
            spec = self._model_of(request)
        except _NotFound as exc:
            return _error(404, str(exc))
        return _json({"model_stats": [self.statistics.to_dict(spec.name, spec.version)]})

    async def all_statistics(self, request: Request) -> Response:
        name, version = self.name, "1"
        return _json({"model_stats": [self.statistics.to_dict(name, version)]})

    async def repository_index(self, request: Request) -> Response:
        state = "READY" if self.engine.ready else "UNAVAILABLE"
        entry: dict[str, Any] = {"name": self.name, "version": "1", "state": state}
        if state != "READY":
            entry["reason"] = "workers are loading" if self.spec is None else "no worker is ready"
        return _json([entry])

    async def _post_only(self, request: Request) -> Response:
        return _error(405, "inference is POST")

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), 200, media_type=CONTENT_TYPE)

    # -- inference -----------------------------------------------------------------------------------------
    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One inference request: cheap checks, early shedding, read + parse, queue, answer (exactly once).

        A request the protocol let through holds a place in admission (`Engine.reserved`) until it is queued or
        answered, so that the requests read in one pass of the event loop are not all admitted against the same
        queue before any of them is queued."""
        try:
            await self._infer(scope, receive, send)
        finally:
            self.release(scope)  # one that ended before its admission check

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrival = scope.get("state", {}).get(ARRIVAL_KEY) or monotonic_ms()
        config = self.config
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        try:
            spec = self._check_request(scope, headers)
        except ProtocolError as exc:
            await self._invalid(send, exc, arrival, close=exc.status in (400, 413, 431))
            return
        except _NotFound as exc:
            await self._invalid(send, ProtocolError(str(exc), 404), arrival)
            return
        if not self.engine.accepting:
            await self._refuse(send, self.engine.refuse("not_accepting", "the server is not accepting requests "
                                                        "(starting or shutting down)"), arrival)
            return
        try:
            if scope.get("state", {}).get(BODY_COMPLETE_KEY):
                body = await _read_body(receive, config.max_body_bytes)  # all here: returned at once
            else:
                async with asyncio.timeout(config.read_timeout_s):  # no extra task per request, unlike wait_for
                    body = await _read_body(receive, config.max_body_bytes)
        except TimeoutError:
            await self._invalid(send, ProtocolError(f"the request body did not arrive within "
                                                    f"{config.read_timeout_s:g} s", 408), arrival, close=True)
            return
        except ProtocolError as exc:
            await self._invalid(send, exc, arrival, close=True)
            return
        except _Disconnected:
            self.metrics.outcome("invalid", (monotonic_ms() - arrival) / 1e3)
            return
        length_header = _header(headers, b"inference-header-content-length")
        try:
            body = protocol.decode_content(body, _header(headers, b"content-encoding"), config.max_body_bytes)
            json_part = body if length_header is None else body[: protocol.header_length(length_header, len(body))]
            # its own place does not count against it, nor those of requests read after it (they queue behind
            # it; counted, the handler refused ~22% of what the protocol had admitted in ONNX Runtime 10x runs)
            ticket = self.release(scope)
            behind = 0 if ticket is None else self.engine.reserved_after(ticket)
            if not protocol.may_set_deadline(json_part) and not self.engine.admits(arrival + config.slo_ms,
                                                                                   reserved_behind=behind):
                # shed before parsing: the default deadline cannot be met behind the queue
                self.metrics.rejected_in_handler()
                await self._refuse(send, self.engine.refuse("admission", f"overloaded: the {len(self.scheduler.queue)} "
                                   f"queued requests cannot be drained within the deadline of {config.slo_ms:.6g} ms"),
                                   arrival)
                return
            parsed = protocol.parse_infer_request(body, spec, length_header)
        except ProtocolError as exc:
            await self._invalid(send, exc, arrival)
            return
        self.statistics.received(monotonic_ms() - arrival)
        try:
            served = await self.engine.submit(parsed.inputs, parsed.deadline_ms, arrival, behind)
        except Overloaded as exc:
            if exc.reason == "admission":
                self.metrics.rejected_in_handler()
            await _send_error(send, 503, str(exc), {"retry-after": str(exc.retry_after_s)})
            return
        except DeadlineExceeded as exc:
            self.statistics.failed(monotonic_ms() - arrival)
            await _send_error(send, 504, str(exc))
            return
        except RequestFailed as exc:
            self.statistics.failed(monotonic_ms() - arrival)
            await _send_error(send, 500, str(exc))
            return
        answered_ms = monotonic_ms()
        server_ms = answered_ms - arrival
        # on time when its batch finished, but its handler resumed after the deadline (a busy event loop): the
        # client gets it late, and so do the answer and /metrics (the engine counted it at the batch's end)
        on_time = served.on_time and answered_ms <= served.deadline_ms
        if served.on_time and not on_time:
            self.metrics.answered_late((served.done_ms - arrival) / 1e3, server_ms / 1e3)
        parameters = {
            "subnet": served.subnet_id,
            "subnet_accuracy": served.accuracy,
            "batch_size": served.batch_size,
            "on_time": on_time,
            "deadline_ms": served.deadline_ms - arrival,
            "queue_ms": round(served.queue_ms, 4),
            "compute_ms": round(served.compute_ms, 4),
            "worker_ms": round(served.worker_ms, 4),
            "server_ms": round(server_ms, 4),
        }
        if served.attempts:
            parameters["attempts"] = served.attempts + 1
        out_body, out_headers = protocol.encode_infer_response(spec, parsed, served.outputs, parameters)
        total_ms = monotonic_ms() - arrival
        self.statistics.succeeded(total_ms, served.queue_ms, served.compute_ms, served.batch_size)
        self.metrics.overhead(max(0.0, total_ms - served.queue_ms - served.compute_ms) / 1e3)
        await _send(send, 200, out_body, out_headers)
        if served.on_time:
            self.engine.observe_delivery(monotonic_ms() - served.done_ms)

    def _check_request(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> ModelSpec:
        """What can be checked before reading the body: header size, framing, path, declared length."""
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self.config.max_header_bytes:
            raise ProtocolError(f"request headers are {size} bytes, over the limit of {self.config.max_header_bytes}",
                                431)
        length = _header(headers, b"content-length")
        if length is not None and _header(headers, b"transfer-encoding") is not None:
            raise ProtocolError("request has both Content-Length and Transfer-Encoding: conflicting framing")
        parts = scope["path"].split("/")
        # /v2/models/{name}/infer or /v2/models/{name}/versions/{version}/infer
        if len(parts) == 5 and parts[:3] == ["", "v2", "models"]:
            name, version = parts[3], None
        elif len(parts) == 7 and parts[:3] == ["", "v2", "models"] and parts[4] == "versions":
            name, version = parts[3], parts[5]
        else:
            raise _NotFound(f"no route for POST {scope['path']!r:.200}; inference is POST /v2/models/{{name}}/infer")
        spec = self._model(name, version)
        if length is not None:
            text = length.strip()
            if not (text.isascii() and text.isdigit()):
                raise ProtocolError(f"Content-Length {length!r:.40} is not a non-negative integer")
            if int(text) > self.config.max_body_bytes:
                raise ProtocolError(f"request body of {int(text)} bytes is over the limit of "
                                    f"{self.config.max_body_bytes} bytes", 413)
        return spec

    async def _invalid(self, send: Send, exc: ProtocolError, arrival: float, close: bool = False) -> None:
        self.metrics.outcome("invalid", (monotonic_ms() - arrival) / 1e3)
        self.statistics.failed(monotonic_ms() - arrival)
        await _send_error(send, exc.status, exc.message, {"connection": "close"} if close else None)

    async def _refuse(self, send: Send, exc: Overloaded, arrival: float) -> None:
        self.engine.count_refusal(exc.reason, (monotonic_ms() - arrival) / 1e3)
        await _send_error(send, 503, str(exc), {"retry-after": str(exc.retry_after_s)})


class _NotFound(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, refused (413) once the streamed bytes prove it is over `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    await _send(send, status, protocol.error_body(message), {"content-type": _JSON, **(headers or {})})


def _json(data: Any) -> Response:
    return Response(json.dumps(data).encode(), 200, media_type=_JSON)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(protocol.error_body(message), status, headers=headers, media_type=_JSON)


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


def _raw_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None,
                  close: bool = True) -> bytes:
    """A complete HTTP/1.1 JSON error response, for answers written by the protocol itself (no ASGI cycle)."""
    body = protocol.error_body(message)
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def arrival_stamping_protocol(
    read_timeout_s: Callable[[], float], on_invalid: Callable[[], None] = lambda: None,
    shedder: InferenceServer | None = None, max_body_bytes: int = 0,
    arrival_clock: Callable[[], float] = monotonic_ms,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, stamping each request's arrival (first byte read) into its ASGI scope,
    answering a connection whose headers take longer than `read_timeout_s()` with a 408, and answering what the
    HTTP parser refuses (e.g. both Content-Length and Transfer-Encoding) with a JSON 400; both count as invalid.

    Shedding without ASGI (`shedder`): under overload most inference requests are refused, and on a 2-core
    machine the ASGI task, scope and send/receive calls of each refusal cost the workers' CPU the requests
    that were admitted need. When `shedder.sheds` says admission would refuse a request with the default
    deadline, its body is held here; once complete, one that admission still refuses (with its own deadline
    where its JSON sets one: a client with a timeout sends it with every request) is answered 503 straight
    from the protocol; any other (admitted now, invalid JSON, a content encoding, pipelining, a body over the
    limit) is handed to the ASGI handler as if it had just arrived.

    Known requests: the parser's callbacks and checks cost more than half of such a refusal (`python
    benchmarks/refusal_cost.py`), and under a burst nearly every read is one request whose header block the
    parser has read before. The server keeps those blocks (`InferenceServer.remember_request`: an answerable
    inference POST, Content-Length framing, keep-alive HTTP/1.1), and a read made of one such block and a body
    of exactly its Content-Length, between messages and with no answer owed, whose JSON part names no deadline
    of its own, is refused without being parsed when admission refuses it; anything else is parsed as before.
    Byte-equal headers parse the same, so the parser's verdict on the first stands for the rest (no HTTP is
    parsed by hand here)."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    headers_phase, body_phase, idle_phase = 1, 2, 3
    deadline_key, timeout_key = protocol.DEADLINE_KEYS  # searched in a known request's bytes, without a copy

    class ArrivalStampingProtocol(HttpToolsProtocol):
        # Time limits without a timer per request (a timer costs ~1.6 us to arm and cancel, three per refused
        # request): the current phase (reading headers, reading a held body, idle after a shed answer) and
        # when it began are stored, and one pending check per connection compares them when it fires.
        _watch: asyncio.TimerHandle | None = None
        _phase = 0  # 0: nothing timed; else headers_phase, body_phase or idle_phase
        _phase_started = 0.0  # loop time the phase began
        _phase_limit_s = 0.0
        # the body of a request considered for shedding (no ASGI task yet), as the parser gave it: the chunks are
        # kept, not copied into one buffer (a refused request's tensor is never read, only its JSON part)
        _held: list[bytes] | None = None
        _held_bytes = 0
        _inference = False  # the current request is an inference POST the protocol may answer itself
        _json_length: int | None = None  # its Inference-Header-Content-Length: where its JSON ends
        _reads = 0  # data_received calls so far: nothing else runs on the loop within one
        _between_messages = True  # the parser has no request in progress: the next byte read begins one
        _header_block: bytes | None = None  # the raw headers of the request begun at the start of the current read
        _content_length = -1  # the current request's Content-Length (-1: none, or other framing too)
        _held_in_read = -1  # the call in which admission refused the held request at its headers (-1: it did not)
        _admitted_in_read = -1  # the call in which `_refuse_known` asked and nothing refused the read's request

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._between_messages = False
            self.scope["state"][ARRIVAL_KEY] = arrival_clock()
            self._time_phase(headers_phase, read_timeout_s())

        def _time_phase(self, phase: int, limit_s: float) -> None:
            self._phase, self._phase_started, self._phase_limit_s = phase, self.loop.time(), limit_s
            if self._watch is None:
                self._watch = self.loop.call_later(min(limit_s, self._shortest_limit_s()), self._check_phase)

        def _shortest_limit_s(self) -> float:
            # a pending check is never further away than this, so it comes before the end of any phase that
            # begins while it waits (each phase's limit is at least this long)
            return min(read_timeout_s(), self.timeout_keep_alive)

        def _check_phase(self) -> None:
            self._watch = None
            if not self._phase or self.transport is None or self.transport.is_closing():
                return
            left = self._phase_started + self._phase_limit_s - self.loop.time()
            if left > 0:  # the phase began after the check was armed: look again when it is due
                self._watch = self.loop.call_later(min(left, self._shortest_limit_s()), self._check_phase)
                return
            phase, self._phase = self._phase, 0
            if phase == headers_phase:
                self._slow_headers()
            elif phase == body_phase:
                self._slow_body()
            else:
                self.timeout_keep_alive_handler()

        def on_headers_complete(self) -> None:
            self._phase = 0
            if shedder is not None:
                self._inference = self._answerable_inference()
                block, self._header_block = self._header_block, None
                if self._inference and block is not None:
                    self._remember_headers(block)
                arrival = self.scope["state"][ARRIVAL_KEY]
                over_limit = shedder.over_connection_limit()
                admitted = self._admitted_in_read == self._reads  # by `_refuse_known`, an instant ago
                if over_limit or (self._inference and not admitted and shedder.sheds(arrival)):
                    self._held, self._held_bytes = [], 0
                    self._held_in_read = -1 if over_limit else self._reads
                    self._time_phase(body_phase, read_timeout_s())
                    return
                if self._inference:
                    self._reserve()
            super().on_headers_complete()

        def _remember_headers(self, block: bytes) -> None:
            """Give the server this request's raw header block if it is one `_refuse_known` may answer later."""
            if (self._content_length >= 0 and self.parser.should_keep_alive()
                    and self.parser.get_http_version() == "1.1"):
                assert shedder is not None
                shedder.remember_request(block, self._content_length, self._json_length)

        def _answerable_inference(self) -> bool:
            """An inference POST to this server that could be answered here without reordering the answers."""
            if self.parser.get_method() != b"POST" or self.expect_100_continue or self.parser.should_upgrade():
                return False
            if self.cycle is not None and not self.cycle.response_complete:
                return False  # a pipelined request: answers must keep the requests' order
            self._json_length, self._content_length, framings = None, -1, 0
            for name, value in self.headers:
                if name == b"content-encoding" and value.strip().lower() != b"identity":
                    return False  # its deadline cannot be seen without decoding
                if name == b"content-length":
                    if not value.strip().isdigit() or int(value) > max_body_bytes:
                        return False
                    self._content_length, framings = int(value), framings + 1
                elif name == b"transfer-encoding":
                    framings += 1
                elif name == b"inference-header-content-length" and value.strip().isdigit():
                    self._json_length = int(value)  # only the JSON part can set a deadline
            if framings != 1:
                self._content_length = -1  # chunked (or framing the parser would refuse): never answered unparsed
            assert shedder is not None
            return shedder.serves_path(self.url.split(b"?", 1)[0])

        def _reserve(self) -> None:
            """Hold a place in admission for a request handed to the handler (released once it is queued)."""
            assert shedder is not None
            self.scope["state"][RESERVED_KEY] = shedder.engine.reserve()

        def on_body(self, body: bytes) -> None:
            held = self._held
            if held is None:
                super().on_body(body)
                return
            held.append(body)
            self._held_bytes += len(body)
            if self._held_bytes > max_body_bytes:
                self._hand_over()  # the handler answers 413

        def on_message_complete(self) -> None:
            self._between_messages = True
            held = self._held
            if held is None:
                self.scope["state"][BODY_COMPLETE_KEY] = True
                super().on_message_complete()
                return
            self._phase = 0
            assert shedder is not None
            same_read = self._held_in_read == self._reads  # admission refused it, under the limit, just now
            if not same_read and shedder.over_connection_limit():  # answered and closed without an ASGI handler
                self._held = None
                self.transport.write(shedder.connection_refusal(self.scope["state"][ARRIVAL_KEY]))
                self.server_state.total_requests += 1
                self.transport.close()
                return
            answer = None
            if self._inference:  # judged by its own deadline where it sets one
                json_part = self._held_prefix(self._json_length)
                answer = shedder.shed_response(self.scope["state"][ARRIVAL_KEY], json_part,
                                               refused=same_read)
            if answer is None:
                if self._inference:
                    self._reserve()
                self._hand_over()
                self.scope["state"][BODY_COMPLETE_KEY] = True
                super().on_message_complete()
                return
            self._held = None
            keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() == "1.1"
            self.transport.write(answer if keep_alive else answer.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1))
            self.server_state.total_requests += 1
            if not keep_alive:
                self.transport.close()
            elif self.timeout_keep_alive_task is None:
                self._time_phase(idle_phase, self.timeout_keep_alive)  # closed if no request follows in time

        def _held_prefix(self, length: int | None) -> bytes:
            """The first `length` bytes of the held body (all of it when None), joined only where they span chunks."""
            held = self._held or [b""]
            body = held[0] if len(held) == 1 or (length is not None and len(held[0]) >= length) else b"".join(held)
            return body if length is None else body[:length]

        def _hand_over(self) -> None:
            """Start the ASGI handler for the held request and give it the body received so far."""
            body = self._held_prefix(None)
            self._held = None
            self._phase = 0
            super().on_headers_complete()
            if body:
                super().on_body(body)

        def _slow_body(self) -> None:
            if self._held is not None and self.transport is not None and not self.transport.is_closing():
                self._held = None
                on_invalid()
                message = f"the request body did not arrive within {read_timeout_s():g} s"
                self.transport.write(_raw_response(408, "Request Timeout", message))
                self.transport.close()

        def _slow_headers(self) -> None:
            if self.transport is not None and not self.transport.is_closing():
                on_invalid()
                message = f"the request headers did not arrive within {read_timeout_s():g} s"
                self.transport.write(_raw_response(408, "Request Timeout", message))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            run = shedder.refusal_run if shedder is not None else None
            if (run is not None and len(data) == run.read_length and self._between_messages
                    and data.startswith(run.prefix) and (self.cycle is None or self.cycle.response_complete)
                    and shedder.refuses_repeat(run, arrival_clock())):  # type: ignore[union-attr]
                # a repeat of a request this pass refused: still refused. As `_refuse_known` answers, with no
                # more of this connection's state touched than that needs (tens of thousands a second, each
                # connection's state cold in the cache): its read count is not needed (only compared within one
                # read that the parser takes), nor its header block (consumed by the read that set it)
                if self.timeout_keep_alive_task is not None:
                    self._unset_keepalive_if_required()
                self.transport.write(run.answer)
                self.server_state.total_requests += 1
                self._time_phase(idle_phase, self.timeout_keep_alive)  # closed if no request follows in time
                return
            self._reads += 1
            self._unset_keepalive_if_required()
            self._header_block = None
            if shedder is not None and self._between_messages:
                end = data.find(b"\r\n\r\n", 0, KNOWN_HEADER_BYTES)
                if end > 0:
                    block = data[:end + 4]
                    known = shedder.known_request(block)
                    if known is None:
                        self._header_block = block  # the parser's verdict on it may be remembered
                    elif self._refuse_known(data, len(block), known):
                        return
            try:
                self.parser.feed_data(data)  # what uvicorn does, with the parser's reason kept for the answer
            except httptools.HttpParserError as exc:
                self.send_400_response(str(exc) or "malformed request")
            except httptools.HttpParserUpgrade:  # uvicorn's handling; tailor serves no WebSocket
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()

        def _refuse_known(self, data: bytes, start: int, known: tuple[int, int | None]) -> bool:
            """Answer 503 without parsing a read that holds one whole request, and nothing more, whose header
            block (`data[:start]`) is byte for byte one the parser has read before as an answerable inference
            request (`known`: `InferenceServer.known_request`'s Content-Length and JSON length) when admission
            refuses it with the default deadline. Under a burst nearly every request is such a read, and the
            parser's callbacks and the checks above cost most of a refusal. False (nothing done) otherwise: the
            parser reads it as usual, and when admission took it, its headers are not asked again."""
            assert shedder is not None
            content_length, json_length = known
            if len(data) != start + content_length or (self.cycle is not None and not self.cycle.response_complete):
                return False  # part of a request, or more than one; or an answer still owed before it
            json_end = start + (content_length if json_length is None else min(json_length, content_length))
            if data.find(deadline_key, start, json_end) >= 0 or data.find(timeout_key, start, json_end) >= 0:
                return False  # it may set its own deadline (`protocol.may_set_deadline`): the parser's path judges it
            answer = shedder.refusal(arrival_clock())
            if answer is None:
                self._admitted_in_read = self._reads  # `on_headers_complete`, in this read, need not ask again
                return False
            run = shedder.refusal_run
            if run is not None and run.read_length < 0 and answer is run.answer:  # its repeats: `data_received`
                run.read_length, run.prefix = len(data), data[:json_end]
            self.transport.write(answer)
            self.server_state.total_requests += 1
            if self.timeout_keep_alive_task is None:
                self._time_phase(idle_phase, self.timeout_keep_alive)  # closed if no request follows in time
            return True

        def send_400_response(self, msg: str) -> None:  # the parser refused the bytes: say so in JSON
            on_invalid()
            self.transport.write(_raw_response(400, "Bad Request", f"invalid HTTP request: {msg}"))
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._phase = 0
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            if self._held is not None:  # the client left with its request unanswered
                self._held = None
                on_invalid()
            super().connection_lost(exc)

    return ArrivalStampingProtocol


def uvicorn_server(server: InferenceServer, log_level: str | None = None) -> uvicorn.Server:
    """A uvicorn server for the app: no access log, our connection limit and timeouts, bounded shutdown."""
    config = uvicorn.Config(
        server,
        lifespan="off",  # the engine is started before and stopped after uvicorn runs: see `serve_async`
        log_level=log_level or server.config.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(server.config.drain_timeout_s) + 1,
        limit_concurrency=None,  # the server answers too many connections itself, with a JSON 503 it counts
        proxy_headers=False,  # no client addresses are used: no X-Forwarded-* rewriting (a middleware per request)
        loop="none",  # `run_server` runs the loop (uvloop when installed: `event_loop_factory`)
        http=arrival_stamping_protocol(lambda: server.config.read_timeout_s,
                                       lambda: server.metrics.outcome("invalid"),
                                       shedder=server,
                                       max_body_bytes=server.config.max_body_bytes,
                                       arrival_clock=server.loop_lag.arrival_ms),
        h11_max_incomplete_event_size=server.config.max_header_bytes,
    )
    runner = uvicorn.Server(config)
    server.server_state = runner.server_state
    return runner


async def serve_async(
    server: InferenceServer,
    sock: socket.socket,
    runner: uvicorn.Server,
    on_ready: Callable[[], None] | None = None,
    freeze_heap: bool = False,
) -> None:
    """Start the workers, serve on `sock` until `runner.should_exit` (set by SIGINT/SIGTERM), then drain and stop.

    uvicorn's shutdown stops accepting, lets every open request finish (they are answered by the engine,
    which keeps running), and only then does `server.stop()` drain what is left and stop the workers.
    `freeze_heap` (for a process that exists to serve, as `run_server`'s) puts what is alive once the workers
    are ready out of the garbage collector's reach (`gc.freeze`). Collector pauses go to `/metrics`.
    """
    await server.start()
    if freeze_heap:
        settle_heap_for_serving()
    unwatch = server.metrics.watch_garbage_collection()
    try:
        if on_ready is not None:
            on_ready()
        await runner.serve(sockets=[sock])
    finally:
        unwatch()
        await server.stop()


def settle_heap_for_serving() -> None:
    """Ready the garbage collector of a process that exists to serve: what is alive now lives as long as the server,
    and young-generation collections become rare.

    Everything loaded so far (torch, numpy, the app) is moved out of the collector's reach (`gc.freeze`): a full
    collection no longer walks it (under a burst: 146-167 ms pauses, 21 ms after). Then the collector runs after
    `SERVING_GC_THRESHOLDS[0]` net allocations instead of CPython's 700: a young collection walks every live object
    of the requests in flight (6,000-16,000 with 30-90 queued) and stops the event loop for 1-8 ms, and DrainFit
    serves heads a few ms before their deadlines, so each pause expired a cluster of requests (the recovery
    clusters after a burst in benchmarks/overload.py: 74-160 collections a burst before, 0-2 after). The cost of a
    collection is the live young objects, not the allocations since the last one, so the pauses become rarer, not
    longer; cyclic garbage waits longer, bounded by the threshold (requests leave no reference cycles).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (its transports cost a fraction of asyncio's per request, which is
    what a front end refusing thousands of requests a second spends), else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    return uvloop.new_event_loop


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
        with asyncio.Runner(loop_factory=event_loop_factory()) as loop_runner:
            ready = None if on_ready is None else lambda: on_ready(server, url)
            loop_runner.run(serve_async(server, sock, runner, ready, freeze_heap=True))
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server.summary()
