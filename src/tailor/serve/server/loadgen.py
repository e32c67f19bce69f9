"""An open-loop HTTP load generator for the OIP server: requests leave on a schedule, never waiting for answers.

A closed-loop client (send, wait, send) slows down when the server does, so it can never overload it; real
bursts do not wait. Here every request of a `Trace` is sent at its arrival time on a free keep-alive
connection (a new one is opened when none is free, up to `max_connections`; beyond that the request is
counted `unsent` rather than delayed), and every answer is recorded: status, when it arrived, and the
server's `on_time` and subnet for 200s.

Which free connection (`reuse`): by default the one freed last (`"lifo"`), as the pools of the standard OIP
client `tritonclient.http` (geventhttpclient's `LifoQueue`) and of urllib3 choose; or the one idle longest
(`"fifo"`), every open connection in turn, as many clients that each send rarely would. Under a burst the
server's cost per request differs between the two: at 10x a thousand connections are open, and in turn each
one's state (the kernel's socket, the event loop's handle) is cold in the cache when its next request comes.

One asyncio event loop (uvloop when installed) with a small `asyncio.Protocol` per connection and an incremental
parser of Content-Length responses keeps the client light enough to share a 2-core machine with the server; its
CPU time is reported so the split can be checked.

Written here because the kept HTTP load tools either wait for answers (closed loop), or, like wrk2, keep a
fixed connection count and cannot send a Trace's arrival times or read OIP's `parameters`.

    python -m tailor.serve.server.loadgen --url http://127.0.0.1:8000 --model resnet20 --input-shape 3,32,32 \\
        --trace poisson --rate 500 --duration 10 --slo-ms 50 --out load.npz
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailor.serve import traces
from tailor.serve.server.protocol import ModelSpec, TensorSpec, encode_infer_request
from tailor.serve.traces import Trace

UNSENT, NO_ANSWER = -1, -2  # status codes for requests that left no answer
REUSE_ORDERS = ("lifo", "fifo")  # which free connection a request goes on: the one freed last, or idle longest


@dataclass
class LoadResult:
    """Per request (in schedule order): when it was due, sent and answered (s, one clock), its HTTP status
    (or `UNSENT` / `NO_ANSWER`), and for 200s the server's `on_time` and subnet; plus the client's CPU time."""

    scheduled_s: np.ndarray
    sent_s: np.ndarray
    done_s: np.ndarray
    status: np.ndarray
    server_on_time: np.ndarray  # 1 on time, 0 late, -1 unknown (not a 200)
    subnet: np.ndarray  # index into `subnets`, -1 when not a 200
    subnets: list[str]
    cpu_s: float
    wall_s: float
    connections: int

    def latency_ms(self) -> np.ndarray:
        """Client latency of each answered request, from when it was due (open loop: client delays count)."""
        return (self.done_s - self.scheduled_s) * 1e3

    def on_time(self, slo_ms: float | np.ndarray) -> np.ndarray:
        """Answered 200 within the deadline, measured at the client from the scheduled time."""
        return (self.status == 200) & (self.latency_ms() <= slo_ms)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Arrays as .npz (no pickled objects) plus the subnet names and scalars as JSON inside it."""
        meta = json.dumps({"subnets": self.subnets, "cpu_s": self.cpu_s, "wall_s": self.wall_s,
                           "connections": self.connections})
        np.savez(path, scheduled_s=self.scheduled_s, sent_s=self.sent_s, done_s=self.done_s, status=self.status,
                 server_on_time=self.server_on_time, subnet=self.subnet, meta=np.frombuffer(meta.encode(), np.uint8))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LoadResult:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            return cls(data["scheduled_s"], data["sent_s"], data["done_s"], data["status"], data["server_on_time"],
                       data["subnet"], meta["subnets"], meta["cpu_s"], meta["wall_s"], meta["connections"])


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers are matched to requests in order (no pipelining: one at a time)."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: int | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, index: int, payload: bytes) -> None:
        self.current = index
        assert self.transport is not None
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            length, close = 0, False
            for line in head[1:]:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value)
                elif key == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            index, self.current = self.current, None
            self.client.answered(index, int(head[0].split(" ")[1]), body)
            if close:
                self.closed = True
                assert self.transport is not None
                self.transport.close()
            else:
                self.client.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.open -= 1
        if self.current is not None:
            index, self.current = self.current, None
            self.client.answered(index, NO_ANSWER, b"")


