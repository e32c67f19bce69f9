"""Dynamic routing on one supernet: cascades, learned routers, early exits and calibration on `synthetic`.

One run, side by side, all accuracy on held-out data:
1. a resnet20 supernet trained on `synthetic` (per-image difficulty varies) with the recipe of
   `supernet_vs_independent.py` (sandwich rule, in-place distillation, 2 largest-only epochs of 8), or
   `--checkpoint PATH` (`tailor.load`), cached under `.cache/routing/` so that reruns skip training;
2. static subnets (largest, smallest, uniform widths at full and minimum depth, random ones), each
   calibrated, with test accuracy and latency measured by `tailor.cost.latency` (ms per image at
   `--latency-batch`, `--threads` threads): their Pareto front is the static baseline, read both as
   "best single subnet within the budget" and as the upper hull (a random mix of two subnets);
3. width cascades `small -> largest` under confidence, entropy, margin, temperature-scaled confidence,
   a temperature-scaled ensemble (`combine="mean"`: an escalated input is answered by the mean softmax
   of every stage it ran) and a learned router; a 3-stage width cascade; early exits after stage1/stage2 trained on the
   frozen backbone for the smallest and largest widths (an exit x width grid), an early-exit cascade
   (largest: stage1 -> stage2 -> final, resuming) and a mixed one (smallest -> largest@stage2 -> final);
4. thresholds and temperatures are fitted on a held-out split (the first half of the test stream), and
   the target is checked on the other half: the cheapest held-out operating point within 0.3 pt of the
   largest subnet's held-out accuracy, then its test accuracy and mean latency against the largest's;
5. ECE (15 bins) before/after temperature scaling per stage, per-class and per-difficulty escalation,
   the measured wall time of `Cascade.predict` at the chosen point against the largest subnet alone.

Figures: `<out>/routing/acc_vs_latency.png`, `<out>/routing/escalation_vs_threshold.png`; numbers: `<out>/routing.json`.

    python benchmarks/routing.py                  # full: training (cached afterwards), then ~7 min
    python benchmarks/routing.py --checkpoint ck/ # an already trained resnet20 supernet on synthetic, e.g.
                                                  # .cache/supernet_vs_independent/synthetic
    python benchmarks/routing.py --quick          # under a minute: checks the script, not the claim
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import tailor
from tailor.data import default_augmentation, synthetic
from tailor.errors import SubnetNormFallbackWarning
from tailor.plot import Axis, xy_plot
from tailor.route import (
    FINAL,
    Cascade,
    Confidence,
    Entropy,
    LearnedRouter,
    Margin,
    RoutingPolicy,
    Stage,
    StageOutput,
    SweepPoint,
    accuracy_at_cost,
    add_early_exits,
    cheapest_reaching,
    ece,
    ensemble_outputs,
    escalation_by_bins,
    fit_router,
    fit_temperature,
    load_exits,
    multi_threshold_grid,
    pareto_front,
    per_class_escalation,
    save_exits,
    simulate_cascade,
    stage_costs,
    sweep,
    threshold_grid,
    train_exits,
)
from tailor.route.cascade import resume_flags, run_stage
from tailor.space import Subnet
from tailor.train import BatchSource, TrainConfig, Trainer, calibrate, evaluate
from tailor.train.recipe import Recipe

TARGET_GAP_PT = 0.3
TARGET_LATENCY_RATIO = 0.6


def log(message: str) -> None:
    print(message, flush=True)


# -- data and supernet ----------------------------------------------------------------------------------
def load_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Training split; from the test stream (unseen in training), disjoint fit, select and test parts.

    `fit` trains routers and temperatures, `select` picks thresholds and stages (so that a router's
    held-out figures are not measured on the data it was fitted to), `test` reports.
    """
    train = synthetic(n=args.train_size, split="train", seed=args.seed)
    stream = synthetic(n=args.holdout_size + args.test_size, split="test", seed=args.seed)
    half = args.holdout_size // 2
    fit = stream.subset(range(half))
    select = stream.subset(range(half, args.holdout_size))
    test = stream.subset(range(args.holdout_size, args.holdout_size + args.test_size))
    return train, fit, select, test


def train_subnets(space: tailor.SearchSpace, sampler: str) -> list[Subnet] | None:
    """The fixed list of subnets trained each step for `--sampler fixed` (largest first: it teaches)."""
    return [space.largest(), space.smallest()] if sampler == "fixed" else None


