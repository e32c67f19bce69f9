"""`tailor train` and `tailor calibrate`: the command-line front of the trainer and of calibration.

`tailor train` reads an optional TOML recipe (see `tailor.train.recipe`), lets flags override it,
trains with a progress bar, writes a checkpoint directory and a JSONL metrics log next to it, and
prints the accuracy of a few subnets. `tailor calibrate` adds SubnetNorm statistics for more subnets to
a checkpoint (keeping its training state) and can evaluate them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

import tailor.cli_args as cli_args
from tailor.data import default_augmentation, load_dataset
from tailor.errors import InvalidSubnetError, RecipeError
from tailor.models import create_model, list_models
from tailor.ops import ElasticModel
from tailor.progress import Progress
from tailor.space import Subnet, parse_subnets, uniform_width
from tailor.train.calibrate import calibrate
from tailor.train.checkpoint import load_checkpoint, save
from tailor.train.fit import checkpoint_data
from tailor.train.recipe import Recipe, read_toml
from tailor.train.trainer import BatchSource, TrainConfig, Trainer, calibration_inputs, evaluate

_TRAIN_FLAGS = {  # TrainConfig fields a flag overrides (--batch-size and --seed are declared by tailor.cli_args)
    "epochs": int,
    "lr": float,
    "optimizer": str,
    "weight_decay": float,
    "sampler": str,
    "num_random": int,
    "checkpoint_every": int,
    "temperature": float,
    "label_smoothing": float,
    "warmup_epochs": float,
    "largest_only_epochs": float,
    "largest_only_final_epochs": float,
    "student_loss_weight": float,
    "student_ramp_epochs": float,
}
_RECIPE_FLAGS = ("batch_size", "seed", *_TRAIN_FLAGS)


def add_commands(commands: Any) -> None:
    """Register `train` and `calibrate` on the `tailor` parser's subcommands."""
    train = commands.add_parser("train", help="train a supernet (sandwich rule + in-place distillation)")
    train.add_argument("--config", help="TOML recipe ([model], [data], [train]); flags override it")
    cli_args.add_model(train, models=list_models(), default=None)
    cli_args.add_data(train, default="synthetic")
    train.add_argument("--train-size", type=int, help="synthetic: training images")
    train.add_argument("--test-size", type=int, help="synthetic: test images")
    cli_args.add_batch_size(train, default=None, use="training (default: the recipe's)")
    cli_args.add_seed(train, default=None, help="random seed (default: the recipe's)")
    for name, kind in _TRAIN_FLAGS.items():
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name)
    cli_args.add_subnets(train, help="train exactly these subnets (the fixed sampler; implies --sampler fixed)")
    train.add_argument("--no-distill", action="store_true", help="students learn from labels only")
    train.add_argument(
        "--project-conflicts", action="store_true", help="drop the students' gradient component against the largest's"
    )
    cli_args.add_calib_augment(train)
    cli_args.add_out(train, required=True, help="checkpoint directory (replaced atomically)")
    train.add_argument("--resume", action="store_true", help="continue from --out if it holds a checkpoint")
    train.add_argument("--log", help="JSONL metrics log (default: <out>.metrics.jsonl)")
    cli_args.add_device(train, default=None)
    cli_args.add_threads(train, default=None)
    cli_args.add_progress(train)
    train.set_defaults(run=cmd_train)

    cal = commands.add_parser("calibrate", help="SubnetNorm statistics for more subnets of a checkpoint")
    cli_args.add_checkpoint(cal)
    cli_args.add_data(cal)
    cli_args.add_random(cal, default=8, help="new random subnets (not yet calibrated) to calibrate")
    cal.add_argument("--widths", default="0.25,0.5,0.75", help="uniform widths to calibrate (comma-separated)")
    cli_args.add_subnets(cal, help="the subnets to calibrate instead of largest, smallest, --widths")
    cal.add_argument(
        "--recalibrate", action="store_true", help="also calibrate again the subnets that already have statistics"
    )
    cli_args.add_calibration(cal, batch_size=128)
    cli_args.add_calib_augment(cal)
    cli_args.add_seed(cal)
    cal.add_argument("--eval", action="store_true", help="then print each subnet's test accuracy")
    cli_args.add_out(cal, help="write here instead of updating the checkpoint in place")
    cli_args.add_device(cal, default=None)
    cli_args.add_threads(cal, default=None)
    cli_args.add_progress(cal)
    cal.set_defaults(run=cmd_calibrate)