class _Client:
    def __init__(self, host: str, port: int, n: int, max_connections: int, reuse: str = "lifo") -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.idle: deque[_Connection] = deque()  # free connections, in the order they were freed
        self.take = self.idle.pop if reuse == "lifo" else self.idle.popleft
        self.open = 0
        self.opened = 0
        self.sent_s = np.full(n, np.nan)
        self.done_s = np.full(n, np.nan)
        self.status = np.full(n, NO_ANSWER, dtype=np.int16)
        self.server_on_time = np.full(n, -1, dtype=np.int8)
        self.subnet = np.full(n, -1, dtype=np.int16)
        self.subnets: dict[str, int] = {}
        self.pending = 0
        self.all_sent = False
        self.finished: asyncio.Future[None] | None = None
        self.loop = asyncio.get_running_loop()

    def answered(self, index: int, status: int, body: bytes) -> None:
        self.done_s[index] = self.loop.time()
        self.status[index] = status
        if status == 200:
            self.server_on_time[index] = 1 if b'"on_time": true' in body[:2048] else 0
            start = body.find(b'"subnet": "')
            if start >= 0:
                name = body[start + 11 : body.find(b'"', start + 11)].decode()
                self.subnet[index] = self.subnets.setdefault(name, len(self.subnets))
        self.pending -= 1
        if self.pending == 0 and self.all_sent and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def free_connection(self) -> _Connection | None:
        """A free open connection, in the `reuse` order (closed ones are dropped); None when there is none."""
        while self.idle:
            conn = self.take()
            if not conn.closed:
                return conn
        return None

    async def connection(self) -> _Connection | None:
        conn = self.free_connection()
        if conn is not None:
            return conn
        if self.open >= self.max_connections:
            return None
        self.open += 1
        self.opened += 1
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.open -= 1
            return None
        return conn


async def _run(url: str, payloads: list[bytes], schedule_s: np.ndarray, max_connections: int, timeout_s: float,
               warm_connections: int, reuse: str) -> tuple[_Client, float]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    client = _Client(host, int(port), len(schedule_s), max_connections, reuse)
    for _ in range(min(warm_connections, max_connections)):  # connections opened before the clock starts
        client.open += 1
        client.opened += 1
        _, conn = await client.loop.create_connection(lambda: _Connection(client), host, int(port))
        client.idle.append(conn)
    loop = client.loop
    start = loop.time() + 0.05
    sends: list[asyncio.Task[None]] = []

    async def send_late(index: int, payload: bytes) -> None:  # a new connection is being opened for it
        conn = await client.connection()
        if conn is None:
            client.status[index] = UNSENT
            client.pending -= 1
            return
        client.sent_s[index] = loop.time()
        conn.send(index, payload)

    count = len(schedule_s)
    times = (start + schedule_s).tolist()
    i = 0
    while i < count:
        now = loop.time()
        if times[i] > now:
            await asyncio.sleep(times[i] - now)
            now = loop.time()
        while i < count and times[i] <= now:  # everything due goes now, never waiting for an answer
            payload = payloads[i % len(payloads)]
            client.pending += 1
            conn = client.free_connection()
            if conn is not None:
                client.sent_s[i] = now
                conn.send(i, payload)
            else:
                sends.append(asyncio.ensure_future(send_late(i, payload)))
            i += 1
    client.all_sent = True
    if client.pending:
        client.finished = loop.create_future()
        try:
            await asyncio.wait_for(client.finished, timeout_s)
        except TimeoutError:
            pass
    if sends:
        await asyncio.gather(*sends, return_exceptions=True)
    return client, start


def run_open_loop(
    url: str,
    payloads: list[bytes],
    schedule_s: np.ndarray,
    max_connections: int = 4096,
    timeout_s: float = 30.0,
    warm_connections: int = 32,
    reuse: str = "lifo",
) -> LoadResult:
    """Send `payloads[i % len]` (complete HTTP requests) at `schedule_s[i]` seconds from now; record every answer.
    `reuse`: which free connection a request goes on, `"lifo"` (the one freed last) or `"fifo"` (idle longest)."""
    if reuse not in REUSE_ORDERS:
        raise ValueError(f"reuse {reuse!r}: expected one of {list(REUSE_ORDERS)}")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio also works
        runner = asyncio.run
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit[0] < max_connections + 64 and limit[1] >= max_connections + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_connections + 64, limit[1]))
    cpu, wall = time.process_time(), time.perf_counter()
    client, start = runner(_run(url, payloads, np.asarray(schedule_s, dtype=np.float64), max_connections, timeout_s,
                                warm_connections, reuse))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    names = sorted(client.subnets, key=client.subnets.get)  # type: ignore[arg-type]
    return LoadResult(np.asarray(schedule_s, dtype=np.float64), client.sent_s - start, client.done_s - start,
                      client.status, client.server_on_time, client.subnet, names, cpu, wall, client.opened)


