"""Workers: processes holding the supernet in memory and running batches on the subnet they are told to.

`ModelRunner` is the compute: it loads a checkpoint with `tailor.load` (safetensors, never unpickled) and
prepares every served subnet on its runtime from `tailor.cost.runtimes` (the one the profile measured as
fastest within tolerance: `torch-inplace` switches the one supernet in place with `model.activate(sub)`,
`onnxruntime` and `openvino` run the subnet's ONNX export, `torch` the extracted subnet, ...). It knows
nothing of HTTP, queues or processes, so a Ray actor holds one as it is.

`WorkerPool` runs N `ModelRunner`s in worker processes (multiprocessing, spawn context) and talks to
them over pipes with a small framed format (a JSON header + raw little-endian float32 bytes; no pickle
on the data path). A batch's inputs go through a shared-memory buffer per worker (a 0600 file in
/dev/shm, mapped by both processes) and only its header through the pipe: a pipe write of a batch larger
than the pipe's buffer blocks the event loop until the worker reads it, which on a shared core stalls
every connection the front end holds. It lives on an asyncio event loop: replies and process exits are watched with
`loop.add_reader` on the pipe and on the process sentinel, so a worker that dies is noticed at once,
its batch fails with `WorkerCrashed`, and a new process is started in its place (with back-off when
it keeps dying). A batch that takes far longer than allowed gets its worker killed, which ends the
same way: nothing waits forever. `spares` extra processes load the model too but take no batches: when a
worker dies a spare takes its place at once, so capacity returns in milliseconds instead of the seconds a
fresh process needs to import torch and load the checkpoint (the dead slot restarts as the new spare).
Workers may run at a lower priority (`nice`) than the server's process: where the front end and the workers
share a core, a front end that waits behind a batch can neither read nor refuse requests, and under overload
every request then waits in the kernel's buffers while the worker computes answers that will come too late.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import mmap
import multiprocessing
import os
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from tailor.errors import InvalidSubnetError, TailorError
from tailor.space import Subnet

logger = logging.getLogger("tailor.serve")
_HEADER = struct.Struct("<I")


class WorkerCrashed(TailorError):
    """A worker process died (or was killed for hanging) while running a batch; the batch may be retried."""


class WorkerError(TailorError):
    """The model raised while running a batch; retrying would fail the same way."""


class WorkerStartError(TailorError):
    """Worker processes could not load the model (bad checkpoint, subnet outside its space, ...)."""


@dataclass(frozen=True)
class RunResult:
    """A batch's outputs, the time the model took inside the worker, and which worker ran it."""

    outputs: np.ndarray
    compute_ms: float
    worker: int


def check_runtimes(runtimes: Mapping[str, str]) -> None:
    """Raise ValueError naming a runtime the server cannot run (unknown, or int8, which needs calibration data)."""
    from tailor.cost.runtimes import list_runtimes

    known = list_runtimes()
    for subnet_id, name in runtimes.items():
        if name not in known:
            raise ValueError(f"subnet {subnet_id!r}: runtime {name!r} is not one of {known}")
        if name.endswith("int8"):
            raise ValueError(f"subnet {subnet_id!r}: runtime {name!r} needs calibration data to quantise, which a "
                             "server does not have; profile without it or pass another --runtime")


