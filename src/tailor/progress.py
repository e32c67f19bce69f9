"""Every progress display tailor shows (training, search, profiling, calibration, replay), drawn by tqdm.

`Progress(label, total)` is called with the absolute number of steps done (`progress(done, total, info)`),
so it is also the `progress(done, total)` callback the library's long loops take. On a terminal it is
tqdm's redrawn bar with rate and ETA. When stderr is a log, a pipe or CI, a redrawn line would show
nothing until the end (or a wall of carriage returns), so it prints a full line instead: at the start,
every `line_every` of the total or every `line_interval_s` seconds, whichever comes first, and at the end.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _LineBar(tqdm):  # type: ignore[type-arg]
    """tqdm for a stream that is not a terminal: full lines, at the start, every so often, and at the end."""

    def __init__(self, *args: Any, line_every: float, line_interval_s: float, **kwargs: Any) -> None:
        self._line_every, self._line_interval_s = line_every, line_interval_s
        self._line_n: float | None = None
        self._line_t = 0.0
        super().__init__(*args, **kwargs)

    def _emit(self) -> None:
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        self._line_n, self._line_t = self.n, self._time()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # tqdm asks to clear the line: a log has nothing to clear
            return False
        total, last = self.total, self._line_n
        if last is None:
            self._emit()
        elif self.n != last and (
            (total is not None and (self.n >= total or self.n - last >= self._line_every * total))
            or self._time() - self._line_t >= self._line_interval_s
        ):
            self._emit()
        return True

    def close(self) -> None:
        if not self.disable and self._line_n != self.n:
            self._emit()  # the final count, whatever the throttle said
        super().close()


class Progress:
    """A progress display on stderr (tqdm): a bar with rate and ETA on a terminal, full lines otherwise.

    `progress(done, total=None, info="")` reports `done` steps (absolute) with an optional status text;
    reaching `total` closes the display (so a plain `progress(done, total)` callback needs no `close`).
    `enabled=False` shows nothing. `stream` defaults to `sys.stderr` at construction.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        enabled: bool = True,
        *,
        unit: str = "it",
        initial: int = 0,
        stream: TextIO | None = None,
        line_every: float = 0.25,
        line_interval_s: float = 10.0,
    ) -> None:
        self.label, self.total, self.enabled, self.unit, self.initial = label, total, enabled, unit, initial
        self.stream = stream if stream is not None else sys.stderr
        self.line_every, self.line_interval_s = line_every, line_interval_s
        self._bar: tqdm | None = None  # type: ignore[type-arg]
        self._closed = False
        if enabled and total is not None:
            self._open()

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _open(self) -> tqdm:  # type: ignore[type-arg]
        common: dict[str, Any] = dict(desc=self.label, total=self.total, unit=self.unit, initial=self.initial,
                                      file=self.stream)  # fmt: skip
        if self.is_terminal:
            self._bar = tqdm(**common, dynamic_ncols=True, mininterval=0.25, leave=True)
        else:
            if self.total is not None:
                common["bar_format"] = _LINE_FORMAT
            self._bar = _LineBar(**common, mininterval=0, miniters=1, leave=False, ascii=True,
                                 line_every=self.line_every, line_interval_s=self.line_interval_s)  # fmt: skip
        return self._bar

    def __call__(self, done: int, total: int | None = None, info: str = "") -> None:
        """Report that `done` steps (of `total`, if it changed) are done; `info` is shown after the counts."""
        if not self.enabled or self._closed:
            return
        bar = self._bar
        if total is not None and total != self.total:
            self.total = total
            if bar is not None:
                bar.total = total
        if bar is None:  # opened by its first report: start the count there, so the rate is not from zero time
            self.initial = done
            bar = self._open()
        if info:
            bar.set_postfix_str(info, refresh=False)
        bar.update(done - bar.n)
        if self.total is not None and done >= self.total:
            self.close()

    def close(self) -> None:
        """End the display (the last count stays on screen); calling it again does nothing."""
        if self._bar is not None and not self._closed:
            self._bar.close()
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Progress"]
