"""Every figure tailor draws (report, benchmarks, routing, serving), with matplotlib, as PNG, SVG or PDF.

One module holds the conventions the figures share: an `Axis` says how an axis shows its values
(percent for accuracies and attainment, whole-number ticks for counts, named ticks such as subnet ids,
log scale); series are `{label: [(x, y), ...]}` with `None`/NaN for a gap; the legend sits below the
axes, outside them, so it never hides data and is never clipped. Figures are built on
`matplotlib.figure.Figure` directly, not pyplot: drawing one switches no backend, registers no open
figure and leaves the caller's rcParams as they were (tailor's style applies only while it draws).
The file type follows the path's suffix.
"""

from __future__ import annotations

import math
import numbers
import os
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedFormatter,
    FixedLocator,
    LogFormatter,
    MaxNLocator,
    NullLocator,
    PercentFormatter,
)

from tailor.errors import TailorError

FORMATS = ("png", "svg", "pdf")
Point = tuple[float, float | None]
Series = Mapping[str, Sequence[Point]]

# Applied only while a figure is built and saved (matplotlib.rc_context restores the caller's settings).
_STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.fonttype": "none",  # text stays text: searchable, smaller, and the browser's fonts render it
    "svg.hashsalt": "tailor",  # stable ids: the same figure gives the same SVG (clean diffs)
    "savefig.dpi": 150,
}
_WRAP = 80  # characters per title line


class PlotError(TailorError, ValueError):
    """A figure cannot be drawn as asked (no points, a bad value on a log axis, an unknown file type)."""


@dataclass(frozen=True)
class Axis:
    """How an axis shows its values.

    `percent`: the values are fractions (0.9) shown as percent (90%). `integer`: ticks at whole numbers
    only. `names`: a tick at each position i = 0, 1, ... labelled `names[i]` (e.g. subnet ids).
    `limits`: fixed (low, high), None for an end matplotlib fits to the data.
    """

    label: str = ""
    log: bool = False
    percent: bool = False
    integer: bool = False
    names: Sequence[str] | None = None
    limits: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class Panel:
    """One of several stacked axes sharing x (`panels_figure`): its series, its y axis and how lines are drawn.

    `lines`: labels joined by lines in x order (True: every series); the others are markers only.
    `steps`: lines as steps (the value holds until the next point), for piecewise-constant data.
    """

    series: Series
    y: Axis = field(default_factory=Axis)
    lines: Sequence[str] | bool = True
    markers: bool = False
    steps: bool = False


class _PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written as plain numbers (0.01, 2, 1000) not 1e-02,
    or as percent of fractions (0.0001%, 1%, 100%) when `percent`."""

    def __init__(self, *, percent: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.percent = percent

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not super().__call__(x, pos):
            return ""
        return f"{100 * x:g}%" if self.percent else f"{x:g}"


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


def _colours(labels: Sequence[str], fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A distinct colour per label (tab10, or tab20 beyond ten series); `fixed` ({label: colour}) takes precedence
    and its colours are not handed to other labels."""
    fixed = dict(fixed or {})
    free = [label for label in labels if label not in fixed]
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    taken = {matplotlib.colors.to_hex(c) for c in fixed.values()}
    palette = [c for c in (cmap(i) for i in range(cmap.N)) if matplotlib.colors.to_hex(c) not in taken] or [cmap(0)]
    return {**{label: palette[i % len(palette)] for i, label in enumerate(free)}, **fixed}


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def _check(series: Series, x: Axis, y: Axis, where: str) -> int:
    """The number of drawable points; PlotError names a series with a point the axes cannot show."""
    finite = 0
    for label, points in series.items():
        for px, py in points:
            if not isinstance(px, numbers.Real) or not math.isfinite(px):
                raise PlotError(f"{where}: series {label!r} has a non-finite x value {px!r}")
            if py is not None and not isinstance(py, numbers.Real):
                raise PlotError(f"{where}: series {label!r} has a non-numeric y value {py!r}")
            if py is None or not math.isfinite(py):
                continue
            finite += 1
            if x.log and px <= 0:
                raise PlotError(f"{where}: series {label!r} has x = {px!r}, which a log axis cannot show")
            if y.log and py <= 0:
                raise PlotError(f"{where}: series {label!r} has y = {py!r}, which a log axis cannot show")
    return finite


def _apply_axis(ax: Any, axis: Axis, which: str) -> None:
    getattr(ax, f"set_{which}label")(axis.label)
    target = ax.xaxis if which == "x" else ax.yaxis
    if axis.log:
        getattr(ax, f"set_{which}scale")("log")
        # plain numbers (2, 50, 1000) rather than 2×10⁰; minor ticks labelled only when the axis spans few decades
        target.set_major_formatter(_PlainLogFormatter(percent=axis.percent, labelOnlyBase=False))
        target.set_minor_formatter(
            _PlainLogFormatter(percent=axis.percent, labelOnlyBase=False, minor_thresholds=(2, 0.5))
        )
    if axis.names is not None:
        positions = list(range(len(axis.names)))
        target.set_major_locator(FixedLocator(positions))
        target.set_major_formatter(FixedFormatter(list(axis.names)))
        target.set_minor_locator(NullLocator())
        getattr(ax, f"set_{which}lim")(-0.5, len(axis.names) - 0.5)
    elif axis.integer:
        target.set_major_locator(MaxNLocator(integer=True))
    if axis.percent and not axis.log:
        target.set_major_formatter(PercentFormatter(xmax=1.0))
    if axis.limits is not None:
        getattr(ax, f"set_{which}lim")(*axis.limits)


