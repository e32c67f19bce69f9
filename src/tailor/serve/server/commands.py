"""`tailor serve`: the supernet behind an Open Inference Protocol (KServe v2) HTTP server.

Loads the checkpoint into `--workers` processes, serves the profile's Pareto subnets with the chosen
policy, prints one JSON line to stdout once it is ready (`{"serving": ..., "url": ...}`) and, after
SIGINT/SIGTERM has drained it, one JSON line with the outcome counts of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import tailor.cli_args as cli_args
from tailor.cost import list_runtimes
from tailor.errors import TailorError


def _option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE parsed as JSON when it is JSON (numbers, booleans), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_commands(commands: Any) -> None:
    """Register `serve` on the `tailor` parser's subcommands."""
    serve = commands.add_parser("serve", help="serve a supernet over the Open Inference Protocol (KServe v2 HTTP)")
    cli_args.add_checkpoint(serve)
    cli_args.add_profile(serve, required=True, help="profile JSON (tailor.profile/1) of the subnets to serve")
    cli_args.add_serving(serve, slo_ms=50.0, queue_capacity=1024)
    cli_args.add_threads(serve, default=1, help="torch threads per worker")
    cli_args.add_policy(serve, help="drainfit (the default), slackfit, maxacc, maxbatch, fixed:<id>, infaas")
    serve.add_argument("--policy-option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                       help="policy constructor option, e.g. buckets=16 (repeatable)")
    cli_args.add_runtime(serve, runtimes=list_runtimes(),
                         help="run every subnet on this runtime (default: each subnet on the runtime the profile "
                              "chose for it)")  # fmt: skip
    cli_args.add_device(serve, default="cpu", help=", where the workers prepare subnets")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed when ready)")
    serve.add_argument("--model-name", help="name in /v2/models/{name} (default: the profile's model)")
    serve.add_argument("--max-body-bytes", type=int, default=16 << 20, help="largest request body accepted")
    serve.add_argument("--max-connections", type=int, default=1024,
                       help="open connections (and requests in progress) before answering 503")
    serve.add_argument("--drain-timeout-s", type=float, default=30.0, help="how long shutdown waits for requests")
    serve.add_argument("--compute-timeout-s", type=float, default=10.0,
                       help="the longest a batch may run before its worker is declared hung, killed and replaced "
                            "(a batch gets max(10 x its profiled latency, --watchdog-slo-factor x SLO), at most this)")
    serve.add_argument("--watchdog-slo-factor", type=float, default=2.0,
                       help="a batch may run at least this many SLOs before its worker is declared hung")
    serve.add_argument("--spare-workers", type=int, default=1,
                       help="loaded worker processes that take a dead worker's place at once (0: restart only)")
    serve.add_argument("--read-timeout-s", type=float, default=10.0,
                       help="a request's headers and body must arrive within this (else 408)")
    serve.add_argument("--max-header-bytes", type=int, default=16 << 10, help="largest request header block (431)")
    serve.add_argument("--no-admission", action="store_true",
                       help="queue every request even when the queue cannot drain it within its deadline "
                            "(default: refuse it at once with 503 + Retry-After, before parsing it)")
    serve.add_argument("--no-profile-scaling", action="store_true",
                       help="plan with the profile's latencies as measured (default: times the workers' measured "
                            "slowdown against them, when above 1: under load they share the cores and run slower)")
    serve.add_argument("--worker-nice", type=int,
                       help="run the workers this much below the front end's priority (0-19; default 5 where every "
                            "subnet runs eager PyTorch, else 10), so that a core they share serves the front end "
                            "first: under overload it keeps reading and refusing requests instead of leaving them in "
                            "the kernel's buffers (0: equal priority; local workers, not --cluster actors)")
    serve.add_argument("--overhead-margin-ms", type=float,
                       help="time per batch besides compute that the policy plans for (default: measured, "
                            "--margin-percentile of dispatch-to-answer minus compute over the last 256 batches, plus "
                            "that of answer delivery; 0: none, as in simulation)")
    serve.add_argument("--margin-percentile", type=float, default=99.9,
                       help="the percentile of the measured overheads the policy plans for (50-100, default 99.9, "
                            "the largest of the last 256: their tail is long, and a batch planned below it ends "
                            "late, with the requests queued behind it)")
    serve.add_argument("--no-expire-hopeless", action="store_true",
                       help="compute requests with less time left than the fastest subnet needs (late) instead of "
                            "answering them 'deadline exceeded' at once")
    serve.add_argument("--cluster", help="run the workers as Ray actors: 'ray' (a local Ray started on demand, or the "
                       "cluster in RAY_ADDRESS), 'auto', or 'ray://HOST:PORT'; needs pip install 'tailor[ray]'")
    serve.add_argument("--min-workers", type=int, help="--cluster: fewest workers the autoscaler keeps")
    serve.add_argument("--max-workers", type=int, help="--cluster: most workers the autoscaler starts")
    serve.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the server and block until it is stopped; errors in the checkpoint or profile exit with status 2."""
    import logging

    from tailor.serve.policies import DEFAULT_POLICY
    from tailor.serve.server.app import ServerConfig, run_server

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        checkpoint=args.checkpoint,
        profile=args.profile,
        slo_ms=args.slo_ms,
        workers=args.workers,
        policy=args.policy or DEFAULT_POLICY,
        policy_options=dict(args.policy_option),
        host=args.host,
        port=args.port,
        threads=args.threads,
        queue_limit=args.queue_capacity,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
        model_name=args.model_name,
        percentile=args.percentile,
        drain_timeout_s=args.drain_timeout_s,
        compute_timeout_s=args.compute_timeout_s,
        watchdog_slo_factor=args.watchdog_slo_factor,
        spare_workers=args.spare_workers,
        read_timeout_s=args.read_timeout_s,
        max_header_bytes=args.max_header_bytes,
        admission=not args.no_admission,
        worker_nice=args.worker_nice,
        cluster=args.cluster,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        overhead_margin_ms=args.overhead_margin_ms,
        margin_percentile=args.margin_percentile,
        scale_profile=not args.no_profile_scaling,
        expire_hopeless=not args.no_expire_hopeless,
        log_level=args.log_level,
        runtime=args.runtime,
        device=args.device,
    )

    def ready(server: Any, url: str) -> None:
        line = {"serving": server.name, "url": url, "workers": args.workers, "runtime": server.runtime,
                "worker_nice": server.worker_nice if args.cluster is None else None,
                "cluster": args.cluster or "local",
                "policy": server.policy.describe(), "latency": server.profile.percentile_reason,
                "slo_ms": args.slo_ms, "subnets": list(server.subnets)}
        print(json.dumps(line), flush=True)

    try:
        summary = run_server(config, ready)
    except TailorError:
        raise
    except OSError as exc:
        raise OSError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    print(json.dumps({"stopped": True, **summary}), flush=True)
    print("server stopped after draining", file=sys.stderr)
    return 0
