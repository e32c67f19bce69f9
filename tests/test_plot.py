"""tailor.plot: what the figures show (labels, percent and integer ticks, named ticks, legends inside the
figure, gaps), the files written (valid PNG/SVG/PDF), bad input, and no pyplot state touched."""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tailor.errors import TailorError
from tailor.plot import (
    Axis,
    Panel,
    PlotError,
    panels_figure,
    save_figure,
    timeline_panels,
    timeline_plot,
    xy_figure,
    xy_plot,
)
from tailor.serve import ServingProfile, simulate, traces
from tailor.serve.profile import synthetic_profile

SVG = "{http://www.w3.org/2000/svg}"


def tick_labels(axis: matplotlib.axis.Axis) -> list[str]:
    """The labels of the ticks inside the view, as drawn."""
    low, high = sorted(axis.get_view_interval())
    where = 0 if axis.axis_name == "x" else 1
    return [t.get_text() for t in axis.get_majorticklabels()
            if t.get_text() and low - 1e-9 <= t.get_position()[where] <= high + 1e-9]  # fmt: skip


def svg_texts(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}


def test_percent_axis_labels_fractions_as_percent() -> None:
    fig = xy_figure({"front": [(1.0, 0.52), (2.0, 0.61), (4.0, 0.735)]}, x=Axis("MMACs"),
                    y=Axis("accuracy", percent=True))  # fmt: skip
    fig.draw_without_rendering()
    ax = fig.axes[0]
    labels = tick_labels(ax.yaxis)
    assert labels and all(label.endswith("%") for label in labels)
    values = [float(label.rstrip("%")) for label in labels]
    assert min(values) >= 45 and max(values) <= 80, "fractions 0.52-0.735 are shown as 52%-73.5%"
    assert ax.get_ylabel() == "accuracy" and ax.get_xlabel() == "MMACs"


