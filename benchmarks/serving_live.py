"""Replay a bursty trace in real time against `tailor serve` on loopback, and compare with the simulator.

1. A resnet20 supernet is trained on `digits` (resized to `--image-size`, 32 by default, so that model compute
   rather than the HTTP front end dominates; `--epochs`; `--quick`: 1 epoch at 8x8), 8 subnets (uniform widths
   0.25/0.5/0.75/1.0 x min/max depth) are SubnetNorm-calibrated and evaluated on the held-out split, the
   checkpoint is saved with `tailor.save`; right before the replay `tailor.cost.build_profile` measures every
   subnet on the runtime the workers will run (`--runtime`: torch-inplace = the supernet switched in place, the
   default; onnxruntime = one session per subnet), 1 thread, batch sizes 1-16, so that profile and live run
   see the same machine. `--checkpoint` + `--profile` use existing ones instead.
2. A bursty trace (Poisson + Gamma arrivals, CV² `--cv2`) at `--load` x what the most accurate subnet alone
   sustains within the SLO (at most `--max-rate`), bounded by `--duration-s` and `--max-requests`.
3. `tailor serve` runs as a separate process (`--workers` workers, `--policy`, 1 thread each; with `--pin`,
   its front end and this client are pinned to the first core, the workers to the others, where the profile
   is measured too); this process
   first sends `--sequential` requests one at a time (the per-request cost without queueing), then replays
   the trace open-loop in real time over persistent HTTP/1.1 connections, sending held-out digits in the
   binary-tensor encoding, and records every answer.
4. Reported: SLO attainment (server-side: the response's `on_time`; client-side: answered within the SLO
   measured at the client), outcome counts, mean accuracy of on-time answers (the profile's accuracy of the
   subnet that served each, as the simulator counts it, and the measured top-1 of those answers against
   their labels), p50/p99 latency at the client, and the server overhead per request outside model compute
   (server time - queueing - compute, from the response parameters, split into the worker round trip and
   the front end; and the same seen from the client, which adds the HTTP stack of both sides), next to
   `tailor.serve.sim.simulate` on the same trace and profile: at p99 as the policy plans, on the arrival times
   the client achieved, and at p50. Targets: overhead p50 <= 1 ms; live attainment within 2 points of the
   simulator's (p99). The machine's load average is printed: other processes on the same cores inflate
   every latency here.

    python benchmarks/serving_live.py            # full: a few minutes on 2 cores; JSON in benchmarks/results
    python benchmarks/serving_live.py --quick    # well under a minute: checks the script, not the claims
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tailor
from tailor import SubnetNormFallbackWarning, create_model
from tailor.cost import build_profile
from tailor.cost.profile import Profile
from tailor.data import default_augmentation, load_dataset
from tailor.serve import DEFAULT_POLICY, ServingProfile, simulate, traces
from tailor.serve.server.protocol import (
    HEADER_LENGTH,
    ModelSpec,
    TensorSpec,
    decode_infer_response,
    encode_infer_request,
)
from tailor.serve.traces import Trace
from tailor.space import Subnet
from tailor.train import TrainConfig, Trainer, evaluate

BATCH_SIZES = (1, 2, 4, 8, 16)


def train(args: argparse.Namespace, workdir: Path) -> Path:
    """Train, calibrate, evaluate and save resnet20 on digits (reused when `workdir` already holds it)."""
    checkpoint, accuracy_file = workdir / "checkpoint", workdir / "subnets.json"
    recipe = {"image_size": args.image_size, "epochs": args.epochs, "seed": args.seed, "batch_size": 64}
    if checkpoint.is_dir() and accuracy_file.is_file():
        if json.loads(accuracy_file.read_text()).get("recipe") == recipe:
            print(f"reusing the checkpoint trained in {workdir} ({recipe})")
            return checkpoint
    start = time.perf_counter()
    train_data = load_dataset("digits", "train", image_size=args.image_size)
    test = load_dataset("digits", "test", image_size=args.image_size)
    augmentation = default_augmentation("digits")
    torch.manual_seed(args.seed)
    model = create_model("resnet20", num_classes=train_data.num_classes, in_chans=int(train_data.input_size[0]))
    # the plain sandwich rule from the first step, the recipe the quoted figures were measured with
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.1, crop_padding=augmentation.crop_padding,
                         flip=augmentation.flip, seed=args.seed, largest_only_epochs=0.0, student_ramp_epochs=0.0)
    trainer = Trainer(model, train_data, config, device="cpu", progress=False)
    trainer.fit()
    space = model.space
    subs: dict[str, Any] = {}
    for width in (0.25, 0.5, 0.75, 1.0):
        for depth in ("min", "max"):
            sub = space.uniform(width, depth)
            if sub not in subs.values():
                subs[f"w{int(100 * width)}-d{depth}"] = sub
    trainer.calibrate(list(subs.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        accuracy = evaluate(model, list(subs.values()), test)
    model.activate(next(iter(subs.values())))
    tailor.save(model.eval(), checkpoint)
    entries = [{"id": sid, "subnet": sub.to_dict(), "accuracy": accuracy[sub.id]} for sid, sub in subs.items()]
    accuracy_file.write_text(json.dumps({"recipe": recipe, "subnets": entries}, indent=1))
    print(f"trained resnet20 {args.epochs} epoch(s) on digits at {args.image_size}x{args.image_size}, calibrated "
          f"and evaluated {len(subs)} subnets, "
          f"saved in {time.perf_counter() - start:.0f} s")
    return checkpoint


def measure_profile(args: argparse.Namespace, workdir: Path, checkpoint: Path) -> Path:
    """Profile the checkpoint's subnets on the runtime the workers will run (1 thread), right now."""
    start = time.perf_counter()
    entries = json.loads((workdir / "subnets.json").read_text())["subnets"]
    model = tailor.load(checkpoint)
    subs = {entry["id"]: Subnet.from_dict(entry["subnet"]) for entry in entries}
    accuracy = {subs[entry["id"]]: entry["accuracy"] for entry in entries}
    input_shape = tuple(load_dataset("digits", "test", image_size=args.image_size).input_size)
    everything = os.sched_getaffinity(0)
    if args.pin:  # measured on the core the (first) worker will run on
        os.sched_setaffinity(0, {worker_cores(args)[0]})
    profile = build_profile(model, list(subs.values()), batch_sizes=BATCH_SIZES, runtime=args.runtime, threads=1,
                            warmup=5, repeats=args.repeats, input_shape=input_shape, accuracy=accuracy,
                            model_name="resnet20-digits", ids={sub: sid for sid, sub in subs.items()})
    path = profile.save(workdir / "profile.json")
    if args.pin:
        os.sched_setaffinity(0, everything)
    print(f"profiled {len(subs)} subnets x {len(BATCH_SIZES)} batch sizes ({args.runtime}, 1 thread, {args.repeats} repeats) "
          f"in {time.perf_counter() - start:.0f} s")
    return path


