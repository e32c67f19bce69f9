"""CPU per refused request in the server's HTTP protocol, next to the floor of any Python HTTP refusal.

Under a 10x burst most requests are refused, and the front end shares its core with a worker: every
microsecond a refusal costs is taken from the requests that were admitted. This measures the protocol path
alone, without sockets, so that the figure does not move with the machine's load: `tailor serve`'s
`ArrivalStampingProtocol` (uvicorn's httptools protocol with arrival stamps, read limits and shedding) is
fed one binary OIP request (one 3x32x32 sample, 12 KiB, as the load generator sends it) after another on
one keep-alive connection while admission refuses every one, and the CPU time per request is taken over
`--requests` requests: as a client sends them (the same header block every time: the first parsed, the
second refused from the raw bytes, the rest as repeats of it, `InferenceServer.refuses_repeat`) and with every
one parsed (as a header block the server has not read before). Next to them, the floor: a bare
`asyncio.Protocol` that parses the same bytes with httptools and writes the same prebuilt 503 (what no Python
server can go below). Median of `--repeats`. The calls come one after another
without returning to the event loop, as the reads of one pass of it do under a burst: admission's horizon is
asked once a pass (at most every 1 ms), as `InferenceServer.refusal` keeps it.

`--live RATE`: the same two on a real socket, each served in its own process pinned to one core while the
load generator (`tailor.serve.server.loadgen`, open loop, on the other core) sends RATE requests a second for
`--seconds`; the server process's CPU (user + system, from /proc) over the answers it wrote. This is the
figure the overload bound needs: the kernel's loopback TCP and uvloop's reads and writes are in it. With
nothing else to do the server reads about one request per pass of its loop here, so admission is asked for
every refusal (in a 10x burst ~12 refusals share a pass).
`--neighbour spin|sgemm` puts a process on the server's core at nice 10 meanwhile, as `tailor serve`'s worker
shares it: a Python busy loop, or float32 matrix products (AVX-512 where the CPU has it, like an inference
worker), to see whether sharing the core makes a refusal dearer. `--perf` also splits each live run's server CPU
by where it went (the kernel, CPython, uvloop, the C library) with `perf record` (Linux perf, when installed).
`--capacity C` turns the two medians into what they mean under a burst at `--factor` x C (default 10): its
(factor - 1) x C refusals a second take (factor - 1) x C x cost of the core the workers share, so the rest is at
most what is left for the answered requests, whatever the policy does. With `--answered-us T` as well (the core's
microseconds per answered request under such a burst, everything but the refusals: the worker's and the front
end's; from an `overload.py` run, (1 - refused/s x cost) / answered/s), it prints the highest C at which a burst
at `--factor` x C can still answer `--target` x C a second: 1 / ((factor - 1) x cost + target x T).

    python benchmarks/refusal_cost.py            # ~30 s
    python benchmarks/refusal_cost.py --live 30000 --repeats 3   # ~1 min
    python benchmarks/refusal_cost.py --live 30000 --repeats 3 --seconds 6 --perf --capacity 3000 --answered-us 320
    python benchmarks/refusal_cost.py --live 20000 --repeats 1 --seconds 5 --neighbour sgemm
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httptools
import numpy as np
import torch
import uvloop

import tailor
from tailor.cost.profile import LatencyStats, Profile, SubnetProfile
from tailor.serve import traces
from tailor.serve.server.app import InferenceServer, ServerConfig, _raw_response, uvicorn_server
from tailor.serve.server.loadgen import REUSE_ORDERS, UNSENT, infer_requests, run_open_loop
from tailor.serve.server.protocol import ModelSpec, TensorSpec

MODEL = "refusal-bench"
# the floor's answer: a complete keep-alive 503 with Retry-After, as tailor's protocol writes one
FLOOR_ANSWER = _raw_response(503, "Service Unavailable", "overloaded", {"retry-after": "1"}, close=False)


class CountingTransport:
    """What the protocol needs of a transport on the refusal path: counts the answers written."""

    writes = 0
    closed = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default


class FloorProtocol(asyncio.Protocol):
    """Parse with httptools (only the end of each message is called back) and write a prebuilt answer."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.answer)


def build_server(root: Path) -> InferenceServer:
    """A small_cnn checkpoint with three subnets and a synthetic profile (no worker is started)."""
    torch.manual_seed(0)
    model = tailor.create_model("small_cnn", num_classes=10, channels=(8, 16, 32))
    space = model.space
    subnets = {"small": space.smallest(), "full": space.largest()}
    tailor.calibrate(model, list(subnets.values()), [torch.randn(16, 3, 32, 32)], batches=1)
    tailor.save(model, root / "ck")
    entries = []
    for rank, (sid, sub) in enumerate(subnets.items()):
        table = {b: LatencyStats(*(0.5 * (rank + 1) * (1 + 0.1 * b),) * 3) for b in (1, 8, 32)}
        entries.append(SubnetProfile(id=sid, macs=1000 * (rank + 1), params=100, latency_ms=table, subnet=sub,
                                     accuracy=0.6 + 0.1 * rank))
    Profile(MODEL, (3, 32, 32), "bench", "torch", 1, tuple(entries)).save(root / "profile.json")
    return InferenceServer(ServerConfig(root / "ck", root / "profile.json", slo_ms=50.0, workers=1, spare_workers=0))


