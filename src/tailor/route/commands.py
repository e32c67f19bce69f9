"""`tailor route`: evaluate cascades of a trained supernet's subnets (and early exits) under routing policies.

    tailor route ck/ --stages smallest,largest --policy confidence,entropy,margin,learned --out route/
    tailor route ck/ --stages largest@stage1,largest@stage2,largest --exit-epochs 2 --exits-dir ck-exits/

The checkpoint's test split is cut in two: the first half (held-out) fits temperatures, learned
routers and thresholds; the second half reports accuracy. Stage costs are measured with
`tailor.cost` (`--cost latency`: ms per image at `--latency-batch`; `--cost macs`). For each policy the
held-out Pareto-optimal thresholds are printed with their test accuracy, cost and escalation rate;
`--out DIR` writes `route.json`, `acc_vs_latency.png` and `escalation_vs_threshold.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import tailor.cli_args as cli_args
from tailor.data import default_augmentation
from tailor.errors import TailorError
from tailor.ops import ElasticModel
from tailor.route.calibration import ece, fit_temperature
from tailor.route.cascade import COMBINES, Cascade, Stage, ensemble_outputs
from tailor.route.evaluate import (
    METRICS,
    multi_threshold_grid,
    pareto_front,
    stage_costs,
    sweep,
    threshold_grid,
)
from tailor.route.exits import FINAL, add_early_exits, load_exits, save_exits, train_exits
from tailor.route.policies import (
    POLICIES,
    Confidence,
    LearnedRouter,
    RoutingPolicy,
    StageOutput,
    fit_router,
    make_routing_policy,
)
from tailor.space import SUBNET_NOTATION, SearchSpace, parse_subnets
from tailor.train import BatchSource, Checkpoint, calibrate, load_checkpoint
from tailor.train.fit import checkpoint_data


def add_commands(commands: Any) -> None:
    """Register `route` on the `tailor` parser's subcommands."""
    route = commands.add_parser("route", help="evaluate cascades of subnets / early exits under routing policies")
    cli_args.add_checkpoint(route)
    route.add_argument(
        "--stages",
        default="smallest,largest",
        help=f"at least two stages, each a subnet optionally @<exit> (e.g. largest@stage1); {SUBNET_NOTATION}",
    )
    cli_args.add_policy(route, default="confidence,entropy,margin,learned",
                        help=f"comma-separated routing policies, any of {', '.join(POLICIES)}")  # fmt: skip
    cli_args.checked(route, "--thresholds", type=int, default=41, check=cli_args.at_least(2),
                     help="quantile thresholds per transition (>= 2)")  # fmt: skip
    route.add_argument(
        "--combine",
        default="last",
        choices=COMBINES,
        help="answer of an escalated input: the last stage's (last) or the mean softmax of all stages run (mean)",
    )
    route.add_argument("--cost", default="latency", choices=METRICS, help="what a stage costs (default latency)")
    cli_args.add_latency_batch(route, default=32)
    cli_args.add_repeats(route, default=20, help="timed calls per stage latency")
    cli_args.add_threads(route, default=1)
    cli_args.add_data(route)
    cli_args.add_calibration(route, batch_size=128)
    cli_args.checked(route, "--exit-epochs", type=int, default=2, check=cli_args.POSITIVE,
                     help="epochs to train exit heads (frozen backbone)")  # fmt: skip
    route.add_argument("--exits-dir", help="load exit heads from here if present, else train them and save here")
    cli_args.add_seed(route)
    cli_args.add_out(route, help="directory for route.json and the two PNG plots")
    cli_args.add_json(route)
    cli_args.add_progress(route)
    route.set_defaults(run=cmd_route)


def parse_stages(text: str, space: SearchSpace, what: str = "--stages") -> list[Stage]:
    """`smallest,w0.5@stage2,largest` (tailor's subnet notation, `@EXIT` for an early exit) -> stages.

    A JSON file of stages (`[{"subnet": ..., "exit": ...}]`), subnets, a profile or a front also works; an
    item the notation does not know, or a width outside the space, raises `InvalidSubnetError` naming it.
    """
    stages = [Stage(n.subnet, n.exit or FINAL) for n in parse_subnets(text, space, exits=True, what=what)]
    if len(stages) < 2:
        raise TailorError(f"{what}: a cascade needs at least two stages, got {text!r}")
    return stages