def supernet(args: argparse.Namespace, train: Any) -> tuple[tailor.ElasticModel, dict[str, Any]]:
    """`--checkpoint`, else the cached supernet of this recipe, else train one and cache it."""
    if args.checkpoint:
        model = tailor.load(args.checkpoint)
        log(f"supernet: {args.checkpoint} (loaded)")
        return model, {"source": str(args.checkpoint)}
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        sampler=args.sampler,
        num_random=args.num_random,
        largest_only_epochs=args.largest_only_epochs,
        student_ramp_epochs=0.0,  # the 8-epoch recipe the quoted figures were measured with (no student ramp)
        seed=args.seed,
        crop_padding=default_augmentation("synthetic").crop_padding,
        flip=default_augmentation("synthetic").flip,
    )
    # in `tailor train`'s recipe form, so that `tailor route` / `tailor calibrate` find the data on their own
    recipe = Recipe(
        model=args.model,
        data="synthetic",
        train_split={"n": args.train_size, "seed": args.seed},
        test_split={"n": args.holdout_size + args.test_size, "seed": args.seed},
        train=config,
    ).to_dict()
    # the cache key names the settings that differ from TrainConfig's defaults, so that a field added to
    # TrainConfig later (with a default that keeps the old behaviour) does not invalidate cached supernets
    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if defaults.get(k) != v}
    key_src = {"model": args.model, "train_size": args.train_size, "seed": args.seed, "config": changed}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(args.cache) / f"supernet-{args.model}-{key}"
    if (path / "tailor.json").exists() and not args.retrain:
        log(f"supernet: {path} (cached: {args.sampler}, {args.epochs} epochs, {args.train_size} images)")
        return tailor.load(path), {"source": str(path), "cached": True, "recipe": recipe}
    torch.manual_seed(args.seed)
    model = tailor.create_model(args.model, num_classes=train.num_classes)
    log(f"training {args.model} on synthetic ({args.train_size} images), sampler {args.sampler}, {args.epochs} epochs")
    start = time.perf_counter()
    trainer = Trainer(
        model,
        train,
        config,
        subnets=train_subnets(model.space, args.sampler),
        device="cpu",
        progress=args.progress,
        metadata={"recipe": recipe},
    )
    history = trainer.fit()
    seconds = time.perf_counter() - start
    tailor.save(model, path, metadata={"recipe": recipe, "history": [h.to_dict() for h in history]})
    log(f"trained in {seconds:.0f} s -> {path}")
    return model.eval(), {"source": str(path), "cached": False, "train_seconds": seconds, "recipe": recipe}


# -- static subnets ---------------------------------------------------------------------------------------
def static_candidates(space: tailor.SearchSpace, count: int, seed: int) -> dict[str, Subnet]:
    """Named static subnets: largest, smallest, uniform widths at full and minimum depth, random ones."""
    named = {"largest": space.largest(), "smallest": space.smallest()}
    min_depths = {d.name: d.min for d in space.depths}
    for width in (0.75, 0.5, 0.25):
        named[f"w{width}"] = space.uniform(width)
        named[f"w{width}-d{'/'.join(str(v) for v in min_depths.values())}"] = space.from_wm(
            [width] * space.search_dim, min_depths
        )
    rng = random.Random(seed)
    for i in range(count):
        named[f"random{i}"] = space.sample(rng)
    unique: dict[str, Subnet] = {}
    for label, sub in named.items():
        canonical = space.canonical(sub)
        if canonical not in unique.values():
            unique[label] = canonical
    return unique


def calibration_batches(train: Any, args: argparse.Namespace) -> list[torch.Tensor]:
    source = BatchSource(train, min(args.batch_size, len(train)), args.seed)
    return [x for _, (x, _y) in zip(range(args.calib_batches), source.batches(0))]


# -- cascades -----------------------------------------------------------------------------------------------
_OUTPUTS: dict[tuple, StageOutput] = {}


@torch.no_grad()
def outputs_of(cascade: Cascade, data: Any, split: str) -> list[StageOutput]:
    """Every stage's outputs (with pooled features) on `data`, each (model, subnet, exit) computed once per run.

    A resumed stage's outputs equal those of the same exit run from the input (tests check this), so
    cascades sharing a stage share its outputs.
    """
    model = cascade.model
    out = []
    for stage in cascade.stages:
        key = (id(model), split, model.space.canonical(stage.subnet), stage.exit)
        if key not in _OUTPUTS:
            logits, feats = [], []
            with model.activated(stage.subnet):
                model.eval()
                for x, _ in BatchSource(data, 256, 0, drop_last=False).batches(None):
                    _, output = run_stage(model, [stage], 0, x, features=True, resumes=False)
                    logits.append(output.logits)
                    feats.append(output.features)
            _OUTPUTS[key] = StageOutput(torch.cat(logits), torch.cat(feats))
        out.append(_OUTPUTS[key])
    return out


def thresholds_for(
    policy: RoutingPolicy, outputs: list[StageOutput], temperatures: list[float], points: int
) -> list[Any]:
    """Quantile thresholds of the held-out scores, per transition; a product grid for 3+ stages."""
    per = []
    for k in range(len(outputs) - 1):
        scores = policy.score(outputs[k].scaled(temperatures[k]), k)
        per.append(threshold_grid(scores, points))
    return per[0] if len(per) == 1 else multi_threshold_grid(per)


def learned_router(
    outputs: list[StageOutput], labels: torch.Tensor, costs: list[float], weight: float, seed: int
) -> LearnedRouter:
    """One router per transition, fitted on held-out outputs ("escalating helps": wrong here, right later)."""
    correct = [o.logits.argmax(1) == labels for o in outputs]
    routers = []
    total = sum(costs)
    for k in range(len(outputs) - 1):
        later = torch.stack(correct[k + 1 :]).any(0)
        share = sum(costs[k + 1 :]) / total if total > 0 else 0.0
        routers.append(fit_router(outputs[k], labels, later, escalation_cost=share, latency_weight=weight, seed=seed))
    return LearnedRouter(0.5, routers=tuple(routers))