async def protocol_us(server: InferenceServer, request: bytes, n: int, parse_all: bool = False) -> float:
    """CPU microseconds per request of the server's protocol, admission refusing every request; `parse_all`: as
    if no header block had been read before (every request through the HTTP parser)."""
    if parse_all:
        server.known_request = lambda header_block: None  # type: ignore[method-assign]
    runner = uvicorn_server(server, log_level="error")
    config = runner.config
    config.load()
    engine = server.engine
    engine.accepting = True
    engine.reserved = 100_000  # requests admitted and not yet queued: no deadline can be met behind them
    server.spec = ModelSpec(MODEL, TensorSpec("input", "FP32", (-1, 3, 32, 32)), TensorSpec("logits", "FP32", (-1, 10)),
                            32)
    protocol = config.http_protocol_class(config=config, server_state=runner.server_state, app_state={})
    transport = CountingTransport()
    protocol.connection_made(transport)
    for _ in range(1000):  # warm up (and the answer cache)
        protocol.data_received(request)
    start = time.process_time()
    for _ in range(n):
        protocol.data_received(request)
    cpu = time.process_time() - start
    if transport.writes != n + 1000 or server.metrics.rejections["admission"] != n + 1000 or transport.closed:
        raise SystemExit(f"expected {n + 1000} refusals on an open connection, got {transport.writes} answers")
    protocol.connection_lost(None)
    return 1e6 * cpu / n


async def floor_us(answer: bytes, request: bytes, n: int) -> float:
    protocol = FloorProtocol(answer)
    protocol.connection_made(CountingTransport())
    for _ in range(1000):
        protocol.data_received(request)
    start = time.process_time()
    for _ in range(n):
        protocol.data_received(request)
    return 1e6 * (time.process_time() - start) / n


async def serve_refusing(kind: str, root: Path) -> None:
    """Serve on a free port of 127.0.0.1, refusing every request (`kind`: "tailor" or "floor"), until stdin closes;
    print the port once listening."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if kind == "floor":
        server = await loop.create_server(lambda: FloorProtocol(FLOOR_ANSWER), sock=sock, backlog=4096)
        serving: Any = None
    else:
        app = build_server(root)
        app.engine.accepting = True
        app.engine.reserved = 100_000  # as in `protocol_us`: no deadline can be met behind them
        app.spec = ModelSpec(MODEL, TensorSpec("input", "FP32", (-1, 3, 32, 32)),
                             TensorSpec("logits", "FP32", (-1, 10)), 32)
        runner = uvicorn_server(app, log_level="error")
        serving = asyncio.ensure_future(runner.serve(sockets=[sock]))
        while not runner.started:
            await asyncio.sleep(0.01)
    print(sock.getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    if serving is None:
        server.close()
    else:
        runner.should_exit = True
        await serving


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


NEIGHBOURS = {
    "spin": "while True: pass",
    "sgemm": "import numpy as np\na = np.random.default_rng(0).random((256, 256), dtype=np.float32)\nwhile True: a @ a",
}


def start_neighbour(kind: str, server_cores: set[int]) -> subprocess.Popen | None:
    """A `NEIGHBOURS[kind]` process on the server's cores at nice 10, one thread (None for "none")."""
    if kind == "none":
        return None

    def pin_and_lower() -> None:
        if server_cores:
            os.sched_setaffinity(0, server_cores)
        os.nice(10)

    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-c", NEIGHBOURS[kind]], preexec_fn=pin_and_lower,
                            env={**os.environ, **threads})


def perf_record(pid: int, delay_s: float, seconds: float, out: Path, on_cores: set[int]) -> subprocess.Popen:
    """Start `perf record` (`main` checked it is installed) of process `pid` for `seconds`, `delay_s` from now
    (past the client's start-up), on `on_cores` (the server's: it has room to spare there, the client has not)."""
    command = f"sleep {delay_s:g}; exec perf record -F 999 -p {pid} -o {out} -- sleep {seconds:g}"
    return subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=(lambda: os.sched_setaffinity(0, on_cores)) if on_cores else None)


