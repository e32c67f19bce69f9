"""The flags several `tailor` commands share, declared once: one spelling, type, check and help text each.

    def add_commands(commands):
        p = commands.add_parser("profile", help=...)
        cli_args.add_checkpoint(p, models=list_models())
        cli_args.add_calibration(p, batch_size=128)
        cli_args.add_threads(p, default=1, help="intra-op threads of the runtime")

Each `add_*` adds one concept's flag(s) to a command's parser. A flag names its concept in the singular and
takes a comma-separated list where a command accepts several (`--subnet smallest,largest`, `--runtime
torch,onnxruntime`, `--policy drainfit,slackfit`, `--latency-batch 1,8`); a checkpoint a command reads is its
first, positional argument. Range checks run after parsing (`CommandParser`) and raise `UsageError`, one line
naming the flag and the value. Spellings earlier releases used are listed once, in `DEPRECATED_FLAGS`: they are
still accepted for one release, with a one-line note on stderr (`add_deprecated_aliases`).

Written here rather than with argparse alone: argparse shares flags between subcommands only through parent
parsers (which fix one default and help for all), knows no deprecated spellings before Python 3.13, and checks
types but not ranges.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tailor.checks as checks
from tailor.data import list_datasets
from tailor.errors import UsageError
from tailor.space import SUBNET_NOTATION

Check = Callable[[str, Any], Any]


def at_least(low: int) -> Check:
    """The check of an integer flag whose values below `low` are refused."""
    return functools.partial(checks.integer, error=UsageError, low=low)


def one_of(choices: Sequence[str]) -> Check:
    """The check of a flag whose value must be one of `choices` (the error lists them)."""
    return lambda flag, value: checks.one_of(flag, value, choices, UsageError)


#: the checks a flag's value gets after parsing: `check(flag, value)` raises `UsageError` naming both
POSITIVE: Check = at_least(1)
NON_NEGATIVE: Check = at_least(0)
POSITIVE_NUMBER: Check = functools.partial(checks.positive_float, error=UsageError)
FRACTION: Check = functools.partial(checks.fraction, error=UsageError)


@dataclass(frozen=True)
class Deprecated:
    """An earlier spelling of a flag: `old` in `command` now reads `new` (a flag, or the positional CHECKPOINT)."""

    command: str
    old: str
    new: str


#: every spelling an earlier release used: accepted, with a note on stderr, for one more release (through 0.2)
DEPRECATED_FLAGS: tuple[Deprecated, ...] = (
    Deprecated("actuate", "--subnets", "--count"),
    Deprecated("train", "--subnets", "--subnet"),
    Deprecated("calibrate", "--subnets", "--subnet"),
    Deprecated("calibrate", "--batches", "--calib-batches"),
    Deprecated("calibrate", "--augment", "--calib-augment"),
    Deprecated("calibrate", "--no-augment", "--no-calib-augment"),
    Deprecated("profile", "--subnets", "--subnet"),
    Deprecated("profile", "--batch-sizes", "--latency-batch"),
    Deprecated("profile", "--runtimes", "--runtime"),
    Deprecated("profile", "--backend", "--runtime"),
    Deprecated("search", "--batch", "--latency-batch"),
    Deprecated("search", "--backend", "--runtime"),
    Deprecated("search", "--cost", "--latency-source"),
    Deprecated("route", "--policies", "--policy"),
    Deprecated("route", "--stages-json", "--stages"),
    Deprecated("serve", "--checkpoint", "CHECKPOINT"),
    Deprecated("serve", "--queue-limit", "--queue-capacity"),
)


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` that, after parsing, applies deprecated spellings and the flags' range checks."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        _apply_deprecated(self, namespace)
        for action in self._actions:
            check = getattr(action, "check", None)
            value = getattr(namespace, action.dest, None)
            if check is not None and value is not None:
                check(_flag(action), value)
        return namespace, extras


def _flag(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else (action.metavar or action.dest.upper())


def _add(parser: argparse.ArgumentParser, *names: str, check: Check | None = None, **kwargs: Any) -> argparse.Action:
    """`parser.add_argument`, the action marked as a shared flag and given its range check."""
    action = parser.add_argument(*names, **kwargs)
    action.shared = True  # type: ignore[attr-defined]
    action.check = check  # type: ignore[attr-defined]
    return action


def checked(parser: argparse.ArgumentParser, *names: str, check: Check, **kwargs: Any) -> argparse.Action:
    """A command's own flag whose value `check(flag, value)` vets after parsing (`POSITIVE`, `at_least(2)`, ...)."""
    action = parser.add_argument(*names, **kwargs)
    action.check = check  # type: ignore[attr-defined]
    return action


