"""A small PNG line/scatter plotter on Pillow (matplotlib is not a dependency).

`line_plot_png(series, path, ...)` draws labelled series of (x, y) points on linear axes with ticks,
grid lines and a legend; labels in `lines` are joined by lines (sorted by x), the others are markers.
Good enough for the accuracy-vs-latency and escalation-vs-threshold figures; vector figures are
`tailor.plot.scatter_svg`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207), (127, 127, 127), (188, 189, 34), (0, 0, 0), (255, 187, 120),
           (152, 223, 138), (197, 176, 213), (196, 156, 148), (158, 218, 229))  # fmt: skip


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap default font has one size
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"nice_ticks: bounds must be finite, got {low}, {high}")
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _format(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2g}"
    return f"{value:.6g}"


def line_plot_png(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    lines: Sequence[str] = (),
    width: int = 1120,
    height: int = 640,
    vlines: Mapping[str, float] | None = None,
) -> Path:
    """Write `series` ({label: [(x, y), ...]}) as a PNG; `vlines` ({label: x}) adds dashed vertical markers."""
    points = [(x, y) for values in series.values() for x, y in values]
    if not points:
        raise ValueError("line_plot_png: no points to plot")
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in points):
        raise ValueError("line_plot_png: points must be finite")
    xs = [x for x, _ in points] + list((vlines or {}).values())
    ys = [y for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad_x = (x1 - x0) * 0.04 or 0.5
    pad_y = (y1 - y0) * 0.06 or 0.5
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
    left, right, top, bottom = 90, 380, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, normal, large = _font(13), _font(15), _font(18)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * plot_h

    for tick in nice_ticks(x0, x1):
        px = sx(tick)
        draw.line([(px, top), (px, top + plot_h)], fill=(232, 232, 232))
        draw.line([(px, top + plot_h), (px, top + plot_h + 5)], fill=(60, 60, 60))
        draw.text((px, top + plot_h + 8), _format(tick), fill="black", font=small, anchor="ma")
    for tick in nice_ticks(y0, y1):
        py = sy(tick)
        draw.line([(left, py), (left + plot_w, py)], fill=(232, 232, 232))
        draw.line([(left - 5, py), (left, py)], fill=(60, 60, 60))
        draw.text((left - 8, py), _format(tick), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(60, 60, 60))
    draw.text((left + plot_w / 2, 16), title, fill="black", font=large, anchor="ma")
    draw.text((left + plot_w / 2, height - 24), xlabel, fill="black", font=normal, anchor="ma")
    label_box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), ylabel or " ", font=normal)
    label_img = Image.new("RGB", (label_box[2] + 4, label_box[3] + 4), "white")
    ImageDraw.Draw(label_img).text((2, 2), ylabel, fill="black", font=normal)
    rotated = label_img.rotate(90, expand=True)
    image.paste(rotated, (12, int(top + plot_h / 2 - rotated.height / 2)))

    for index, (label, x) in enumerate((vlines or {}).items()):
        px = sx(x)
        for y in range(top, top + plot_h, 10):
            draw.line([(px, y), (px, min(y + 5, top + plot_h))], fill=(90, 90, 90), width=1)
        draw.text((px + 4, top + 4 + 16 * index), label, fill=(90, 90, 90), font=small)

    legend_y = top + 8
    for index, (label, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        coords = [(sx(x), sy(y)) for x, y in (sorted(values) if label in lines else values)]
        if label in lines and len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        radius = 3 if label in lines else 5
        for px, py in coords:
            draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)
        lx = left + plot_w + 18
        if label in lines:
            draw.line([(lx - 8, legend_y + 7), (lx + 8, legend_y + 7)], fill=colour, width=2)
        draw.ellipse([lx - 4, legend_y + 3, lx + 4, legend_y + 11], fill=colour)
        draw.text((lx + 14, legend_y), label, fill="black", font=small)
        legend_y += 20
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target
