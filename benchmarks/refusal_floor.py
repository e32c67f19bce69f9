"""What one refused request costs the server's core, next to the least an asyncio server on this machine pays.

Under a burst at k times capacity C the front end reads k*C requests a second and refuses about (k - 1)*C of
them, each on the same core as the workers that serve the rest. So if a refusal costs r seconds of that core,
the burst's refusals alone take (k - 1)*C*r of it, and at most 1 - (k - 1)*C*r is left for the answered
requests: goodput at 10x cannot reach 0.8 C unless 9*C*r is well under 0.2, whatever the policy does.

This script measures r directly, at a fixed offered rate, the client (`tailor.serve.server.loadgen`, open loop)
on the first core and the server on the last, alternating two servers:

- **tailor**: `tailor serve` with an SLO no subnet can meet, so that admission refuses every request, through
  the same path a burst's refusals take (the protocol's refusal run, its repeats, the counting, the JSON 503);
- **floor**: `FloorProtocol`, a bare uvloop protocol that finds each request's end by its Content-Length and
  answers a fixed JSON 503 with Retry-After: the kernel's loopback TCP, uvloop's reads and writes, and next to no
  Python. No server written on asyncio/uvloop can refuse for less.

For each it prints the server process's CPU per request (user + system, from /proc, over the client's run; /proc's
split between the two is sampled at the timer tick and is not used), then
the medians, their ratio and, with `--capacity`, the share of the core a `--factor` burst's refusals take at
that C for both. `--perf` also splits each run's CPU by where it was spent (the kernel, CPython, uvloop, the C
library) with `perf record` when perf is installed. The bare protocol is written here because it is the
baseline being measured (no library server does less); the model served is irrelevant (nothing is admitted)
and is reused from `--workdir` (trained for one epoch there the first time).

    python benchmarks/refusal_floor.py --capacity 3000            # ~3 min on 2 cores: 3 pairs at 30,000 req/s
    python benchmarks/refusal_floor.py --capacity 3000 --perf     # also where each one's CPU went
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overload import _cpu_times_s, cores
from tailor.data import load_dataset
from tailor.serve.server.loadgen import LoadResult

FLOOR_BODY = b'{"error": "server busy: no deadline can be met now; retry after 1 s"}'
FLOOR_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                b"content-length: " + str(len(FLOOR_BODY)).encode() + b"\r\n\r\n" + FLOOR_BODY)
MAX_HEADER_BYTES = 16384
KNOWN_LENGTHS: dict[bytes, int] = {}  # header blocks seen (a client repeats its own), their Content-Length


class FloorProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request framed by Content-Length with `FLOOR_ANSWER`, once each, whichever way the
    bytes are split across reads; closes the connection on a request it cannot frame (no Content-Length, headers
    over 16 KiB). The least work a server must do per request: read it, find its end, write an answer (a header
    block seen before is not parsed again)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.body_left = -1  # bytes of the current request's body still to come (-1: reading headers)
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self.buffer + data if self.buffer else data
        start = 0
        while True:
            if self.body_left < 0:
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buffer) - start > MAX_HEADER_BYTES:
                        self.transport.close()
                        return
                    self.buffer = buffer[start:]
                    return
                head = buffer[start:end]
                self.body_left = KNOWN_LENGTHS.get(head, -1)
                if self.body_left < 0:
                    self.body_left = _content_length(head)
                    if self.body_left >= 0 and len(KNOWN_LENGTHS) < 64:
                        KNOWN_LENGTHS[head] = self.body_left
                if self.body_left < 0:
                    self.transport.close()
                    return
                start = end + 4
            if len(buffer) - start < self.body_left:
                self.body_left -= len(buffer) - start
                self.buffer = b""
                return
            start += self.body_left
            self.body_left = -1
            self.transport.write(FLOOR_ANSWER)
            self.answered += 1
            if start == len(buffer):
                self.buffer = b""
                return


def _content_length(head: bytes) -> int:
    """The Content-Length of a request's header block (-1 when it has none or an unreadable one)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() else -1
    return -1