def add_checkpoint(parser: argparse.ArgumentParser, *, models: Sequence[str] | None = None) -> None:
    """The checkpoint the command reads, its first positional argument; with `models`, a registry name too."""
    if models is None:
        _add(parser, "checkpoint", metavar="CHECKPOINT",
             help="checkpoint directory written by `tailor train` or tailor.save")  # fmt: skip
    else:
        _add(parser, "source", metavar="CHECKPOINT",
             help="checkpoint directory, or a registered model name (random weights): " + ", ".join(models))  # fmt: skip


def add_model(parser: argparse.ArgumentParser, *, models: Sequence[str], default: str | None) -> None:
    """`--model`: a registered model to build."""
    _add(parser, "--model", choices=list(models), default=default,
         help=f"registered model (default {default or 'resnet20'})")  # fmt: skip


def add_data(parser: argparse.ArgumentParser, *, default: str = "the one the checkpoint was trained on",
             use: str = "") -> None:  # fmt: skip
    """`--data` (a registered data set) and `--data-root` (where its files are)."""
    names = list_datasets()
    _add(parser, "--data", check=one_of(names), help=f"data set{use}: {', '.join(names)} (default: {default})")
    _add(parser, "--data-root", help="directory of cifar10/cifar100/imagefolder data")


def add_batch_size(parser: argparse.ArgumentParser, *, default: int | None, use: str = "calibration and evaluation") -> None:
    """`--batch-size`: the batch size of the command's passes over the data set."""
    _add(parser, "--batch-size", type=int, default=default, check=POSITIVE,
         help=f"batch size of {use}" + ("" if default is None else " (default %(default)s)"))  # fmt: skip


def add_calibration(parser: argparse.ArgumentParser, *, batch_size: int, calib_batches: int = 8) -> None:
    """`--calib-batches` (training batches SubnetNorm is calibrated on) and `--batch-size`."""
    _add(parser, "--calib-batches", type=int, default=calib_batches, check=POSITIVE,
         help="training batches the SubnetNorm statistics are calibrated on (default %(default)s)")  # fmt: skip
    add_batch_size(parser, default=batch_size)


def add_calib_augment(parser: argparse.ArgumentParser) -> None:
    """`--calib-augment` / `--no-calib-augment`: calibrate SubnetNorm on training-augmented batches, or plain ones."""
    _add(parser, "--calib-augment", action=argparse.BooleanOptionalAction, default=None,
         help="calibrate SubnetNorm on training-augmented batches (default: the recipe's calib_augment)")  # fmt: skip


def add_latency_batch(parser: argparse.ArgumentParser, *, default: int | str, several: bool = False) -> None:
    """`--latency-batch`: the batch size latency is measured at (comma-separated sizes where `several`)."""
    if several:
        _add(parser, "--latency-batch", default=default,
             help="batch sizes latency is measured at, comma-separated positive integers (default %(default)s)")  # fmt: skip
    else:
        _add(parser, "--latency-batch", type=int, default=default, check=POSITIVE,
             help="batch size latency is measured at (default %(default)s)")  # fmt: skip


def add_runtime(parser: argparse.ArgumentParser, *, runtimes: Sequence[str], help: str, default: str | None = None) -> None:
    """`--runtime`: what latency is measured, or subnets run, on (`tailor.cost.list_runtimes()`)."""
    _add(parser, "--runtime", default=default, help=f"{help} (registered: {', '.join(runtimes)})")


