"""`tailor profile`: measure chosen subnets of a checkpoint (or registry model) into a profile JSON.

The profile (`tailor.cost.Profile`, schema "tailor.profile/1") holds, per subnet, MACs, params, latency
percentiles at each batch size on each runtime of `--runtime` (the subnet served on the fastest one whose
outputs match PyTorch fp32) and, with `--accuracy`/`--data`, held-out accuracy after calibrating the subnet's
SubnetNorm statistics. Search and serving read it. Progress goes to stderr, a summary table to stdout, and
notes on what makes the profile unreliable (too few repeats for p99, latency falling with batch size) to
stderr. Bad arguments exit with status 2 and one line, before anything is measured.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

import torch

import tailor.cli_args as cli_args
from tailor.cost.measure import supported_percentile
from tailor.cost.profile import Profile, build_profile
from tailor.cost.runtimes.base import Tolerance, check_device, get_runtime, list_runtimes
from tailor.errors import DataError, ProfileError
from tailor.export._cli import (
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
from tailor.models import list_models
from tailor.space import SearchSpace, Subnet
from tailor.train.trainer import BatchSource, evaluate


def add_commands(commands: Any) -> None:
    """Register `profile` on the `tailor` parser's subcommands."""
    p = commands.add_parser("profile", help="measure subnets (latency per batch size, MACs, accuracy) into a profile")
    cli_args.add_checkpoint(p, models=list_models())
    cli_args.add_subnets(p, help="the subnets to measure (default: smallest, widths 0.5 and 0.75, largest; none "
                                 "with --random)")  # fmt: skip
    cli_args.add_random(p, default=0, help="also this many random subnets (space.sample)")
    cli_args.add_seed(p, help="seed of --random")
    cli_args.add_latency_batch(p, default="1,8", several=True)
    cli_args.add_runtime(p, runtimes=list_runtimes(),
                         help="comma-separated runtimes, each subnet measured on each side by side and served on the "
                              "fastest whose outputs match PyTorch fp32 (default onnxruntime)")  # fmt: skip
    cli_args.add_device(p, default="cpu", help="; every call synchronised")
    p.add_argument("--precision", help="fp32, fp16, bf16 or int8 for every runtime (default: each runtime's own)")
    cli_args.add_threads(p, default=1, help="intra-op threads of the runtime")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="outputs may differ from PyTorch fp32 by this x the largest |logit| (+ 1e-5; default 1e-3)")
    cli_args.checked(p, "--min-agreement", type=float, default=0.99, check=cli_args.FRACTION,
                     help="least top-1 agreement with PyTorch fp32 on the check inputs (default 0.99)")  # fmt: skip
    cli_args.checked(p, "--check-samples", type=int, default=256, check=cli_args.POSITIVE,
                     help="held-out test images for the output check (random inputs without data; default 256)")  # fmt: skip
    p.add_argument("--no-check", action="store_true", help="skip the output check (each runtime counts as exact)")
    cli_args.checked(p, "--warmup", type=int, default=10, check=cli_args.NON_NEGATIVE,
                     help="untimed calls before timing (default 10)")  # fmt: skip
    cli_args.add_repeats(p, default=50, help="timed calls per subnet and batch size")
    cli_args.checked(p, "--rounds", type=int, default=1, check=cli_args.POSITIVE,
                     help="> 1: alternate between subnets in this many passes")  # fmt: skip
    cli_args.add_input_shape(p)
    p.add_argument("--accuracy", action="store_true", help="calibrate and evaluate each subnet (checkpoint's data)")
    cli_args.add_data(p, use=" for --accuracy (implies it)")
    cli_args.add_calibration(p, batch_size=128)
    cli_args.add_num_classes(p)
    cli_args.add_out(p, required=True, help="profile JSON to write (atomically)")
    cli_args.add_progress(p)
    p.set_defaults(run=cmd_profile)


def default_subnets(space: SearchSpace) -> list[Subnet]:
    """smallest, every width at 0.5 and 0.75 (the nearest allowed at or above), largest."""
    return [space.smallest(), *(space.from_wm([w] * space.search_dim) for w in (0.5, 0.75)), space.largest()]


def _print_table(profile: Profile) -> None:
    batches = profile.batch_sizes
    width = max(len(r) for r in profile.measured_runtimes)
    print(
        f"{'id':<18} {'MMACs':>8} {'params':>9} {'accuracy':>8} {'runtime':<{width}} "
        + " ".join(f"{'p50@' + str(b):>9}" for b in batches)
    )
    for entry in profile.subnets:
        acc = f"{entry.accuracy:.4f}" if entry.accuracy is not None else "-"
        cells = " ".join(f"{entry.latency_ms[b].p50:>9.3f}" for b in batches)
        runtime = profile.runtime_of(entry.id)
        print(f"{entry.id:<18} {entry.macs / 1e6:>8.2f} {entry.params:>9,} {acc:>8} {runtime:<{width}} {cells}")
    if len(profile.measured_runtimes) > 1:
        _print_runtimes(profile, batches, width)


