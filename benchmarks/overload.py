"""Goodput under overload: `tailor serve` against an open-loop client at 3x and 10x its capacity.

1. A resnet20 supernet trained on `digits` at 32x32 (as `serving_live.py` does; reused from `--workdir`), its
   8 subnets profiled right before the run with the runtime the workers use (`--runtimes`: torch-inplace, onnxruntime).
2. `tailor serve` (1 worker + 1 spare, DrainFit, SLO `--slo-ms`) is pinned to the last core and the load
   generator (`tailor.serve.server.loadgen`, its own process) to the first, so that the client's CPU does not
   compete with the server's; both shares are reported. It puts each request on the free keep-alive connection
   freed last, as tritonclient.http's pool does (`--reuse fifo`: the one idle longest, every open connection in
   turn, which costs the server more under a burst; see `tailor.serve.server.loadgen`).
3. Capacity C: the highest Poisson rate whose attainment measured at the client (answered 200 within the
   SLO, from the scheduled send time) is >= 0.99 over `--probe-s` seconds (bisection). After the bursts C is
   probed once more and printed next to its bisected attainment: far below 0.99, the machine slowed down during
   the run and the bursts' ratios to C read low.
4. Bursts: `--warm-s` at 0.5 C, `--burst-s` at 3 C (then 10 C), `--after-s` at 0.5 C. Reported per burst:
   goodput (on-time answers per second for the requests sent during the burst), outcome counts, p99 client
   latency of 200 answers, whether every request got exactly one answer, and the recovery time (from the
   end of the burst until every later 0.5 s window of requests has attainment >= 0.99); and the server's own
   counts (rejections by reason) from /metrics.

Targets (issue "serving that holds under bursts"): goodput >= 0.9 C at 3x and >= 0.8 C at 10x; one answer
per request; p99 of on-time answers <= SLO; recovery <= 2 s.

    python benchmarks/overload.py                      # ~10 min on 2 cores; JSON in benchmarks/results
    python benchmarks/overload.py --quick              # a minute: checks the script, not the claims
    python benchmarks/overload.py --runtimes torch-inplace --capacity 1062.5 --factors 3 --neighbours 2
                                                       # fixed rate, two busy loops on the server's core
    python benchmarks/overload.py --runtimes torch-inplace --capacity 1062.5 --factors 3,10 \\
        --profile benchmarks/results/overload_profile_torch_half_batch.json
                                                       # a measured profile whose fastest batch of 16 lies just
                                                       # past SlackFit's first bucket (torch's former bad state)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_live import measure_profile, train
from tailor.data import load_dataset
from tailor.serve import traces
from tailor.serve.server.loadgen import REUSE_ORDERS, LoadResult
from tailor.serve.server.loadgen import summary as load_summary


def cores() -> tuple[int, set[int]]:
    """(client core, server cores): the first core for the client, the rest for the server."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return available[0], set(available)
    return available[0], set(available[1:])


def start_neighbours(count: int, nice: int) -> list[subprocess.Popen]:
    """`count` busy loops on the server's cores at the workers' priority: a noisy neighbour, or a machine that
    got slower, as the profile (measured on an idle core) does not know."""
    _, server_cores = cores()

    def pin_and_lower() -> None:
        os.sched_setaffinity(0, server_cores)
        os.nice(nice)

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin_and_lower)
            for _ in range(count)]


def start_server(args: argparse.Namespace, checkpoint: Path, profile: Path, runtime: str) -> tuple[subprocess.Popen,
                                                                                                   dict]:
    command = [sys.executable, "-m", "tailor.cli", "serve", str(checkpoint), "--profile", str(profile),
               "--port", "0", "--workers", "1", "--spare-workers", "1", "--slo-ms", str(args.slo_ms),
               "--runtime", runtime, "--threads", "1", "--log-level", "error", "--percentile", args.percentile]
    if getattr(args, "worker_nice", None) is not None:
        command += ["--worker-nice", str(args.worker_nice)]
    command += shlex.split(getattr(args, "serve_args", ""))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _, server_cores = cores()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: os.sched_setaffinity(0, server_cores))
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise SystemExit(f"tailor serve failed to start (exit {process.returncode})")
    return process, json.loads(line)


def stop_server(process: subprocess.Popen) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[-1] if lines else {}


