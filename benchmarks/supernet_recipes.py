"""Which supernet recipe keeps the largest subnet closest to the same network trained alone?

Trains resnet20 supernets on `synthetic` (20k training images, 8 epochs unless `--epochs`) that differ from
`baseline` (largest-only 25% of the epochs, then the sandwich rule with in-place distillation) in one knob
each, calibrates SubnetNorm statistics on plain and on training-augmented batches and prints the held-out
accuracy (5k images) of the largest, smallest and uniform-0.5 subnets side by side. Each variant is one
process (`--jobs` at a time, one thread each), so that several fit on the cores at once.

    python benchmarks/supernet_recipes.py                       # every variant, ~25 min each on one core
    python benchmarks/supernet_recipes.py --variants baseline,student-0.5 --jobs 2
    python benchmarks/supernet_recipes.py --epochs 10 --variants baseline,student-ramp-25%
    python benchmarks/supernet_recipes.py --quick               # 1 epoch of 1,024 images: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: name -> TrainConfig overrides, plus `largest_only_fraction` (the share of epochs in the largest-only
#: phase) and `model_kwargs` (passed to `create_model`)
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "largest-only-12.5%": {"largest_only_fraction": 0.125},
    "largest-only-50%": {"largest_only_fraction": 0.5},
    "student-0.5": {"student_loss_weight": 0.5},
    "num-random-1": {"num_random": 1},
    "grad-clip-1": {"grad_clip": 1.0},
    "zero-init-residual": {"model_kwargs": {"zero_init_residual": True}},
    "student-ramp-2": {"student_ramp_epochs": 2.0},
    "student-ramp-4": {"student_ramp_epochs": 4.0},
    "width-only": {"model_kwargs": {"min_depths": [3, 3, 3]}},  # a diagnostic: no elastic depth
    "project-conflicts": {"project_conflicts": True},
    "largest-final-2": {"largest_only_final_epochs": 2.0},  # a closing phase of the largest alone
    "largest-final-3": {"largest_only_final_epochs": 3.0},
    "student-ramp-25%": {"student_ramp_fraction": 0.25},  # the ramp as a share of the epochs (the benchmark's)
}


def train_one(overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant in this process and return its held-out accuracies (the child's entry point)."""
    import torch

    from tailor import create_model
    from tailor.data import default_augmentation, load_dataset
    from tailor.train import TrainConfig, Trainer, calibrate, calibration_inputs, evaluate

    torch.set_num_threads(args.threads)
    train = load_dataset("synthetic", "train", n=args.train_size)
    test = load_dataset("synthetic", "test", n=args.test_size)
    augmentation = default_augmentation("synthetic")
    fraction = overrides.pop("largest_only_fraction", 0.25)
    overrides.setdefault("student_ramp_epochs", 0.0)  # `baseline` has no ramp (TrainConfig's default has one now)
    ramp_fraction = overrides.pop("student_ramp_fraction", None)
    if ramp_fraction is not None:
        overrides["student_ramp_epochs"] = ramp_fraction * args.epochs
    model_kwargs = overrides.pop("model_kwargs", {})
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, crop_padding=augmentation.crop_padding,
                         flip=augmentation.flip, seed=args.seed, calib_batches=8,
                         largest_only_epochs=fraction * args.epochs, **overrides)  # fmt: skip
    torch.manual_seed(args.seed)
    model = create_model("resnet20", num_classes=train.num_classes, **model_kwargs)
    start = time.perf_counter()
    trainer = Trainer(model, train, config, device="cpu")
    trainer.fit()
    seconds = time.perf_counter() - start
    space = model.space
    subs = {"largest": space.largest(), "smallest": space.smallest(), "uniform 0.5": space.uniform(0.5)}
    trainer.calibrate(list(subs.values()))  # plain training images (TrainConfig.calib_augment is off)
    accuracy = evaluate(model, list(subs.values()), test)
    augmented = dataclasses.replace(config, calib_augment=True)
    inputs = calibration_inputs(trainer.calib_source.batches(None), config.calib_batches, augmented)
    calibrate(model, list(subs.values()), inputs, batches=len(inputs))
    on_augmented = evaluate(model, list(subs.values()), test)
    return {"recipe": config.to_dict(), "model_kwargs": model_kwargs, "seconds": seconds,
            **{k: accuracy[s.id] for k, s in subs.items()},
            "augmented calibration": {k: on_augmented[s.id] for k, s in subs.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once (one process each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant (numerics depend on it)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--test-size", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", help="results JSON (default benchmarks/results/supernet_recipes.json; _<E>ep.json for other epochs)"
    )
    parser.add_argument("--quick", action="store_true", help="1 epoch of 1,024 images: checks the script, not the claim")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON overrides: train one variant, print JSON
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_size, args.test_size = 1, 1024, 256
        if args.out is None:
            args.out = ".cache/supernet_recipes_quick.json"
    if args.out is None:
        suffix = "" if args.epochs == 8 else f"_{args.epochs}ep"  # never mixes runs of different lengths
        args.out = f"benchmarks/results/supernet_recipes{suffix}.json"
    if args.child is not None:
        print(json.dumps(train_one(json.loads(args.child), args)))
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    common = ["--epochs", str(args.epochs), "--train-size", str(args.train_size), "--test-size", str(args.test_size),
              "--seed", str(args.seed), "--threads", str(args.threads)]  # fmt: skip

    def run(name: str) -> dict[str, Any]:
        command = [sys.executable, __file__, *common, "--child", json.dumps(VARIANTS[name])]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if done.returncode != 0:
            raise SystemExit(f"variant {name} failed:\n{done.stderr[-2000:]}")
        print(f"  {name}: done", file=sys.stderr, flush=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(names, pool.map(run, names)))
    print(f"\nresnet20 on synthetic ({args.train_size} train / {args.test_size} test), {args.epochs} epochs, "
          f"seed {args.seed}, {args.threads} thread(s) per variant")
    print("calibrated on plain training images | on training-augmented ones (TrainConfig.calib_augment)")
    print(f"{'variant':<20} {'largest':>8} {'smallest':>9} {'uniform 0.5':>12} | {'largest':>8} {'smallest':>9} "
          f"{'uniform 0.5':>12} {'train s':>8}")  # fmt: skip
    for name, r in results.items():
        aug = r["augmented calibration"]
        print(f"{name:<20} {100 * r['largest']:>8.2f} {100 * r['smallest']:>9.2f} {100 * r['uniform 0.5']:>12.2f} | "
              f"{100 * aug['largest']:>8.2f} {100 * aug['smallest']:>9.2f} {100 * aug['uniform 0.5']:>12.2f} "
              f"{r['seconds']:>8.0f}")  # fmt: skip
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(target.read_text()) if target.exists() else {}  # keep the variants not re-run
    target.write_text(json.dumps({**earlier, **results}, indent=1) + "\n")
    print(f"results: {target}")


if __name__ == "__main__":
    main()