def add_subnets(parser: argparse.ArgumentParser, *, help: str, default: str | None = None) -> None:
    """`--subnet`: subnets in tailor's one notation (`tailor.space.parse_subnets`)."""
    _add(parser, "--subnet", default=default, help=f"{help}: {SUBNET_NOTATION}")


def add_random(parser: argparse.ArgumentParser, *, default: int, help: str) -> None:
    """`--random N`: this many random subnets (`space.sample`, seeded by `--seed`)."""
    _add(parser, "--random", type=int, default=default, check=NON_NEGATIVE, help=f"{help} (default %(default)s)")


def add_seed(parser: argparse.ArgumentParser, *, default: int | None = 0, help: str = "random seed") -> None:
    """`--seed`: the seed of everything random the command does."""
    _add(parser, "--seed", type=int, default=default, help=help + ("" if default is None else " (default %(default)s)"))


def add_threads(parser: argparse.ArgumentParser, *, default: int | None, help: str = "CPU threads for torch") -> None:
    """`--threads`: the CPU threads the command computes with."""
    _add(parser, "--threads", type=int, default=default, check=POSITIVE,
         help=help + ("" if default is None else " (default %(default)s)"))  # fmt: skip


def add_device(parser: argparse.ArgumentParser, *, default: str | None, help: str = "") -> None:
    """`--device`: cpu, cuda or cuda:<i>."""
    fallback = "cuda if available, else cpu" if default is None else default
    _add(parser, "--device", default=default, help=f"cpu, cuda or cuda:<i>{help} (default: {fallback})")


def add_repeats(parser: argparse.ArgumentParser, *, default: int, help: str) -> None:
    """`--repeats`: timed calls per latency measurement."""
    _add(parser, "--repeats", type=int, default=default, check=POSITIVE, help=f"{help} (default %(default)s)")


def add_out(parser: argparse.ArgumentParser, *, help: str, required: bool = False, default: str | None = None) -> None:
    """`--out`: where the command writes its result."""
    _add(parser, "--out", required=required, default=default, help=help)


def add_plot(parser: argparse.ArgumentParser, *, help: str) -> None:
    """`--plot`: where the command writes its figure(s)."""
    _add(parser, "--plot", help=help)


def add_json(parser: argparse.ArgumentParser) -> None:
    """`--json`: print the results as JSON instead of tables."""
    _add(parser, "--json", action="store_true", help="print the results as JSON instead of tables")