def process_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process and of its children (the workers), from /proc."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return sum(_cpu_times_s(pid)), sum(sum(_cpu_times_s(c)) for c in children)


def system_cpu_s(pid: int) -> float:
    """A process's system time from /proc (sampled at the timer tick): a lower bound of its time in the kernel;
    `perf record` puts several times more of a refusal there (`benchmarks/refusal_cost.py --live --perf`)."""
    return _cpu_times_s(pid)[1]


def _cpu_times_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def process_switches(pid: int) -> tuple[int, int, int, int]:
    """Context switches so far, from /proc: voluntary (it slept: each wake-up ends one) and involuntary (it was
    preempted) of a process, then the same summed over its children (the workers)."""

    def switches(p: int) -> tuple[int, int]:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)
        return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])

    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    front = switches(pid)
    workers = [switches(c) for c in children]
    return front[0], front[1], sum(w[0] for w in workers), sum(w[1] for w in workers)


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line and not line.startswith("#")}


def run_load(args: argparse.Namespace, url: str, model: str, schedule: np.ndarray, workdir: Path, tag: str) -> LoadResult:
    """Run the load generator in its own process (pinned to the client core) on `schedule` (seconds)."""
    csv = workdir / f"{tag}.csv"
    traces.Trace(schedule).save_csv(csv)
    out = workdir / f"{tag}.npz"
    client_core, _ = cores()
    command = [sys.executable, "-m", "tailor.serve.server.loadgen", "--url", url, "--model", model,
               "--input-shape", ",".join(map(str, args.input_shape)), "--trace", "arrivals", "--csv", str(csv),
               "--slo-ms", str(args.slo_ms), "--out", str(out), "--max-connections", str(args.max_connections),
               "--reuse", args.reuse]
    if args.deadline_ms is not None:
        command += ["--deadline-ms", str(args.deadline_ms)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {client_core}))
    return LoadResult.load(out)


def probe_rate(args: argparse.Namespace, url: str, model: str, workdir: Path, tag: str, rate: float,
               seed: int) -> dict[str, Any]:
    """The client-side summary of one `--probe-s` Poisson run at `rate` (a capacity probe)."""
    schedule = traces.poisson(rate, args.probe_s, seed=seed).arrivals_s
    return load_summary(run_load(args, url, model, schedule, workdir, tag), args.slo_ms)


def capacity(args: argparse.Namespace, url: str, model: str, workdir: Path, runtime: str,
             probe: Callable[[float, int], dict[str, Any]] | None = None) -> tuple[float, list]:
    """The highest Poisson rate with client-side attainment >= 0.99: halve from `--max-rate` until one passes,
    then bisect between it and the lowest failing rate with the remaining probes. `probe(rate, step)` gives a
    probe's summary (default: a `--probe-s` run). One try per rate: a second try for failed rates (f9eb872) let
    near-misses pass by luck and set C a third higher in one run (OVERLOAD.md, runs 29-30)."""

    def run_probe(rate: float, step: int) -> dict[str, Any]:
        return probe_rate(args, url, model, workdir, f"{runtime}-probe{step}", rate, step)

    probe = probe or run_probe
    passed, failed = 0.0, None
    probes = []
    rate = args.max_rate
    for step in range(args.probes):
        line = probe(rate, step)
        probes.append({"rate": rate, "attainment": line["attainment"], "p99_ms_200": line["p99_ms_200"]})
        print(f"  probe {rate:8.1f} req/s: attainment {line['attainment']:.4f}, p99 {line['p99_ms_200'] or 0:.1f} ms",
              flush=True)
        if line["attainment"] >= 0.99:
            passed = rate
        else:
            failed = rate
        if failed is None:
            break  # the first probe passed: --max-rate is too low to find the capacity
        rate = failed / 2 if passed == 0.0 else (passed + failed) / 2
        time.sleep(1.0)
    return passed, probes


