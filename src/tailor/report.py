"""The demo's report: `index.html` (tables and SVG plots) and `figures.json` (every number in the HTML).

Every number shown in a table cell carries `data-key`, the JSON path of its value in `figures.json`, and is
formatted by `format_value`, so a test (or a reader) can check that the page and the JSON agree.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailor.plot import scatter_svg
from tailor.serve.sim.plots import panels_svg

PLOTS = ("acc_vs_macs.svg", "acc_vs_latency.svg", "serving.svg", "timeline.svg")


def format_value(value: Any) -> str:
    """How a number appears in the HTML: integers with separators, floats with 4 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,d}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def lookup(figures: Any, key: str) -> Any:
    """The value at a dotted JSON path (list indices are numbers), e.g. `search.front.0.accuracy`."""
    node = figures
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _cell(figures: Any, key: str) -> str:
    return f'<td data-key="{html.escape(key)}">{format_value(lookup(figures, key))}</td>'


def _table(figures: Any, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """rows: per row, cells given as JSON keys ('=text' for a literal label)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f"<td>{html.escape(c[1:])}</td>" if c.startswith("=") else _cell(figures, c) for c in row]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _plots(figures: dict[str, Any], out: Path) -> None:
    search, cascade, serving = figures["search"], figures["cascade"], figures["serving"]
    scatter_svg(
        {
            "evaluated subnets": [(c["macs"] / 1e6, 100 * c["accuracy"]) for c in search["evaluated"]],
            "Pareto front (accuracy, latency)": [(c["macs"] / 1e6, 100 * c["accuracy"]) for c in search["front"]],
        },
        out / "acc_vs_macs.svg",
        title="Subnets of one supernet: held-out accuracy vs MACs",
        xlabel="MMACs per image",
        ylabel="accuracy (%)",
        log_x=True,
    )
    static = [(p["latency_ms"]["1"], 100 * p["accuracy"]) for p in figures["profile"]]
    scatter_svg(
        {
            "static front subnets (ONNX Runtime, measured)": sorted(static),
            "little/big cascade (threshold swept)": sorted((p["cost"], 100 * p["accuracy"]) for p in cascade["points"]),
        },
        out / "acc_vs_latency.svg",
        title="Accuracy vs expected latency per image (batch 1, p50)",
        xlabel="ms per image",
        ylabel="accuracy (%)",
        lines=("static front subnets (ONNX Runtime, measured)", "little/big cascade (threshold swept)"),
    )
    results = serving["results"]
    scatter_svg(
        {
            name: [(100 * r["attainment"], 100 * (r["mean_accuracy"] or 0.0))]
            for name, r in results.items()
            if r["mean_accuracy"] is not None
        },
        out / "serving.svg",
        title=f"Bursty trace (CV² 4), SLO {serving['slo_ms']:.1f} ms: accuracy vs SLO attainment",
        xlabel="SLO attainment (%)",
        ylabel="mean accuracy of on-time answers (%)",
    )
    panels = []
    first = next(r for r in results.values() if r.get("series"))
    t = first["series"]["t_s"]
    panels.append(("arrivals/s", {"arrivals": list(zip(t, first["series"]["arrival_rate"]))}))
    for field, label in (("accuracy", "accuracy"), ("queue_max", "queue length"), ("subnet", "subnet (index)")):
        panels.append(
            (
                label,
                {
                    name: list(zip(r["series"]["t_s"], r["series"][field]))
                    for name, r in results.items()
                    if r.get("series")
                },
            )
        )
    panels_svg(panels, out / "timeline.svg", title="Serving over time: load, accuracy, queue, chosen subnet",
               xlabel="time (s)")  # fmt: skip


def render_html(figures: dict[str, Any]) -> str:
    """The report page; numbers come from `figures` through `data-key` cells."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tailor demo report</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style></head><body>",
        "<h1>tailor demo report</h1>",
        "<p>One resnet20 supernet trained on <code>synthetic</code>, cut to many subnets; every figure below was "
        "measured in this run (<code>figures.json</code> holds them all).</p>",
        "<h2>Training</h2>",
        _table(
            figures,
            ["epochs", "train images", "test images", "largest subnet accuracy", "smallest subnet accuracy"],
            [
                [
                    "training.epochs",
                    "training.train_size",
                    "training.test_size",
                    "training.largest_accuracy",
                    "training.smallest_accuracy",
                ]
            ],
        ),
        "<h2>Latency predictor (ONNX Runtime, batch 1)</h2>",
        _table(
            figures,
            ["fitted on", "held out", "MAPE", "max APE"],
            [["predictor.fitted_on", "predictor.held_out", "predictor.mape", "predictor.max_ape"]],
        ),
        "<h2>Pareto front (NSGA-II)</h2>",
        _table(figures, ["space size", "subnets evaluated"], [["search.space_size", "search.budget"]]),
        _table(
            figures,
            ["subnet", "accuracy", "predicted latency (ms)", "MACs", "params"],
            [
                [
                    f"search.front.{i}.id",
                    f"search.front.{i}.accuracy",
                    f"search.front.{i}.latency",
                    f"search.front.{i}.macs",
                    f"search.front.{i}.params",
                ]
                for i in range(len(figures["search"]["front"]))
            ],
        ),
        '<img src="acc_vs_macs.svg" alt="accuracy vs MACs">',
        "<h2>Serving profile (ONNX Runtime, p50 ms)</h2>",
        _table(
            figures,
            ["subnet", "accuracy", "MACs"] + [f"batch {b}" for b in figures["config"]["batch_sizes"]],
            [
                [f"profile.{i}.id", f"profile.{i}.accuracy", f"profile.{i}.macs"]
                + [f"profile.{i}.latency_ms.{b}" for b in figures["config"]["batch_sizes"]]
                for i in range(len(figures["profile"]))
            ],
        ),
        "<h2>Cascade (little → big, max-softmax confidence)</h2>",
        _table(
            figures,
            ["little", "big", "little ms", "big ms", "big alone accuracy"],
            [
                [
                    "cascade.little",
                    "cascade.big",
                    "cascade.stage_latency_ms.0",
                    "cascade.stage_latency_ms.1",
                    "cascade.big_accuracy",
                ]
            ],
        ),
        _table(
            figures,
            ["threshold", "accuracy", "expected ms", "escalated"],
            [
                [
                    f"cascade.points.{i}.thresholds.0",
                    f"cascade.points.{i}.accuracy",
                    f"cascade.points.{i}.cost",
                    f"cascade.points.{i}.reached.1",
                ]
                for i in range(len(figures["cascade"]["points"]))
            ],
        ),
        '<img src="acc_vs_latency.svg" alt="accuracy vs latency">',
        "<h2>Serving a bursty trace (simulated)</h2>",
        _table(
            figures,
            ["SLO ms", "requests", "mean rate /s", "best subnet's capacity /s"],
            [["serving.slo_ms", "serving.requests", "serving.mean_rate", "serving.best_subnet_capacity"]],
        ),
        _table(
            figures,
            ["policy", "attainment", "mean accuracy", "on time", "late", "expired", "rejected"],
            [
                [
                    "=" + name,
                    f"serving.results.{name}.attainment",
                    f"serving.results.{name}.mean_accuracy",
                    f"serving.results.{name}.outcomes.on_time",
                    f"serving.results.{name}.outcomes.late",
                    f"serving.results.{name}.outcomes.expired",
                    f"serving.results.{name}.outcomes.rejected",
                ]
                for name in figures["serving"]["results"]
            ],
        ),
        '<img src="serving.svg" alt="accuracy vs attainment">',
        '<img src="timeline.svg" alt="serving timeline">',
        "<h2>Wall time (s)</h2>",
        _table(figures, list(figures["timings"]), [[f"timings.{k}" for k in figures["timings"]]]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_report(figures: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write `figures.json`, the plots and `index.html` into `out_dir`; returns the HTML's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _plain(figures)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    _plots(figures, out)
    page = out / "index.html"
    page.write_text(render_html(figures))
    return page