def _progress(args: argparse.Namespace, message: str) -> None:
    if not args.no_progress:
        print(message, file=sys.stderr, flush=True)


def _policies(args: argparse.Namespace) -> list[str]:
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise TailorError(f"--policy: unknown {unknown or args.policy!r}; choose from {', '.join(POLICIES)}")
    return policies


def _data(args: argparse.Namespace, loaded: Checkpoint) -> tuple[Any, Any, Any, str]:
    train, test_all, name = checkpoint_data(loaded, args.data, args.data_root)
    half = len(test_all) // 2
    if half < 2:
        raise TailorError(f"the {name} test split has {len(test_all)} samples: too few to split into held-out and test")
    return train, test_all.subset(range(half)), test_all.subset(range(half, len(test_all))), name


def _exits_model(
    model: ElasticModel, stages: list[Stage], train: Any, args: argparse.Namespace, data_name: str
) -> ElasticModel:
    names = [s.exit for s in stages if s.exit != FINAL]
    if not names:
        return model
    if args.exits_dir and (Path(args.exits_dir) / "exits.json").exists():
        exits = load_exits(model, args.exits_dir)
        missing = [n for n in names if n not in exits.exits]
        if missing:
            raise TailorError(f"--exits-dir {args.exits_dir!r} has exits {list(exits.exits)}, not {missing}")
        return exits
    ordered = sorted(set(names), key=lambda n: [s.exit for s in stages].index(n))
    exits = add_early_exits(model, ordered)
    ordered = list(exits.after_stages)
    subs = list(dict.fromkeys(s.subnet for s in stages))
    _progress(
        args, f"training exit heads after {', '.join(ordered)} for {len(subs)} width(s), {args.exit_epochs} epoch(s)"
    )
    train_exits(
        exits,
        train,
        subs,
        epochs=args.exit_epochs,
        batch_size=args.batch_size,
        augment=default_augmentation(data_name),
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.exits_dir:
        save_exits(exits, args.exits_dir)
    return exits


def _policy(
    name: str, outputs: list[StageOutput], labels: torch.Tensor, costs: list[float], seed: int
) -> RoutingPolicy:
    if name != "learned":
        return make_routing_policy(name, 0.5)
    correct = [o.logits.argmax(1) == labels for o in outputs]
    total = sum(costs)
    routers = []
    for k in range(len(outputs) - 1):
        later = torch.stack(correct[k + 1 :]).any(0)
        share = sum(costs[k + 1 :]) / total if total > 0 else 0.0
        routers.append(fit_router(outputs[k], labels, later, escalation_cost=share, seed=seed))
    return LearnedRouter(0.5, routers=tuple(routers))


def cmd_route(args: argparse.Namespace) -> int:
    """Evaluate the cascade under each policy; tables (or JSON) on stdout, files under --out."""
    policies = _policies(args)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    stages = parse_stages(args.stages, model.space)
    train, holdout, test, data_name = _data(args, loaded)
    for stage in stages:
        model.space.validate(stage.subnet)
    model.default_input_size = tuple(train.input_size)  # costs and exit heads at the size the data has
    subs = list(dict.fromkeys(model.space.canonical(s.subnet) for s in stages))
    source = BatchSource(train, min(args.batch_size, len(train)), args.seed)
    cached = [x for _, (x, _y) in zip(range(args.calib_batches), source.batches(0))]
    _progress(args, f"calibrating {len(subs)} subnet(s) on {len(cached)} training batches")
    calibrate(model, subs, cached, batches=len(cached))
    model = _exits_model(model, stages, train, args, data_name)
    _progress(args, f"measuring stage costs ({args.cost})")
    costs = stage_costs(
        model, stages, args.cost, batch_size=args.latency_batch, threads=args.threads, repeats=args.repeats
    )
    probe = Cascade(model, stages, Confidence(0.5), costs=costs)
    _progress(args, f"running {len(stages)} stages on {len(holdout)} held-out and {len(test)} test inputs")
    features = "learned" in policies
    out_h = probe.stage_outputs(holdout, features=features)
    out_t = probe.stage_outputs(test, features=features)
    y_h, y_t = holdout.labels, test.labels
    temperatures = [fit_temperature(o.logits, y_h) for o in out_h]
    unit = "ms/img" if args.cost == "latency" else "MACs"
    stage_rows = [
        {
            "stage": f"{s.subnet.id}@{s.exit}",
            "cost": costs[k],
            "test_accuracy": float((out_t[k].logits.argmax(1) == y_t).double().mean()),
            "temperature": temperatures[k],
            "ece": ece(out_t[k].logits, y_t),
            "ece_scaled": ece(out_t[k].logits, y_t, temperature=temperatures[k]),
        }
        for k, s in enumerate(stages)
    ]
    if args.combine == "mean":  # every policy then reads, and answers with, the running ensemble
        out_h, out_t = ensemble_outputs(out_h, temperatures), ensemble_outputs(out_t, temperatures)
    results: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "combine": args.combine,
        "cost_unit": unit,
        "stages": stage_rows,
        "policies": {},
    }
    for name in policies:
        policy = _policy(name, out_h, y_h, costs, args.seed)
        per = [threshold_grid(policy.score(out_h[k], k), args.thresholds) for k in range(len(stages) - 1)]
        grid: list[Any] = per[0] if len(per) == 1 else multi_threshold_grid(per)
        on_h = sweep(out_h, y_h, policy, costs, grid)
        on_t = sweep(out_t, y_t, policy, costs, grid)
        front = pareto_front(list(zip(on_h, on_t)), cost=lambda p: p[0].cost, accuracy=lambda p: p[0].accuracy)
        results["policies"][name] = {
            "holdout_front": [{"holdout": h.to_dict(), "test": t.to_dict()} for h, t in front],
            "test": [p.to_dict() for p in on_t],
        }
    if args.out:
        _write_outputs(Path(args.out), results, stage_rows, unit)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'stage':<28} {unit:>10} {'test acc':>9} {'T':>6} {'ECE':>7} {'ECE (T)':>8}")
    for row in stage_rows:
        print(
            f"{row['stage']:<28} {row['cost']:>10.4g} {100 * row['test_accuracy']:>9.2f} {row['temperature']:>6.2f} "
            f"{100 * row['ece']:>6.2f}% {100 * row['ece_scaled']:>7.2f}%"
        )
    for name, entry in results["policies"].items():
        print(f"\n{name}: held-out Pareto thresholds, test figures")
        print(f"  {'thresholds':<24} {'test acc':>9} {unit:>10} {'escalated':>10}")
        for pair in entry["holdout_front"]:
            t = pair["test"]
            thresholds = ", ".join(f"{v:.3f}" for v in t["thresholds"])
            print(f"  {thresholds:<24} {100 * t['accuracy']:>9.2f} {t['cost']:>10.4g} {100 * t['reached'][1]:>9.1f}%")
    if args.out:
        print(f"\nwritten: {Path(args.out) / 'route.json'}, acc_vs_latency.png, escalation_vs_threshold.png")
    return 0