def _draw(
    ax: Any, label: str, points: Sequence[Point], colour: Any, *, line: bool, marker: bool, steps: bool, index: int = 0
) -> None:
    ordered = sorted(points, key=lambda p: p[0]) if line else list(points)
    xs = [float(p[0]) for p in ordered]
    ys = [math.nan if p[1] is None else float(p[1]) for p in ordered]
    if not line:  # markers only: a shape per series, later ones smaller, so points that coincide all show
        shape, size = _MARKERS[index % len(_MARKERS)], max(5.5, 9.5 - 0.8 * index)
        ax.plot(xs, ys, linestyle="none", marker=shape, markersize=size, alpha=0.85, color=colour, label=label,
                markeredgecolor="white", markeredgewidth=0.6)  # fmt: skip
        return
    lone = sum(1 for v in ys if math.isfinite(v)) == 1
    ax.plot(xs, ys, color=colour, linewidth=1.6, label=label, drawstyle="steps-post" if steps else "default",
            marker="o" if (marker or lone) else None, markersize=6 if lone else 3.5)  # fmt: skip


def _figure(size: tuple[float, float]) -> Figure:
    """A figure whose layout keeps every label, title and legend inside it, with a margin (0.08 in) to spare
    for a browser whose font runs a little wider than matplotlib's."""
    fig = Figure(figsize=size, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.08, h_pad=0.08)
    return fig


def _legend(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    """One legend below the axes (outside them): never over the data, never cut off (constrained layout)."""
    if not labels:
        return
    longest = max(len(label) for label in labels)
    columns = max(1, min(len(labels), 96 // (longest + 8)))
    rows = math.ceil(len(labels) / columns)
    if rows > 2:  # a tall legend gets its own room instead of squeezing the axes
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + 0.22 * (rows - 2))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns)


def _title(ax: Any, title: str) -> None:
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, _WRAP)))


def _joined(lines: Sequence[str] | bool, label: str) -> bool:
    return lines if isinstance(lines, bool) else label in lines


def xy_figure(
    series: Series,
    *,
    title: str = "",
    x: Axis | None = None,
    y: Axis | None = None,
    lines: Sequence[str] | bool = (),
    markers: bool = True,
    hlines: Mapping[str, float] | None = None,
    vlines: Mapping[str, float] | None = None,
    colours: Mapping[str, Any] | None = None,
    size: tuple[float, float] = (7.5, 4.8),
) -> Figure:
    """A figure of `series` on one pair of axes; labels in `lines` are joined in x order, the others are markers.

    `hlines`/`vlines` ({label: value}) add dashed reference lines, listed in the legend; `colours` ({label:
    matplotlib colour}) pins series' colours (e.g. one colour per policy across figures). Save with `save_figure`.
    """
    x, y = x or Axis(), y or Axis()
    if not _check(series, x, y, "plot"):
        raise PlotError("plot: no points to plot")
    with _style():
        fig = _figure(size)
        ax = fig.add_subplot()
        palette = _colours(list(series), colours)
        for index, (label, points) in enumerate(series.items()):
            _draw(ax, label, points, palette[label], line=_joined(lines, label), marker=markers, steps=False,
                  index=index)  # fmt: skip
        for label, value in (hlines or {}).items():
            ax.axhline(value, color="0.35", linestyle="--", linewidth=1.0, label=label)
        for label, value in (vlines or {}).items():
            ax.axvline(value, color="0.35", linestyle=":", linewidth=1.2, label=label)
        _apply_axis(ax, x, "x")
        _apply_axis(ax, y, "y")
        _title(ax, title)
        handles, labels = ax.get_legend_handles_labels()
        _legend(fig, handles, labels)
    return fig