def recheck_capacity(args: argparse.Namespace, url: str, model: str, workdir: Path, runtime: str, cap: float,
                     probes: list[dict[str, Any]]) -> dict[str, Any]:
    """C probed once more after the bursts (one `--probe-s` run at C), next to its attainment when bisected: near
    0.99 both times by construction (C is the edge), far below it if the machine slowed down since C was
    measured, and the bursts' ratios to C then read low (this machine's speed drifts by 20-50% within an hour)."""
    line = probe_rate(args, url, model, workdir, f"{runtime}-recheck", cap, 99)
    bisected = next((p["attainment"] for p in probes if p["rate"] == cap), None)
    print(f"  C re-checked after the bursts: attainment {line['attainment']:.4f} at {cap:.0f} req/s"
          + (f" ({bisected:.4f} when bisected)" if bisected is not None else ""), flush=True)
    return {"rate": cap, "attainment": line["attainment"], "bisected_attainment": bisected}


def recovery_s(result: LoadResult, slo_ms: float, end_s: float, window_s: float = 0.5) -> float | None:
    """Seconds after `end_s` until every later `window_s` window of scheduled requests has attainment >= 0.99.
    Only whole windows count: one that reaches past the last request holds a fraction of a window's requests, so
    that a single miss there would read as a recovery reaching to the end of the run."""
    on_time = result.on_time(slo_ms)
    last_start = float(result.scheduled_s.max()) - window_s
    edges = np.arange(end_s, last_start + 1e-9, window_s / 5) if last_start >= end_s else np.array([end_s])
    last_bad = None
    for start in edges:
        mask = (result.scheduled_s >= start) & (result.scheduled_s < start + window_s)
        if mask.sum() >= 5 and on_time[mask].mean() < 0.99:
            last_bad = start
    return 0.0 if last_bad is None else float(last_bad + window_s - end_s)


TIMELINE_GAUGES = {"tailor_planning_margin_seconds": "margin_ms", "tailor_planning_slowdown": "slowdown",
                   "tailor_requests_running": "running",
                   "tailor_queue_length": "queued", "tailor_event_loop_lag_seconds": "loop_lag_ms"}
TIMELINE_OUTCOMES = ("on_time", "late", "expired", "rejected")


class MetricsTimeline:
    """`/metrics` polled every `interval_s` on a thread pinned to the client's core while a burst runs: the
    planning margin and slowdown, the requests in batches on the workers, the batches' mean size and compute
    time, the queue, the outcomes and the busiest subnet, so that a run that goes wrong can be told from one
    that does not (`rows()`: one row per second). With `server_pid`, also how the server's core was shared: the
    front end's CPU (and its system time, by /proc's tick) and the workers', how often the front end went to sleep
    (voluntary context switches: each one a wake-up to come) and how often the workers were preempted, from /proc."""

    def __init__(self, url: str, interval_s: float, server_pid: int | None = None) -> None:
        self.url, self.interval_s, self.server_pid = url, interval_s, server_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> MetricsTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        client_core, _ = cores()
        os.sched_setaffinity(0, {client_core})  # this thread only: the server's core is left alone
        start = time.perf_counter()
        while not self._stop.wait(self.interval_s):
            try:
                sample = metrics(self.url)
                if self.server_pid is not None:
                    sample["front_end_cpu_s"], sample["worker_cpu_s"] = process_cpu_s(self.server_pid)
                    sample["front_end_system_s"] = system_cpu_s(self.server_pid)
                    (sample["front_end_sleeps"], sample["front_end_preempted"], sample["worker_sleeps"],
                     sample["worker_preempted"]) = process_switches(self.server_pid)
                self.samples.append((time.perf_counter() - start, sample))
            except (OSError, KeyError, ValueError):
                continue

    def rows(self) -> list[dict[str, float]]:
        """Per second: the median of each gauge over its samples and each outcome's count per second."""
        rows = []
        for second in range(int(self.samples[-1][0]) if self.samples else 0):
            inside = [(t, m) for t, m in self.samples if second <= t < second + 1]
            if len(inside) < 2:
                continue
            row: dict[str, float] = {"t_s": float(second)}
            for name, key in TIMELINE_GAUGES.items():
                scale = 1e3 if key.endswith("_ms") else 1.0
                row[key] = scale * float(np.median([m.get(name, 0.0) for _, m in inside]))
            (t0, first), (t1, last) = inside[0], inside[-1]
            grew = {name: last.get(name, 0.0) - first.get(name, 0.0) for name in last}
            for outcome in TIMELINE_OUTCOMES:
                row[f"{outcome}_per_s"] = grew.get(f'tailor_requests_total{{outcome="{outcome}"}}', 0.0) / (t1 - t0)
            batches = grew.get("tailor_batch_size_count", 0.0)
            # the batches finished in the second: their mean size and the worker's mean compute per batch
            row["batch_size"] = grew.get("tailor_batch_size_sum", 0.0) / batches if batches else 0.0
            row["compute_ms"] = 1e3 * grew.get("tailor_compute_seconds_sum", 0.0) / batches if batches else 0.0
            served = {name: count for name, count in grew.items() if name.startswith("tailor_subnet_requests_total{")}
            total = sum(served.values())
            if total > 0:  # which subnet served most of the second's requests, and what share
                top = max(served, key=served.__getitem__)
                row["top_subnet"] = top.split('"')[1]
                row["top_subnet_share"] = served[top] / total
            if "front_end_cpu_s" in grew:  # the server's core: shares of it, and sleeps / preemptions per second
                shares = {"front_end_cpu_s": "front_end_share", "front_end_system_s": "front_end_system_share",
                          "worker_cpu_s": "worker_share"}
                for key, name in shares.items():
                    row[name] = grew[key] / (t1 - t0)
                for key in ("front_end_sleeps", "front_end_preempted", "worker_sleeps", "worker_preempted"):
                    row[f"{key}_per_s"] = grew[key] / (t1 - t0)
            rows.append(row)
        return rows