def _write_outputs(out: Path, results: dict[str, Any], stage_rows: list[dict[str, Any]], unit: str) -> None:
    from tailor.plot import Axis, xy_plot  # matplotlib loads only when figures are written

    out.mkdir(parents=True, exist_ok=True)
    (out / "route.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")

    series: dict[str, list[tuple[float, float]]] = {
        "stages alone": [(r["cost"], r["test_accuracy"]) for r in stage_rows]
    }
    escalation: dict[str, list[tuple[float, float]]] = {}
    for name, entry in results["policies"].items():
        series[name] = [(p["test"]["cost"], p["test"]["accuracy"]) for p in entry["holdout_front"]]
        escalation[name] = [(p["thresholds"][0], p["reached"][1]) for p in entry["test"]]
    policies = list(results["policies"])
    xy_plot(series, out / "acc_vs_latency.png", title="test accuracy vs expected cost",
            x=Axis(f"expected cost ({unit})"), y=Axis("test accuracy", percent=True), lines=policies)  # fmt: skip
    xy_plot(escalation, out / "escalation_vs_threshold.png", title="escalated past stage 1 vs threshold (test)",
            x=Axis("threshold (first transition)"), y=Axis("escalated", percent=True), lines=policies)  # fmt: skip


__all__ = ["add_commands", "cmd_route", "parse_stages"]