def _print_runtimes(profile: Profile, batches: list[int], width: int) -> None:
    """Every runtime's p50 per subnet and its output check; `*` marks the one each subnet is served on."""
    print("\nper runtime (p50 ms; * = served on; check = max |logit diff| / top-1 agreement vs PyTorch fp32)")
    print(f"{'id':<18}   {'runtime':<{width}} " + " ".join(f"{'p50@' + str(b):>9}" for b in batches) + "  check")
    for entry in profile.subnets:
        own = profile.runtime_of(entry.id)
        for runtime, table in entry.measurements(profile.runtime).items():
            cells = " ".join(f"{table[b].p50:>9.3f}" if b in table else f"{'-':>9}" for b in batches)
            check = entry.checks.get(runtime)
            verdict = "-" if check is None else (
                f"{check.max_abs_diff:.2g} / {check.top1_agreement:.3f}{'' if check.within_tolerance else ' OUT'}"
            )
            mark = "*" if runtime == own else " "
            print(f"{entry.id:<18} {mark} {runtime:<{width}} {cells}  {verdict}")


def _notes(profile: Profile, repeats: int) -> None:
    """Say on stderr what makes the profile unreliable to plan with, and which percentile its repeats support."""
    supported = supported_percentile(repeats)
    if supported != "p99":
        print(
            f"note: p99 rests on {repeats} repeats per entry (needs >= 100); serving with percentile='auto' "
            f"plans with {supported}. Use --repeats 100 for a p99 to plan with.",
            file=sys.stderr,
        )
    issues = [i for i in profile.check("p50", warn=False) if i.kind != "thin tail"]
    for issue in issues[:10]:
        print(f"note: {issue.message}", file=sys.stderr)
    if len(issues) > 10:
        print(f"note: ... and {len(issues) - 10} more", file=sys.stderr)


def _runtimes(args: argparse.Namespace) -> list[str]:
    names = [n.strip() for n in (args.runtime or "onnxruntime").split(",")]
    if any(not n for n in names):
        raise ProfileError(f"--runtime: expected comma-separated runtime names, got {args.runtime!r}")
    if len(set(names)) != len(names):
        raise ProfileError(f"--runtime must not repeat, got {names}")
    for name in names:
        get_runtime(name).resolve(args.device, args.threads, args.precision)  # unknown, missing, wrong device
    return names


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure the chosen subnets, optionally evaluate them, write the profile and print a summary."""
    batch_sizes = parse_ints(args.latency_batch, "--latency-batch")
    if args.rounds > args.repeats:
        raise ProfileError(f"--rounds ({args.rounds}) must not exceed --repeats ({args.repeats})")
    tolerance = Tolerance(1e-5, args.tolerance, args.min_agreement)
    check_device(args.device)
    runtimes = _runtimes(args)
    explicit_shape = parse_shape(args.input_shape)
    torch.set_num_threads(args.threads)
    source, ref = resolve(args.source, args.data, args.data_root, args.num_classes)
    model = source.model
    space = model.space
    chosen: list[tuple[str | None, Subnet]] = []
    if args.subnet is not None:
        chosen += parse_subnets(space, args.subnet, "--subnet")
    chosen += [(None, s) for s in random_subnets(space, args.random, args.seed)]
    if args.subnet is None and args.random == 0:
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

    check_inputs, label = None, None
    if test is not None and not args.no_check:
        count = min(args.check_samples, len(test))
        images, _labels = next(iter(BatchSource(test, count, 0, drop_last=False).batches(None)))  # normalised
        if tuple(images.shape[1:]) == tuple(shape):
            check_inputs, label = images, f"{count} held-out test images"
    progress = Progress(f"profile ({', '.join(runtimes)})", len(subs), not args.no_progress)
    profile = build_profile(
        model,
        subs,
        batch_sizes=batch_sizes,
        runtime=runtimes,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        input_shape=shape,
        accuracy=accuracy,
        model_name=source.name,
        ids=ids,
        rounds=args.rounds,
        progress=progress,
        device=args.device,
        precision=args.precision,
        check=not args.no_check,
        check_inputs=check_inputs,
        check_inputs_label=label,
        tolerance=tolerance,
    )
    path = profile.save(args.out)
    _print_table(profile)
    _notes(profile, args.repeats)
    served = ", ".join(f"{r} x{n}" for r, n in Counter(profile.runtime_of(i) for i in profile.ids).items())
    print(
        f"profile: {path} ({len(profile)} subnets served on {served}; {args.device}, {args.threads} thread(s), "
        f"input {list(shape)})"
    )
    return 0