def sustained_rate(p: ServingProfile, position: int, slo_ms: float, workers: int) -> float:
    """Requests/s subnet `position` sustains with batches that finish within half the SLO (0 if none does)."""
    best = 0.0
    for b, lat in zip(p.batch_sizes, p.lat[position]):
        if lat <= slo_ms / 2:
            best = max(best, b / lat)
    return best * 1000.0 * workers


def make_trace(p: ServingProfile, args: argparse.Namespace) -> Trace:
    """Bursty arrivals at `load` x the largest subnet's sustained rate (half Poisson, half Gamma with CV² `cv2`)."""
    rate = args.load * sustained_rate(p, len(p) - 1, args.slo_ms, args.workers)
    if rate == 0:  # not even the most accurate subnet's batch of one fits half the SLO: size by the fastest
        rate = 0.5 * args.load * sustained_rate(p, 0, 2 * args.slo_ms, args.workers)
    rate = args.rate or min(rate, args.max_rate)
    if not rate > 0:
        raise SystemExit(f"no subnet of the profile answers within the SLO of {args.slo_ms} ms; raise --slo-ms")
    duration = min(args.duration_s, args.max_requests / rate)
    trace = traces.bursty(rate / 2, rate / 2, args.cv2, duration, seed=args.seed)
    if len(trace) > args.max_requests:
        trace = trace.window(0.0, float(trace.arrivals_s[args.max_requests - 1]) + 1e-9)
    return trace


# -- the load generator -----------------------------------------------------------------------------------------