def _recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, set[str]]:
    """The recipe file (or defaults) with flags applied; also the [train] fields set explicitly."""
    recipe = Recipe.load(args.config) if args.config else Recipe()
    explicit: set[str] = set(read_toml(args.config).get("train", {})) if args.config else set()
    if args.model:
        recipe.model = args.model
    if args.data:
        recipe.data = args.data
    if args.data_root:
        recipe.data_root = args.data_root
    for flag, split in (("train_size", recipe.train_split), ("test_size", recipe.test_split)):
        value = getattr(args, flag)
        if value is not None:
            if recipe.data != "synthetic":
                raise RecipeError(f"--{flag.replace('_', '-')} applies to synthetic data, not {recipe.data!r}")
            split["n"] = value
    config = recipe.train.to_dict()
    for name in _RECIPE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            config[name] = value
            explicit.add(name)
    if getattr(args, "subnet", None):
        if "sampler" in explicit and config["sampler"] != "fixed":
            raise RecipeError(f"--subnet trains a fixed list of subnets; it contradicts sampler {config['sampler']!r}")
        config["sampler"] = "fixed"
    if args.no_distill:
        config["distill"] = False
    if args.project_conflicts:
        config["project_conflicts"] = True
    if args.calib_augment is not None:
        config["calib_augment"] = args.calib_augment
    augmentation = default_augmentation(recipe.data)
    if "crop_padding" not in explicit:
        config["crop_padding"] = augmentation.crop_padding
    if "flip" not in explicit:
        config["flip"] = augmentation.flip
    recipe.train = type(recipe.train).from_dict(config)
    return recipe, explicit


