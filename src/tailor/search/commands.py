"""`tailor search`: the Pareto front of a trained checkpoint's subnets, from the command line.

Reads a checkpoint (and the data it was trained on, from its recipe), calibrates and evaluates
candidates on the test split, measures or predicts their cost, and writes the front as JSON (and an
SVG with `--plot`). The study persists in SQLite next to the output unless `--storage` names another
database, so an interrupted search resumes and several `tailor search` processes can share it.
Prints a JSON summary on stdout and a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import torch

import tailor.cli_args as cli_args
from tailor.cost import LatencyPredictor, Profile, latency, list_runtimes
from tailor.search.algorithms import ALGORITHMS, search
from tailor.search.costs import CostSource, MeasuredCost, PredictedCost, ProfileCost
from tailor.search.evaluator import Evaluator
from tailor.search.metrics import METRICS, SearchError
from tailor.search.pair import pair_search
from tailor.space import SUBNET_NOTATION, parse_subnets
from tailor.train import load_checkpoint
from tailor.train.fit import checkpoint_data


def add_commands(commands: Any) -> None:
    """Register `search` on the `tailor` parser's subcommands."""
    cmd = commands.add_parser("search", help="Pareto front of a checkpoint's subnets under latency/MAC/memory budgets")
    cli_args.add_checkpoint(cmd)
    cli_args.add_out(cmd, required=True, help="front JSON to write (schema tailor.pareto/1)")
    cli_args.add_data(cmd)
    cmd.add_argument("--objectives", default="accuracy,latency", help=f"comma-separated, from {list(METRICS)}")
    cmd.add_argument("--constraint", action="append", default=[], metavar="METRIC=BOUND",
                     help="latency=2.5 (ms), macs=2e7, memory=4e6 (bytes), params=1e5, accuracy=0.9; repeatable")  # fmt: skip
    cmd.add_argument("--algorithm", choices=ALGORITHMS, default="nsga2")
    cli_args.checked(cmd, "--budget", type=int, default=100, check=cli_args.POSITIVE,
                     help="distinct subnets to evaluate (ignored by exhaustive)")  # fmt: skip
    cli_args.add_seed(cmd)
    cmd.add_argument("--storage", help="SQLite path or database URL (default: <out>.db)")
    cmd.add_argument("--study-name", help="default: derived from the checkpoint, data, costs and settings")
    cmd.add_argument("--predictor", choices=("ridge", "mlp"), help="evolution's accuracy predictor (default: ridge)")
    cmd.add_argument("--latency-source", choices=LATENCY_SOURCES, default="measure",
                     help="latency measured per subnet, a fitted LatencyPredictor, or --profile")  # fmt: skip
    cli_args.add_profile(cmd, help="profile JSON (tailor profile) for --latency-source profile")
    cli_args.checked(cmd, "--fit-subnets", type=int, default=24, check=cli_args.at_least(2),
                     help="--latency-source predict: measured subnets to fit on")  # fmt: skip
    cmd.add_argument("--memory", choices=("measure", "estimate"), default="estimate",
                     help="peak memory measured in a fresh process per subnet, or estimated from shapes")  # fmt: skip
    cli_args.add_runtime(cmd, runtimes=list_runtimes(), default="torch", help="runtime latency is measured on")
    cli_args.add_latency_batch(cmd, default=1)
    cli_args.checked(cmd, "--latency-threads", type=int, default=1, check=cli_args.POSITIVE,
                     help="threads latency is measured with (default 1)")  # fmt: skip
    cli_args.add_repeats(cmd, default=30, help="timed calls per latency measurement")
    cli_args.add_calibration(cmd, batch_size=128)
    cli_args.add_plot(cmd, help="SVG of accuracy against the first cost objective")
    cmd.add_argument("--include", metavar="SUBNETS",
                     help=f"also evaluate these first (e.g. a previous front.json): {SUBNET_NOTATION}")  # fmt: skip
    cmd.add_argument("--pair-budget", type=float, help="also choose a (little, big, threshold) cascade within MS")
    cli_args.add_device(cmd, default="cpu")
    cli_args.add_threads(cmd, default=None)
    cli_args.add_progress(cmd)
    cmd.set_defaults(run=cmd_search)