def evaluate_cascade(
    name: str,
    model: tailor.ElasticModel,
    stages: list[Stage],
    data: tuple[Any, Any, Any],
    policies: dict[str, RoutingPolicy | str],
    args: argparse.Namespace,
    costs: list[float],
) -> dict[str, Any]:
    """Fit routers and temperatures on `fit`, sweep every policy's thresholds on `select` and `test`."""
    fit, select, test = data
    probe = Cascade(model, stages, Confidence(0.5), costs=costs)
    out_f = outputs_of(probe, fit, "fit")
    out_h = outputs_of(probe, select, "select")
    out_t = outputs_of(probe, test, "test")
    y_f, y_h, y_t = fit.labels, select.labels, test.labels
    temperatures = [fit_temperature(o.logits, y_f) for o in out_f]
    stage_rows = []
    for k, stage in enumerate(stages):
        stage_rows.append(
            {
                "stage": stage_label(model, stage),
                "cost_ms": costs[k],
                "holdout_accuracy": float((out_h[k].logits.argmax(1) == y_h).double().mean()),
                "test_accuracy": float((out_t[k].logits.argmax(1) == y_t).double().mean()),
                "temperature": temperatures[k],
                "ece_before": ece(out_t[k].logits, y_t),
                "ece_after": ece(out_t[k].logits, y_t, temperature=temperatures[k]),
            }
        )
    curves: dict[str, Any] = {}
    for label, spec in policies.items():
        ensemble = label.endswith("(ensemble)")  # answers: mean softmax of the T-scaled stages run so far
        combine = "mean" if ensemble else "last"
        temps = temperatures if ensemble or label.endswith("(T-scaled)") else [1.0] * len(stages)
        if spec == "learned":
            policy: RoutingPolicy = learned_router(out_f, y_f, costs, args.latency_weight, args.seed)
        else:
            policy = spec  # type: ignore[assignment]
        points = args.thresholds if len(stages) == 2 else args.grid_thresholds
        if ensemble:  # the policy reads the ensemble, already scaled
            grid = thresholds_for(policy, ensemble_outputs(out_h, temps), [1.0] * len(stages), points)
        else:
            grid = thresholds_for(policy, out_h, temps, points)
        on_holdout = sweep(out_h, y_h, policy, costs, grid, temps, combine=combine)
        on_test = sweep(out_t, y_t, policy, costs, grid, temps, combine=combine)
        curves[label] = {
            "policy": policy,
            "temperatures": temps,
            "combine": combine,
            "holdout": on_holdout,
            "test": on_test,
        }
    return {
        "name": name,
        "stages": stages,
        "costs": costs,
        "stage_rows": stage_rows,
        "temperatures": temperatures,
        "curves": curves,
        "outputs_test": out_t,
        "labels_test": y_t,
    }


_NAMES: dict[Subnet, str] = {}  # readable names of the static subnets, set by run()


def stage_label(model: tailor.ElasticModel, stage: Stage) -> str:
    name = _NAMES.get(model.space.canonical(stage.subnet), stage.subnet.id)
    return f"{name}{'' if stage.exit == FINAL else '@' + stage.exit}"


