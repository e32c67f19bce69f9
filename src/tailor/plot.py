"""Dependency-free SVG scatter/line plots for benchmark and report figures (accuracy vs MACs, latency, ...).

Matplotlib is not a dependency: a figure here is a few labelled series on linear or log axes, which
plain SVG renders in any browser and diffs cleanly in version control.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _label(value: float) -> str:
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
        return f"{value:.2g}"
    return f"{value:g}"


def scatter_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    lines: Sequence[str] = (),
    width: int = 640,
    height: int = 420,
) -> Path:
    """Write `series` ({label: [(x, y), ...]}) as an SVG scatter plot; labels in `lines` are also joined by lines."""
    points = [(x, y) for values in series.values() for x, y in values]
    if not points:
        raise ValueError("scatter_svg: no points to plot")
    if log_x and any(x <= 0 for x, _ in points):
        raise ValueError("scatter_svg: log_x needs positive x values")
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs = [fx(x) for x, _ in points]
    ys = [y for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_x = (x1 - x0) * 0.05 or 0.5
    pad_y = (y1 - y0) * 0.08 or 0.5
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
    left, right, top, bottom = 70, 170, 40, 55
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (fx(v) - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + plot_w / 2}" y="22" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>',
    ]
    if log_x:
        xticks = [10**e for e in range(math.floor(x0), math.ceil(x1) + 1) if x0 <= e <= x1] or [10**x0]
    else:
        xticks = _ticks(x0, x1)
    for tick in xticks:
        px = sx(tick)
        out.append(f'<line x1="{px:.1f}" y1="{top + plot_h}" x2="{px:.1f}" y2="{top + plot_h + 5}" stroke="#444"/>')
        out.append(f'<text x="{px:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_label(tick)}</text>')
    for tick in _ticks(y0, y1):
        py = sy(tick)
        out.append(f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left + plot_w}" y2="{py:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 16 {top + plot_h / 2})">'
        f"{html.escape(ylabel)}</text>"
    )
    for index, (label, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        if label in lines and len(values) > 1:
            ordered = sorted(values)
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ordered)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y in values:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}" fill-opacity="0.8"/>')
        ly = top + 14 + 18 * index
        out.append(f'<circle cx="{left + plot_w + 16}" cy="{ly - 4}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{left + plot_w + 26}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target
