"""tailor.progress: tqdm's bar on a terminal, full lines in a log (start, every share of the total, end), ETA."""

from __future__ import annotations

import io
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_at_start_every_quarter_and_end() -> None:
    log = io.StringIO()
    progress = Progress("epoch 1/2", 20, stream=log, unit="step", line_interval_s=1e9)
    for step in range(1, 21):
        progress(step, info=f"loss={1 / step:.3f}")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    counts = [int(re.search(r" (\d+)/20 ", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert counts == [0, 5, 10, 15, 20]
    assert all(line.startswith("epoch 1/2: ") for line in lines)
    assert "100%" in lines[-1] and "loss=0.050" in lines[-1]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", lines[2]), "elapsed<remaining: an ETA"


def test_a_log_gets_a_line_per_step_when_steps_are_slow() -> None:
    log = io.StringIO()
    progress = Progress("search", 4, stream=log, line_every=1.0, line_interval_s=0.0)
    for done in range(1, 5):
        progress(done)
    assert len(log.getvalue().splitlines()) == 5, "the start and one line per step"


def test_a_terminal_gets_a_redrawn_bar() -> None:
    screen = Terminal()
    with Progress("timing", 3, stream=screen, unit="run") as progress:
        for done in range(1, 4):
            progress(done)
    text = screen.getvalue()
    assert text.count("\r") >= 2 and text.endswith("\n") and text.count("\n") == 1
    assert "3/3" in text and "run" in text


def test_a_callback_gets_its_total_on_the_first_call_and_closes_itself() -> None:
    log = io.StringIO()
    callback = Progress("timing", stream=log)
    assert log.getvalue() == "", "nothing is shown before the first report"
    for done in range(1, 9):
        callback(done, 8)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("timing:") and " 1/8 " in lines[0]
    assert " 8/8 " in lines[-1]
    callback(8, 8)  # after the end: ignored
    assert log.getvalue().splitlines() == lines


def test_disabled_shows_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress("quiet", 5, enabled=False)
    for done in range(6):
        progress(done)
    progress.close()
    assert capsys.readouterr().err == ""


def test_resuming_starts_the_count_where_it_left_off() -> None:
    log = io.StringIO()
    progress = Progress("epoch 3/4", 10, stream=log, initial=6, line_every=1.0, line_interval_s=1e9)
    for step in range(7, 11):
        progress(step)
    lines = log.getvalue().splitlines()
    assert " 6/10 " in lines[0] and " 10/10 " in lines[-1] and len(lines) == 2


def test_closing_early_prints_the_last_count() -> None:
    log = io.StringIO()
    progress = Progress("train", 100, stream=log, line_interval_s=1e9)
    progress(3)
    progress.close()
    assert " 3/100 " in log.getvalue().splitlines()[-1]


@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 400), every=st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0]))
def test_lines_are_bounded_by_the_share_rule(total: int, every: float) -> None:
    log = io.StringIO()
    progress = Progress("x", total, stream=log, line_every=every, line_interval_s=1e9)
    for done in range(1, total + 1):
        progress(done)
    counts = [int(re.search(r" (\d+)/\d+ ", line).group(1)) for line in log.getvalue().splitlines()]  # type: ignore[union-attr]
    assert counts[0] == 0 and counts[-1] == total
    assert counts == sorted(set(counts)), "each line a new count"
    gaps = [b - a for a, b in itertools.pairwise(counts)]
    assert all(gap <= every * total + 1 for gap in gaps), "a line at least every share of the total"
    assert len(counts) <= 2 + round(1 / every), "and not many more"