class StageLatencies:
    """Latency (ms per image) of every network a stage runs, measured in interleaved rounds.

    The machine is shared, so its load drifts: measuring each network once, one after another, would
    let that drift into the ratios. Every round times every network (`--repeats / --rounds` calls each,
    via `tailor.cost.latency` inside `stage_costs`); a network's figure is the median over rounds.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.jobs: dict[tuple, tuple[tailor.ElasticModel, list[Stage]]] = {}
        self.values: dict[tuple, float] = {}

    @staticmethod
    def key(model: tailor.ElasticModel, stages: list[Stage], index: int) -> tuple:
        """(subnet, exit, exit resumed from or None): what a stage runs, independent of the cascade around it."""
        resumed = resume_flags(model, stages[: index + 1])[index]
        return (stages[index].subnet, stages[index].exit, stages[index - 1].exit if resumed else None)

    def need(self, model: tailor.ElasticModel, stages: list[Stage]) -> None:
        for index in range(len(stages)):
            key = self.key(model, stages, index)
            resumed = key[2] is not None
            self.jobs.setdefault(key, (model, [stages[index - 1], stages[index]] if resumed else [stages[index]]))

    def measure(self) -> None:
        args = self.args
        rounds = max(1, args.rounds)
        per_round = max(3, args.repeats // rounds)
        samples: dict[tuple, list[float]] = {key: [] for key in self.jobs}
        for _ in range(rounds):
            for key, (model, pair) in self.jobs.items():
                cost = stage_costs(
                    model, pair, "latency", batch_size=args.latency_batch, threads=args.threads, repeats=per_round
                )[-1]
                samples[key].append(cost)
        self.values = {key: statistics.median(values) for key, values in samples.items()}

    def costs(self, model: tailor.ElasticModel, stages: list[Stage]) -> list[float]:
        out = []
        for index in range(len(stages)):
            key = self.key(model, stages, index)
            if key not in self.values:
                raise KeyError(f"stage {index} ({key[0].id}@{key[1]}) was not measured: register it with need()")
            out.append(self.values[key])
        return out


def pick_on_holdout(curve: dict[str, Any], target_accuracy: float) -> tuple[SweepPoint, SweepPoint] | None:
    """The cheapest held-out point reaching `target_accuracy`, and the same thresholds on test."""
    point = cheapest_reaching(curve["holdout"], target_accuracy)
    if point is None:
        return None
    index = curve["holdout"].index(point)
    return point, curve["test"][index]


def front_on_holdout(curve: dict[str, Any]) -> list[tuple[SweepPoint, SweepPoint]]:
    """Held-out Pareto-optimal thresholds and their test points (how a user picks operating points)."""
    pairs = list(zip(curve["holdout"], curve["test"]))
    front = pareto_front(pairs, cost=lambda p: p[0].cost, accuracy=lambda p: p[0].accuracy)
    return front


# -- main -------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train, fit, select, test = load_data(args)
    log(
        f"data: synthetic {len(train)} train / held-out {len(fit)} to fit routers and temperatures + "
        f"{len(select)} to choose thresholds / {len(test)} test"
    )
    model, source = supernet(args, train)
    if args.train_only:
        return {}
    named, acc_h, acc_t = static_subnets(model, train, select, test, args)
    # early exits on the same weights: heads trained on the frozen backbone for the smallest and largest widths
    exits_model, exit_info = early_exits(model, train, args)
    chains = exit_chains(exits_model)
    table = measure_stages(args, model, named, exits_model, chains)
    static_rows = static_table(model, named, table, acc_h, acc_t)
    largest = next(r for r in static_rows if r["label"] == "largest")
    # the baseline front on test accuracy (what a static deployment gets at best); stages are chosen on held-out
    front = pareto_front(static_rows, cost=lambda r: r["cost_ms"], accuracy=lambda r: r["test_accuracy"])
    front_h = pareto_front(static_rows, cost=lambda r: r["cost_ms"], accuracy=lambda r: r["holdout_accuracy"])
    log_static(args, static_rows, largest, front)
    grid_rows = exit_grid(exits_model, chains, table, test)
    plans = cascade_plans(args, model, exits_model, chains, static_rows, front_h, largest, table)
    cascades = [
        evaluate_cascade(name, net, stages, (fit, select, test), pols, args, table.costs(net, stages))
        for name, net, stages, pols in plans
    ]
    # -- the target: cheapest held-out point within 0.3 pt of the largest (held-out), read on test
    target_h = largest["holdout_accuracy"] - TARGET_GAP_PT / 100
    best = best_pick(cascades, target_h)
    log_cascades(cascades, largest, target_h)
    static_at = static_at_budgets(static_rows, largest)
    if best is not None:
        result_best = best_report(best, largest, model, exits_model, test, args)
    else:
        result_best = {}
        log(f"\nno cascade reached the largest subnet's held-out accuracy minus {TARGET_GAP_PT} pt")
    saved = latency_within_gap(cascades, largest)
    equal = equal_latency(cascades[0], largest)
    ece_rows = [{"cascade": c["name"], **row} for c in cascades for row in c["stage_rows"]]
    plots = make_plots(args, static_rows, front, cascades, grid_rows, largest, best)
    seconds = time.perf_counter() - started
    log(f"\nplots: {', '.join(str(p) for p in plots)}\nwall time: {seconds:.0f} s")
    return {
        "settings": {k: v for k, v in vars(args).items()},
        "supernet": source,
        "static": static_rows,
        "static_front": [r["label"] for r in front],
        "static_at_budget": {f"{f:.1f}x": {"single": s, "mix": m} for f, (s, m) in static_at.items()},
        "cascades": [cascade_json(c) for c in cascades],
        "exit_grid": grid_rows,
        "exits": exit_info,
        "best": result_best,
        "equal_latency": equal,
        "latency_within_gap": saved,
        "ece": ece_rows,
        "seconds": seconds,
    }


def static_subnets(
    model: tailor.ElasticModel, train: Any, select: Any, test: Any, args: argparse.Namespace
) -> tuple[dict[str, Subnet], dict[str, float], dict[str, float]]:
    """The named static subnets, calibrated, with their held-out (`select`) and test accuracy by subnet id."""
    named = static_candidates(model.space, args.random_subnets, args.seed)
    _NAMES.update({sub: label for label, sub in named.items()})
    batches = calibration_batches(train, args)
    calibrate(model, list(named.values()), batches, batches=len(batches))
    acc_h = evaluate(model, list(named.values()), select)
    acc_t = evaluate(model, list(named.values()), test)
    return named, acc_h, acc_t


def exit_chains(exits_model: Any) -> dict[str, list[Stage]]:
    """Every exit of the largest and of the smallest subnet, in order."""
    space = exits_model.space
    return {
        label: [Stage(sub, name) for name in exits_model.exits]
        for label, sub in (("largest", space.largest()), ("smallest", space.smallest()))
    }


def measure_stages(
    args: argparse.Namespace,
    model: tailor.ElasticModel,
    named: dict[str, Subnet],
    exits_model: Any,
    chains: dict[str, list[Stage]],
) -> StageLatencies:
    """Every network a stage can run, timed together in interleaved rounds."""
    table = StageLatencies(args)
    for sub in named.values():
        table.need(model, [Stage(sub)])
    for chain in chains.values():
        table.need(exits_model, chain)  # resumed increments
        for stage in chain:
            table.need(exits_model, [stage])  # prefixes from the input
    log(
        f"measuring {len(table.jobs)} stage networks: {args.rounds} rounds x {max(3, args.repeats // args.rounds)} calls"
    )
    table.measure()
    return table


def static_table(
    model: tailor.ElasticModel,
    named: dict[str, Subnet],
    table: StageLatencies,
    acc_h: dict[str, float],
    acc_t: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per static subnet: label, id, latency, MMACs, held-out and test accuracy."""
    return [
        {
            "label": label,
            "id": sub.id,
            "subnet": sub.to_dict(),
            "cost_ms": table.costs(model, [Stage(sub)])[0],
            "mmacs": stage_costs(model, [sub], "macs")[0] / 1e6,
            "holdout_accuracy": acc_h[sub.id],
            "test_accuracy": acc_t[sub.id],
        }
        for label, sub in named.items()
    ]


def log_static(
    args: argparse.Namespace, static_rows: list[dict[str, Any]], largest: dict[str, Any], front: list[dict[str, Any]]
) -> None:
    log(f"\nstatic subnets (latency: ms per image at batch {args.latency_batch}, {args.threads} thread(s)):")
    log(f"{'subnet':<16} {'id':<16} {'MMACs':>7} {'ms/img':>7} {'x largest':>9} {'held-out':>8} {'test':>7} front")
    for r in sorted(static_rows, key=lambda r: r["cost_ms"]):
        log(
            f"{r['label']:<16} {r['id']:<16} {r['mmacs']:>7.2f} {r['cost_ms']:>7.3f} "
            f"{r['cost_ms'] / largest['cost_ms']:>9.2f} {100 * r['holdout_accuracy']:>8.2f} "
            f"{100 * r['test_accuracy']:>7.2f} {'*' if r in front else ''}"
        )