LATENCY_SOURCES = ("measure", "predict", "profile")


def _constraints(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SearchError(f"--constraint {item!r}: expected METRIC=BOUND, e.g. latency=2.5")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SearchError(f"--constraint {item!r}: {value!r} is not a number") from None
    return out


def _datasets(loaded: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    train, test, _ = checkpoint_data(loaded, args.data, args.data_root)
    return train, test


def _predicted_latency(model: Any, measured: MeasuredCost, args: argparse.Namespace) -> PredictedCost:
    """A LatencyPredictor fitted on `--fit-subnets` measured subnets, with its error on 8 held-out ones."""
    space, rng = model.space, random.Random(args.seed)
    subs = list(dict.fromkeys([space.canonical(space.largest()), space.canonical(space.smallest())]))
    while len(subs) < args.fit_subnets + 8:
        subs.append(space.canonical(space.sample(rng)))
    fit, held = subs[: args.fit_subnets], subs[args.fit_subnets :]

    def measure(sub: Any) -> float:
        stats = latency(
            model, sub, args.latency_batch, args.runtime, args.latency_threads, 5, args.repeats, measured.input_shape
        )
        return stats.p50

    predictor = LatencyPredictor(model, args.latency_batch, measured.input_shape).fit(fit, [measure(s) for s in fit])
    return PredictedCost(predictor, predictor.error_report(held, [measure(s) for s in held]))


def cmd_search(args: argparse.Namespace) -> int:
    """Search a checkpoint's subnets; write the front (JSON, optional SVG) and print a JSON summary."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    constraints = _constraints(args.constraint)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    loaded = load_checkpoint(args.checkpoint, map_location=device)
    model = loaded.model
    train, test = _datasets(loaded, args)
    include = [n.subnet for n in parse_subnets(args.include, model.space, what="--include")] if args.include else []
    shape = tuple(test[0][0].shape)
    measured = MeasuredCost(model, shape, runtime=args.runtime, batch_size=args.latency_batch, threads=args.latency_threads,
                            repeats=args.repeats, memory=args.memory)  # fmt: skip
    sources: list[CostSource] = [measured]
    if args.latency_source == "predict":
        sources.insert(0, _predicted_latency(model, measured, args))
    elif args.latency_source == "profile":
        if not args.profile:
            raise SearchError("--latency-source profile needs --profile PATH")
        sources.insert(0, ProfileCost(Profile.load(args.profile), args.latency_batch, space=model.space))
    evaluator = Evaluator(model, train, test, calib_batches=args.calib_batches, batch_size=args.batch_size,
                          seed=args.seed, cost=sources, device=device)  # fmt: skip
    out = Path(args.out)
    storage = args.storage or str(out.with_suffix(".db"))
    front = search(model, evaluator, objectives, constraints, args.algorithm,
                   None if args.algorithm == "exhaustive" else args.budget, storage=storage,
                   study_name=args.study_name, seed=args.seed, progress=not args.no_progress,
                   predictor=args.predictor, include=include)  # fmt: skip
    front.save(out)
    summary: dict[str, Any] = {
        "out": str(out),
        "storage": front.info["storage"],
        "study_name": front.info["study_name"],
        "evaluated": front.info["evaluated"],
        "evaluated_here": front.info["evaluated_here"],
        "seconds_per_evaluation": round(front.info["seconds_per_evaluation"], 4),
        "front": [{"id": e.subnet.id, **e.metrics} for e in front],
    }
    if args.plot:
        summary["plot"] = str(front.plot(args.plot))
    if args.pair_budget is not None:
        if not len(front):
            raise SearchError("--pair-budget: the front is empty (no subnet met the constraints)")
        summary["pair"] = pair_search(evaluator, front, args.pair_budget).to_dict()
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
