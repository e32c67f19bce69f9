"""`tailor replay --sim`: replay a workload against a profile in the discrete-event simulator.

    tailor replay --sim --profile prof.json --trace bursty --base-rate 500 --burst-rate 1500 --cv2 4 \
        --duration 60 --slo-ms 36 --policy drainfit,slackfit,maxacc,maxbatch,infaas,fixed:all,upper_bound

`--profile` is a profile JSON (`tailor profile`, schema tailor.profile/1) or `ofa-like` (a synthetic
profile with OFA-ResNet's accuracy range). Workloads: `poisson`, `bursty`, `ramp`, `azure` (synthetic,
Azure-Functions-shaped), `rates` (a CSV of per-second rates, `--csv`) and `arrivals` (a CSV of arrival
times, as `Trace.save_csv` writes). Prints one row per policy; `--json` prints JSON instead, `--out`
also writes it to a file, `--plot DIR` writes a timeline SVG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import tailor.cli_args as cli_args
from tailor.progress import Progress
from tailor.serve import traces
from tailor.serve.policies import PolicyError
from tailor.serve.profile import ServingProfile, load_profile, ofa_like_profile
from tailor.serve.sim.simulate import SimResult, simulate
from tailor.serve.traces import Trace


def add_commands(commands: Any) -> None:
    """Register `replay` on the `tailor` parser's subcommands."""
    replay = commands.add_parser("replay", help="replay a workload in the serving simulator (--sim)")
    replay.add_argument("--sim", action="store_true", help="simulate (the only mode: no live server is replayed)")
    cli_args.add_profile(replay, required=True, help="profile JSON, or 'ofa-like' for the synthetic OFA profile")
    replay.add_argument(
        "--trace", default="bursty", choices=["poisson", "bursty", "ramp", "azure", "rates", "arrivals"]
    )
    replay.add_argument("--rate", type=float, default=1000.0, help="poisson / azure: mean requests per second")
    replay.add_argument("--base-rate", type=float, default=500.0, help="bursty: Poisson part (req/s)")
    replay.add_argument("--burst-rate", type=float, default=1500.0, help="bursty: Gamma part (req/s)")
    replay.add_argument("--cv2", type=float, default=4.0, help="bursty / ramp / azure / rates: Gamma CV² (1 = Poisson)")
    replay.add_argument("--start-rate", type=float, default=500.0, help="ramp: first rate (req/s)")
    replay.add_argument("--end-rate", type=float, default=3000.0, help="ramp: last rate (req/s)")
    replay.add_argument("--accel", type=float, default=100.0, help="ramp: rate change (req/s²)")
    replay.add_argument("--hold", type=float, default=0.0, help="ramp: seconds at the last rate")
    replay.add_argument("--duration", type=float, default=60.0, help="seconds of trace (poisson, bursty, azure)")
    replay.add_argument("--csv", help="rates: per-second rates CSV; arrivals: arrival-times CSV")
    cli_args.add_seed(replay)
    cli_args.add_serving(replay, slo_ms=36.0, queue_capacity=None)
    replay.add_argument("--latency-noise", type=float, default=0.0, help="relative std of batch latency")
    replay.add_argument("--buckets", type=int, default=None, help="slackfit: number of latency buckets")
    cli_args.add_policy(replay, default="drainfit,slackfit,maxacc,maxbatch,infaas,fixed:all,upper_bound",
                        help="comma-separated: drainfit (the default policy), slackfit, maxacc, maxbatch, infaas, "
                             "fixed:<id>, fixed:all, upper_bound")  # fmt: skip
    cli_args.add_json(replay)
    cli_args.add_out(replay, help="also write the JSON here")
    cli_args.add_plot(replay, help="directory for a timeline SVG of the online policies")
    cli_args.add_progress(replay)
    replay.set_defaults(run=cmd_replay)


def _profile(args: argparse.Namespace) -> ServingProfile:
    if args.profile == "ofa-like":
        return ServingProfile(ofa_like_profile(), percentile=args.percentile)
    return load_profile(args.profile, args.percentile)