class ModelRunner:
    """The supernet loaded from a checkpoint, each served subnet prepared on its runtime (in-process, no I/O).

    `runtime` is one runtime name for every subnet or {subnet id: name}; `device` and `threads` are passed to
    each runtime's `prepare` (what the profile measured with).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        subnets: Mapping[str, Subnet],
        threads: int = 1,
        input_shape: Sequence[int] | None = None,
        runtime: str | Mapping[str, str] = "torch-inplace",
        device: str = "cpu",
    ) -> None:
        import torch

        from tailor.cost.runtimes import get_runtime
        from tailor.train import load

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.subnets = dict(subnets)
        self.runtimes = {sid: runtime for sid in self.subnets} if isinstance(runtime, str) else dict(runtime)
        missing = sorted(set(self.subnets) - set(self.runtimes))
        if missing:
            raise ValueError(f"no runtime given for subnets {missing}")
        check_runtimes(self.runtimes)
        torch.set_num_threads(threads)
        self.model = load(checkpoint)
        for subnet_id, sub in self.subnets.items():
            try:
                self.model.space.validate(sub)
            except InvalidSubnetError as exc:
                raise InvalidSubnetError(f"subnet {subnet_id!r} does not fit the checkpoint's space: {exc}") from None
        self.input_shape = tuple(input_shape) if input_shape is not None else tuple(self.model.default_input_size)
        self.model.eval()
        self.prepared: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncalibrated subnets are reported once, by `uncalibrated()`
            for subnet_id, sub in self.subnets.items():
                engine = get_runtime(self.runtimes[subnet_id])
                self.prepared[subnet_id] = engine.prepare(self.model, sub, device=device, threads=threads,
                                                          input_shape=self.input_shape)

    def uncalibrated(self) -> list[str]:
        """Ids of served subnets without their own SubnetNorm statistics (they fall back to shared ones)."""
        return [sid for sid, sub in self.subnets.items() if not self.model.has_norm_stats(sub)]

    def run(self, subnet_id: str, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        """Outputs of subnet `subnet_id` on `inputs` (N, *input_shape) and the milliseconds it took."""
        prepared = self.prepared.get(subnet_id)
        if prepared is None:
            raise InvalidSubnetError(f"subnet {subnet_id!r} is not served (served: {sorted(self.subnets)})")
        start = time.perf_counter()
        outputs = prepared.run(inputs)
        return outputs, (time.perf_counter() - start) * 1e3

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> tuple[int, ...]:
        """Run every subnet once per batch size (first calls allocate); returns the output shape of one sample."""
        shape: tuple[int, ...] = ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncalibrated subnets are reported once, by `uncalibrated()`
            for subnet_id in self.subnets:
                for batch in batch_sizes:
                    out, _ = self.run(subnet_id, np.zeros((batch, *self.input_shape), dtype=np.float32))
                    shape = tuple(out.shape[1:])
        return shape


# -- the pipe format ------------------------------------------------------------------------------------------


def _send(conn: Connection, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    text = json.dumps(header).encode()
    conn.send_bytes(b"".join((_HEADER.pack(len(text)), text, payload)))


def _unpack(data: bytes) -> tuple[dict[str, Any], memoryview]:
    (length,) = _HEADER.unpack_from(data)
    view = memoryview(data)
    return json.loads(view[4 : 4 + length].tobytes()), view[4 + length :]


def _quit() -> None:
    """Leave at once: a worker holds nothing that needs cleaning up, and a normal interpreter exit after
    importing torch takes seconds (which would slow shutdown and restarts)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker_main(
    conn: Connection,
    checkpoint: str,
    subnets: dict[str, dict[str, Any]],
    threads: int,
    warmup_batch_sizes: list[int],
    input_shape: list[int] | None = None,
    runtime: str | dict[str, str] = "torch-inplace",
    device: str = "cpu",
    inputs_path: str | None = None,
    nice: int = 0,
) -> None:
    """Entry point of a worker process: load, warm up, say ready, then run batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group; the server stops us
    if nice > 0:  # yield the core to the server's front end when both want it (see `WorkerPool`)
        os.nice(nice)
    shared: mmap.mmap | None = None
    try:
        if inputs_path is not None:
            with open(inputs_path, "rb") as file:
                shared = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        runner = ModelRunner(
            checkpoint, {k: Subnet.from_dict(v) for k, v in subnets.items()}, threads, input_shape, runtime, device
        )
        output_shape = runner.warmup(warmup_batch_sizes)
    except Exception as exc:  # reported to the server, which refuses to start
        _send(conn, {"op": "fatal", "message": f"{type(exc).__name__}: {exc}"})
        _quit()
    _send(conn, {"op": "ready", "pid": os.getpid(), "output_shape": list(output_shape),
                 "uncalibrated": runner.uncalibrated()})
    warnings.simplefilter("ignore")
    while True:
        try:
            header, payload = _unpack(conn.recv_bytes())
        except (EOFError, OSError):  # the server is gone
            _quit()
        if header.get("op") == "stop":
            _quit()
        batch = header.get("batch")
        try:
            shape = header["shape"]
            source = shared if header.get("shared") and shared is not None else payload
            inputs = np.frombuffer(source, dtype="<f4", count=math.prod(shape)).reshape(shape).copy()
            outputs, compute_ms = runner.run(header["subnet"], inputs)
            outputs = np.ascontiguousarray(outputs, dtype="<f4")
        except Exception as exc:
            _send(conn, {"op": "error", "batch": batch, "message": f"{type(exc).__name__}: {exc}"})
            continue
        _send(conn, {"op": "result", "batch": batch, "shape": list(outputs.shape), "compute_ms": compute_ms},
              memoryview(outputs).cast("B"))


def computing(pid: int | None) -> bool:
    """Whether process `pid` is running or runnable (Linux `/proc/PID/stat` state R), as opposed to stopped,
    sleeping or gone; False where /proc cannot tell."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "R"


