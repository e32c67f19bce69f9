"""SVG figures for serving studies (no matplotlib): line plots, stacked timelines, attainment/accuracy charts.

Built on the conventions of `tailor.plot.scatter_svg` (same palette, ticks and labels). A line series is a
list of (x, y) points; a y of None or NaN breaks the line (no data in that bin).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tailor.plot import PALETTE, _label, _ticks

Point = tuple[float, float | None]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _axis(values: list[float], log: bool, pad: float) -> tuple[float, float]:
    if log:
        values = [math.log10(v) for v in values]
    lo, hi = min(values), max(values)
    margin = (hi - lo) * pad or 0.5
    return lo - margin, hi + margin


def _panel(
    out: list[str],
    series: Mapping[str, Sequence[Point]],
    box: tuple[float, float, float, float],
    *,
    ylabel: str,
    log_x: bool,
    log_y: bool,
    x_range: tuple[float, float],
    y_range: tuple[float, float] | None,
    markers: bool,
    legend_x: float,
    show_x_ticks: bool,
    points_only: Sequence[str] = (),
) -> None:
    left, top, width, height = box
    ys = [y for values in series.values() for _, y in values if _finite(y)]
    if log_y:
        ys = [y for y in ys if y is not None and y > 0]
    if not ys:
        ys = [0.0, 1.0]
    y0, y1 = y_range if y_range is not None else _axis(ys, log_y, 0.08)  # type: ignore[arg-type]
    if y_range is not None and log_y:
        y0, y1 = math.log10(y0), math.log10(y1)
    x0, x1 = x_range
    fx = math.log10 if log_x else (lambda v: v)
    fy = math.log10 if log_y else (lambda v: v)

    def sx(v: float) -> float:
        return left + (fx(v) - x0) / ((x1 - x0) or 1.0) * width

    def sy(v: float) -> float:
        return top + (1 - (fy(v) - y0) / ((y1 - y0) or 1.0)) * height

    out.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#444"/>')
    yticks = [10**e for e in range(math.floor(y0), math.ceil(y1) + 1) if y0 <= e <= y1] if log_y else _ticks(y0, y1)
    for tick in yticks:
        py = sy(tick)
        out.append(f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left + width}" y2="{py:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    xticks = [10**e for e in range(math.floor(x0), math.ceil(x1) + 1) if x0 <= e <= x1] if log_x else _ticks(x0, x1)
    for tick in xticks:
        px = sx(tick)
        out.append(f'<line x1="{px:.1f}" y1="{top + height}" x2="{px:.1f}" y2="{top + height + 5}" stroke="#444"/>')
        if show_x_ticks:
            out.append(f'<text x="{px:.1f}" y="{top + height + 18}" text-anchor="middle">{_label(tick)}</text>')
    mid = top + height / 2
    out.append(
        f'<text x="16" y="{mid}" text-anchor="middle" transform="rotate(-90 16 {mid})">{html.escape(ylabel)}</text>'
    )
    for index, (label, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for x, y in sorted(values, key=lambda v: v[0]):
            if not _finite(y) or (log_y and y <= 0) or (log_x and x <= 0):  # type: ignore[operator]
                runs.append([])
                continue
            runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")  # type: ignore[arg-type]
        for run in runs:
            if len(run) > 1 and label not in points_only:
                out.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            if markers or len(run) == 1 or label in points_only:
                for coords in run:
                    cx, cy = coords.split(",")
                    out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        ly = top + 14 + 18 * index
        out.append(f'<rect x="{legend_x}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 18}" y="{ly}">{html.escape(label)}</text>')


def _x_range(panels: Sequence[Mapping[str, Sequence[Point]]], log_x: bool) -> tuple[float, float]:
    xs = [x for series in panels for values in series.values() for x, y in values if _finite(y)]
    if log_x:
        xs = [x for x in xs if x > 0]
    if not xs:
        raise ValueError("line plot: no finite points to plot")
    return _axis(xs, log_x, 0.03)


def _write(path: str | os.PathLike[str], out: list[str]) -> Path:
    out.append("</svg>")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target


def line_svg(
    series: Mapping[str, Sequence[Point]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
    markers: bool = True,
    points_only: Sequence[str] = (),
    width: int = 680,
    height: int = 420,
) -> Path:
    """Write `series` ({label: [(x, y), ...]}) as an SVG line plot (points sorted by x; None/NaN breaks a line).

    Series named in `points_only` are drawn as unconnected markers (a scatter within the line plot).
    """
    x_range = _x_range([series], log_x)
    left, right, top, bottom = 70, 190, 40, 55
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + (width - left - right) / 2}" y="22" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
    ]
    plot_w, plot_h = width - left - right, height - top - bottom
    _panel(
        out,
        series,
        (left, top, plot_w, plot_h),
        ylabel=ylabel,
        log_x=log_x,
        log_y=log_y,
        x_range=x_range,
        y_range=y_range,
        markers=markers,
        legend_x=left + plot_w + 12,
        show_x_ticks=True,
        points_only=points_only,
    )
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">{html.escape(xlabel)}</text>')
    return _write(path, out)


def panels_svg(
    panels: Sequence[tuple[str, Mapping[str, Sequence[Point]]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "",
    width: int = 760,
    panel_height: int = 150,
) -> Path:
    """Stacked line panels sharing one x axis: [(ylabel, {label: points}), ...], e.g. a timeline."""
    if not panels:
        raise ValueError("panels_svg: no panels")
    x_range = _x_range([series for _, series in panels], False)
    left, right, top, gap, bottom = 70, 190, 40, 18, 50
    height = top + len(panels) * panel_height + (len(panels) - 1) * gap + bottom
    plot_w = width - left - right
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + plot_w / 2}" y="22" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
    ]
    for index, (ylabel, series) in enumerate(panels):
        y = top + index * (panel_height + gap)
        _panel(
            out,
            series,
            (left, y, plot_w, panel_height),
            ylabel=ylabel,
            log_x=False,
            log_y=False,
            x_range=x_range,
            y_range=None,
            markers=False,
            legend_x=left + plot_w + 12,
            show_x_ticks=index == len(panels) - 1,
        )
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">{html.escape(xlabel)}</text>')
    return _write(path, out)


def timeline_svg(results: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Timeline of one trace under several policies ({label: SimResult}): load, queue, misses, accuracy, subnet."""
    if not results:
        raise ValueError("timeline_svg: no results")
    first = next(iter(results.values()))
    t = first.series["t_s"]
    load = {"arrivals/s": list(zip(t, first.series["arrival_rate"]))}
    queue = {label: list(zip(r.series["t_s"], r.series["queue_max"])) for label, r in results.items()}
    missed = {
        label: [
            (x, m / max(a * (t[1] - t[0] if len(t) > 1 else 1.0), 1e-12) if a else None)
            for x, m, a in zip(r.series["t_s"], r.series["missed"], r.series["arrival_rate"])
        ]
        for label, r in results.items()
    }
    accuracy = {
        label: [(x, None if a is None else 100 * a) for x, a in zip(r.series["t_s"], r.series["accuracy"])]
        for label, r in results.items()
    }
    subnet = {
        label: [(x, None if s < 0 else s) for x, s in zip(r.series["t_s"], r.series["subnet"])]
        for label, r in results.items()
    }
    return panels_svg(
        [
            ("arrivals / s", load),
            ("max queue length", queue),
            ("fraction missed", missed),
            ("accuracy on time (%)", accuracy),
            ("main subnet (0 = fastest)", subnet),
        ],
        path,
        title=title,
        xlabel="time (s)",
    )