def http_request(url_path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 POST (keep-alive) for `body`."""
    lines = [f"POST {url_path} HTTP/1.1", "Host: tailor", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def infer_requests(model: str, inputs: np.ndarray, deadline_ms: float | None = None) -> list[bytes]:
    """One binary-encoded OIP inference request per sample of `inputs` (N, ...), as tritonclient sends them."""
    spec = ModelSpec(model, TensorSpec("input", "FP32", (-1, *inputs.shape[1:])), TensorSpec("logits", "FP32", (-1,)),
                     1)
    out = []
    for sample in inputs:
        body, headers = encode_infer_request(sample[None], spec, deadline_ms=deadline_ms)
        out.append(http_request(f"/v2/models/{model}/infer", body, headers))
    return out


def summary(result: LoadResult, slo_ms: float, window: tuple[float, float] | None = None) -> dict[str, Any]:
    """Outcome counts, goodput and latency for the requests scheduled in `window` (seconds; all by default)."""
    lo, hi = window if window is not None else (0.0, math.inf)
    mask = (result.scheduled_s >= lo) & (result.scheduled_s < hi)
    status = result.status[mask]
    on_time = result.on_time(slo_ms)[mask]
    span = (min(hi, float(result.scheduled_s.max(initial=0.0))) - lo) if window is not None else result.wall_s
    latency = result.latency_ms()[mask]
    ok = latency[(status == 200)]
    counts = {str(int(code)): int((status == code).sum()) for code in np.unique(status)}
    return {
        "requests": int(mask.sum()),
        "status": counts,
        "on_time": int(on_time.sum()),
        "attainment": float(on_time.mean()) if mask.any() else None,
        "goodput_per_s": float(on_time.sum() / span) if span > 0 else None,
        "offered_per_s": float(mask.sum() / span) if span > 0 else None,
        "p50_ms_200": float(np.percentile(ok, 50)) if ok.size else None,
        "p99_ms_200": float(np.percentile(ok, 99)) if ok.size else None,
        "p99_ms_on_time": float(np.percentile(latency[on_time], 99)) if on_time.any() else None,
        "unsent": int((status == UNSENT).sum()),
        "no_answer": int((status == NO_ANSWER).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://HOST:PORT of `tailor serve`")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--input-shape", required=True, help="one sample's shape, e.g. 3,32,32")
    parser.add_argument("--trace", choices=("poisson", "bursty", "arrivals"), default="poisson")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s (bursty: the Poisson part)")
    parser.add_argument("--burst-rate", type=float, default=0.0, help="bursty: the Gamma part (req/s)")
    parser.add_argument("--cv2", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--csv", help="arrivals: a CSV of arrival times (Trace.save_csv)")
    parser.add_argument("--slo-ms", type=float, default=50.0, help="the deadline on-time is judged against")
    parser.add_argument("--deadline-ms", type=float, help="send this deadline with every request")
    parser.add_argument("--max-connections", type=int, default=4096)
    parser.add_argument("--reuse", choices=REUSE_ORDERS, default="lifo",
                        help="which free connection a request goes on: the one freed last (as tritonclient.http's and "
                        "urllib3's pools choose) or the one idle longest (every open connection in turn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the per-request results (.npz)")
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(d) for d in args.input_shape.split(","))
    except ValueError:
        parser.error(f"--input-shape {args.input_shape!r}: expected integers separated by commas")
    if args.trace == "poisson":
        trace: Trace = traces.poisson(args.rate, args.duration, seed=args.seed)
    elif args.trace == "bursty":
        trace = traces.bursty(args.rate, args.burst_rate, args.cv2, args.duration, seed=args.seed)
    else:
        if not args.csv:
            parser.error("--trace arrivals needs --csv")
        trace = Trace.load_csv(args.csv)
    inputs = np.random.default_rng(args.seed).standard_normal((64, *shape)).astype(np.float32)
    result = run_open_loop(args.url, infer_requests(args.model, inputs, args.deadline_ms), trace.arrivals_s,
                           args.max_connections, reuse=args.reuse)
    if args.out:
        result.save(args.out)
    line = summary(result, args.slo_ms)
    line.update({"client_cpu_s": result.cpu_s, "wall_s": result.wall_s, "connections": result.connections})
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