def exit_grid(
    exits_model: Any, chains: dict[str, list[Stage]], table: StageLatencies, test: Any
) -> list[dict[str, Any]]:
    """Test accuracy and latency (from the input) of every exit at the largest and the smallest width."""
    grid_rows = []
    for label, chain in chains.items():
        accuracy = exit_accuracy(exits_model, chain[0].subnet, test)
        for stage in chain:
            ms = table.costs(exits_model, [stage])[0]
            grid_rows.append({"width": label, "exit": stage.exit, "cost_ms": ms, "test_accuracy": accuracy[stage.exit]})
    log("\nexit x width grid (test accuracy, ms/img to reach the exit from the input):")
    for row in grid_rows:
        log(f"  {row['width']:<9} @{row['exit']:<7} {100 * row['test_accuracy']:6.2f}%  {row['cost_ms']:.3f}")
    return grid_rows


Plan = tuple[str, tailor.ElasticModel, list[Stage], dict[str, RoutingPolicy | str]]


def cascade_plans(
    args: argparse.Namespace,
    model: tailor.ElasticModel,
    exits_model: Any,
    chains: dict[str, list[Stage]],
    static_rows: list[dict[str, Any]],
    front_h: list[dict[str, Any]],
    largest: dict[str, Any],
    table: StageLatencies,
) -> list[Plan]:
    """The cascades to evaluate, with the policies of each; stages not timed yet are measured here.

    Width cascades start at held-out front subnets well below the largest's latency; a 3-stage width
    cascade goes through the front subnet between; early-exit and mixed cascades use the exit model.
    """
    L = model.space.largest()
    small_rows = [r for r in front_h if r["cost_ms"] <= args.first_stage_max * largest["cost_ms"] and r is not largest]
    small_rows = small_rows or [next(r for r in static_rows if r["label"] == "smallest")]
    first_sub = Subnet.from_dict(small_rows[0]["subnet"])
    policies: dict[str, RoutingPolicy | str] = {
        "confidence": Confidence(0.5),
        "confidence (T-scaled)": Confidence(0.5),
        "confidence (ensemble)": Confidence(0.5),
        "entropy": Entropy(0.5),
        "margin": Margin(0.5),
        "learned": "learned",
    }
    two_policies: dict[str, RoutingPolicy | str] = {
        "confidence": Confidence(0.5),
        "confidence (ensemble)": Confidence(0.5),
        "learned": "learned",
    }
    plans: list[Plan] = []
    for row in small_rows:
        first = Subnet.from_dict(row["subnet"])
        plans.append((f"{row['label']} -> largest", model, [Stage(first), Stage(L)], policies))
    # a 3-stage width cascade through the held-out front subnet between the first stage and the largest
    middle = [
        r for r in front_h if small_rows[0]["cost_ms"] < r["cost_ms"] < largest["cost_ms"] and r not in small_rows
    ]
    if middle:
        mid = max(middle, key=lambda r: r["holdout_accuracy"] - r["cost_ms"] / largest["cost_ms"])
        three = [Stage(first_sub), Stage(Subnet.from_dict(mid["subnet"])), Stage(L)]
        plans.append((f"{small_rows[0]['label']} -> {mid['label']} -> largest", model, three, two_policies))
    plans.append(("largest: stage1 -> stage2 -> final", exits_model, chains["largest"], two_policies))
    mixed = [Stage(first_sub), Stage(L, "stage2"), Stage(L)]
    table.need(exits_model, mixed)
    plans.append((f"{small_rows[0]['label']} -> largest@stage2 -> final", exits_model, mixed, two_policies))
    missing = [key for key in table.jobs if key not in table.values]
    if missing:  # stages first seen in these cascades (e.g. a first stage through the exit model)
        extra = StageLatencies(args)
        extra.jobs = {key: table.jobs[key] for key in missing}
        extra.measure()
        table.values.update(extra.values)
    return plans


Pick = tuple[dict[str, Any], str, SweepPoint, SweepPoint]


def best_pick(cascades: list[dict[str, Any]], target_h: float) -> Pick | None:
    """The cheapest (cascade, policy, held-out point, test point) reaching `target_h` on held-out data."""
    picks = []
    for c in cascades:
        for label, curve in c["curves"].items():
            pick = pick_on_holdout(curve, target_h)
            if pick is not None:
                picks.append((c, label, pick[0], pick[1]))
    return min(picks, key=lambda p: p[2].cost) if picks else None