def add_progress(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`: no progress display on stderr (tailor.progress)."""
    _add(parser, "--no-progress", action="store_true", help="no progress display on stderr")


def add_input_shape(parser: argparse.ArgumentParser) -> None:
    """`--input-shape C,H,W`."""
    _add(parser, "--input-shape", help="C,H,W (default: the data's image size, else the model's default)")


def add_num_classes(parser: argparse.ArgumentParser) -> None:
    """`--num-classes`: classes of a registry model built with random weights."""
    _add(parser, "--num-classes", type=int, check=POSITIVE,
         help="registry models only (default 10, or the data's)")  # fmt: skip


def add_profile(parser: argparse.ArgumentParser, *, help: str, required: bool = False) -> None:
    """`--profile`: a profile JSON (`tailor profile`, schema tailor.profile/1)."""
    _add(parser, "--profile", required=required, help=help)


def add_policy(parser: argparse.ArgumentParser, *, help: str, default: str | None = None) -> None:
    """`--policy`: the policy (comma-separated policies, where a command compares several)."""
    _add(parser, "--policy", default=default, help=help)


def add_serving(parser: argparse.ArgumentParser, *, slo_ms: float, queue_capacity: int | None) -> None:
    """What a served or simulated workload shares: `--slo-ms`, `--workers`, `--percentile`, `--queue-capacity`."""
    _add(parser, "--slo-ms", type=float, default=slo_ms, check=POSITIVE_NUMBER,
         help="deadline of a request, ms after its arrival (default %(default)s)")  # fmt: skip
    _add(parser, "--workers", type=int, default=1, check=POSITIVE,
         help="workers, each holding the supernet (default %(default)s)")  # fmt: skip
    _add(parser, "--percentile", default="auto", choices=("auto", "p50", "p90", "p99"),
         help="profile latency percentile the policies plan with (auto: the highest the profile's repeats "
              "support; the choice is printed)")  # fmt: skip
    unbounded = queue_capacity is None
    _add(parser, "--queue-capacity", type=int, default=queue_capacity, check=POSITIVE,
         help="queued requests before new ones are refused" + (" (default unbounded)" if unbounded else
                                                               " (default %(default)s)"))  # fmt: skip


# -- deprecated spellings ----------------------------------------------------------------------------------


class _DeprecatedSpelling(argparse.Action):
    """An old spelling: records what was given; `CommandParser` moves it to the new flag after parsing."""

    def __init__(self, option_strings: list[str], dest: str, target: argparse.Action, new: str, **kwargs: Any) -> None:
        self.target, self.new = target, new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if self.nargs == 0:  # a switch: what the new switch stores
            values = not self.new.startswith("--no-") if isinstance(self.target, argparse.BooleanOptionalAction) \
                else self.target.const  # fmt: skip
        used = getattr(namespace, "_deprecated_spellings", None) or []
        used.append((option_string or self.option_strings[0], self, values))
        namespace._deprecated_spellings = used


def _target(parser: argparse.ArgumentParser, new: str) -> argparse.Action:
    for action in parser._actions:
        if new in action.option_strings or (not action.option_strings and new == action.metavar):
            return action
    raise LookupError(f"{parser.prog}: no flag {new} for a deprecated spelling to stand for")


def add_deprecated_aliases(commands: argparse._SubParsersAction) -> None:
    """Teach each command of `DEPRECATED_FLAGS` its old spellings (hidden from --help)."""
    for entry in DEPRECATED_FLAGS:
        parser = commands.choices[entry.command]
        target = _target(parser, entry.new)
        if not target.option_strings:  # a positional that a flag used to give: the positional becomes optional
            target.nargs, target.default = "?", None
            target.required_value = True  # type: ignore[attr-defined]
        switch = target.nargs == 0
        parser.add_argument(
            entry.old,
            action=_DeprecatedSpelling,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            target=target,
            new=entry.new,
            nargs=0 if switch else None,
            type=None if switch else target.type,
            choices=None if switch else target.choices,
        )


def _apply_deprecated(parser: argparse.ArgumentParser, namespace: Any) -> None:
    used = vars(namespace).pop("_deprecated_spellings", None) or []
    given: dict[str, str] = {}
    for old, alias, value in used:
        target = alias.target
        if target.dest in given and given[target.dest] != old:
            raise UsageError(f"{old} is the deprecated spelling of {alias.new}: give only {alias.new}")
        current = getattr(namespace, target.dest, None)
        if current is not None and current != target.default:
            raise UsageError(f"{old} is the deprecated spelling of {alias.new}: give only {alias.new}")
        setattr(namespace, target.dest, value)
        given[target.dest] = old
        print(f"note: {old} is deprecated; use {alias.new}", file=sys.stderr)
    for action in parser._actions:
        if getattr(action, "required_value", False) and getattr(namespace, action.dest, None) is None:
            raise UsageError(f"{parser.prog}: the {action.metavar} argument is required")


__all__ = [
    "DEPRECATED_FLAGS",
    "FRACTION",
    "NON_NEGATIVE",
    "POSITIVE",
    "POSITIVE_NUMBER",
    "CommandParser",
    "Deprecated",
    "add_batch_size",
    "add_calib_augment",
    "add_calibration",
    "add_checkpoint",
    "add_data",
    "add_deprecated_aliases",
    "add_device",
    "add_input_shape",
    "add_json",
    "add_latency_batch",
    "add_model",
    "add_num_classes",
    "add_out",
    "add_plot",
    "add_policy",
    "add_profile",
    "add_progress",
    "add_random",
    "add_repeats",
    "add_runtime",
    "add_seed",
    "add_serving",
    "add_subnets",
    "add_threads",
    "at_least",
    "checked",
    "one_of",
]
