"""One spelling per flag: the `tailor` commands spell a concept one way, the old spellings are accepted (with a
note) and listed in one table, and the READMEs show only the current ones.

These tests read the parser `tailor.cli.build_parser()` builds, so a command that adds a flag of its own where
a shared one exists, or a second spelling of a shared concept, fails here rather than drifting.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

import tailor
from tailor.cli import build_parser, main
from tailor.cli_args import DEPRECATED_FLAGS, POSITIVE
from tailor.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
READMES = sorted(p for p in [ROOT / "README.md", *(ROOT / "src").rglob("README.md")] if p.is_file())

# what each command needs besides the flag under test, so that parsing gets as far as the checks
REQUIRED: dict[str, list[str]] = {
    "train": ["--out", "o"],
    "calibrate": ["ck"],
    "profile": ["ck", "--out", "o"],
    "export": ["ck", "--out", "o"],
    "search": ["ck", "--out", "o"],
    "route": ["ck"],
    "serve": ["ck", "--profile", "p"],
    "replay": ["--profile", "p"],
    "actuate": [],
    "demo": [],
}

# a deprecated spelling that another command still uses for a concept of its own: search's old --cost (where
# latency comes from, now --latency-source) is not route's --cost (what a stage costs: latency or MACs)
LIVE_ELSEWHERE = {"--cost": {"route"}}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _live_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every flag --help shows (deprecated spellings are hidden), by spelling."""
    return {
        flag: action
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for flag in action.option_strings
    }


def test_a_flag_several_commands_take_is_declared_once_in_cli_args() -> None:
    users: dict[str, list[tuple[str, argparse.Action]]] = defaultdict(list)
    for name, parser in _commands().items():
        for flag, action in _live_flags(parser).items():
            users[flag].append((name, action))
    shared = {flag: uses for flag, uses in users.items() if len(uses) > 1}
    assert {"--data", "--calib-batches", "--batch-size", "--threads", "--seed", "--out", "--subnet"} <= set(shared)
    local = [f"{flag} in {name}" for flag, uses in shared.items() for name, a in uses if not getattr(a, "shared", 0)]
    assert not local, f"declare these with a tailor.cli_args helper: {local}"


def test_no_two_live_flags_differ_only_in_number() -> None:
    spellings = {flag for parser in _commands().values() for flag in _live_flags(parser)}
    plurals = sorted(f for f in spellings if f.endswith("s") and f[:-1] in spellings)
    assert not plurals, f"one concept, two spellings: {[(p[:-1], p) for p in plurals]}"


def test_every_checkpoint_a_command_reads_is_its_positional_argument() -> None:
    commands = _commands()
    for name, parser in commands.items():
        assert "--checkpoint" not in _live_flags(parser), name
    for name in ("calibrate", "profile", "export", "search", "route", "serve"):
        positional = [a for a in commands[name]._actions if not a.option_strings]
        assert positional and positional[0].metavar == "CHECKPOINT", name


def _sample(action: argparse.Action) -> tuple[list[str], object]:
    """Arguments that give `action` a value, and the value it then holds."""
    if action.nargs == 0:
        return [], None
    if action.choices:
        choice = next(iter(action.choices))
        return [str(choice)], choice
    if action.type is int:
        return ["3"], 3
    return ["smallest,largest"], "smallest,largest"