class Connections:
    """Persistent HTTP/1.1 connections to the server; a request takes an idle one or opens another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.resent = 0

    async def open(self, count: int) -> None:
        for _ in range(count):
            self.idle.append(await self._connect())

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        while self.idle:
            reader, writer = self.idle.pop()
            if reader.at_eof() or writer.is_closing():  # the server closed it after its keep-alive timeout
                writer.close()
                continue
            try:
                writer.write(head + body)
                status_line = await reader.readline()
            except (ConnectionResetError, BrokenPipeError):
                status_line = b""
            if status_line:
                return await self._finish((reader, writer), status_line)
            writer.close()  # closed just as we sent: the request was not read, send it on a fresh connection
            self.resent += 1
        reader, writer = await self._connect()
        writer.write(head + body)
        return await self._finish((reader, writer), await reader.readline())

    async def _finish(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], status_line: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = conn
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status, headers, payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def request_head(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def replay(
    url: str, model: str, trace: Trace, images: np.ndarray, labels: np.ndarray, warmup: int, sequential: int
) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """`sequential` requests one at a time, then one request per arrival of `trace` at its time (open loop).

    Returns the trace's records, its start time, and the sequential records.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connections = Connections(host, int(port))
    await connections.open(32)
    spec = ModelSpec(model, TensorSpec("input", "FP32", (-1, *images.shape[1:])), TensorSpec("logits", "FP32", (-1,)),
                     1)
    path = f"/v2/models/{model}/infer"
    encoded = []
    for image in images:
        body, headers = encode_infer_request(image[None], spec)
        encoded.append((request_head(path, body, headers), body))
    loop = asyncio.get_running_loop()
    for i in range(warmup):  # first calls of every kind: not measured
        head, body = encoded[i % len(encoded)]
        await connections.request(head, body)
    light: list[dict[str, Any]] = []  # one request at a time: the per-request cost without queueing
    for i in range(sequential):
        head, body = encoded[i % len(encoded)]
        sent = loop.time()
        status, headers, payload = await connections.request(head, body)
        done = loop.time()
        response, _ = decode_infer_response(payload, headers.get(HEADER_LENGTH.lower()))
        light.append({"planned": sent, "sent": sent, "done": done, "status": status, "params": response["parameters"],
                      "correct": True})
    connections.close()  # the server closes connections idle for 5 s: start the replay with fresh ones
    connections.idle = []
    await connections.open(32)
    records: list[dict[str, Any]] = []

    async def one(index: int, planned: float) -> None:
        head, body = encoded[index % len(encoded)]
        sent = loop.time()
        status, headers, payload = await connections.request(head, body)
        done = loop.time()
        record: dict[str, Any] = {"planned": planned, "sent": sent, "done": done, "status": status}
        if status == 200:
            response, logits = decode_infer_response(payload, headers.get(HEADER_LENGTH.lower()))
            record["params"] = response["parameters"]
            record["correct"] = bool(int(np.argmax(logits[0])) == int(labels[index % len(labels)]))
        else:
            record["error"] = json.loads(payload).get("error", "")
        records.append(record)

    start = loop.time() + 0.2
    tasks = []
    for index, arrival in enumerate(trace.arrivals_s.tolist()):
        delay = start + arrival - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, start + arrival)))
    await asyncio.gather(*tasks)
    connections.close()
    return records, start, light