def log_cascades(cascades: list[dict[str, Any]], largest: dict[str, Any], target_h: float) -> None:
    """Per cascade: its stages (accuracy, temperature, ECE) and, per policy, accuracy at budgets and the pick."""
    log(
        f"\ncascades (thresholds on held-out; test figures; largest: {100 * largest['test_accuracy']:.2f}% at "
        f"{largest['cost_ms']:.3f} ms/img):"
    )
    for c in cascades:
        log(f"\n  {c['name']}: stage costs {', '.join(f'{v:.3f}' for v in c['costs'])} ms/img")
        for row in c["stage_rows"]:
            log(
                f"    stage {row['stage']:<26} test acc {100 * row['test_accuracy']:6.2f}  T={row['temperature']:.2f}  "
                f"ECE {100 * row['ece_before']:5.2f}% -> {100 * row['ece_after']:5.2f}%"
            )
        log(
            f"    {'policy':<22} {'acc@0.6x':>9} {'acc@0.5x':>9} {'acc@0.4x':>9} {'pick: test acc':>15} {'x largest':>10} {'escalated':>9}"
        )
        for label, curve in c["curves"].items():
            pts = [(p.cost, p.accuracy) for p in curve["test"]]
            at = [accuracy_at_cost(pts, f * largest["cost_ms"]) for f in (0.6, 0.5, 0.4)]
            pick = pick_on_holdout(curve, target_h)
            text = " ".join(f"{100 * a:9.2f}" if a is not None else f"{'-':>9}" for a in at)
            pick_text = (
                f"{100 * pick[1].accuracy:15.2f} {pick[1].cost / largest['cost_ms']:10.2f} {pick[1].escalation:9.2f}"
                if pick
                else f"{'not reached':>15}"
            )
            log(f"    {label:<22} {text} {pick_text}")


def static_at_budgets(
    static_rows: list[dict[str, Any]], largest: dict[str, Any]
) -> dict[float, tuple[float | None, float | None]]:
    """Best single static subnet and best random mix of two at fractions of the largest's latency (test)."""
    static_points = [(r["cost_ms"], r["test_accuracy"]) for r in static_rows]
    static_at = {
        f: (
            accuracy_at_cost(static_points, f * largest["cost_ms"]),
            accuracy_at_cost(static_points, f * largest["cost_ms"], hull=True),
        )
        for f in (0.6, 0.5, 0.4, 0.3)
    }
    log("\n  static front at the same budgets (best single subnet / random mix of two):")
    for f, (single, mix) in static_at.items():
        log(f"    {f:.1f}x largest: {fmt_pct(single)} / {fmt_pct(mix)}")
    return static_at