def _setup_torch(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _report_subnets(space: Any) -> list[Subnet]:
    subs = [space.largest()]
    for width in (0.75, 0.5):
        sub = space.from_wm([width] * space.search_dim)
        if sub not in subs:
            subs.append(sub)
    if space.smallest() not in subs:
        subs.append(space.smallest())
    return subs


def _print_accuracy(model: ElasticModel, accuracy: dict[str, float], subs: list[Subnet]) -> None:
    print(f"{'subnet':<16} {'mean width':>10} {'depths':>10} {'accuracy':>9}")
    for sub in subs:
        mean_width = sum(sub.widths.values()) / max(1, len(sub.widths))
        depths = "/".join(str(sub.depths[d.name]) for d in model.space.depths) or "-"
        print(f"{sub.id:<16} {mean_width:>10.3f} {depths:>10} {accuracy[sub.id]:>9.4f}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a supernet from a recipe and flags; checkpoint, metrics log, final accuracy table."""
    recipe, _ = _recipe_from_args(args)
    device = _setup_torch(args)
    train_data = load_dataset(recipe.data, "train", recipe.data_root, **recipe.train_split)
    test_data = load_dataset(recipe.data, "test", recipe.data_root, **recipe.test_split)
    in_chans = int(getattr(train_data, "input_size", train_data[0][0].shape)[0])
    torch.manual_seed(recipe.train.seed)
    model = create_model(recipe.model, num_classes=train_data.num_classes, in_chans=in_chans, **recipe.model_kwargs)
    out = Path(args.out)
    log = Path(args.log) if args.log else out.with_name(out.name + ".metrics.jsonl")
    subs = _report_subnets(model.space)
    fixed = None
    if recipe.train.sampler == "fixed":
        if not args.subnet:
            raise RecipeError("sampler 'fixed' trains a list of subnets: give it with --subnet")
        fixed = [n.subnet for n in parse_subnets(args.subnet, model.space, what="--subnet")]
    trainer = Trainer(
        model,
        train_data,
        recipe.train,
        eval_data=test_data,
        eval_subnets=subs,
        subnets=fixed,
        device=device,
        checkpoint_dir=out,
        resume=args.resume,
        log_path=log,
        progress=not args.no_progress,
        metadata={"recipe": recipe.to_dict()},
    )
    print(
        f"training {recipe.model} on {recipe.data} ({len(train_data)} train / {len(test_data)} test), "
        f"{recipe.train.epochs} epochs, sampler {recipe.train.sampler}, device {trainer.device}",
        file=sys.stderr,
    )
    history = trainer.fit()
    if trainer.ctx.is_main and history:
        _print_accuracy(model, history[-1].accuracy or {}, subs)
        print(f"checkpoint: {out}  metrics: {log}")
    return 0


def _calibration_subnets(model: ElasticModel, args: argparse.Namespace) -> tuple[list[Subnet], list[Subnet]]:
    """(subnets to calibrate, subnets kept as they are because they already have statistics).

    `--subnet` names them in tailor's notation; otherwise the largest, the smallest, `--widths` and `--random`
    new random ones (drawn until that many not yet calibrated are found). A subnet that already holds
    statistics is kept unless `--recalibrate`: calibrating again on other batches would change it.
    """
    space = model.space
    if args.subnet:
        named = [n.subnet for n in parse_subnets(args.subnet, space, what="--subnet")]
    else:
        try:
            widths = [float(w) for w in args.widths.split(",") if w.strip()]
        except ValueError:
            raise InvalidSubnetError(f"--widths {args.widths!r}: expected comma-separated numbers") from None
        named = [space.largest(), space.smallest()] + [uniform_width(space, w, item=f"--widths {w:g}") for w in widths]
    named = list(dict.fromkeys(space.canonical(s) for s in named))
    done = set() if args.recalibrate else model.calibrated_subnet_keys()
    todo = [s for s in named if model.stats_key(s) not in done]
    kept = [s for s in named if model.stats_key(s) in done]
    rng = random.Random(args.seed)
    chosen = set(named)
    drawn = 0
    for _ in range(max(100, 100 * args.random)):  # a small space may hold fewer new subnets than asked for
        if drawn >= args.random:
            break
        sub = space.canonical(space.sample(rng))
        if sub in chosen or model.stats_key(sub) in done:
            continue
        chosen.add(sub)
        todo.append(sub)
        drawn += 1
    if drawn < args.random:
        print(f"note: found only {drawn} random subnets without statistics (asked for {args.random})", file=sys.stderr)
    return todo, kept


def _calibration_config(config: dict[str, Any], data_name: str, args: argparse.Namespace) -> TrainConfig | None:
    """The augmentation to calibrate with (None: plain batches): --calib-augment, else the recipe's calib_augment."""
    metadata = config.get("metadata") or {}
    recipe = metadata.get("recipe") if isinstance(metadata, dict) else None
    trained = (recipe.get("train") if isinstance(recipe, dict) else None) or {}
    recorded = TrainConfig.from_dict(trained) if trained else None  # type-checked: a RecipeError names the key
    augment = args.calib_augment if args.calib_augment is not None else bool(recorded and recorded.calib_augment)
    if not augment:
        return None
    default = default_augmentation(data_name)
    return TrainConfig(
        calib_augment=True,
        crop_padding=recorded.crop_padding if recorded else default.crop_padding,
        flip=recorded.flip if recorded else default.flip,
        seed=args.seed,
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Calibrate subnets of a checkpoint on training data; save (keeping training state); optionally evaluate."""
    device = _setup_torch(args)
    loaded = load_checkpoint(args.checkpoint, map_location=device)
    model = loaded.model
    train_data, test_data, name = checkpoint_data(loaded, args.data, args.data_root)
    subs, kept = _calibration_subnets(model, args)
    source = BatchSource(train_data, min(args.batch_size, len(train_data)), args.seed)
    cached = calibration_inputs(source.batches(0), args.calib_batches, _calibration_config(loaded.config, name, args))
    start = time.perf_counter()
    with Progress("calibrate", len(subs), not args.no_progress, unit="subnet") as progress:
        for index, sub in enumerate(subs, start=1):
            calibrate(model, [sub], cached, batches=len(cached), device=device)
            progress(index)
    seconds = time.perf_counter() - start
    target = Path(args.out) if args.out else Path(args.checkpoint)
    save(
        model,
        target,
        optimizer=loaded.optimizer_state,
        train_state=loaded.train_state,
        metadata=loaded.config.get("metadata", {}),
    )
    print(f"calibrated {len(subs)} subnets on {len(cached)} batches in {seconds:.2f} s -> {target}")
    if kept:
        print(f"kept the statistics of {len(kept)} subnets calibrated before (--recalibrate to redo them)")
    if args.eval:
        accuracy = evaluate(model, kept + subs, test_data, device=device)
        _print_accuracy(model, accuracy, kept + subs)
    return 0