# -- the server -------------------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, checkpoint: Path, profile: Path) -> tuple[subprocess.Popen, dict]:
    command = [sys.executable, "-m", "tailor.cli", "serve", str(checkpoint), "--profile", str(profile),
               "--port", "0", "--workers", str(args.workers), "--slo-ms", str(args.slo_ms), "--policy", args.policy,
               "--threads", "1", "--log-level", "error"]
    if args.worker_nice is not None:
        command += ["--worker-nice", str(args.worker_nice)]
    command += shlex.split(args.serve_args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise SystemExit(f"tailor serve failed to start (exit {process.returncode})")
    return process, json.loads(line)


def worker_cores(args: argparse.Namespace) -> list[int]:
    """With --pin: core 0 for the server's front end and this client, the next ones for the workers."""
    cores = sorted(os.sched_getaffinity(0))
    return [cores[1 + i % (len(cores) - 1)] for i in range(args.workers)]


def pin(process: subprocess.Popen, args: argparse.Namespace) -> None:
    """Front end and client on the first core, each worker on its own: the worker is then not slowed by
    the HTTP side, as on a real deployment where clients are elsewhere (other programs still share them)."""
    first = min(os.sched_getaffinity(0))
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    workers = [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    for pid, core in zip(sorted(workers), worker_cores(args)):
        os.sched_setaffinity(pid, {core})
    os.sched_setaffinity(process.pid, {first})
    os.sched_setaffinity(0, {first})


def stop_server(process: subprocess.Popen) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[-1] if lines else {}


# -- figures ----------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(records: list[dict[str, Any]], slo_ms: float, start: float) -> dict[str, Any]:
    n = len(records)
    served = [r for r in records if r["status"] == 200]
    on_time = [r for r in served if r["params"]["on_time"]]
    latency = [(r["done"] - r["sent"]) * 1e3 for r in served]
    client_on_time = [r for r in served if (r["done"] - r["sent"]) * 1e3 <= slo_ms]
    overhead_server = [r["params"]["server_ms"] - r["params"]["queue_ms"] - r["params"]["compute_ms"] for r in served]
    overhead_client = [(r["done"] - r["sent"]) * 1e3 - r["params"]["queue_ms"] - r["params"]["compute_ms"]
                       for r in served]
    pipe = [r["params"]["worker_ms"] - r["params"]["compute_ms"] for r in served]
    front = [r["params"]["server_ms"] - r["params"]["queue_ms"] - r["params"]["worker_ms"] for r in served]
    send_lag = [(r["sent"] - r["planned"]) * 1e3 for r in records]
    subnets: dict[str, int] = {}
    for r in served:
        subnets[r["params"]["subnet"]] = subnets.get(r["params"]["subnet"], 0) + 1
    return {
        "requests": n,
        "outcomes": {
            "on_time": len(on_time),
            # late: served after the deadline, or answered 504 at it while the batch still ran
            "late": len(served) - len(on_time) + sum(1 for r in records if r["status"] == 504
                                                      and "still running" in r.get("error", "")),
            "expired": sum(1 for r in records if r["status"] == 504 and "still running" not in r.get("error", "")),
            "rejected": sum(1 for r in records if r["status"] == 503),
            "failed": sum(1 for r in records if r["status"] not in (200, 503, 504)),
        },
        "attainment_server": len(on_time) / n if n else None,
        "attainment_client": len(client_on_time) / n if n else None,
        "mean_accuracy_profile": float(np.mean([r["params"]["subnet_accuracy"] for r in on_time])) if on_time else None,
        "measured_top1_on_time": float(np.mean([r["correct"] for r in on_time])) if on_time else None,
        "latency_ms": {"p50": pct(latency, 50), "p99": pct(latency, 99)},
        "overhead_server_ms": {"p50": pct(overhead_server, 50), "p99": pct(overhead_server, 99)},
        "overhead_client_ms": {"p50": pct(overhead_client, 50), "p99": pct(overhead_client, 99)},
        "overhead_pipe_ms": {"p50": pct(pipe, 50), "p99": pct(pipe, 99)},
        "overhead_front_end_ms": {"p50": pct(front, 50), "p99": pct(front, 99)},
        "compute_ms_p50": pct([r["params"]["compute_ms"] for r in served], 50),
        "mean_batch": float(np.mean([r["params"]["batch_size"] for r in served])) if served else None,
        "send_lag_ms": {"p50": pct(send_lag, 50), "p99": pct(send_lag, 99)},
        "subnet_requests": dict(sorted(subnets.items())),
        "share_off_the_main_subnet": 1 - max(subnets.values()) / len(served) if served else None,
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="use this checkpoint (with --profile) instead of training one")
    parser.add_argument("--profile", help="profile JSON of the checkpoint's subnets (with --checkpoint)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs on digits")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per subnet and batch size")
    parser.add_argument("--runtime", "--backend", default="torch-inplace", choices=("torch-inplace", "onnxruntime"),
                        help="runtime profiled; the server's workers run the same (in-place supernet or ORT sessions); "
                             "--backend is its deprecated spelling")
    parser.add_argument("--image-size", type=int, default=32, help="digits are resized to this (8: native)")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--policy", default=DEFAULT_POLICY)
    parser.add_argument("--load", type=float, default=1.5, help="x the most accurate subnet's sustained rate")
    parser.add_argument("--max-rate", type=float, default=300.0,
                        help="cap on the mean rate: the HTTP front end and this client share the machine's cores")
    parser.add_argument("--rate", type=float, help="mean requests/s (overrides --load and --max-rate)")
    parser.add_argument("--cv2", type=float, default=4.0)
    parser.add_argument("--worker-nice", type=int, help="tailor serve --worker-nice (default: the server's)")
    parser.add_argument("--serve-args", default="", help="more `tailor serve` options, e.g. '--no-admission'")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=6000)
    parser.add_argument("--pin", action="store_true",
                        help="pin the front end + client to core 0 and the workers to the other cores (helps on a "
                             "machine of one's own; hurts when other programs share the cores: they cannot move)")
    parser.add_argument("--sequential", type=int, default=300, help="requests sent one at a time first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the trained checkpoint and profile go (default: a temp dir); "
                        "a checkpoint trained there before is reused, the profile is always measured anew")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", help="the JSON file's name in --out (default: serving_live[_RUNTIME].json)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the claims")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.epochs, args.repeats, args.duration_s, args.max_requests, args.image_size = 1, 10, 3.0, 400, 8
        args.sequential = 50
    if bool(args.checkpoint) != bool(args.profile):
        parser.error("--checkpoint and --profile go together")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        args.pin = False  # one core: nothing to separate
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="serving_live_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        checkpoint, profile_path = Path(args.checkpoint), Path(args.profile)
    else:
        checkpoint = train(args, workdir)
        profile_path = measure_profile(args, workdir, checkpoint)
    profile = ServingProfile(Profile.load(profile_path), percentile="auto")  # what the server plans with
    print(f"\nprofile ({profile_path}), latency {profile.percentile_reason}:")
    for line in profile.summary():
        print("   " + line)
    trace = make_trace(profile, args)
    print(f"\ntrace: {trace.name}, {len(trace)} requests over {trace.duration_s:.1f} s "
          f"(mean {len(trace) / max(trace.duration_s, 1e-9):.0f}/s); SLO {args.slo_ms:g} ms; {args.workers} worker(s); "
          f"policy {args.policy}")

    test = load_dataset("digits", "test", image_size=args.image_size)
    images = np.stack([test[i][0].numpy() for i in range(len(test))]).astype(np.float32)  # normalised
    labels = np.array([int(test[i][1]) for i in range(len(test))])

    process, ready = start_server(args, checkpoint, profile_path)
    if args.pin:
        pin(process, args)
    try:
        records, start, light_records = asyncio.run(
            replay(ready["url"], ready["serving"], trace, images, labels, warmup=100, sequential=args.sequential)
        )
    finally:
        server_summary = stop_server(process) if process.poll() is None else {}
    live = summarise(records, args.slo_ms, start)
    light = summarise(light_records, args.slo_ms, start)
    achieved = Trace(np.sort([r["sent"] - start for r in records]), name="as sent")
    sim = simulate(profile, trace, policy=args.policy, slo_ms=args.slo_ms, workers=args.workers)
    sim_sent = simulate(profile, achieved, policy=args.policy, slo_ms=args.slo_ms, workers=args.workers)
    # the policy plans with the percentile the profile supports (as the server does); realised compute is nearer
    # the median: bracket it
    sim_p50 = simulate(profile_path, trace, policy=args.policy, slo_ms=args.slo_ms, workers=args.workers,
                       percentile="p50")
    planned = f"sim {profile.percentile}"
    sims = {planned: sim, f"{planned} as sent": sim_sent, "sim p50": sim_p50}
    report(args, live, light, sims, server_summary)
    gap = {k: None if live[k] is None else abs(live[k] - sim.attainment) * 100
           for k in ("attainment_server", "attainment_client")}
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {
            "args": vars(args), "trace": {"name": trace.name, "requests": len(trace), "duration_s": trace.duration_s},
            "profile": profile.profile.to_dict(), "live": live, "sequential": light,
            "simulated": {k: v.to_dict(series=False) for k, v in sims.items()},
            "attainment_gap_points_vs_sim_p99": gap, "server_summary": server_summary,
            "device": profile.profile.device, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        }
        default = "serving_live.json" if args.runtime == "torch-inplace" else f"serving_live_{args.runtime}.json"
        path = out / (args.name or default)
        path.write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {path}")


def report(args: argparse.Namespace, live: dict[str, Any], light: dict[str, Any], sims: dict[str, Any],
           server_summary: dict[str, Any]) -> None:
    """The figures, live next to the simulator, and the two targets."""
    names = list(sims)
    print(f"\n{'':<36} {'live':>9} " + " ".join(f"{n:>16}" for n in names))

    def row(label: str, value: Any, key: str | None = None, digits: int = 4) -> None:
        cells = " ".join(f"{fmt(getattr(s, key) if key else None, digits):>16}" for s in sims.values())
        print(f"{label:<36} {fmt(value, digits):>9} " + (cells if key else ""))

    row("SLO attainment (server on_time)", live["attainment_server"], "attainment")
    row("SLO attainment (client-measured)", live["attainment_client"])
    row("mean accuracy, on time (profile)", live["mean_accuracy_profile"], "mean_accuracy")
    row("measured top-1 of on-time answers", live["measured_top1_on_time"])
    row("mean batch", live["mean_batch"], "mean_batch", 2)
    for key in ("on_time", "late", "expired", "rejected", "failed"):
        print(f"{'  ' + key:<36} {live['outcomes'][key]:>9} "
              + " ".join(f"{s.outcomes.get(key, 0):>16}" for s in sims.values()))
    for label, figures in (("bursty replay", live), (f"one at a time ({light['requests']} requests)", light)):
        print(f"\n{label}:")
        print(f"  {'latency at the client, p50 / p99':<40} {fmt(figures['latency_ms']['p50'], 2):>8} / "
              f"{fmt(figures['latency_ms']['p99'], 2)} ms")
        print(f"  {'server overhead, p50 / p99':<40} {fmt(figures['overhead_server_ms']['p50'], 3):>8} / "
              f"{fmt(figures['overhead_server_ms']['p99'], 3)} ms  (server time - queueing - compute)")
        print(f"  {'  of which worker round trip (pipe)':<40} {fmt(figures['overhead_pipe_ms']['p50'], 3):>8} / "
              f"{fmt(figures['overhead_pipe_ms']['p99'], 3)} ms  (dispatch to answer - compute)")
        print(f"  {'  of which front end (parse, loop, ...)':<40} {fmt(figures['overhead_front_end_ms']['p50'], 3):>8} / "
              f"{fmt(figures['overhead_front_end_ms']['p99'], 3)} ms")
        print(f"  {'overhead seen by the client, p50 / p99':<40} {fmt(figures['overhead_client_ms']['p50'], 3):>8} / "
              f"{fmt(figures['overhead_client_ms']['p99'], 3)} ms  (+ HTTP stack of both sides)")
        print(f"  {'model compute per batch, p50':<40} {fmt(figures['compute_ms_p50'], 3):>8} ms")
    print(f"  {'client send lag (replay), p50 / p99':<40} {fmt(live['send_lag_ms']['p50'], 3):>8} / "
          f"{fmt(live['send_lag_ms']['p99'], 3)} ms")
    print(f"\nsubnets used live: {live['subnet_requests']} ({fmt(live['share_off_the_main_subnet'], 3)} of the answers "
          "off the most used one)")
    used = sims[names[0]].subnet_requests
    off = 1 - max(used.values()) / max(1, sum(used.values()))
    print(f"subnets simulated ({names[0]}): {used} ({off:.3f} off the most used one)")
    sim = sims[names[0]]
    gap = None if live["attainment_server"] is None else abs(live["attainment_server"] - sim.attainment) * 100
    overhead_light, overhead_load = light["overhead_server_ms"]["p50"], live["overhead_server_ms"]["p50"]
    print(f"\ntarget server overhead p50 <= 1 ms: one at a time {fmt(overhead_light)} ms, under the bursty load "
          f"{fmt(overhead_load)} ms -> {'met' if overhead_light is not None and overhead_light <= 1 else 'missed'} "
          f"(one at a time){'' if overhead_load is not None and overhead_load <= 1 else ', missed under load'}")
    print(f"target attainment within 2 points of the simulator ({names[0]}, as the policy plans): {fmt(gap, 2)} points -> "
          f"{'met' if gap is not None and gap <= 2 else 'missed'}")
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
          "(other processes share these cores)")
    print(f"server's own count at exit: {server_summary.get('requests')} (includes warm-up and one-at-a-time requests)")


if __name__ == "__main__":
    main()