@pytest.mark.parametrize("entry", DEPRECATED_FLAGS, ids=[f"{e.command} {e.old}" for e in DEPRECATED_FLAGS])
def test_a_deprecated_spelling_still_works_and_says_so_in_one_line(entry, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _commands()[entry.command]
    assert entry.old not in _live_flags(parser), "hidden from --help"
    assert not re.search(rf"{re.escape(entry.old)}(?![-\w])", parser.format_help())
    alias = next(a for a in parser._actions if entry.old in a.option_strings)
    target = alias.target
    words, value = _sample(target)
    if target.nargs == 0:
        value = target.const if not isinstance(target, argparse.BooleanOptionalAction) else not entry.new.startswith("--no-")
    required = [w for w in REQUIRED[entry.command] if not (w == "ck" and entry.new == "CHECKPOINT")]
    args = build_parser().parse_args([entry.command, *required, entry.old, *words])
    assert getattr(args, target.dest) == value
    assert capsys.readouterr().err == f"note: {entry.old} is deprecated; use {entry.new}\n"
    for other, commands in LIVE_ELSEWHERE.items():
        assert entry.old != other or entry.command not in commands
    for name, other_parser in _commands().items():
        if entry.old in _live_flags(other_parser):
            assert name in LIVE_ELSEWHERE.get(entry.old, set()), f"{entry.old} is live in {name} too"


def test_the_old_and_the_new_spelling_together_are_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert issubclass(tailor.UsageError, tailor.TailorError) and issubclass(tailor.UsageError, ValueError)
    with pytest.raises(UsageError, match="--runtimes is the deprecated spelling of --runtime: give only --runtime"):
        build_parser().parse_args(["profile", "ck", "--out", "o", "--runtime", "torch", "--runtimes", "onnxruntime"])
    assert main(["serve", "ck", "--profile", "p", "--checkpoint", "ck2"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --checkpoint is the deprecated spelling of CHECKPOINT: give only CHECKPOINT"
    )
    assert main(["serve", "--profile", "p"]) == 2
    assert capsys.readouterr().err == "error: tailor serve: the CHECKPOINT argument is required\n"


def _positive_flags() -> list[tuple[str, str]]:
    return [
        (name, action.option_strings[0])
        for name, parser in _commands().items()
        for action in parser._actions
        if getattr(action, "check", None) is POSITIVE and action.option_strings
    ]


@pytest.mark.parametrize(("command", "flag"), _positive_flags())
def test_a_count_below_one_is_one_error_line_naming_the_flag(command: str, flag: str, capsys) -> None:
    assert main([command, *REQUIRED[command], flag, "0"]) == 2
    assert capsys.readouterr().err == f"error: {flag} must be a positive integer, got 0\n"


def test_every_deprecated_spelling_is_documented_as_such() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("### Deprecated spellings") :]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for entry in DEPRECATED_FLAGS:
        assert any(
            row.startswith(f"| `{entry.old}` | `{entry.new}` |") and re.search(rf"\b{entry.command}\b", row)
            for row in rows
        ), entry


def _shell_blocks(text: str) -> list[str]:
    """The fenced blocks that are not Python (shell commands, or none named)."""
    blocks, current, language = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "shell", "console"):
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _readme_command_lines() -> list[tuple[str, str, bool]]:
    """(README, command, whether a shell block shows it in full) for every `tailor ...` line of a shell block
    and every `tailor ...` in backticks (often a fragment: `tailor profile --runtime`)."""
    found = []
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        for block in _shell_blocks(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"^\s*(\w+=\S+\s+)*", "", line.split("  #")[0]).strip()
                if line.startswith("tailor "):
                    found.append((readme.relative_to(ROOT).as_posix(), line, True))
        for inline in re.findall(r"`(tailor [a-z][^`]*)`", text.replace("\n", " ")):
            found.append((readme.relative_to(ROOT).as_posix(), inline, False))
    return found


def test_the_readmes_use_only_current_spellings() -> None:
    old = {(e.command, e.old) for e in DEPRECATED_FLAGS}
    stale = []
    for readme, line, _ in _readme_command_lines():
        words = line.split()
        command = words[1] if len(words) > 1 else ""
        stale += [f"{readme}: {line}" for w in words[2:] if (command, w.split("=")[0]) in old]
    assert not stale, "\n".join(stale)


def test_the_readmes_command_lines_parse() -> None:
    commands = _commands()
    checked = 0
    for readme, line, in_full in _readme_command_lines():
        words = shlex.split(line)
        if not in_full or len(words) < 3 or words[1] not in commands or "..." in line or "[" in line:
            continue  # a fragment (`tailor serve ... --cluster ray`) or a usage synopsis (`[--budget 100]`)
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exc:
            raise AssertionError(f"{readme}: {line!r} does not parse") from exc
        checked += 1
    assert checked >= 15, "the READMEs show the commands in full"