def best_report(
    best: Pick, largest: dict[str, Any], model: tailor.ElasticModel, exits_model: Any, test: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """The chosen cascade against the target: test gap, latency ratio, measured wall time, escalation analysis."""
    c, label, hp, tp = best
    gap = 100 * (largest["test_accuracy"] - tp.accuracy)
    ratio = tp.cost / largest["cost_ms"]
    met = gap <= TARGET_GAP_PT and ratio <= TARGET_LATENCY_RATIO
    L = model.space.largest()
    wall = measured_wall_time(model if not isinstance_exit(c) else exits_model, c, label, tp, test, args, L)
    log(
        f"\nbest cascade (chosen on held-out): {c['name']} / {label} at thresholds {fmt_t(tp.thresholds)}: "
        f"test {100 * tp.accuracy:.2f}% vs largest {100 * largest['test_accuracy']:.2f}% (gap {gap:+.2f} pt) at "
        f"{ratio:.3f}x its latency ({tp.cost:.3f} vs {largest['cost_ms']:.3f} ms/img), {100 * tp.escalation:.1f}% "
        f"escalated -> target (<= {TARGET_GAP_PT} pt at <= {TARGET_LATENCY_RATIO}x) {'MET' if met else 'MISSED'}"
    )
    for batch, row in ((k, v) for k, v in wall.items() if isinstance(v, dict)):
        log(
            f"measured wall time of Cascade.predict over the test set at batch {batch}: {row['cascade_s']:.2f} s "
            f"vs largest alone {row['largest_s']:.2f} s = {row['ratio']:.3f}x (expected from stage latencies: "
            f"{ratio:.3f}x); run accuracy {100 * wall['run_accuracy']:.2f}% (simulated {100 * tp.accuracy:.2f}%)"
        )
    analysis = escalation_analysis(c, label, tp, test)
    log(
        "escalation by difficulty (past stage 1): "
        + ", ".join(
            f"[{r['low']:.1f},{r['high']:.1f}] {100 * r['escalated'][0]:.0f}%" for r in analysis["by_difficulty"]
        )
    )
    log(
        "escalation by class (past stage 1): "
        + ", ".join(f"{name} {100 * v:.0f}%" for name, v in zip(test.classes, analysis["by_class"]))
    )
    return {
        "cascade": c["name"],
        "policy": label,
        "thresholds": list(tp.thresholds),
        "holdout": hp.to_dict(),
        "test": tp.to_dict(),
        "gap_pt": gap,
        "latency_ratio": ratio,
        "target_met": met,
        "wall": wall,
        **analysis,
    }


def latency_within_gap(
    cascades: list[dict[str, Any]], largest: dict[str, Any]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per cascade and policy, the test latency of the cheapest held-out-chosen point within X pt of the largest."""
    saved: dict[str, dict[str, dict[str, float | None]]] = {}
    log("\nlatency (x largest, test) of the cheapest held-out-chosen point within X pt of the largest (held-out):")
    log(f"    {'cascade / policy':<58} {'0.3 pt':>14} {'0.5 pt':>14} {'1.0 pt':>14}")
    for c in cascades:
        for label, curve in c["curves"].items():
            row: dict[str, float | None] = {}
            cells = []
            for gap in (0.3, 0.5, 1.0):
                pick = pick_on_holdout(curve, largest["holdout_accuracy"] - gap / 100)
                row[f"{gap}"] = None if pick is None else pick[1].cost / largest["cost_ms"]
                cells.append(
                    "-" if pick is None else f"{pick[1].cost / largest['cost_ms']:.3f} ({100 * pick[1].accuracy:.2f})"
                )
            saved.setdefault(c["name"], {})[label] = row
            log(f"    {c['name'] + ' / ' + label:<58} " + " ".join(f"{cell:>14}" for cell in cells))
    return saved


def equal_latency(main: dict[str, Any], largest: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Learned router vs confidence (every policy) at equal latency, on the main (first) width cascade."""
    equal = {}
    for f in (0.3, 0.4, 0.5, 0.6):
        budget = f * largest["cost_ms"]
        equal[f"{f:.1f}x"] = {
            label: accuracy_at_cost([(p.cost, p.accuracy) for p in curve["test"]], budget)
            for label, curve in main["curves"].items()
        }
    log(f"\n{main['name']}: test accuracy at equal latency (fraction of the largest's):")
    labels = list(main["curves"])
    log(f"    {'budget':<8}" + "".join(f"{lbl:>23}" for lbl in labels))
    for budget, row in equal.items():
        log(f"    {budget:<8}" + "".join(f"{fmt_pct(row[lbl]):>23}" for lbl in labels))
    return equal


def isinstance_exit(c: dict[str, Any]) -> bool:
    return any(s.exit != FINAL for s in c["stages"])


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def fmt_t(thresholds: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{t:.3f}" for t in thresholds) + ")"


def early_exits(model: tailor.ElasticModel, train: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Exits after stage1 and stage2, heads trained on the frozen backbone for smallest and largest (cached)."""
    space = model.space
    key_src = {"supernet": model_digest(model), "epochs": args.exit_epochs, "train": args.train_size, "seed": args.seed}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(args.cache) / f"exits-{key}"
    if (path / "exits.json").exists() and not args.retrain:
        log(f"\nexit heads: {path} (cached)")
        return load_exits(model, path), {"source": str(path), "cached": True}
    exits = add_early_exits(model, ["stage1", "stage2"])
    start = time.perf_counter()
    history = train_exits(
        exits,
        train,
        [space.largest(), space.smallest()],
        epochs=args.exit_epochs,
        batch_size=args.batch_size,
        freeze_backbone=True,
        augment=default_augmentation("synthetic"),
        seed=args.seed,
        progress=args.progress,
    )
    seconds = time.perf_counter() - start
    save_exits(exits, path)
    log(f"\nexit heads trained (frozen backbone, {args.exit_epochs} epochs, 2 widths) in {seconds:.0f} s -> {path}")
    return exits, {"source": str(path), "cached": False, "seconds": seconds,
                   "history": [h.to_dict() for h in history]}  # fmt: skip


def model_digest(model: tailor.ElasticModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def exit_accuracy(model: Any, sub: Subnet, data: Any) -> dict[str, float]:
    correct: dict[str, int] = {}
    model.eval()
    with model.activated(sub):
        source = BatchSource(data, 256, 0, drop_last=False)
        for x, y in source.batches(None):
            for name, logits in model.forward_exits(x).items():
                correct[name] = correct.get(name, 0) + int((logits.argmax(1) == y).sum())
    return {name: count / len(data) for name, count in correct.items()}


def measured_wall_time(
    model: Any, c: dict[str, Any], label: str, point: SweepPoint, test: Any, args: argparse.Namespace, largest: Subnet
) -> dict[str, Any]:
    """Median wall time of `Cascade.predict` over the test set at `point` against the largest subnet alone.

    At the latency batch the escalated rows form small batches (a few rows each), which cost more per
    image than the full batches the stage latencies were measured at; a large batch shows the other end.
    """
    curve = c["curves"][label]
    policy = curve["policy"].with_thresholds(point.thresholds)
    cascade = Cascade(
        model, c["stages"], policy, costs=c["costs"], temperatures=curve["temperatures"], combine=curve["combine"]
    )
    check = cascade.predict(test, batch_size=args.latency_batch)
    alone = Cascade(model, [Stage(largest), Stage(largest)], Confidence(0.0))  # nothing escalates: largest only
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"run_accuracy": check.accuracy(test.labels), "simulated_accuracy": point.accuracy}
    for batch in dict.fromkeys([args.latency_batch, 256]):
        runs_c, runs_l = [], []
        for _ in range(args.wall_repeats):
            t0 = time.perf_counter()
            cascade.predict(test, batch_size=batch)
            runs_c.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            alone.predict(test, batch_size=batch)
            runs_l.append(time.perf_counter() - t0)
        c_s, l_s = statistics.median(runs_c), statistics.median(runs_l)
        out[str(batch)] = {"cascade_s": c_s, "largest_s": l_s, "ratio": c_s / l_s}
    return out


def escalation_analysis(c: dict[str, Any], label: str, point: SweepPoint, test: Any) -> dict[str, Any]:
    """Per-class and per-difficulty escalation of the chosen operating point (simulated on test outputs)."""
    curve = c["curves"][label]
    policy = curve["policy"].with_thresholds(point.thresholds)
    result = simulate_cascade(c["outputs_test"], policy, c["costs"], curve["temperatures"], combine=curve["combine"])
    stages = len(c["stages"])
    by_class = per_class_escalation(test.labels, result.stage, test.num_classes, stages)[:, 0].tolist()
    by_difficulty = escalation_by_bins(test.difficulty, result.stage, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], stages)
    return {"by_class": by_class, "by_difficulty": by_difficulty}


def cascade_json(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": c["name"],
        "stages": [s.to_dict() for s in c["stages"]],
        "costs_ms": c["costs"],
        "stage_rows": c["stage_rows"],
        "curves": {
            label: {
                "temperatures": curve["temperatures"],
                "combine": curve["combine"],
                "holdout": [p.to_dict() for p in curve["holdout"]],
                "test": [p.to_dict() for p in curve["test"]],
            }
            for label, curve in c["curves"].items()
        },
    }


def make_plots(
    args: argparse.Namespace,
    static_rows: list[dict[str, Any]],
    front: list[dict[str, Any]],
    cascades: list[dict[str, Any]],
    grid_rows: list[dict[str, Any]],
    largest: dict[str, Any],
    best: Any,
) -> list[Path]:
    out = Path(args.out) / "routing"  # the figures the issue names, kept apart from other benchmarks' files
    ref = largest["cost_ms"]
    series: dict[str, list[tuple[float, float]]] = {
        "static subnets": [(r["cost_ms"] / ref, r["test_accuracy"]) for r in static_rows if r not in front],
        "static Pareto front": [(r["cost_ms"] / ref, r["test_accuracy"]) for r in front],
        "exit x width grid": [(r["cost_ms"] / ref, r["test_accuracy"]) for r in grid_rows],
    }
    lines = ["static Pareto front"]
    main = cascades[0]
    for label, curve in main["curves"].items():  # every policy of the main cascade, held-out-chosen thresholds
        key = f"{main['name']}: {label}"
        series[key] = [(t.cost / ref, t.accuracy) for _, t in front_on_holdout(curve)]
        lines.append(key)
    for c in cascades[1:]:
        for label in ("confidence", "learned"):
            key = f"{c['name']}: {label}"
            series[key] = [(t.cost / ref, t.accuracy) for _, t in front_on_holdout(c["curves"][label])]
            lines.append(key)
    floor = min(r["test_accuracy"] for r in front) - 0.02  # 2 pt below the worst front subnet
    series = {k: [(x, y) for x, y in v if y >= floor] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    target = largest["test_accuracy"] - TARGET_GAP_PT / 100
    acc_plot = xy_plot(
        series,
        out / "acc_vs_latency.png",
        title=f"{args.model} on synthetic: test accuracy vs expected latency (1.0 = largest, {ref:.3f} ms/img)",
        x=Axis(f"expected latency / largest subnet's (batch {args.latency_batch}, {args.threads} thread(s))"),
        y=Axis("test accuracy", percent=True),
        lines=lines,
        hlines={f"largest - {TARGET_GAP_PT} pt": target},
        vlines={"0.6x the largest's latency": 0.6},
    )
    esc: dict[str, list[tuple[float, float]]] = {}
    uniform = [i / 50 for i in range(51)]  # evenly spaced thresholds, so each policy's scale shows
    for label, curve in main["curves"].items():
        points = sweep(
            main["outputs_test"], main["labels_test"], curve["policy"], main["costs"], uniform, curve["temperatures"]
        )
        esc[label] = [(p.thresholds[0], p.escalation) for p in points]
    esc_plot = xy_plot(
        esc,
        out / "escalation_vs_threshold.png",
        title=f"{main['name']}: inputs escalated to the largest subnet vs threshold (test)",
        x=Axis("threshold on the policy's score (escalate if score < threshold)"),
        y=Axis("escalated", percent=True),
        lines=list(esc),
    )
    return [acc_plot, esc_plot]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", help="a trained supernet (tailor.load); skips training")
    parser.add_argument(
        "--sampler",
        default="sandwich",
        choices=["fixed", "sandwich", "random_min_max", "uniform"],
        help="training sampler (fixed: largest + smallest every step)",
    )
    parser.add_argument("--num-random", type=int, default=2, help="random subnets per step (sandwich, random_min_max)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--largest-only-epochs",
        type=float,
        default=2.0,
        help="epochs of the largest subnet alone before the sampler (the recipe of supernet_vs_independent.py)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--holdout-size", type=int, default=10_000, help="halved: fit routers / choose thresholds")
    parser.add_argument("--test-size", type=int, default=5_000)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--random-subnets", type=int, default=4)
    parser.add_argument(
        "--first-stage-max", type=float, default=0.45, help="first stages: front subnets up to this x largest"
    )
    parser.add_argument("--exit-epochs", type=int, default=3)
    parser.add_argument("--thresholds", type=int, default=61, help="quantile thresholds per 2-stage sweep")
    parser.add_argument("--grid-thresholds", type=int, default=15, help="per transition, for 3-stage grids")
    parser.add_argument("--latency-weight", type=float, default=1.0, help="learned router's escalation-cost weight")
    parser.add_argument("--latency-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per network, split over --rounds")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved latency rounds (median over rounds)")
    parser.add_argument("--wall-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=".cache/routing")
    parser.add_argument("--retrain", action="store_true", help="ignore cached supernet and exit heads")
    parser.add_argument("--train-only", action="store_true", help="train (or find) the supernet and stop")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the claim")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_size, args.holdout_size, args.test_size, args.batch_size = 1, 512, 384, 192, 64
        args.random_subnets, args.calib_batches, args.exit_epochs = 0, 2, 1
        args.largest_only_epochs = min(args.largest_only_epochs, 0.25 * args.epochs)
        args.thresholds, args.grid_thresholds, args.repeats, args.rounds, args.wall_repeats = 11, 5, 3, 1, 1
        args.cache = str(Path(args.cache) / "quick")
        if args.out == "benchmarks/results":
            args.out = str(Path(args.cache) / "results")
    if args.rounds < 1 or args.repeats < 1 or args.latency_batch < 1 or args.threads < 1:
        parser.error("--rounds, --repeats, --latency-batch and --threads must be >= 1")
    with warnings.catch_warnings():  # stage subnets are calibrated; the fallback warning would only be noise
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        results = run(args)
    if results:
        target = Path(args.out) / "routing.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1, default=str) + "\n")
        log(f"results: {target}")


if __name__ == "__main__":
    sys.exit(main())
