"""The `tailor` command line: `demo`, `models`, `space MODEL`, `train`, `calibrate`.

Later layers add their commands (train, calibrate, profile, export, search, route, serve, ...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence

import torch

import tailor.cli_args as cli_args
from tailor import __version__
from tailor.data import synthetic
from tailor.errors import TailorError
from tailor.models import create_model, list_models
from tailor.ops import ElasticModel
from tailor.space import Subnet
from tailor.train import calibrate


def _median_ms(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        module(x)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _demo_subnets(model: ElasticModel, count: int, seed: int) -> list[Subnet]:
    space = model.space
    # every dimension at 0.75 / 0.5, or at its nearest choice above (expand ratios have their own choices)
    subs = [space.largest()] + [space.from_wm([w] * space.search_dim) for w in (0.75, 0.5)] + [space.smallest()]
    rng = random.Random(seed)
    while len(subs) < count:
        subs.append(space.sample(rng))
    return subs[:count]


def cmd_actuate(args: argparse.Namespace) -> int:
    """Build a supernet, calibrate SubnetNorm per subnet, run each subnet activated and extracted."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    channels, height, width = model.default_input_size
    subs = _demo_subnets(model, args.count, args.seed)
    images = synthetic(n=16, split="train", seed=args.seed, image_size=height)
    batch = images.normalize(images.images)
    if channels != batch.shape[1]:  # single-channel models see the mean of the colour channels
        batch = batch.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    calibration = [batch[:8], batch[8:]]
    calibrate(model, subs, calibration, batches=2)
    x = torch.randn(1, channels, height, width)
    space = model.space
    print(
        f"{args.model}: {space.search_dim} width dimensions, {len(space.depths)} depth dimensions, {space.size} subnets"
    )
    print("SubnetNorm calibrated on 16 synthetic images (an untrained supernet: accuracy comes with `tailor train`)\n")
    print(
        f"{'subnet':<16} {'widths (mean)':>13} {'depths':>9} {'params':>9} {'max |activated-extracted|':>26} {'activated ms':>13} {'extracted ms':>13}"
    )
    worst = 0.0
    for sub in subs:
        model.activate(sub)
        static = model.extract().eval()
        with torch.inference_mode():
            diff = (model(x) - static(x)).abs().max().item()
        worst = max(worst, diff)
        params = sum(p.numel() for p in static.parameters())
        mean_width = sum(sub.widths.values()) / max(1, len(sub.widths))
        depths = "/".join(str(sub.depths[d.name]) for d in space.depths)
        print(
            f"{sub.id:<16} {mean_width:>13.3f} {depths:>9} {params:>9,d} {diff:>26.2e} "
            f"{_median_ms(model, x, args.repeats):>13.3f} {_median_ms(static, x, args.repeats):>13.3f}"
        )
    start = time.perf_counter()
    for i in range(1000):
        model.activate(subs[i % len(subs)])
    switch_us = (time.perf_counter() - start) / 1000 * 1e6
    report = model.norm_stats_bytes()
    print(f"\nswitching subnets: {switch_us:.1f} us per activate (mean of 1000)")
    print(
        f"SubnetNorm statistics: {report['subnet_stats_bytes'] / 1024:.1f} KiB for {report['subnets']} subnets, "
        f"shared weights {report['shared_bytes'] / 1024:.1f} KiB"
    )
    if worst > 1e-3:
        print(f"error: activated and extracted outputs differ by {worst:.2e}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the whole pipeline on `synthetic`, ending in `<out>/index.html`."""
    from tailor.demo import DemoConfig, run_demo

    config = DemoConfig.quick(seed=args.seed, threads=args.threads) if args.quick else DemoConfig(
        seed=args.seed, threads=args.threads
    )
    figures = run_demo(args.out, config, progress=not args.no_progress)
    name, first = next(iter(figures.serving.results.items()))  # the first policy the demo serves with
    accuracy = "-" if first["mean_accuracy"] is None else f"{first['mean_accuracy']:.2%}"
    print(
        f"supernet: largest {figures.training.largest_accuracy:.2%}, "
        f"smallest {figures.training.smallest_accuracy:.2%}; "
        f"front: {len(figures.search.front)} subnets; "
        f"{name}: attainment {first['attainment']:.2%}, accuracy {accuracy}"
    )
    if config.smoke:
        print("a smoke run (--quick): it checks the pipeline; its numbers are not findings")
    print(f"report: {args.out}/index.html")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List registered models with their search dimensions."""
    for name in list_models():
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<12} {params / 1e6:>7.2f} M params  search_dim={model.space.search_dim:<3} depth dims={len(model.space.depths)}"
        )
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    """Print a model's search space as JSON."""
    print(json.dumps(create_model(args.model).space.to_dict(), indent=2))
    return 0


# Each sub-package that offers CLI commands has a `commands` module with `add_commands(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "tailor.train.commands",
    "tailor.cost.commands",
    "tailor.export.commands",
    "tailor.serve.sim.commands",
    "tailor.serve.server.commands",
    "tailor.search.commands",
    "tailor.route.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The `tailor` parser: every package's commands, the shared flags of `tailor.cli_args`, the old spellings."""
    parser = cli_args.CommandParser(prog="tailor", description="Elastic inference with one weight-sharing supernet.")
    parser.add_argument("--version", action="version", version=f"tailor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train, profile, search, route and serve a supernet on the bundled default; write a report"
    )
    cli_args.add_out(demo, default="report", help="report directory (index.html, figures.json, plots)")
    demo.add_argument("--quick", action="store_true",
                      help="smoke run on digits, sized for CI (about a minute on 2 cores); the report says so")  # fmt: skip
    cli_args.add_threads(demo, default=2)
    cli_args.add_seed(demo)
    cli_args.add_progress(demo)
    demo.set_defaults(run=cmd_demo)
    actuate = commands.add_parser("actuate", help="run subnets activated in place and extracted; compare outputs")
    cli_args.add_model(actuate, models=list_models(), default="resnet20")
    cli_args.checked(actuate, "--count", type=int, default=6, check=cli_args.POSITIVE,
                     help="how many subnets to run: largest, 0.75, 0.5, smallest, then random ones (default 6)")  # fmt: skip
    cli_args.add_repeats(actuate, default=50, help="timed forwards per subnet")
    cli_args.add_threads(actuate, default=2)
    cli_args.add_seed(actuate)
    actuate.set_defaults(run=cmd_actuate)
    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(run=cmd_models)
    space = commands.add_parser("space", help="print a model's search space as JSON")
    space.add_argument("model", choices=list_models())
    space.set_defaults(run=cmd_space)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    cli_args.add_deprecated_aliases(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tailor` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (TailorError, ValueError, OSError) as exc:  # bad input: one line naming the problem, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