# -- the pool -------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    process: Any = None
    conn: Connection | None = None
    state: str = "dead"  # starting | idle | busy | dead | stopped
    batch: int | None = None
    future: asyncio.Future[RunResult] | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive deaths soon after starting
    fatal: str | None = None
    pid: int | None = None
    restart: asyncio.TimerHandle | None = None
    watched: list[int] = field(default_factory=list)
    spare: bool = False  # loaded, but held back until an active worker dies
    inputs: mmap.mmap | None = None  # the shared input buffer (kept across restarts of this slot)
    inputs_path: str | None = None


class WorkerPool:
    """N worker processes, each a `ModelRunner`; `run` sends a batch to an idle one and awaits its answer.

    Must be used from one asyncio event loop (the server's). `on_change` is called whenever a worker
    becomes idle, starts, or dies, so a scheduler can react.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        subnets: Mapping[str, Subnet],
        workers: int = 1,
        threads: int = 1,
        warmup_batch_sizes: Sequence[int] = (1,),
        start_timeout_s: float = 120.0,
        on_change: Callable[[], None] | None = None,
        stable_after_s: float = 10.0,
        input_shape: Sequence[int] | None = None,
        runtime: str | Mapping[str, str] = "torch-inplace",
        spares: int = 0,
        device: str = "cpu",
        max_batch_samples: int = 64,
        nice: int = 0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if spares < 0:
            raise ValueError(f"spares must be >= 0, got {spares}")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be in [0, 19], got {nice}")
        self.nice = nice
        self.checkpoint = str(Path(checkpoint))
        self.subnets = {sid: sub.to_dict() for sid, sub in subnets.items()}
        self.threads = threads
        self.warmup_batch_sizes = [int(b) for b in warmup_batch_sizes]
        self.input_shape = None if input_shape is None else [int(d) for d in input_shape]
        self.device = device
        # bytes of each worker's shared input buffer; a larger batch goes through the pipe
        self.shared_bytes = 0 if self.input_shape is None else 4 * max_batch_samples * math.prod(self.input_shape)
        self.runtime = runtime if isinstance(runtime, str) else dict(runtime)
        check_runtimes({sid: runtime for sid in self.subnets} if isinstance(runtime, str) else dict(runtime))
        self.start_timeout_s = start_timeout_s
        self.stable_after_s = stable_after_s
        self.on_change = on_change or (lambda: None)
        self.slots = [_Slot(i, spare=i >= workers) for i in range(workers + spares)]
        self.promotions = 0  # spares that took a dead worker's place
        self.busy_grace_s = 10.0  # how long a worker still computing may overrun its watchdog before it is killed
        self.output_shape: tuple[int, ...] | None = None
        self.uncalibrated: list[str] = []
        self.restarts = 0
        self._batch_ids = itertools.count()
        self._closing = False
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # -- state ------------------------------------------------------------------------------------------
    def idle_workers(self) -> int:
        count = 0  # a loop, not sum() over a generator: admission asks twice per request
        for slot in self.slots:
            if slot.state == "idle" and not slot.spare:
                count += 1
        return count

    def ready_workers(self) -> int:
        count = 0
        for slot in self.slots:
            if (slot.state == "idle" or slot.state == "busy") and not slot.spare:
                count += 1
        return count

    def states(self) -> dict[str, int]:
        """Worker processes by state; loaded spares are counted as `spare`."""
        counts = dict.fromkeys(("starting", "idle", "busy", "dead", "spare"), 0)
        for slot in self.slots:
            state = "spare" if slot.spare and slot.state == "idle" else slot.state
            if state in counts:
                counts[state] += 1
        return counts

    def pids(self) -> list[int | None]:
        """The process id of each worker slot (None while it has no live process)."""
        return [s.pid if s.state in ("starting", "idle", "busy") else None for s in self.slots]

    def active_pids(self) -> list[int | None]:
        """The process ids of the slots that take batches (spares excluded)."""
        return [s.pid if s.state in ("starting", "idle", "busy") else None for s in self.slots if not s.spare]

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker and wait until all are ready; `WorkerStartError` if one cannot load the model."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        for slot in self.slots:
            self._spawn(slot)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            fatal = [s.fatal for s in self.slots if s.fatal]
            if fatal:
                await self.close()
                raise WorkerStartError(f"worker could not start: {fatal[0]}")
            if all(s.state == "idle" for s in self.slots):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                await self.close()
                raise WorkerStartError(f"workers not ready within {self.start_timeout_s:.0f} s (states: {self.states()})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def _spawn(self, slot: _Slot) -> None:
        assert self._loop is not None
        slot.restart = None
        if slot.inputs is None and self.shared_bytes:
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, slot.inputs_path = tempfile.mkstemp(prefix="tailor-inputs-", dir=folder)  # mode 0600
            try:
                os.ftruncate(fd, self.shared_bytes)
                slot.inputs = mmap.mmap(fd, self.shared_bytes)
            finally:
                os.close(fd)
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(child, self.checkpoint, self.subnets, self.threads, self.warmup_batch_sizes, self.input_shape,
                  self.runtime, self.device, slot.inputs_path, self.nice),
            name=f"tailor-worker-{slot.index}",
            daemon=True,
        )
        process.start()
        child.close()
        slot.process, slot.conn, slot.pid = process, parent, process.pid
        slot.state, slot.started_at, slot.fatal = "starting", time.monotonic(), None
        slot.watched = [parent.fileno(), process.sentinel]
        self._loop.add_reader(parent.fileno(), self._on_readable, slot)
        self._loop.add_reader(process.sentinel, self._on_exit, slot)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self.on_change()

    def _unwatch(self, slot: _Slot) -> None:
        assert self._loop is not None
        for fd in slot.watched:
            self._loop.remove_reader(fd)
        slot.watched = []

    def _on_readable(self, slot: _Slot) -> None:
        conn = slot.conn
        if conn is None:
            return
        try:
            header, payload = _unpack(conn.recv_bytes())
        except (EOFError, OSError):  # the worker is gone; its sentinel says so and we handle it there
            assert self._loop is not None
            if slot.watched and slot.watched[0] == conn.fileno():
                self._loop.remove_reader(conn.fileno())
                slot.watched = slot.watched[1:]
            return
        self._handle(slot, header, payload)

    def _handle(self, slot: _Slot, header: dict[str, Any], payload: memoryview) -> None:
        op = header.get("op")
        if op == "ready":
            self.output_shape = tuple(header["output_shape"])
            self.uncalibrated = list(header.get("uncalibrated", []))
            slot.state = "idle"
            self._notify()
        elif op == "fatal":
            slot.fatal = str(header.get("message"))
            logger.error("worker %d could not start: %s", slot.index, slot.fatal)
            self._notify()
        elif op in ("result", "error"):
            future = slot.future
            if header.get("batch") != slot.batch or future is None:
                return  # the answer to a batch we already gave up on
            slot.state, slot.batch, slot.future = "idle", None, None
            if not future.done():
                if op == "result":
                    outputs = np.frombuffer(payload, dtype="<f4").reshape(header["shape"])
                    future.set_result(RunResult(outputs, float(header["compute_ms"]), slot.index))
                else:
                    future.set_exception(WorkerError(f"worker {slot.index}: {header.get('message')}"))
            self._notify()

    def _on_exit(self, slot: _Slot) -> None:
        if slot.process is None:
            return
        conn = slot.conn
        if conn is not None:  # answers written just before dying still count
            try:
                while slot.state != "dead" and conn.poll(0):
                    header, payload = _unpack(conn.recv_bytes())
                    self._handle(slot, header, payload)
            except (EOFError, OSError):
                pass
        self._unwatch(slot)
        process = slot.process
        process.join(0.5)
        code = process.exitcode
        if conn is not None:
            conn.close()
        slot.conn, slot.process = None, None
        future, slot.future, slot.batch = slot.future, None, None
        was = slot.state
        slot.state = "dead"
        if not slot.spare and not self._closing:
            spare = next((x for x in self.slots if x.spare and x.state == "idle"), None)
            if spare is not None:  # a loaded spare takes the dead worker's place now; the dead slot restarts as a spare
                spare.spare, slot.spare = False, True
                self.promotions += 1
        if future is not None and not future.done():
            future.set_exception(WorkerCrashed(f"worker {slot.index} (pid {slot.pid}) died with exit code {code} "
                                               "while running this request's batch"))
        if self._closing:
            slot.state = "stopped"
            self._notify()
            return
        logger.warning("worker %d (pid %s) exited with code %s while %s", slot.index, slot.pid, code, was)
        if slot.fatal:
            self._notify()  # a worker that cannot load the model is not restarted
            return
        lived = time.monotonic() - slot.started_at
        slot.failures = slot.failures + 1 if lived < self.stable_after_s else 1
        delay = 0.0 if slot.failures <= 1 else min(30.0, 0.5 * 2 ** (slot.failures - 2))
        assert self._loop is not None
        slot.restart = self._loop.call_later(delay, self._restart, slot)
        self._notify()

    def _restart(self, slot: _Slot) -> None:
        if self._closing or slot.state != "dead":
            return
        self.restarts += 1
        self._spawn(slot)

    # -- running batches -----------------------------------------------------------------------------------
    def dispatch(self, subnet_id: str, inputs: np.ndarray, timeout_s: float = 60.0) -> asyncio.Future[RunResult]:
        """Send a batch to an idle worker now (it is busy from this call on); the future holds its `RunResult`.

        The future fails with `WorkerCrashed` if the worker dies or gives no answer within `timeout_s`
        (it is then killed and restarted), and with `WorkerError` if the model raised.
        """
        slot = next((s for s in self.slots if s.state == "idle" and not s.spare), None)
        if slot is None:
            raise RuntimeError("WorkerPool.dispatch called with no idle worker (check idle_workers() first)")
        assert self._loop is not None and slot.conn is not None
        batch = next(self._batch_ids)
        future: asyncio.Future[RunResult] = self._loop.create_future()
        slot.state, slot.batch, slot.future = "busy", batch, future
        inputs = np.ascontiguousarray(inputs, dtype="<f4")
        header = {"op": "run", "batch": batch, "subnet": subnet_id, "shape": list(inputs.shape)}
        payload: memoryview | bytes = memoryview(inputs).cast("B")
        if slot.inputs is not None and inputs.nbytes <= len(slot.inputs):
            slot.inputs[: inputs.nbytes] = payload  # the worker is idle: it reads the buffer only after this header
            header["shared"], payload = True, b""
        try:
            _send(slot.conn, header, payload)
        except OSError:
            self._kill(slot)  # its sentinel fires and fails the future
        timer = self._loop.call_later(timeout_s, self._timed_out, slot, batch, timeout_s)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    async def run(self, subnet_id: str, inputs: np.ndarray, timeout_s: float = 60.0) -> RunResult:
        """`dispatch` and wait for the answer."""
        return await self.dispatch(subnet_id, inputs, timeout_s)

    def _timed_out(self, slot: _Slot, batch: int, timeout_s: float, extended: bool = False) -> None:
        if slot.batch != batch or slot.future is None:
            return
        if slot.conn is not None and slot.conn.poll(0):
            self._on_readable(slot)  # it answered while the event loop was busy elsewhere: not hung
            return
        assert self._loop is not None
        if not extended and self.busy_grace_s > timeout_s and computing(slot.pid):
            # still running (on a core shared with a swamped front end, a batch can take longer than its
            # watchdog): give it up to `busy_grace_s`; a stopped or blocked worker is killed now
            self._loop.call_later(self.busy_grace_s - timeout_s, self._timed_out, slot, batch, self.busy_grace_s, True)
            return
        future, slot.future = slot.future, None
        self._kill(slot)
        if not future.done():
            future.set_exception(WorkerCrashed(
                f"worker {slot.index} gave no answer within {timeout_s:.1f} s; it was killed and is restarting"
            ))

    def _kill(self, slot: _Slot) -> None:
        process = slot.process
        if process is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker `index` (for fault-injection tests and drills); it is detected and restarted."""
        self._kill(self.slots[index])

    async def close(self, timeout_s: float = 5.0) -> None:
        """Ask every worker to stop, wait up to `timeout_s`, then kill what is left; pending runs fail."""
        self._closing = True
        for slot in self.slots:
            if slot.restart is not None:
                slot.restart.cancel()
            if slot.state == "starting":
                self._kill(slot)  # still loading the model: it holds no work, and would read "stop" only when loaded
            elif slot.conn is not None:
                try:
                    _send(slot.conn, {"op": "stop"})
                except OSError:
                    pass
        deadline = time.monotonic() + timeout_s
        while any(s.process is not None and s.process.is_alive() for s in self.slots) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for slot in self.slots:
            if slot.process is not None:
                if slot.process.is_alive():
                    self._kill(slot)
                if self._loop is not None and slot.watched:
                    self._on_exit(slot)
            slot.state = "stopped"
            if slot.inputs is not None:
                slot.inputs.close()
                slot.inputs = None
            if slot.inputs_path is not None:
                Path(slot.inputs_path).unlink(missing_ok=True)
                slot.inputs_path = None