async def serve_floor(port: int = 0) -> None:
    """Serve `FloorProtocol` on 127.0.0.1 and print `{"url": ...}` once listening; runs until killed."""
    server = await asyncio.get_running_loop().create_server(FloorProtocol, "127.0.0.1", port, backlog=4096)
    print(json.dumps({"url": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"}), flush=True)
    await server.serve_forever()


def refusal_bound(capacity: float, factor: float, cost_s: float) -> float:
    """The share of one core the refusals of a burst at `factor` x `capacity` take, at `cost_s` each."""
    return (factor - 1.0) * capacity * cost_s


def ensure_model(workdir: Path) -> tuple[Path, Path]:
    """A checkpoint and an ONNX Runtime profile to serve: overload.py's when there (same model and input), else
    one trained for one epoch here (only its input size matters: nothing is admitted)."""
    from serving_live import measure_profile, train

    overload = Path(".cache/overload")
    if (overload / "checkpoint").exists() and (overload / "profile-onnxruntime.json").is_file():
        return overload / "checkpoint", overload / "profile-onnxruntime.json"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = argparse.Namespace(image_size=32, epochs=1, seed=0, runtime="onnxruntime", repeats=5, pin=False)
    checkpoint = train(settings, workdir)
    profile = workdir / "profile-onnxruntime.json"
    if not profile.is_file():
        profile.write_text(measure_profile(settings, workdir, checkpoint).read_text())
    return checkpoint, profile


def start(command: list[str], log: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start a server pinned to the server's cores, its standard error to `log`; the JSON line it prints once
    ready (its URL, ...)."""
    _, server_cores = cores()
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   preexec_fn=lambda: os.sched_setaffinity(0, server_cores))
    line = process.stdout.readline() if process.stdout is not None else ""
    if not line:
        process.wait()
        raise SystemExit(f"{' '.join(command[1:4])} failed to start (exit {process.returncode}): "
                         f"{log.read_text().strip()[-2000:]}")
    return process, json.loads(line)


def perf_split(pid: int, seconds: float, out: Path) -> dict[str, float] | None:
    """Where process `pid`'s CPU went over the next `seconds` (shares by binary: kernel, CPython, uvloop, C
    library, other), from `perf record`; None when perf is missing or may not record it."""
    if shutil.which("perf") is None:
        return None
    client_core, _ = cores()
    recorded = subprocess.run(["perf", "record", "-F", "1999", "-p", str(pid), "-o", str(out), "--", "sleep",
                               str(seconds)], capture_output=True, preexec_fn=lambda: os.sched_setaffinity(0, {client_core}))
    if recorded.returncode != 0 or not out.is_file():
        return None
    report = subprocess.run(["perf", "report", "-i", str(out), "--stdio", "--sort", "dso", "-g", "none"],
                            capture_output=True, text=True).stdout
    return group_dsos(report)


def group_dsos(report: str) -> dict[str, float]:
    """`perf report --sort dso` lines ("  54.95%  [kernel.kallsyms]") grouped into kernel / cpython / uvloop /
    libc / other, in percent."""
    groups = dict.fromkeys(("kernel", "cpython", "uvloop", "libc", "other"), 0.0)
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        share, dso = float(parts[0].rstrip("%")), parts[1]
        group = ("kernel" if dso.startswith("[kernel") else "cpython" if dso.startswith("libpython") or dso == "python3"
                 or dso.startswith("python3.") else "uvloop" if dso.startswith("loop.cpython") else
                 "libc" if dso.startswith("libc.") or dso.startswith("libc-") else "other")
        groups[group] += share
    return groups


def measure(args: argparse.Namespace, arm: str, checkpoint: Path, profile: Path, workdir: Path) -> dict[str, Any]:
    """One run: start `arm`'s server, send `--rate` for `--duration` s, return its CPU per request. The server's
    idle CPU rate, taken for a second before, is subtracted for the client's start-up (before its first send)."""
    if arm == "floor":
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-floor"]
    else:
        command = [sys.executable, "-m", "tailor.cli", "serve", str(checkpoint), "--profile", str(profile), "--port",
                   "0", "--workers", "1", "--spare-workers", "1", "--slo-ms", str(args.slo_ms), "--runtime",
                   "onnxruntime", "--threads", "1", "--log-level", "error"]
    process, ready = start(command, workdir / f"{arm}.log")
    try:
        idle0, wall0 = sum(_cpu_times_s(process.pid)), time.perf_counter()
        time.sleep(1.0)  # the workers settle (tailor); the idle rate
        idle_rate = (sum(_cpu_times_s(process.pid)) - idle0) / (time.perf_counter() - wall0)
        out = workdir / f"{arm}.npz"
        client_core, _ = cores()
        user0, system0 = _cpu_times_s(process.pid)
        began = time.perf_counter()
        loadgen = subprocess.Popen(
            [sys.executable, "-m", "tailor.serve.server.loadgen", "--url", ready["url"], "--model",
             ready.get("serving", "floor"), "--input-shape", ",".join(map(str, args.input_shape)), "--rate",
             str(args.rate), "--duration", str(args.duration), "--out", str(out)],
            stdout=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {client_core}))
        split = None
        if args.perf:
            time.sleep(min(2.0, args.duration / 4))  # past the client's start-up
            split = perf_split(process.pid, args.duration / 2, workdir / f"{arm}.perf")
        if loadgen.wait() != 0:
            raise SystemExit(f"the load generator failed against {arm} (exit {loadgen.returncode})")
        user1, system1 = _cpu_times_s(process.pid)
        elapsed = time.perf_counter() - began
    finally:
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    result = LoadResult.load(out)
    refused = int((result.status == 503).sum())
    if refused != len(result.status):
        statuses = {int(s): int((result.status == s).sum()) for s in set(result.status.tolist())}
        raise SystemExit(f"{arm}: not every request was refused ({statuses}); the CPU per refusal would be wrong")
    idle_s = idle_rate * max(0.0, elapsed - result.wall_s)
    cpu_s = (user1 - user0) + (system1 - system0) - idle_s
    line = {"arm": arm, "requests": refused, "offered_per_s": refused / result.wall_s,
            "cpu_us_per_request": 1e6 * cpu_s / refused, "idle_cpu_s_subtracted": idle_s,
            "client_cpu_s": result.cpu_s}
    if split is not None:
        line["perf_percent"] = split
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=30000.0, help="offered requests/s (a 10x burst's)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--pairs", type=int, default=3, help="tailor/floor runs, alternated")
    parser.add_argument("--capacity", type=float, help="C (req/s) to turn the costs into a burst's share of the core")
    parser.add_argument("--factor", type=float, default=10.0, help="the burst, in multiples of --capacity")
    parser.add_argument("--slo-ms", type=float, default=0.01, help="tailor's SLO: none can be met, all refused")
    parser.add_argument("--perf", action="store_true", help="also split each run's CPU with perf (when installed)")
    parser.add_argument("--workdir", default=".cache/refusal_floor")
    parser.add_argument("--out", help="write the runs as JSON here")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        import uvloop

        uvloop.run(serve_floor())
        return
    if args.rate <= 0 or args.duration <= 0 or args.pairs < 1:
        parser.error("--rate and --duration must be positive and --pairs at least 1")
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf: perf is not installed (apt-get install linux-perf)")
    checkpoint, profile = ensure_model(Path(args.workdir))
    args.input_shape = tuple(load_dataset("digits", "test", image_size=32).input_size)
    client_core, server_cores = cores()
    load = os.getloadavg()
    print(f"client on core {client_core}, server on cores {sorted(server_cores)}; {args.rate:.0f} req/s for "
          f"{args.duration:g} s per run; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="refusal_floor_") as tmp:
        for pair in range(args.pairs):
            for arm in ("tailor", "floor"):
                line = measure(args, arm, checkpoint, profile, Path(tmp))
                runs.append(line)
                split = line.get("perf_percent")
                where = ("; perf: " + ", ".join(f"{k} {v:.0f}%" for k, v in split.items())) if split else ""
                print(f"  pair {pair + 1} {arm:6s}: {line['cpu_us_per_request']:5.2f} us per refusal, "
                      f"{line['requests']} refused at {line['offered_per_s']:.0f}/s, client {line['client_cpu_s']:.1f} s "
                      f"CPU{where}", flush=True)
    medians = {arm: statistics.median(r["cpu_us_per_request"] for r in runs if r["arm"] == arm)
               for arm in ("tailor", "floor")}
    print(f"median: tailor {medians['tailor']:.2f} us, floor {medians['floor']:.2f} us per refusal "
          f"({medians['tailor'] / medians['floor']:.2f}x)")
    if args.capacity:
        for arm, cost in medians.items():
            share = refusal_bound(args.capacity, args.factor, cost * 1e-6)
            print(f"  at C = {args.capacity:.0f} req/s, a {args.factor:g}x burst's refusals take {share:.2f} of the "
                  f"server's core with {arm}'s cost (at most {1 - share:.2f} left for the answered requests)")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "runs": runs,
                                              "median_us": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