def panels_figure(
    panels: Sequence[Panel],
    *,
    title: str = "",
    x: Axis | None = None,
    colours: Mapping[str, Any] | None = None,
    width: float = 8.0,
    panel_height: float = 1.7,
) -> Figure:
    """Stacked panels sharing one x axis (e.g. a timeline); one legend for all, a series keeps its colour in
    every panel (`colours` pins some, as in `xy_figure`)."""
    if not panels:
        raise PlotError("panels: no panels to draw")
    x = x or Axis()
    drawable = [_check(p.series, x, p.y, f"panel {i} ({p.y.label or 'unnamed'})") for i, p in enumerate(panels)]
    if not any(drawable):
        raise PlotError("panels: no points to plot")
    order: list[str] = []
    for panel in panels:
        order.extend(label for label in panel.series if label not in order)
    palette = _colours(order, colours)
    with _style():
        fig = _figure((width, 1.4 + panel_height * len(panels)))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        seen: dict[str, Any] = {}
        for ax, panel in zip(axes, panels):
            for index, (label, points) in enumerate(panel.series.items()):
                line = _joined(panel.lines, label)
                _draw(ax, label, points, palette[label], line=line, marker=panel.markers, steps=panel.steps,
                      index=index)  # fmt: skip
            _apply_axis(ax, panel.y, "y")
            for handle, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, handle)
        for ax in axes[:-1]:
            ax.set_xlabel("")
        _apply_axis(axes[-1], x, "x")
        _title(axes[0], title)
        _legend(fig, list(seen.values()), list(seen))
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` to `path` (PNG, SVG or PDF by suffix; folders created); returns the path."""
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise PlotError(f"cannot write a figure as {target.suffix or 'a file without suffix'!r} ({target}): "
                        f"use one of {', '.join('.' + f for f in FORMATS)}")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if kind in ("svg", "pdf") else {}
    with _style():
        fig.savefig(target, format=kind, metadata=metadata, facecolor="white")
    return target


def xy_plot(series: Series, path: str | os.PathLike[str], **options: Any) -> Path:
    """`xy_figure(series, **options)` written to `path` (PNG, SVG or PDF by suffix)."""
    return save_figure(xy_figure(series, **options), path)


def panels_plot(panels: Sequence[Panel], path: str | os.PathLike[str], **options: Any) -> Path:
    """`panels_figure(panels, **options)` written to `path`."""
    return save_figure(panels_figure(panels, **options), path)


def _series_of(result: Any) -> Mapping[str, Sequence[Any]]:
    series = result.get("series") if isinstance(result, Mapping) else getattr(result, "series", None)
    if not series or "t_s" not in series:
        raise PlotError("timeline: a result has no time series (simulate(...).series or to_dict(series=True))")
    return series


def timeline_panels(results: Mapping[str, Any], subnet_ids: Sequence[str] | None = None) -> list[Panel]:
    """Panels of serving over time for one trace under several policies: load, queue, misses, accuracy, subnet.

    `results`: {label: SimResult, or its `to_dict()` with series}. The subnet panel shows, per time bin, the
    subnet that served most requests; `subnet_ids` (the serving profile's, least accurate first) names its
    ticks, otherwise they are the subnets' positions (0 = least accurate).
    """
    if not results:
        raise PlotError("timeline: no results")
    series = {label: _series_of(r) for label, r in results.items()}
    first = next(iter(series.values()))
    t = [float(v) for v in first["t_s"]]
    width = t[1] - t[0] if len(t) > 1 else 1.0
    load = {"arrivals": list(zip(t, first["arrival_rate"]))}
    queue = {label: list(zip(s["t_s"], s["queue_max"])) for label, s in series.items()}
    missed = {
        label: [(x, m / (a * width) if a else None) for x, m, a in zip(s["t_s"], s["missed"], s["arrival_rate"])]
        for label, s in series.items()
    }
    accuracy = {label: list(zip(s["t_s"], s["accuracy"])) for label, s in series.items()}
    subnet = {
        label: [(x, None if v is None or v < 0 else v) for x, v in zip(s["t_s"], s["subnet"])]
        for label, s in series.items()
    }
    top = max((v for points in subnet.values() for _, v in points if v is not None), default=0)
    if subnet_ids is not None and top >= len(subnet_ids):
        raise PlotError(f"timeline: subnet position {top} but only {len(subnet_ids)} subnet ids")
    names = list(subnet_ids) if subnet_ids is not None else [str(i) for i in range(int(top) + 1)]
    return [
        Panel(load, Axis("arrivals / s")),
        Panel(queue, Axis("max queue length", integer=True)),
        Panel(missed, Axis("missed the SLO", percent=True, limits=(0.0, None))),
        Panel(accuracy, Axis("accuracy on time", percent=True)),
        Panel(subnet, Axis("subnet serving most", names=names), steps=True),
    ]


def timeline_plot(
    results: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    subnet_ids: Sequence[str] | None = None,
    colours: Mapping[str, Any] | None = None,
) -> Path:
    """`timeline_panels(results, subnet_ids)` drawn as one figure with a time axis in seconds (arrivals in grey)."""
    panels = timeline_panels(results, subnet_ids)
    pinned = {"arrivals": "tab:gray", **(colours or {})}
    return save_figure(panels_figure(panels, title=title, x=Axis("time (s)"), colours=pinned), path)


__all__ = [
    "FORMATS",
    "Axis",
    "Panel",
    "PlotError",
    "panels_figure",
    "panels_plot",
    "save_figure",
    "timeline_panels",
    "timeline_plot",
    "xy_figure",
    "xy_plot",
]