def perf_split(recording: subprocess.Popen, out: Path) -> dict[str, float] | None:
    """The finished `perf_record`'s shares by binary (`group_dsos`); None when perf could not record."""
    if recording.wait() != 0 or not out.is_file():
        return None
    report = subprocess.run(["perf", "report", "-i", str(out), "--stdio", "--sort", "dso", "-g", "none"],
                            capture_output=True, text=True).stdout
    return group_dsos(report)


def group_dsos(report: str) -> dict[str, float]:
    """`perf report --sort dso` lines ("  54.95%  [kernel.kallsyms]") summed into kernel / cpython / uvloop /
    libc / other, in percent of the samples."""
    groups = dict.fromkeys(("kernel", "cpython", "uvloop", "libc", "other"), 0.0)
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        share, dso = float(parts[0].rstrip("%")), parts[1]
        if dso.startswith("[kernel"):
            group = "kernel"
        elif dso.startswith("libpython") or dso.startswith("python3"):
            group = "cpython"
        elif dso.startswith("loop.cpython"):
            group = "uvloop"
        elif dso.startswith(("libc.", "libc-")):
            group = "libc"
        else:
            group = "other"
        groups[group] += share
    return groups


def burst_share(capacity: float, factor: float, cost_s: float) -> float:
    """The share of one core that a burst at `factor` x `capacity` spends refusing, at `cost_s` a refusal (all but
    C of its requests a second are refused)."""
    return (factor - 1.0) * capacity * cost_s


def highest_capacity(factor: float, target: float, refusal_s: float, answered_s: float) -> float:
    """The highest C (req/s) at which a burst at `factor` x C can still answer `target` x C a second on one core,
    when a refusal costs `refusal_s` and an answered request `answered_s` of it: (factor - 1) C refusal_s +
    target C answered_s <= 1."""
    return 1.0 / ((factor - 1.0) * refusal_s + target * answered_s)


def live_us(kind: str, rate: float, seconds: float, request: bytes, cores: tuple[set[int], set[int]],
            perf_out: Path | None = None, reuse: str = "lifo") -> tuple[float, dict[str, float] | None]:
    """CPU microseconds per refusal of a `kind` server process on a socket under an open-loop load of `rate`/s (the
    client reusing connections in the `reuse` order), and with `perf_out`, where that CPU went (`perf_split`) over
    the middle half of the load."""
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        if cores[0]:
            os.sched_setaffinity(server.pid, cores[0])
        before = process_cpu_s(server.pid)
        schedule = traces.poisson(rate, seconds, seed=0).arrivals_s
        recording = (perf_record(server.pid, seconds / 4, seconds / 2, perf_out, cores[0]) if perf_out is not None
                     else None)
        result = run_open_loop(f"http://127.0.0.1:{port}", [request], schedule, max_connections=2048, reuse=reuse)
        cpu = process_cpu_s(server.pid) - before
        split = perf_split(recording, perf_out) if recording is not None and perf_out is not None else None
        answered = int((result.status == 503).sum())
        unsent = int((result.status == UNSENT).sum())  # they cost the server nothing: CPU per answer still holds
        if answered + unsent != len(schedule) or unsent > 0.01 * len(schedule):
            statuses = dict(zip(*(v.tolist() for v in np.unique(result.status, return_counts=True))))
            raise SystemExit(f"{kind}: {answered} of {len(schedule)} requests answered 503 (statuses {statuses}; "
                             f"-1: never sent, every connection busy): lower --live")
        return 1e6 * cpu / answered, split
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--live", type=float, metavar="RATE", help="measure on a socket at RATE requests/s instead")
    parser.add_argument("--seconds", type=float, default=8.0, help="--live: seconds of load per measurement")
    parser.add_argument("--neighbour", choices=("none", *NEIGHBOURS), default="none",
                        help="--live: a process on the server's core at nice 10 meanwhile (default: none)")
    parser.add_argument("--perf", action="store_true", help="--live: also split each run's server CPU with perf")
    parser.add_argument("--reuse", choices=REUSE_ORDERS, default="lifo",
                        help="--live: the client's choice of free connection (see tailor.serve.server.loadgen)")
    parser.add_argument("--capacity", type=float, help="--live: C (req/s), to print a burst's share of the core")
    parser.add_argument("--factor", type=float, default=10.0, help="--capacity: the burst, in multiples of C")
    parser.add_argument("--answered-us", type=float, help="--capacity: core us per answered request in the burst")
    parser.add_argument("--target", type=float, default=0.8, help="--answered-us: goodput to reach, in multiples of C")
    parser.add_argument("--serve", choices=("tailor", "floor"), help=argparse.SUPPRESS)  # --live's server process
    args = parser.parse_args()
    if (args.perf or args.capacity) and not args.live:
        parser.error("--perf and --capacity measure live runs: add --live RATE")
    if args.answered_us is not None and not args.capacity:
        parser.error("--answered-us needs --capacity")
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf: perf is not installed (Debian: apt-get install linux-perf)")
    if args.serve:
        with tempfile.TemporaryDirectory() as tmp:
            uvloop.run(serve_refusing(args.serve, Path(tmp)))
        return
    if args.live:
        run_live(args)
        return
    request = infer_requests(MODEL, np.zeros((1, 3, 32, 32), np.float32))[0]
    with tempfile.TemporaryDirectory() as tmp:
        ours, parsed, floor = [], [], []
        for _ in range(args.repeats):
            ours.append(uvloop.run(protocol_us(build_server(Path(tmp)), request, args.requests)))
            parsed.append(uvloop.run(protocol_us(build_server(Path(tmp)), request, args.requests, parse_all=True)))
            floor.append(uvloop.run(floor_us(FLOOR_ANSWER, request, args.requests)))
    mine, slow, base = statistics.median(ours), statistics.median(parsed), statistics.median(floor)
    print(f"one binary OIP request of {len(request):,} bytes per call, {args.requests:,} calls, median of {args.repeats}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, value, runs in (("tailor serve's protocol, admission refusing:", mine, ours),
                               ("  the same, every request parsed:           ", slow, parsed),
                               ("floor (httptools parse + a prebuilt 503):    ", base, floor)):
        print(f"  {label} {value:6.2f} us per request  (runs: " + ", ".join(f"{x:.2f}" for x in runs) + ")")
    print(f"  ratio: {mine / base:.2f}x the floor ({slow / base:.2f}x with every request parsed)")