def test_integer_axis_has_whole_ticks_only() -> None:
    fig = xy_figure({"queue": [(0.0, 1), (1.0, 2), (2.0, 3)]}, x=Axis("epoch", integer=True),
                    y=Axis("queue", integer=True), lines=True)  # fmt: skip
    fig.draw_without_rendering()
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        ticks = [t for t in axis.get_majorticklocs() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_named_ticks_map_positions_to_names() -> None:
    names = ["sn-aaaa", "sn-bbbb", "sn-cccc"]
    fig = xy_figure({"served": [(0.0, 0), (1.0, 2), (2.0, 1)]}, y=Axis("subnet", names=names), lines=True)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    assert list(ax.get_yticks()) == [0, 1, 2]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_ylim() == (-0.5, 2.5)


def test_log_axis_writes_plain_numbers_and_percent() -> None:
    fig = xy_figure({"a": [(0.01, 1e-6), (10.0, 0.01), (1000.0, 0.5)]}, x=Axis("x", log=True),
                    y=Axis("missed", log=True, percent=True))  # fmt: skip
    fig.draw_without_rendering()
    ax = fig.axes[0]
    assert {"0.01", "1", "100"} <= set(tick_labels(ax.xaxis))
    assert {"0.0001%", "0.01%", "1%", "10%"} <= set(tick_labels(ax.yaxis))


def test_legend_lists_every_series_and_reference_line_and_lies_inside_the_figure() -> None:
    series = {f"a rather long series label number {i} (measured)": [(i, 0.1 * i), (i + 1, 0.1 * i + 0.05)]
              for i in range(6)}  # fmt: skip
    fig = xy_figure(series, lines=list(series)[:3], hlines={"target": 0.3}, vlines={"0.6x": 2.5},
                    title="a title that is long enough to need wrapping " * 3)  # fmt: skip
    fig.draw_without_rendering()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [*series, "target", "0.6x"]
    box, page, axes = legend.get_window_extent(), fig.bbox, fig.axes[0].get_window_extent()
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    assert box.y1 <= axes.y0, "the legend sits below the axes, not over the data"
    assert "\n" in fig.axes[0].get_title(), "a long title is wrapped, not cut off"


def test_lines_are_joined_in_x_order_and_gaps_break_them() -> None:
    fig = xy_figure({"line": [(3.0, 0.3), (1.0, 0.1), (2.0, None), (4.0, 0.4)], "points": [(1.0, 0.2)]},
                    lines=["line"])  # fmt: skip
    line, points = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    assert math.isnan(line.get_ydata()[1]), "None becomes a gap in the line"
    assert line.get_linestyle() == "-" and points.get_linestyle() == "None"


def test_colours_can_be_pinned_and_are_not_reused() -> None:
    fig = xy_figure({"a": [(0, 1)], "b": [(1, 2)], "c": [(2, 3)]}, colours={"b": "tab:blue"})
    colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
    assert colours["b"] == matplotlib.colors.to_hex("tab:blue")
    assert len(set(colours.values())) == 3


def test_files_are_valid_png_svg_and_pdf(tmp_path: Path) -> None:
    series = {"evaluated": [(1.0, 0.5), (2.0, 0.6)], "front": [(1.5, 0.62), (3.0, 0.7)]}
    options = dict(title="t", x=Axis("MMACs"), y=Axis("accuracy", percent=True), lines=["front"])
    png = xy_plot(series, tmp_path / "deep" / "fig.png", **options)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 400
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 10, "something is drawn"
    texts = svg_texts(xy_plot(series, tmp_path / "fig.svg", **options))
    assert {"evaluated", "front", "MMACs", "accuracy", "t"} <= texts
    assert any(t.endswith("%") for t in texts)
    assert (tmp_path / "fig.svg").read_bytes() == xy_plot(series, tmp_path / "again.svg", **options).read_bytes(), (
        "the same figure gives the same SVG"
    )
    assert xy_plot(series, tmp_path / "fig.pdf", **options).read_bytes()[:5] == b"%PDF-"


def test_bad_input_raises_plot_error(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no points"):
        xy_figure({})
    with pytest.raises(PlotError, match="no points"):
        xy_figure({"a": [(1.0, None)]})
    with pytest.raises(PlotError, match=r"series 'a' has a non-finite x"):
        xy_figure({"a": [(math.nan, 1.0)]})
    with pytest.raises(PlotError, match=r"series 'a' has a non-numeric y value '0.5'"):
        xy_figure({"a": [(1.0, "0.5")]})  # type: ignore[list-item]
    assert xy_figure({"a": [(np.int64(1), np.float32(0.5)), (np.int64(2), np.float64(0.7))]}).axes[0].get_lines()
    with pytest.raises(PlotError, match=r"series 'b' has x = 0.*log axis"):
        xy_figure({"a": [(1.0, 1.0)], "b": [(0.0, 1.0)]}, x=Axis(log=True))
    with pytest.raises(PlotError, match=r"\.txt"):
        xy_plot({"a": [(1.0, 1.0)]}, tmp_path / "fig.txt")
    with pytest.raises(PlotError, match="no panels"):
        panels_figure([])
    assert issubclass(PlotError, TailorError) and issubclass(PlotError, ValueError)


def test_drawing_leaves_pyplot_and_rcparams_alone(tmp_path: Path) -> None:
    before = dict(matplotlib.rcParams)
    with matplotlib.rc_context({"font.size": 23.0}):
        fig = xy_figure({"a": [(1.0, 1.0), (2.0, 2.0)]})
        save_figure(fig, tmp_path / "a.png")
        assert matplotlib.rcParams["font.size"] == 23.0, "the caller's settings are back after drawing"
    assert dict(matplotlib.rcParams) == before
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()


def test_panels_share_x_keep_a_colour_per_series_and_one_legend() -> None:
    fig = panels_figure(
        [Panel({"load": [(0, 5), (1, 7)]}, Axis("arrivals")),
         Panel({"a": [(0, 0.9), (1, 0.8)], "b": [(0, 0.7), (1, None)]}, Axis("accuracy", percent=True)),
         Panel({"a": [(0, 1), (1, 2)]}, Axis("queue", integer=True), steps=True)],
        x=Axis("time (s)"),
    )  # fmt: skip
    top, middle, bottom = fig.axes
    assert bottom.get_xlabel() == "time (s)" and top.get_xlabel() == ""
    assert top.get_shared_x_axes().joined(top, bottom)
    colour = {ax: {line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes}
    assert colour[middle]["a"] == colour[bottom]["a"] != colour[middle]["b"]
    assert bottom.get_lines()[0].get_drawstyle() == "steps-post"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["load", "a", "b"]


def test_timeline_names_the_subnet_axis_and_shows_misses_in_percent(tmp_path: Path) -> None:
    profile = ServingProfile(synthetic_profile(accuracies=[0.70, 0.74, 0.77, 0.80], base_ms=[1.0, 1.5, 2.2, 3.0],
                                               per_item_ms=[0.2, 0.35, 0.55, 0.8], batch_sizes=(1, 2, 4, 8)))  # fmt: skip
    trace = traces.bursty(200, 600, 4, 5, seed=0)
    results = {name: simulate(profile, trace, policy=name, slo_ms=30) for name in ("slackfit", "maxacc")}
    panels = timeline_panels(results, profile.subnet_ids)
    assert [p.y.label for p in panels] == ["arrivals / s", "max queue length", "missed the SLO", "accuracy on time",
                                           "subnet serving most"]  # fmt: skip
    assert panels[-1].y.names == profile.subnet_ids and panels[1].y.integer and panels[2].y.percent
    served = {v for _, v in panels[-1].series["slackfit"] if v is not None}
    assert served and served <= set(range(len(profile.subnet_ids)))
    texts = svg_texts(timeline_plot(results, tmp_path / "timeline.svg", title="x", subnet_ids=profile.subnet_ids))
    assert {"slackfit", "maxacc", "arrivals", "time (s)"} <= texts
    assert set(profile.subnet_ids) <= texts, "every subnet id labels a tick"
    dicts = {name: r.to_dict(series=True) for name, r in results.items()}  # what a report's JSON holds
    assert timeline_panels(dicts, profile.subnet_ids)[3].series == panels[3].series
    with pytest.raises(PlotError, match="no time series"):
        timeline_panels({"a": {"policy": "a"}})
    with pytest.raises(PlotError, match="subnet position"):
        timeline_panels(results, profile.subnet_ids[:1])


@settings(max_examples=15, deadline=None)
@given(
    points=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(0.0, 1.0)), min_size=1, max_size=30),
    percent=st.booleans(),
)
def test_the_view_holds_every_point(points: list[tuple[float, float]], percent: bool) -> None:
    fig = xy_figure({"s": points}, y=Axis("y", percent=percent), lines=True)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in points)
    if percent:
        assert all(label.endswith("%") for label in tick_labels(ax.yaxis))


def test_a_tall_legend_gets_room_of_its_own() -> None:
    few = xy_figure({"a": [(0, 0.1), (1, 0.2)]})
    many = xy_figure({f"cascade {i}: a policy with a long descriptive name": [(0, 0.1 * i), (1, 0.2)] for i in range(14)})
    for fig in (few, many):
        fig.draw_without_rendering()
    axes_height = [fig.axes[0].get_window_extent().height / fig.dpi for fig in (few, many)]
    assert axes_height[1] >= 0.8 * axes_height[0], "the axes keep their height; the figure grows"
    assert many.get_size_inches()[1] > few.get_size_inches()[1]
