"""One supernet (sandwich rule + in-place distillation) against the same architectures trained alone.

For each data set: train the supernet for E epochs (the largest subnet alone for the first 25%, then the
sandwich rule with in-place distillation); train the smallest and the
largest subnet architectures alone (extracted from a fresh supernet: the largest keeps the supernet's own
initial weights, the smallest is re-initialised by `init_weights`; same E epochs and recipe); then
calibrate SubnetNorm statistics and compare held-out accuracy. Also shows one random per-layer subnet
before and after calibration, and writes an accuracy-vs-MACs plot (SVG) and the results (JSON).

    python benchmarks/supernet_vs_independent.py                 # synthetic (20k/5k) and digits, 21 min on 2 quiet cores
    python benchmarks/supernet_vs_independent.py --quick         # a minute-long smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tailor import SubnetNormFallbackWarning, create_model, save
from tailor.data import default_augmentation, load_dataset
from tailor.ops import ElasticModel
from tailor.plot import scatter_svg
from tailor.space import SearchSpace, Subnet
from tailor.train import TrainConfig, Trainer, evaluate
from tailor.train.recipe import Recipe


class Standalone(ElasticModel):
    """An ordinary network (an extracted subnet) behind the ElasticModel interface, with a one-point space."""

    def __init__(self, net: nn.Module, input_size: tuple[int, int, int]) -> None:
        super().__init__(SearchSpace())
        self.net = net
        self.default_input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    return Standalone(net, input_size)


def quiet_evaluate(model: ElasticModel, subs: list[Subnet], data: Any) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        return evaluate(model, subs, data)


def run_dataset(name: str, args: argparse.Namespace, out_dir: Path, seed: int, first: bool = True) -> dict[str, Any]:
    """Train the supernet and both twins on `name` with `seed`; the first seed also saves the checkpoint and plot."""
    if name == "synthetic":
        train = load_dataset(name, "train", n=args.train_size)
        test = load_dataset(name, "test", n=args.test_size)
        epochs = args.epochs
    else:
        train, test = load_dataset(name, "train"), load_dataset(name, "test")
        epochs = args.digits_epochs
    num_classes, input_size = train.num_classes, tuple(train.input_size)
    in_chans = input_size[0]
    augmentation = default_augmentation(name)
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        crop_padding=augmentation.crop_padding,
        flip=augmentation.flip,
        seed=seed,
        calib_batches=args.calib_batches,
        largest_only_epochs=args.largest_only_fraction * epochs,
        largest_only_final_epochs=args.largest_final_fraction * epochs,
        student_loss_weight=args.student_loss_weight,
        student_ramp_epochs=args.student_ramp_fraction * epochs,
        calib_augment=args.calib_augment,
    )
    print(
        f"\n== {name}: {len(train)} train / {len(test)} test, {args.model}, {epochs} epochs, batch {args.batch_size}, seed {seed}"
    )

    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    supernet = create_model(args.model, num_classes=num_classes, in_chans=in_chans, **args.model_kwargs)
    start = time.perf_counter()
    trainer = Trainer(supernet, train, config, device="cpu", progress=args.progress)
    history = trainer.fit()
    timings["supernet"] = time.perf_counter() - start
    space = supernet.space
    if args.save_supernets and first:
        # in `tailor train`'s recipe form, so that `tailor route` / `benchmarks/routing.py --checkpoint` can use it
        sizes = name == "synthetic"  # digits has fixed splits; synthetic's are sized
        recipe = Recipe(model=args.model, model_kwargs=args.model_kwargs, data=name, train_split={"n": len(train)} if sizes else {},
                        test_split={"n": len(test)} if sizes else {}, train=config).to_dict()  # fmt: skip
        saved = save(supernet, Path(args.save_supernets) / name, metadata={"recipe": recipe, "history": history})
        print(f"supernet checkpoint: {saved}")

    alone: dict[str, float] = {}
    alone_macs: dict[str, int] = {}
    for which in ("smallest", "largest"):
        net = standalone(args.model, args.model_kwargs, which, num_classes, input_size, seed)
        fixed = TrainConfig(
            **{**config.to_dict(), "sampler": "fixed", "largest_only_epochs": 0.0, "largest_only_final_epochs": 0.0}
        )
        start = time.perf_counter()
        Trainer(net, train, fixed, subnets=[net.space.largest()], device="cpu", progress=args.progress).fit()
        timings[f"{which} alone"] = time.perf_counter() - start
        alone[which] = evaluate(net, [net.space.largest()], test)[net.space.largest().id]
        alone_macs[which] = macs(net, net.default_input_size)

    rng = random.Random(args.seed)  # the same probe subnets for every seed, so that rows can be averaged
    probe = space.sample(rng)
    before = quiet_evaluate(supernet, [probe], test)[probe.id]
    named = {"largest": space.largest(), "smallest": space.smallest()}
    for width in (0.75, 0.5):
        named[f"uniform {width}"] = space.from_wm([width] * space.search_dim)
    named["random (per-layer)"] = probe
    others = [space.sample(rng) for _ in range(args.random_subnets)]
    subs = list(named.values()) + others
    trainer.calibrate(subs)
    accuracy = evaluate(supernet, subs, test)
    sub_macs = {sub.id: macs(supernet.extract(sub), input_size) for sub in subs}

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
        f"{accuracy[probe.id]:.4f} after SubnetNorm calibration ({args.calib_batches} batches)"
    )
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

    series = {
        "supernet subnets": [(sub_macs[s.id] / 1e6, 100 * accuracy[s.id]) for s in subs],
        "trained alone": [(alone_macs[w] / 1e6, 100 * alone[w]) for w in ("smallest", "largest")],
        "random subnet, uncalibrated": [(sub_macs[probe.id] / 1e6, 100 * before)],
    }
    if first:  # the plot shows the first seed's run
        plot = scatter_svg(
            series,
            out_dir / f"supernet_vs_independent_{name}.svg",
            title=f"{args.model} on {name}: one supernet vs networks trained alone ({epochs} epochs)",
            xlabel="MMACs per image",
            ylabel="test accuracy (%)",
            log_x=True,
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
        "train_size": len(train),
        "test_size": len(test),
        "rows": rows,
        "alone_macs": alone_macs,
        "others": [{"id": s.id, "macs": sub_macs[s.id], "accuracy": accuracy[s.id]} for s in others],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,digits")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON create_model arguments, e.g. '{\"zero_init_residual\": true}'",
    )
    parser.add_argument("--epochs", type=int, default=8, help="epochs on synthetic")
    parser.add_argument("--digits-epochs", type=int, default=30, help="epochs on digits (1,437 training images)")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--test-size", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
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
        default=0.0,
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
        action=argparse.BooleanOptionalAction,
        default=False,
        help="calibrate the supernet's subnets on training-augmented batches (TrainConfig.calib_augment)",
    )
    parser.add_argument("--random-subnets", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the claim")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.digits_epochs, args.train_size, args.test_size = 1, 2, 1024, 256
        args.random_subnets, args.calib_batches, args.digits_seeds = 2, 2, 2
        if args.save_supernets:
            args.save_supernets = str(Path(args.save_supernets) / "quick")  # never overwrite a full run's
        if args.out == parser.get_default("out"):
            args.out = ".cache/supernet_vs_independent/quick"  # nor the committed full-run results
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [run_seeds(name.strip(), args, out_dir) for name in args.datasets.split(",") if name.strip()]
    target = out_dir / "supernet_vs_independent.json"
    target.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {target}")


if __name__ == "__main__":
    main()