def burst(args: argparse.Namespace, url: str, model: str, workdir: Path, runtime: str, cap: float, factor: float,
          server_pid: int) -> dict[str, Any]:
    warm, length, after = args.warm_s, args.burst_s, args.after_s
    schedule = np.concatenate([
        traces.poisson(0.5 * cap, warm, seed=11).arrivals_s,
        warm + traces.poisson(factor * cap, length, seed=12).arrivals_s,
        warm + length + traces.poisson(0.5 * cap, after, seed=13).arrivals_s,
    ])
    before = metrics(url)
    front_cpu, worker_cpu = process_cpu_s(server_pid)
    timeline = MetricsTimeline(url, args.timeline_s, server_pid) if args.timeline_s > 0 else None
    with timeline or contextlib.nullcontext():
        result = run_load(args, url, model, schedule, workdir, f"{runtime}-x{factor:g}")
    front_after, worker_after = process_cpu_s(server_pid)
    front_cpu, worker_cpu = front_after - front_cpu, worker_after - worker_cpu
    server_cpu = front_cpu + worker_cpu
    after_metrics = metrics(url)
    during = load_summary(result, args.slo_ms, (warm, warm + length))
    answered = int((result.status >= 0).sum())
    # requests sent from 1 s after the burst on (at 0.5 C) that were not answered on time: what recovery misses
    later = result.scheduled_s >= warm + length + 1.0
    missed_after = int((~result.on_time(args.slo_ms)[later]).sum())

    def change(metric: str) -> dict[str, float]:  # per label value: how much a labelled metric grew during the run
        return {key.split('"')[1]: after_metrics[key] - before.get(key, 0.0)
                for key in after_metrics if key.startswith(metric + "{")}

    rejections, outcomes = change("tailor_rejections_total"), change("tailor_requests_total")
    # per generation: collections and their total seconds in the server process during the run
    collections, paused = change("tailor_gc_pause_seconds_count"), change("tailor_gc_pause_seconds_sum")
    gc_pauses = {g: {"count": collections[g], "seconds": paused[g]} for g in collections}
    out = {
        "factor": factor,
        "offered_per_s": during["offered_per_s"],
        "goodput_per_s": during["goodput_per_s"],
        "goodput_over_capacity": during["goodput_per_s"] / cap if cap else None,
        "burst": during,
        "whole_run": load_summary(result, args.slo_ms),
        "requests": len(schedule),
        "answered_once": answered == len(schedule) and not (result.status == -2).any(),
        "unsent": int((result.status == -1).sum()),
        "recovery_s": recovery_s(result, args.slo_ms, warm + length),
        "missed_after": {"missed": missed_after, "requests": int(later.sum())},
        "client_cpu_share": result.cpu_s / result.wall_s,
        "server_cpu_share": server_cpu / result.wall_s,
        "front_end_cpu_s": front_cpu,
        "worker_cpu_s": worker_cpu,
        # the front end's CPU per request it took in (answered, refused or expired; unsent ones excluded)
        "front_end_us_per_request": 1e6 * front_cpu / max(1, int((result.status != -1).sum())),
        "server_outcomes": outcomes,
        "server_rejections": rejections,
        # of the admission rejections, those made in the handler (after a full ASGI cycle) rather than at the headers
        "handler_rejections": after_metrics.get("tailor_handler_rejections_total", 0.0)
        - before.get("tailor_handler_rejections_total", 0.0),
        "connections": result.connections,
        "gc_pauses": gc_pauses,
    }
    if timeline is not None:
        out["timeline"] = timeline.rows()
    print(f"  {factor:g}x C: offered {during['offered_per_s']:.0f}/s, goodput {during['goodput_per_s']:.0f}/s "
          f"({out['goodput_over_capacity']:.2f} C), statuses {during['status']} ({out['handler_rejections']:.0f} "
          f"of the server's admission rejections in the handler), p99 of 200s "
          f"{during['p99_ms_200'] or 0:.1f} ms, recovery {out['recovery_s']:.2f} s ({out['missed_after']['missed']} of "
          f"{out['missed_after']['requests']} missed from 1 s after the burst), one answer each: "
          f"{out['answered_once']}, client CPU {out['client_cpu_share']:.2f} core, server {out['server_cpu_share']:.2f} "
          f"(front end {front_cpu:.1f} s = {out['front_end_us_per_request']:.0f} us per request, workers "
          f"{worker_cpu:.1f} s; GC " + ", ".join(f"gen {g}: {p['count']:.0f} in {1e3 * p['seconds']:.0f} ms"
                                                  for g, p in sorted(gc_pauses.items())) + ")",
          flush=True)
    for row in out.get("timeline", []):
        print(f"    {row['t_s']:4.0f} s: margin {row['margin_ms']:5.1f} ms, slowdown {row['slowdown']:4.2f}, in batches {row['running']:3.0f} (mean batch "
              f"{row['batch_size']:4.1f} samples, {row['compute_ms']:5.2f} ms compute), queued "
              f"{row['queued']:4.0f}, loop lag {row['loop_lag_ms']:5.2f} ms; per s on time {row['on_time_per_s']:5.0f}, "
              f"late {row['late_per_s']:4.0f}, expired {row['expired_per_s']:4.0f}, refused {row['rejected_per_s']:5.0f}"
              + (f"; {100 * row['top_subnet_share']:.0f}% on {row['top_subnet']}" if "top_subnet" in row else "")
              + (f"; core: front end {row['front_end_share']:.2f} ({row['front_end_system_share']:.2f} system time; "
                 f"sleeps {row['front_end_sleeps_per_s']:.0f}/s), "
                 f"workers {row['worker_share']:.2f} (preempted {row['worker_preempted_per_s']:.0f}/s)"
                 if "front_end_share" in row else ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".cache/overload", help="checkpoint and profiles (reused)")
    parser.add_argument("--runtimes", default="torch-inplace,onnxruntime")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--percentile", default="auto", choices=("auto", "p50", "p90", "p99"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rate", type=float, default=8000.0,
                        help="the first capacity probe (req/s); if it passes, C is reported as this (a lower bound)")
    parser.add_argument("--probes", type=int, default=7)
    parser.add_argument("--probe-s", type=float, default=4.0)
    parser.add_argument("--warm-s", type=float, default=3.0)
    parser.add_argument("--burst-s", type=float, default=10.0)
    parser.add_argument("--after-s", type=float, default=5.0)
    parser.add_argument("--factors", default="3,10")
    parser.add_argument("--max-connections", type=int, default=2048)
    parser.add_argument("--reuse", choices=REUSE_ORDERS, default="lifo",
                        help="the load generator's choice of free connection: the one freed last (as tritonclient.http's "
                        "pool) or the one idle longest (every open connection in turn; runs 1-33 used this)")
    parser.add_argument("--deadline-ms", type=float,
                        help="every request carries this deadline of its own (as a client with a timeout sends)")
    parser.add_argument("--capacity", type=float, help="skip the probes and use this C (req/s)")
    parser.add_argument("--worker-nice", type=int, help="tailor serve --worker-nice (default: the server's)")
    parser.add_argument("--neighbours", type=int, default=0,
                        help="busy-loop processes sharing the server's core at the workers' priority while it serves "
                             "(a noisy neighbour: the workers run slower than profiled)")
    parser.add_argument("--reuse-profile", action="store_true",
                        help="serve with the profile the last run saved in --workdir instead of measuring one (the "
                             "p99 of 100 repeats moves from run to run; compare code on the same profile)")
    parser.add_argument("--profile", help="serve with this profile JSON instead of measuring one (one runtime), e.g. "
                        "benchmarks/results/overload_profile_torch_half_batch.json")
    parser.add_argument("--serve-args", default="", help="more `tailor serve` options, e.g. '--margin-percentile 90'")
    parser.add_argument("--timeline-s", type=float, default=0.0,
                        help="poll /metrics this often during each burst (from the client's core) and print and "
                             "save one row per second: margin, requests in batches, queue, outcomes, the server core's "
                             "split between front end and workers with the front end's sleeps and the workers' "
                             "preemptions (0: off)")
    parser.add_argument("--out", default="benchmarks/results/overload.json")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the claims")
    args = parser.parse_args()
    if args.neighbours < 0:
        parser.error(f"--neighbours must be >= 0, got {args.neighbours}")
    if args.profile and (args.reuse_profile or "," in args.runtimes):
        parser.error("--profile: one runtime (--runtimes), and not with --reuse-profile")
    if args.profile and not Path(args.profile).is_file():
        parser.error(f"--profile: no file {args.profile}")
    if args.quick:
        args.epochs, args.repeats, args.probes, args.probe_s, args.max_rate = 1, 10, 4, 1.5, 800.0
        args.warm_s, args.burst_s, args.after_s, args.image_size = 0.5, 2.0, 1.0, 8
        args.workdir = tempfile.mkdtemp(prefix="overload_quick_")
        args.out = str(Path(args.workdir) / "overload.json")
    args.pin = False
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args.input_shape = tuple(load_dataset("digits", "test", image_size=args.image_size).input_size)
    checkpoint = train(args, workdir)
    load_avg = os.getloadavg()
    report: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "input_shape"},
                              "load_average_before": load_avg, "runtimes": {}}
    client_core, server_cores = cores()
    print(f"client on core {client_core}, server (front end + workers) on cores {sorted(server_cores)}; "
          f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    for runtime in args.runtimes.split(","):
        args.runtime = runtime
        if args.profile:
            profile = Path(args.profile)
        elif args.reuse_profile:  # the profile an earlier run measured (A/B runs plan with the same one)
            profile = workdir / f"profile-{runtime}.json"
            if not profile.is_file():
                raise SystemExit(f"--reuse-profile: no {profile} yet; run once without it")
        else:
            profile = measure_profile(args, workdir, checkpoint)
            (workdir / f"profile-{runtime}.json").write_text(profile.read_text())
        planned_with = json.loads(profile.read_text())
        process, ready = start_server(args, checkpoint, profile, runtime)
        neighbours: list[subprocess.Popen] = []
        try:
            nice = ready["worker_nice"]  # the server's, by runtime unless --worker-nice set it
            neighbours = start_neighbours(args.neighbours, nice)
            url, model = ready["url"], ready["serving"]
            print(f"\n== {runtime}: {url}, {ready['policy']}, SLO {args.slo_ms:g} ms, workers at nice {nice}, "
                  f"client reuses connections {args.reuse.upper()}")
            cap, probes = (args.capacity, []) if args.capacity else capacity(args, url, model, workdir, runtime)
            print(f"  capacity C = {cap:.0f} req/s (attainment >= 0.99 at the client)")
            if cap <= 0:
                raise SystemExit(f"no probe down to {probes[-1]['rate']:.0f} req/s reached 0.99: lower --max-rate")
            bursts = [burst(args, url, model, workdir, runtime, cap, float(f), process.pid)
                      for f in args.factors.split(",")]
            recheck = recheck_capacity(args, url, model, workdir, runtime, cap, probes) if not args.capacity else None
        finally:
            for neighbour in neighbours:
                neighbour.kill()
                neighbour.wait()
            final = stop_server(process)
        report["runtimes"][runtime] = {"capacity_per_s": cap, "worker_nice": nice, "probes": probes, "bursts": bursts,
                                       "capacity_recheck": recheck,
                                       "server": final,
                                       "profile": planned_with}
    report["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nload average after: {report['load_average_after']}; results: {args.out}")


if __name__ == "__main__":
    main()