def run_live(args: argparse.Namespace) -> None:
    """`--live`: ours and the floor alternately, `--repeats` times each, the client on the other core."""
    request = infer_requests(MODEL, np.zeros((1, 3, 32, 32), np.float32))[0]
    available = sorted(os.sched_getaffinity(0))
    cores: tuple[set[int], set[int]] = (({available[0]}, {available[1]}) if len(available) >= 2 else (set(), set()))
    if cores[1]:
        os.sched_setaffinity(0, cores[1])
    ours, floor = [], []
    splits: dict[str, list[dict[str, float]]] = {"tailor": [], "floor": []}
    neighbour = start_neighbour(args.neighbour, cores[0])
    try:
        with tempfile.TemporaryDirectory(prefix="refusal_cost_") as tmp:
            for repeat in range(args.repeats):
                for kind, costs in (("tailor", ours), ("floor", floor)):
                    perf_out = Path(tmp) / f"{kind}{repeat}.perf" if args.perf else None
                    cost, split = live_us(kind, args.live, args.seconds, request, cores, perf_out, args.reuse)
                    costs.append(cost)
                    if split is not None:
                        splits[kind].append(split)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    mine, base = statistics.median(ours), statistics.median(floor)
    split = (f"server on core {min(cores[0])}, load generator on core {min(cores[1])}" if cores[1]
             else "one core: server and load generator share it")
    if neighbour is not None:
        split += f", a {args.neighbour} loop at nice 10 beside the server"
    print(f"live: {args.live:,.0f} binary OIP requests/s for {args.seconds:g} s over loopback TCP, connections reused "
          f"{args.reuse.upper()}, {split}, median of "
          f"{args.repeats}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  tailor serve, admission refusing: {mine:6.2f} us of server CPU per refusal  (runs: "
          + ", ".join(f"{x:.2f}" for x in ours) + ")")
    print(f"  floor (uvloop + httptools + a prebuilt 503): {base:6.2f} us  (runs: " + ", ".join(f"{x:.2f}" for x in floor)
          + ")")
    print(f"  ratio: {mine / base:.2f}x the floor")
    arms = (("tailor serve", splits["tailor"], mine), ("floor", splits["floor"], base))
    for label, runs, cost in arms:
        if runs:
            median = {group: statistics.median(run[group] for run in runs) for group in runs[0]}
            print(f"  {label}: " + ", ".join(f"{group} {share:.0f}% ({share * cost / 100:.2f} us)"
                                            for group, share in median.items()) + " (perf, median of the runs)")
    if args.capacity:
        for kind, _, cost in arms:
            share = burst_share(args.capacity, args.factor, cost * 1e-6)
            print(f"  at C = {args.capacity:,.0f} req/s a {args.factor:g}x burst's refusals take {share:.2f} of the "
                  f"server's core at {kind}'s cost: at most {1 - share:.2f} is left for the answered requests")
            if args.answered_us is not None:
                highest = highest_capacity(args.factor, args.target, cost * 1e-6, args.answered_us * 1e-6)
                print(f"    with {args.answered_us:g} us per answered request, a {args.factor:g}x burst answers "
                      f"{args.target:g} C a second only while C <= {highest:,.0f} req/s")


if __name__ == "__main__":
    sys.exit(main())
