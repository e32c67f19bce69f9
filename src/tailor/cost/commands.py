"""`tailor profile`: measure chosen subnets of a checkpoint (or registry model) into a profile JSON.

The profile (`tailor.cost.Profile`, schema "tailor.profile/1") holds, per subnet, MACs, params, latency
percentiles at each batch size on one backend and, with `--accuracy`/`--data`, held-out accuracy after
calibrating the subnet's SubnetNorm statistics. Search and serving read it. Progress goes to stderr, a
summary table to stdout. Bad arguments exit with status 2 and one line, before anything is measured.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from tailor.cost.measure import check_backend
from tailor.cost.profile import build_profile
from tailor.errors import DataError, ProfileError
from tailor.export._cli import (
    SUBNET_SPEC_HELP,
    Progress,
    calibrate_subnets,
    calibration_batches,
    input_shape,
    parse_ints,
    parse_shape,
    parse_subnets,
    random_subnets,
    resolve,
    unique,
)
from tailor.space import SearchSpace, Subnet
from tailor.train.trainer import evaluate


def add_commands(commands: Any) -> None:
    """Register `profile` on the `tailor` parser's subcommands."""
    p = commands.add_parser("profile", help="measure subnets (latency per batch size, MACs, accuracy) into a profile")
    p.add_argument("source", help="checkpoint directory, or a registered model name (random weights)")
    p.add_argument(
        "--subnets",
        dest="subnet_spec",
        help=SUBNET_SPEC_HELP + " (default: smallest, widths 0.5 and 0.75, largest; none with --random)",
    )
    p.add_argument("--random", type=int, default=0, help="also this many random subnets (space.sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated positive integers (default 1,8)")
    p.add_argument("--backend", default="onnxruntime", help="torch, onnxruntime or onnxruntime-int8")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the runtime (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per subnet and batch size")
    p.add_argument("--rounds", type=int, default=1, help="> 1: alternate between subnets in this many passes")
    p.add_argument("--input-shape", help="C,H,W (default: the data's image size, else the model's default)")
    p.add_argument("--accuracy", action="store_true", help="calibrate and evaluate each subnet (checkpoint's data)")
    p.add_argument("--data", help="data set for --accuracy (implies it; default: the checkpoint's)")
    p.add_argument("--data-root", help="directory of cifar10/cifar100/imagefolder data")
    p.add_argument("--calib-batches", type=int, default=8, help="training batches for SubnetNorm calibration")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of calibration and evaluation")
    p.add_argument("--num-classes", type=int, help="registry models only (default 10, or the data's)")
    p.add_argument("--out", required=True, help="profile JSON to write (atomically)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=cmd_profile)


def default_subnets(space: SearchSpace) -> list[Subnet]:
    """smallest, every width at 0.5 and 0.75 (the nearest allowed at or above), largest."""
    return [space.smallest(), *(space.from_wm([w] * space.search_dim) for w in (0.5, 0.75)), space.largest()]


def _print_table(profile: Any) -> None:
    batches = profile.batch_sizes
    print(
        f"{'id':<18} {'MMACs':>8} {'params':>9} {'accuracy':>8} " + " ".join(f"{'p50@' + str(b):>9}" for b in batches)
    )
    for entry in profile.subnets:
        acc = f"{entry.accuracy:.4f}" if entry.accuracy is not None else "-"
        cells = " ".join(f"{entry.latency_ms[b].p50:>9.3f}" for b in batches)
        print(f"{entry.id:<18} {entry.macs / 1e6:>8.2f} {entry.params:>9,} {acc:>8} {cells}")


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure the chosen subnets, optionally evaluate them, write the profile and print a summary."""
    batch_sizes = parse_ints(args.batch_sizes, "--batch-sizes")
    for flag, value, low in (("--warmup", args.warmup, 0), ("--rounds", args.rounds, 1), ("--random", args.random, 0)):
        if value < low:
            raise ProfileError(f"{flag} must be >= {low}, got {value}")
    if args.rounds > args.repeats:
        raise ProfileError(f"--rounds ({args.rounds}) must not exceed --repeats ({args.repeats})")
    check_backend(args.backend)
    explicit_shape = parse_shape(args.input_shape)
    torch.set_num_threads(args.threads)
    source, ref = resolve(args.source, args.data, args.data_root, args.num_classes)
    model = source.model
    space = model.space
    chosen: list[tuple[str | None, Subnet]] = []
    if args.subnet_spec is not None:
        chosen += parse_subnets(space, args.subnet_spec)
    chosen += [(None, s) for s in random_subnets(space, args.random, args.seed)]
    if args.subnet_spec is None and args.random == 0:
        chosen = [(None, s) for s in default_subnets(space)]
    chosen, repeated = unique(chosen)
    if repeated:
        print(f"note: {repeated} repeated subnet(s) measured once", file=sys.stderr)
    subs = [s for _, s in chosen]
    ids = {s: ident for ident, s in chosen if ident is not None}

    want_accuracy = args.accuracy or args.data is not None
    if want_accuracy and ref is None:
        raise DataError("--accuracy needs held-out data: pass --data (this model records no data set)")
    test = None
    if ref is not None:
        try:
            test = ref.load("test")
        except (DataError, OSError, ValueError) as exc:
            if want_accuracy:
                raise
            print(f"note: cannot load the recorded data set ({exc}); using the model's input size", file=sys.stderr)
    shape = input_shape(explicit_shape, test, model)

    accuracy = None
    if want_accuracy:
        if not source.from_checkpoint:
            print("note: a registry model has random weights; its accuracies are an untrained net's", file=sys.stderr)
        batches = calibration_batches(ref.load("train"), args.batch_size, args.calib_batches)
        calibrate_subnets(model, subs, batches, Progress("calibrate", len(subs), not args.no_progress))
        results = evaluate(model, subs, test, batch_size=args.batch_size)
        accuracy = {s: results[s.id] for s in subs}

    progress = Progress(f"profile ({args.backend})", len(subs), not args.no_progress)
    profile = build_profile(
        model,
        subs,
        batch_sizes=batch_sizes,
        backend=args.backend,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        input_shape=shape,
        accuracy=accuracy,
        model_name=source.name,
        ids=ids,
        rounds=args.rounds,
        progress=progress,
    )
    path = profile.save(args.out)
    _print_table(profile)
    print(f"profile: {path} ({len(profile)} subnets, {args.backend}, {args.threads} thread(s), input {list(shape)})")
    return 0