def _trace(args: argparse.Namespace) -> Trace:
    kind = args.trace
    if kind == "poisson":
        return traces.poisson(args.rate, args.duration, args.seed)
    if kind == "bursty":
        return traces.bursty(args.base_rate, args.burst_rate, args.cv2, args.duration, args.seed)
    if kind == "ramp":
        return traces.ramp(args.start_rate, args.end_rate, args.accel, args.seed, args.cv2, args.hold)
    if kind == "azure":
        return traces.azure_like(args.duration, args.rate, args.seed, args.cv2)
    if not args.csv:
        raise traces.TraceError(f"--trace {kind} needs --csv PATH")
    if kind == "rates":
        return Trace.from_rates_csv(args.csv, args.seed, args.cv2)
    return Trace.load_csv(args.csv)


def _policies(names: str, profile: ServingProfile) -> list[str]:
    out: list[str] = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name == "fixed:all":
            out += [f"fixed:{sid}" for sid in profile.subnet_ids]
        else:
            out.append(name)
    if not out:
        raise PolicyError("--policy: no policy named")
    return out


def _row(name: str, r: SimResult) -> str:
    acc = "-" if r.mean_accuracy is None else f"{100 * r.mean_accuracy:.2f}"
    o = r.outcomes
    return (
        f"{name:<24} {r.attainment:>9.5f} {acc:>8} {o['on_time']:>9d} {o['late']:>8d} {o['expired']:>8d} "
        f"{o['rejected']:>8d} {r.goodput:>9.1f} {r.mean_batch:>6.1f} {r.wall_s:>7.2f}"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Simulate each policy on one workload and print attainment, accuracy and outcome counts."""
    if not args.sim:
        print("error: only simulated replay exists: pass --sim", file=sys.stderr)
        return 2
    profile = _profile(args)
    trace = _trace(args)
    names = _policies(args.policy, profile)
    progress = Progress("simulate", len(names), not args.no_progress, unit="policy")
    results: dict[str, SimResult] = {}
    for index, name in enumerate(names):
        progress(index, info=name)
        options: dict[str, Any] = {}
        if name == "slackfit" and args.buckets is not None:
            options["buckets"] = args.buckets
        results[name] = simulate(
            profile,
            trace,
            policy=name,
            slo_ms=args.slo_ms,
            workers=args.workers,
            latency_noise=args.latency_noise,
            seed=args.seed,
            queue_capacity=args.queue_capacity,
            **options,
        )
    progress(len(names))
    report = {
        "profile": args.profile,
        "subnets": [{"id": s, "accuracy": a} for s, a in zip(profile.subnet_ids, profile.acc)],
        "trace": {"name": trace.name, "requests": len(trace), "duration_s": trace.duration_s, "rate": trace.mean_rate},
        "slo_ms": args.slo_ms,
        "workers": args.workers,
        "latency_percentile": profile.percentile,
        "latency_percentile_reason": profile.percentile_reason,
        "results": {name: r.to_dict(series=False) for name, r in results.items()},
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.plot:
        from tailor.plot import timeline_plot

        online = {n: r for n, r in results.items() if not r.bound and not n.startswith("fixed:")}
        if online:
            path = timeline_plot(online, Path(args.plot) / "replay_timeline.svg",
                                 title=f"{trace.name}, SLO {args.slo_ms:g} ms", subnet_ids=profile.subnet_ids)  # fmt: skip
            print(f"plot: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{trace!r}, SLO {args.slo_ms:g} ms, {args.workers} worker(s), profile {args.profile} ({len(profile)} subnets)"
    )
    print(f"latency {profile.percentile_reason}")
    for issue in profile.issues()[:5]:
        print(f"note: {issue}", file=sys.stderr)
    print(
        f"{'policy':<24} {'attain':>9} {'acc %':>8} {'on_time':>9} {'late':>8} {'expired':>8} {'rejected':>8} "
        f"{'goodput/s':>9} {'batch':>6} {'wall s':>7}"
    )
    for name, r in results.items():
        print(_row(name, r))
    return 0
