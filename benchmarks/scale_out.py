"""Scale-out on Ray: dispatch overhead, throughput against actor count, and serving through actor deaths.

(a) Dispatch overhead per batch: a Ray actor (`RayExecutor`) against a local worker process (`WorkerPool`, the
    pipe), the same small supernet and batch; round trip minus the compute the worker reports; p50/p99 over
    `--batches` batches, alternating between the two.
(b) Scaling: `tailor serve --cluster ray` with workers whose compute is a sleep of the profiled latency
    (`simulated_compute`, so the 2 cores of this machine do not cap it), 1, 2, 4, 8, 16 actors, on bursty
    traces; the highest offered rate with attainment >= 0.999 measured at the client (bisection), next to the
    simulator's with the same profile, trace shape and worker count. Linear scaling would be n x the rate of 1.
(c) Failures: 8 actors at `--kill-load` of their capacity, one actor killed every 10 s; attainment at the
    client and every request answered once.

The profile is synthetic and slow on purpose (three subnets, p99 = base + per-sample ms, `--base-ms` and
`--per-sample-ms` times 1, 1.5, 2): 16 sleeping actors then need about 1,000 requests/s, which one
front-end core and a client core can carry. Ray runs locally (one node); actors take no CPU reservation.

    python benchmarks/scale_out.py            # ~20 min on 2 cores; JSON in benchmarks/results/scale_out.json
    python benchmarks/scale_out.py --quick    # a few minutes: checks the script, not the claims
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tailor
from tailor.cost.measure import LatencyStats
from tailor.cost.profile import Profile, SubnetProfile
from tailor.serve import ServingProfile, simulate, traces
from tailor.serve.cluster import RayExecutor
from tailor.serve.server.app import InferenceServer, ServerConfig, bind_socket, serve_async, uvicorn_server
from tailor.serve.server.loadgen import LoadResult
from tailor.serve.server.loadgen import summary as load_summary
from tailor.serve.server.worker import WorkerPool

BATCHES = (1, 2, 4, 8, 16)
MODEL = "scale"


def build(root: Path, base_ms: float, per_sample_ms: float) -> tuple[Path, Path, dict]:
    """A small calibrated supernet and a synthetic slow profile of three of its subnets."""
    torch.manual_seed(0)
    model = tailor.create_model("small_cnn", num_classes=10, channels=(8, 16, 32))
    space = model.space
    subnets = {"small": space.smallest(), "half": space.uniform(0.5), "full": space.largest()}
    x = torch.randn(32, 3, 32, 32)
    tailor.calibrate(model, list(subnets.values()), [x[:16], x[16:]], batches=2)
    checkpoint = root / "ck"
    tailor.save(model, checkpoint)
    entries = []
    for rank, (sid, sub) in enumerate(subnets.items()):
        scale = 1 + 0.5 * rank
        table = {b: LatencyStats(*(3 * [scale * (base_ms + per_sample_ms * b)])) for b in BATCHES}
        entries.append(SubnetProfile(id=sid, macs=rank + 1, params=rank + 1, latency_ms=table, subnet=sub,
                                     accuracy=0.70 + 0.05 * rank))
    profile = root / "profile.json"
    Profile(MODEL, (3, 32, 32), "scale-out (synthetic)", "torch", 1, tuple(entries)).save(profile)
    return checkpoint, profile, subnets


# -- (a) dispatch overhead --------------------------------------------------------------------------------------
async def overhead(checkpoint: Path, subnets: dict, batches: int, batch: int) -> dict[str, Any]:
    local = WorkerPool(checkpoint, subnets, workers=1, input_shape=(3, 32, 32))
    remote = RayExecutor(checkpoint, subnets, workers=1, input_shape=(3, 32, 32), actor_options={"num_cpus": 0})
    await local.start()
    await remote.start()
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    samples: dict[str, list[float]] = {"local pipe": [], "ray actor": []}
    try:
        for i in range(batches + 20):
            for name, executor in (("local pipe", local), ("ray actor", remote)):
                start = time.perf_counter()
                result = await executor.dispatch("half", x, 30.0)
                elapsed = (time.perf_counter() - start) * 1e3
                if i >= 20:  # warm-up rounds are not counted
                    samples[name].append(elapsed - result.compute_ms)
    finally:
        await local.close()
        await remote.close()
    return {name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)), "batches": len(v)}
            for name, v in samples.items()}


# -- the server in a thread, the client in its own process ------------------------------------------------------
class Served:
    def __init__(self, config: ServerConfig) -> None:
        self.server = InferenceServer(config)
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.runner = uvicorn_server(self.server, log_level="error")
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(serve_async(self.server, self.sock, self.runner,
                                                                              self.ready.set)), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        if not self.ready.wait(600):
            raise SystemExit("the server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.runner.should_exit = True
        self.thread.join(120)
        self.sock.close()


def run_load(url: str, schedule: np.ndarray, slo_ms: float, workdir: Path, tag: str) -> LoadResult:
    csv, out = workdir / f"{tag}.csv", workdir / f"{tag}.npz"
    traces.Trace(schedule).save_csv(csv)
    client_core = min(os.sched_getaffinity(0))
    subprocess.run([sys.executable, "-m", "tailor.serve.server.loadgen", "--url", url, "--model", MODEL,
                    "--input-shape", "3,32,32", "--trace", "arrivals", "--csv", str(csv), "--slo-ms", str(slo_ms),
                    "--out", str(out), "--max-connections", "4096"], check=True, stdout=subprocess.DEVNULL,
                   preexec_fn=lambda: os.sched_setaffinity(0, {client_core}))
    return LoadResult.load(out)


def bursty(rate: float, duration_s: float, seed: int) -> np.ndarray:
    return traces.bursty(0.5 * rate, 0.5 * rate, 4.0, duration_s, seed=seed).arrivals_s


def bisect_rate(passes: Any, hi: float, probes: int) -> tuple[float, list[dict[str, Any]]]:
    """Highest rate in (0, hi] for which `passes(rate)` holds (halve from hi until one passes, then bisect)."""
    ok, bad, rate, log = 0.0, None, hi, []
    for _ in range(probes):
        good, info = passes(rate)
        log.append({"rate": rate, **info})
        if good:
            ok = rate
        else:
            bad = rate
        if bad is None:
            break
        rate = bad / 2 if ok == 0.0 else (ok + bad) / 2
    return ok, log


def scaling(args: argparse.Namespace, checkpoint: Path, profile: Path, workdir: Path) -> list[dict[str, Any]]:
    view = ServingProfile(Profile.load(profile))
    fastest = max(b / lat for b, lat in zip(view.batch_sizes, view.lat[0]) if lat <= args.slo_ms / 2) * 1000
    rows = []
    for actors in args.actors:
        config = ServerConfig(checkpoint, profile, slo_ms=args.slo_ms, workers=actors, cluster="ray",
                              actor_options={"num_cpus": 0}, simulated_compute=True, queue_limit=100_000)
        with Served(config) as served:

            def live(rate: float, actors: int = actors, served: Served = served) -> tuple[bool, dict[str, Any]]:
                result = run_load(served.url, bursty(rate, args.probe_s, seed=actors), args.slo_ms, workdir,
                                  f"scale{actors}")
                line = load_summary(result, args.slo_ms)
                print(f"    {actors:>2} actors, {rate:8.1f} req/s: attainment {line['attainment']:.4f}", flush=True)
                time.sleep(0.5)
                return line["attainment"] >= 0.999, {"attainment": line["attainment"],
                                                     "client_cpu_share": result.cpu_s / result.wall_s}

            rate, log = bisect_rate(live, args.headroom * actors * fastest, args.probes)

        def sim(rate: float, actors: int = actors) -> tuple[bool, dict[str, Any]]:
            trace = traces.Trace(bursty(rate, args.probe_s, seed=actors))
            r = simulate(view, trace, slo_ms=args.slo_ms, workers=actors)
            return r.attainment >= 0.999, {"attainment": r.attainment}

        sim_rate, _ = bisect_rate(sim, args.headroom * actors * fastest, 12)
        rows.append({"actors": actors, "rate_at_0.999": rate, "simulated_rate_at_0.999": sim_rate, "probes": log})
        print(f"  {actors:>2} actors: {rate:7.1f} req/s at >= 0.999 (simulator: {sim_rate:7.1f})", flush=True)
    base = rows[0]["rate_at_0.999"]
    for row in rows:
        row["vs_linear"] = row["rate_at_0.999"] / (row["actors"] * base) if base else None
    return rows


def kill_drill(args: argparse.Namespace, checkpoint: Path, profile: Path, workdir: Path,
               capacity_8: float) -> dict[str, Any]:
    config = ServerConfig(checkpoint, profile, slo_ms=args.slo_ms, workers=8, cluster="ray",
                          actor_options={"num_cpus": 0}, simulated_compute=True, queue_limit=100_000)
    rate = args.kill_load * capacity_8
    with Served(config) as served:
        executor: RayExecutor = served.server.pool
        killed = []

        def killer() -> None:
            for _ in range(int(args.kill_s // 10)):
                time.sleep(10)
                victim = next((i for i, a in enumerate(executor.actors) if a.state == "busy"), 0)
                killed.append(time.monotonic())
                executor.kill_worker(victim)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = run_load(served.url, bursty(rate, args.kill_s, seed=99), args.slo_ms, workdir, "kill")
        thread.join()
        restarts = executor.restarts
    line = load_summary(result, args.slo_ms)
    out = {"actors": 8, "rate": rate, "duration_s": args.kill_s, "kills": len(killed), "restarts": restarts,
           "attainment": line["attainment"], "status": line["status"],
           "answered_once": bool((result.status >= 0).all())}
    print(f"  kill drill: 8 actors at {rate:.0f} req/s, {len(killed)} killed in {args.kill_s:.0f} s: attainment "
          f"{line['attainment']:.4f}, statuses {line['status']}, one answer each: {out['answered_once']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", default="1,2,4,8,16")
    parser.add_argument("--base-ms", type=float, default=80.0)
    parser.add_argument("--per-sample-ms", type=float, default=10.0)
    parser.add_argument("--slo-ms", type=float, default=800.0)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=6)
    parser.add_argument("--headroom", type=float, default=1.2, help="first probe: this x n x one actor's best rate")
    parser.add_argument("--batches", type=int, default=300, help="(a): batches per executor")
    parser.add_argument("--kill-s", type=float, default=40.0)
    parser.add_argument("--kill-load", type=float, default=0.7)
    parser.add_argument("--out", default="benchmarks/results/scale_out.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.actors, args.probe_s, args.probes, args.batches, args.kill_s = "1,2", 3.0, 3, 40, 10.0
        args.out = str(Path(tempfile.mkdtemp(prefix="scale_out_quick_")) / "scale_out.json")
    args.actors = [int(a) for a in args.actors.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="scale_out_"))
    checkpoint, profile, subnets = build(workdir, args.base_ms, args.per_sample_ms)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; profile: p99 = s x ({args.base_ms:g} + "
          f"{args.per_sample_ms:g} b) ms, s = 1, 1.5, 2; SLO {args.slo_ms:g} ms")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    report: dict[str, Any] = {"args": vars(args), "load_average_before": load}
    try:
        report["overhead"] = asyncio.run(overhead(checkpoint, subnets, args.batches, 8))
        for name, v in report["overhead"].items():
            print(f"  (a) {name:<10} per batch of 8: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms")
        report["scaling"] = scaling(args, checkpoint, profile, workdir)
        eight = next((r for r in report["scaling"] if r["actors"] == 8), report["scaling"][-1])
        report["kill"] = kill_drill(args, checkpoint, profile, workdir, eight["rate_at_0.999"])
    finally:
        ray.shutdown()
    report["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {args.out}; load average after {report['load_average_after']}")


if __name__ == "__main__":
    main()
