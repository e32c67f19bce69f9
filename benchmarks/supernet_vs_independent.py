"""One supernet (sandwich rule + in-place distillation) against the same architectures trained alone.

For each data set: train the supernet for E epochs (the largest subnet alone for the first 25%, then the
sandwich rule with in-place distillation, the students' loss weight ramping up from ~0 over the next 25%);
train the smallest and the largest subnet architectures alone (extracted from a fresh supernet: the largest
keeps the supernet's own initial weights, the smallest is re-initialised by `init_weights`; same E epochs and
recipe); then calibrate SubnetNorm statistics (on synthetic, on training-augmented batches, the inputs the
twins' running statistics come from) and compare held-out accuracy. Also shows one random per-layer subnet
before and after calibration, and writes an accuracy-vs-MACs plot (SVG) and the results (JSON). The supernet and the twins
train at once in two 1-thread processes: each arm's numerics are those of a 1-thread run.

    python benchmarks/supernet_vs_independent.py                 # synthetic (20k/5k) and digits, ~27 min on 2 cores
    python benchmarks/supernet_vs_independent.py --quick         # a minute-long smoke run
    python benchmarks/supernet_vs_independent.py --model vit_micro --vit-recipe   # the ViT (see --vit-recipe)

`--vit-recipe` sets what a transformer trains with (AdamW, lr 2e-3, weight decay 0.05, a 1-epoch warm-up;
label smoothing 0.1 is the default for every model), in-place distillation at weight 0.5 (the students learn
half from the largest's outputs, half from the labels: with the KL term alone the ViT supernet collapsed,
`--distill-weight 1` shows it), 32x32 inputs in patches of 8 (16 tokens: a ViT of DeiT-Tiny size is far too
slow for this 2-core CPU), 16 epochs on synthetic and 30 on digits resized to 32x32 (`--digits-size`), 3 seeds
on digits. Results are kept per (model, data set) in the JSON, so the ViT's rows sit beside resnet20's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tailor import SubnetNormFallbackWarning, create_model, save
from tailor.data import default_augmentation, load_dataset
from tailor.ops import ElasticModel
from tailor.plot import Axis, xy_plot
from tailor.space import SearchSpace, Subnet
from tailor.train import TrainConfig, Trainer, evaluate
from tailor.train.recipe import Recipe


class Standalone(ElasticModel):
    """An ordinary network (an extracted subnet) behind the ElasticModel interface, with a one-point space."""

    def __init__(self, net: nn.Module, input_size: tuple[int, int, int], no_decay: set[str] = frozenset()) -> None:
        super().__init__(SearchSpace())
        self.net = net
        self.default_input_size = input_size
        self._no_decay = {f"net.{name}" for name in no_decay}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def no_weight_decay(self) -> set[str]:
        """What the family exempts from weight decay (a ViT's position embedding), as the supernet does."""
        names = {name for name, _ in self.named_parameters()}
        return self._no_decay & names


def macs(module: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image (FLOPs / 2, as papers report)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(torch.zeros(1, *input_size))
    return counter.get_total_flops() // 2


def standalone(
    model_name: str,
    model_kwargs: dict[str, Any],
    sub_of: str,
    num_classes: int,
    input_size: tuple[int, int, int],
    seed: int,
) -> Standalone:
    """The `sub_of` ("largest"/"smallest") architecture, initialised from scratch by its family's scheme.

    The largest starts from exactly the supernet's initial weights (same seed, same model); the smallest is
    re-initialised by `init_weights`, sized to its own layers' fans as the family builds a network that size.
    """
    torch.manual_seed(seed)
    fresh = create_model(model_name, num_classes=num_classes, in_chans=input_size[0], **model_kwargs)
    sub = fresh.space.largest() if sub_of == "largest" else fresh.space.smallest()
    net = fresh.extract(sub).train()
    if sub_of != "largest":
        torch.manual_seed(seed + 1)
        fresh.init_weights(net)
    return Standalone(net, input_size, set(getattr(fresh, "no_weight_decay", lambda: ())()))


def quiet_evaluate(model: ElasticModel, subs: list[Subnet], data: Any) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        return evaluate(model, subs, data)


def setup(name: str, args: argparse.Namespace, seed: int) -> tuple[Any, Any, TrainConfig]:
    """The data (train, test) and the training recipe both arms share for `name` and `seed`."""
    if name == "synthetic":
        train = load_dataset(name, "train", n=args.train_size)
        test = load_dataset(name, "test", n=args.test_size)
        epochs = args.epochs
    else:
        sized = {"image_size": args.digits_size} if args.digits_size else {}
        train, test = load_dataset(name, "train", **sized), load_dataset(name, "test", **sized)
        epochs = args.digits_epochs
    augmentation = default_augmentation(name, train.input_size[-1])
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        crop_padding=augmentation.crop_padding,
        flip=augmentation.flip,
        seed=seed,
        calib_batches=args.calib_batches,
        largest_only_epochs=args.largest_only_fraction * epochs,
        largest_only_final_epochs=args.largest_final_fraction * epochs,
        student_loss_weight=args.student_loss_weight,
        student_ramp_epochs=args.student_ramp_fraction * epochs,
        calib_augment=name in {n.strip() for n in args.calib_augment.split(",")},
        distill=not args.no_distill,
        distill_weight=args.distill_weight,
    )
    return train, test, config


def named_subnets(space: SearchSpace, rng: random.Random) -> dict[str, Subnet]:
    """Largest, smallest, two uniform widths and one random per-layer subnet drawn from `rng`."""
    probe = space.sample(rng)
    named = {"largest": space.largest(), "smallest": space.smallest()}
    for width in (0.75, 0.5):
        named[f"uniform {width}"] = space.from_wm([width] * space.search_dim)
    named["random (per-layer)"] = probe
    return named


def supernet_arm(name: str, args: argparse.Namespace, seed: int, first: bool) -> dict[str, Any]:
    """Train the supernet, then calibrate and evaluate the named subnets and `--random-subnets` more."""
    train, test, config = setup(name, args, seed)
    input_size = tuple(train.input_size)
    torch.manual_seed(seed)
    supernet = create_model(args.model, num_classes=train.num_classes, in_chans=input_size[0], **args.model_kwargs)
    start = time.perf_counter()
    trainer = Trainer(supernet, train, config, device="cpu", progress=args.progress)
    history = trainer.fit()
    seconds = time.perf_counter() - start
    space = supernet.space
    if args.save_supernets and first:
        # in `tailor train`'s recipe form, so that `tailor route` / `benchmarks/routing.py --checkpoint` can use it
        sizes = name == "synthetic"  # digits has fixed splits; synthetic's are sized
        recipe = Recipe(model=args.model, model_kwargs=args.model_kwargs, data=name, train_split={"n": len(train)} if sizes else {},
                        test_split={"n": len(test)} if sizes else {}, train=config).to_dict()  # fmt: skip
        folder = name if args.model == DEFAULT_MODEL else f"{args.model}_{name}"
        metadata = {"recipe": recipe, "history": [h.to_dict() for h in history]}
        saved = save(supernet, Path(args.save_supernets) / folder, metadata=metadata)
        print(f"supernet checkpoint: {saved}", file=sys.stderr)
    rng = random.Random(args.seed)  # the same probe subnets for every data seed, so that rows can be averaged
    named = named_subnets(space, rng)
    probe = named["random (per-layer)"]
    before = quiet_evaluate(supernet, [probe], test)[probe.id]
    others = [space.sample(rng) for _ in range(args.random_subnets)]
    subs = list(named.values()) + others
    trainer.calibrate(subs)
    accuracy = evaluate(supernet, subs, test)
    return {
        "named": {label: sub.to_dict() for label, sub in named.items()},
        "accuracy": accuracy,
        "macs": {sub.id: macs(supernet.extract(sub), input_size) for sub in subs},
        "others": [sub.id for sub in others],
        "probe_before": before,
        "recipe": config.to_dict(),
        "train_size": len(train),
        "test_size": len(test),
        "seconds": {"supernet": seconds},
    }


def twins_arm(name: str, args: argparse.Namespace, seed: int, first: bool) -> dict[str, Any]:
    """Train the smallest and the largest architectures alone, from scratch, with the supernet's recipe.

    `first` is unused: the arms share one signature so that `ARMS` can dispatch a child process to either.
    """
    train, test, config = setup(name, args, seed)
    input_size = tuple(train.input_size)
    alone: dict[str, float] = {}
    alone_macs: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for which in ("smallest", "largest"):
        net = standalone(args.model, args.model_kwargs, which, train.num_classes, input_size, seed)
        fixed = TrainConfig(
            **{**config.to_dict(), "sampler": "fixed", "largest_only_epochs": 0.0, "largest_only_final_epochs": 0.0}
        )
        start = time.perf_counter()
        Trainer(net, train, fixed, subnets=[net.space.largest()], device="cpu", progress=args.progress).fit()
        seconds[f"{which} alone"] = time.perf_counter() - start
        alone[which] = evaluate(net, [net.space.largest()], test)[net.space.largest().id]
        alone_macs[which] = macs(net, net.default_input_size)
    return {"alone": alone, "alone_macs": alone_macs, "seconds": seconds}


ARMS = {"supernet": supernet_arm, "twins": twins_arm}


def run_arms(name: str, args: argparse.Namespace, seed: int, first: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both arms: in parallel child processes (`--jobs 2`, `--threads` each) or one after the other here."""
    if args.jobs == 1:
        return supernet_arm(name, args, seed, first), twins_arm(name, args, seed, first)

    def child(arm: str) -> dict[str, Any]:
        spec = json.dumps({"arm": arm, "dataset": name, "seed": seed, "first": first})
        command = [sys.executable, __file__, *args.argv, "--threads", str(args.threads), "--child", spec]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the {arm} arm on {name} (seed {seed}) failed with exit status {done.returncode}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:
        supernet, twins = pool.map(child, ("supernet", "twins"))
    return supernet, twins


def run_dataset(name: str, args: argparse.Namespace, out_dir: Path, seed: int, first: bool = True) -> dict[str, Any]:
    """Both arms on `name` with `seed`, as one table; the first seed also saves the checkpoint and the plot."""
    print(f"\n== {name}: {args.model}, seed {seed}", flush=True)
    result, twins = run_arms(name, args, seed, first)
    config = TrainConfig.from_dict(result["recipe"])
    epochs = config.epochs
    named = {label: Subnet.from_dict(entry) for label, entry in result["named"].items()}
    probe = named["random (per-layer)"]
    accuracy, sub_macs = result["accuracy"], result["macs"]
    alone, alone_macs = twins["alone"], twins["alone_macs"]
    before = result["probe_before"]
    timings = {**result["seconds"], **twins["seconds"]}
    print(f"{result['train_size']} train / {result['test_size']} test, {epochs} epochs, batch {config.batch_size}")
    print(f"\n{'subnet':<20} {'MMACs':>8} {'supernet':>9} {'alone':>7} {'delta pt':>9}")
    rows = []
    for label, sub in named.items():
        twin = alone.get(label)
        delta = "" if twin is None else f"{100 * (accuracy[sub.id] - twin):+9.2f}"
        twin_text = "" if twin is None else f"{twin:.4f}"
        print(f"{label:<20} {sub_macs[sub.id] / 1e6:>8.2f} {accuracy[sub.id]:>9.4f} {twin_text:>7} {delta:>9}")
        rows.append(
            {
                "label": label,
                "subnet": sub.to_dict(),
                "id": sub.id,
                "macs": sub_macs[sub.id],
                "supernet": accuracy[sub.id],
                "alone": twin,
            }
        )
    print(
        f"\nrandom per-layer subnet {probe.id}: {before:.4f} with shared BatchNorm statistics, "
        f"{accuracy[probe.id]:.4f} after SubnetNorm calibration ({config.calib_batches} batches"
        f"{', augmented' if config.calib_augment else ''})"
    )
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

    series = {
        "supernet subnets": [(sub_macs[sub_id] / 1e6, accuracy[sub_id]) for sub_id in accuracy],
        "trained alone": [(alone_macs[w] / 1e6, alone[w]) for w in ("smallest", "largest")],
        "random subnet, uncalibrated": [(sub_macs[probe.id] / 1e6, before)],
    }
    if first:  # the plot shows the first seed's run
        stem = name if args.model == DEFAULT_MODEL else f"{args.model}_{name}"
        plot = xy_plot(
            series,
            out_dir / f"supernet_vs_independent_{stem}.svg",
            title=f"{args.model} on {name}: one supernet vs networks trained alone ({epochs} epochs)",
            x=Axis("MMACs per image", log=True),
            y=Axis("test accuracy", percent=True),
        )
        print(f"plot: {plot}")
    return {
        "dataset": name,
        "model": args.model,
        "model_kwargs": args.model_kwargs,
        "epochs": epochs,
        "largest_only_epochs": config.largest_only_epochs,
        "student_ramp_epochs": config.student_ramp_epochs,
        "largest_only_final_epochs": config.largest_only_final_epochs,
        "seed": seed,
        "recipe": config.to_dict(),
        "train_size": result["train_size"],
        "test_size": result["test_size"],
        "rows": rows,
        "alone_macs": alone_macs,
        "others": [{"id": i, "macs": sub_macs[i], "accuracy": accuracy[i]} for i in result["others"]],
        "probe_before_calibration": before,
        "probe_after_calibration": accuracy[probe.id],
        "seconds": timings,
    }


def run_seeds(name: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """`run_dataset` once per seed (digits: `--digits-seeds`, its 359 test images make one run too coarse).

    With several seeds the rows hold the mean accuracies, each with its per-seed values and standard deviation.
    """
    count = args.digits_seeds if name == "digits" else 1
    runs = [run_dataset(name, args, out_dir, args.seed + i, first=i == 0) for i in range(count)]
    if count == 1:
        return runs[0]
    merged = dict(runs[0])
    merged["seeds"] = [run["seed"] for run in runs]
    merged["rows"] = []
    print(f"\n{name}, mean of {count} seeds (± standard deviation):")
    print(f"{'subnet':<20} {'supernet':>15} {'alone':>15} {'delta pt':>9}")
    for index, row in enumerate(runs[0]["rows"]):
        merged_row = dict(row)
        for arm in ("supernet", "alone"):
            values = [run["rows"][index][arm] for run in runs]
            if values[0] is None:
                continue
            merged_row[arm] = statistics.fmean(values)
            merged_row[f"{arm}_per_seed"] = values
            merged_row[f"{arm}_sd"] = statistics.stdev(values)
        merged["rows"].append(merged_row)
        twin = merged_row["alone"]
        alone_text = "" if twin is None else f"{twin:.4f}±{merged_row['alone_sd']:.4f}"
        delta = "" if twin is None else f"{100 * (merged_row['supernet'] - twin):+9.2f}"
        supernet_text = f"{merged_row['supernet']:.4f}±{merged_row['supernet_sd']:.4f}"
        print(f"{row['label']:<20} {supernet_text:>15} {alone_text:>15} {delta:>9}")
    merged["seconds"] = {key: sum(run["seconds"][key] for run in runs) for key in runs[0]["seconds"]}
    return merged


DEFAULT_MODEL = "resnet20"
#: What `--vit-recipe` sets (unless the flag is given explicitly).
VIT_RECIPE = {
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 1.0,
    "epochs": 16,
    "digits_epochs": 30,
    "digits_size": 32,
    "digits_seeds": 3,
    "distill_weight": 0.5,
    "model_kwargs": {"patch_size": 8},
}


def vit_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill in `VIT_RECIPE` for every option left at its default."""
    for key, value in VIT_RECIPE.items():
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,digits")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON create_model arguments, e.g. '{\"zero_init_residual\": true}'",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs on synthetic")
    parser.add_argument("--digits-epochs", type=int, default=30, help="epochs on digits (1,437 training images)")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--test-size", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig().weight_decay)
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--label-smoothing", type=float, default=TrainConfig().label_smoothing)
    parser.add_argument("--no-distill", action="store_true", help="students learn from the labels only")
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=TrainConfig().distill_weight,
        help="students' loss: w * KL(largest) + (1 - w) * cross-entropy (TrainConfig.distill_weight)",
    )
    parser.add_argument("--digits-size", type=int, default=0, help="resize digits to this side (0: 8x8 as stored)")
    parser.add_argument(
        "--vit-recipe",
        action="store_true",
        help="a transformer's recipe: AdamW lr 2e-3, weight decay 0.05, 1 warm-up epoch, 16 epochs, patches of 8 "
        "on 32x32 inputs, digits resized to 32x32 (flags given explicitly still win)",
    )
    parser.add_argument(
        "--largest-only-fraction",
        type=float,
        default=0.25,
        help="share of the supernet's epochs in which only the largest subnet trains (Once-for-All's first phase)",
    )
    parser.add_argument(
        "--student-loss-weight",
        type=float,
        default=TrainConfig().student_loss_weight,
        help="scale of every non-largest subnet's loss in a sandwich step (TrainConfig.student_loss_weight)",
    )
    parser.add_argument(
        "--student-ramp-fraction",
        type=float,
        default=0.25,
        help="share of the epochs, after the largest-only phase, over which the students' loss weight ramps up",
    )
    parser.add_argument(
        "--largest-final-fraction",
        type=float,
        default=0.0,
        help="share of the epochs at the end in which only the largest subnet trains (TrainConfig.largest_only_final_epochs)",
    )
    parser.add_argument(
        "--digits-seeds",
        type=int,
        default=5,
        help="independent runs on digits, averaged (359 test images: 0.28 pt each)",
    )
    parser.add_argument(
        "--save-supernets",
        default=".cache/supernet_vs_independent",
        help="directory for the trained supernets (tailor.save, one folder per data set); '' to skip",
    )
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument(
        "--calib-augment",
        default="synthetic",
        help="comma-separated data sets whose supernet subnets calibrate on training-augmented batches "
        "(TrainConfig.calib_augment; '' for none). Not digits: a 1-pixel shift of an 8x8 image moves its statistics",
    )
    parser.add_argument("--random-subnets", type=int, default=10)
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help="2: the supernet and the twins train at once in two processes; 1: one after the other in this one",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (the numerics depend on it; default 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the claim")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON {arm, dataset, seed, first}: run it, print JSON
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.vit_recipe:
        vit_recipe(args, parser)
    if args.quick:
        args.epochs, args.digits_epochs, args.train_size, args.test_size = 1, 2, 1024, 256
        args.random_subnets, args.calib_batches, args.digits_seeds = 2, 2, 2
        if args.save_supernets:
            args.save_supernets = str(Path(args.save_supernets) / "quick")  # never overwrite a full run's
        if args.out == parser.get_default("out"):
            args.out = ".cache/supernet_vs_independent/quick"  # nor the committed full-run results
    torch.set_num_threads(args.threads)
    if args.child is not None:
        spec = json.loads(args.child)
        print(json.dumps(ARMS[spec["arm"]](spec["dataset"], args, spec["seed"], spec["first"])))
        return
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = [run_seeds(name.strip(), args, out_dir) for name in args.datasets.split(",") if name.strip()]
    print(f"\nwall clock: {time.perf_counter() - start:.0f} s ({args.jobs} process(es) x {args.threads} thread(s))")
    target = out_dir / "supernet_vs_independent.json"
    rerun = {(result["model"], result["dataset"]) for result in results}
    earlier = json.loads(target.read_text()) if target.exists() else []  # keep the (model, data set) pairs not re-run
    results = [entry for entry in earlier if (entry.get("model", DEFAULT_MODEL), entry["dataset"]) not in rerun] + results
    target.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {target}")


if __name__ == "__main__":
    main()
