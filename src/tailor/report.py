"""The demo's report: `index.html` (tables, figures, how to read each) and `figures.json` (every number in it).

Every number shown in a table cell carries `data-key`, the JSON path of its value in `figures.json`, and
`data-format`, how `format_value` writes it (accuracies and attainment as percent), so a test (or a reader)
can check that the page and the JSON agree. The figures are SVG, drawn by `tailor.plot`.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailor.jsonio import write_json_atomic
from tailor.plot import Axis, Panel, panels_plot, timeline_plot, xy_plot

PLOTS = ("training.svg", "acc_vs_macs.svg", "acc_vs_latency.svg", "serving.svg", "timeline.svg")
FORMATS = ("number", "percent", "percent_value", "text")


def format_value(value: Any, kind: str = "number") -> str:
    """How a value appears in the HTML.

    `number`: integers with separators, floats with 4 significant digits (whole, with separators, from 1,000
    up); `percent`: a fraction as percent
    with two decimals (0.9612 -> 96.12%); `percent_value`: a value already in percent (MAPE) with two decimals
    and a % sign; `text`: as is. None is a dash; every result is HTML-escaped.
    """
    if kind not in FORMATS:
        raise ValueError(f"format_value: unknown format {kind!r}; expected one of {FORMATS}")
    if value is None:
        return "–"
    if kind == "text" or isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if not math.isfinite(value):
        return str(value)
    if kind == "percent":
        return f"{100 * value:.2f}%"
    if kind == "percent_value":
        return f"{value:.2f}%"
    if isinstance(value, int):
        return f"{value:,d}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def lookup(figures: Any, key: str) -> Any:
    """The value at a dotted JSON path (list indices are numbers), e.g. `search.front.0.accuracy`."""
    node = figures
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _cell(figures: Any, key: str, kind: str = "number") -> str:
    value = format_value(lookup(figures, key), kind)
    return f'<td data-key="{html.escape(key)}" data-format="{kind}">{value}</td>'


Cell = str | tuple[str, str]  # a JSON key, (key, format), or "=literal text"


def _table(figures: Any, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """rows: per row, cells given as JSON keys, (key, format) pairs, or '=text' for a literal label."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, tuple):
                cells.append(_cell(figures, *cell))
            elif cell.startswith("="):
                cells.append(f'<td class="label">{html.escape(cell[1:])}</td>')
            else:
                cells.append(_cell(figures, cell))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _facts(figures: Any, facts: Sequence[tuple[str, str, str]], per_row: int = 2) -> str:
    """Labelled values, `per_row` (label, value) pairs to a row: (label, JSON key, format) per fact."""
    cells = [f"<th>{html.escape(label)}</th>{_cell(figures, key, kind)}" for label, key, kind in facts]
    rows = ["<tr>" + "".join(cells[i : i + per_row]) + "</tr>" for i in range(0, len(cells), per_row)]
    return f'<table class="facts">{"".join(rows)}</table>'


def _how(text: str) -> str:
    return f'<p class="how"><b>How to read this.</b> {text}</p>'


def _figure(name: str, alt: str) -> str:
    return f'<figure><img src="{name}" alt="{html.escape(alt)}"></figure>'


def _online(results: dict[str, Any]) -> list[str]:
    """Policies that choose a subnet as they go (not a fixed subnet, not the offline bound)."""
    return [name for name, r in results.items() if not r.get("bound") and not name.startswith("fixed:")]


_POLICY_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                   "tab:cyan")  # fmt: skip
FIXED_SERIES = "fixed subnets (one point each)"


def _policy_colours(results: dict[str, Any]) -> dict[str, str]:
    """One colour per policy, the same in every serving figure: fixed subnets red, bounds black."""
    colours = {name: _POLICY_COLOURS[i % len(_POLICY_COLOURS)] for i, name in enumerate(_online(results))}
    colours[FIXED_SERIES] = "tab:red"
    for name, r in results.items():
        if name.startswith("fixed:"):
            colours[name] = "tab:red"
        elif r.get("bound"):
            colours[name] = "black"
    return colours


def _plots(figures: dict[str, Any], out: Path) -> None:
    training, search, cascade, serving = figures["training"], figures["search"], figures["cascade"], figures["serving"]
    history = training["history"]
    students = [
        (h["epoch"], sum(v for k, v in h["loss"].items() if k.startswith("subnet")) / n)
        for h in history
        if (n := sum(1 for k in h["loss"] if k.startswith("subnet")))
    ]
    loss: dict[str, list[tuple[float, float | None]]] = {
        "largest subnet (cross-entropy)": [(h["epoch"], h["loss"].get("largest")) for h in history],
    }
    if students:
        loss["other sampled subnets (mean; distillation)"] = students  # type: ignore[assignment]
    panels_plot(
        [
            Panel(loss, Axis("training loss"), markers=True),
            Panel(
                {
                    "largest subnet, held out": [(h["epoch"], h["accuracy"]["largest"]) for h in history],
                    "smallest subnet, held out": [(h["epoch"], h["accuracy"]["smallest"]) for h in history],
                },
                Axis("accuracy", percent=True),
                markers=True,
            ),
        ],
        out / "training.svg",
        title=f"Training the supernet on {training['data']}: loss and held-out accuracy per epoch",
        x=Axis("epoch", integer=True),
        panel_height=2.2,
    )
    on_front = {c["id"] for c in search["front"]}
    xy_plot(
        {
            "other evaluated subnets": [
                (c["macs"] / 1e6, c["accuracy"]) for c in search["evaluated"] if c["id"] not in on_front
            ],
            "Pareto front (accuracy, predicted latency)": [
                (c["macs"] / 1e6, c["accuracy"]) for c in search["front"] if "macs" in c
            ],
        },
        out / "acc_vs_macs.svg",
        title="Subnets of one supernet: held-out accuracy vs MACs",
        x=Axis("MMACs per image", log=True),
        y=Axis("held-out accuracy", percent=True),
    )
    static = [(p["latency_ms"]["1"], p["accuracy"]) for p in figures["profile"]]
    xy_plot(
        {
            "front subnets alone (ONNX Runtime, measured)": static,
            "little/big cascade (threshold swept)": [(p["cost"], p["accuracy"]) for p in cascade["points"]],
        },
        out / "acc_vs_latency.svg",
        title="Accuracy vs expected latency per image (batch 1, p50)",
        x=Axis("ms per image"),
        y=Axis("held-out accuracy", percent=True),
        lines=True,
    )
    results = serving["results"]
    colours = _policy_colours(results)
    points: dict[str, list[tuple[float, float | None]]] = {}
    for name in _online(results):
        points[name] = [(results[name]["attainment"], results[name]["mean_accuracy"])]
    fixed = [(r["attainment"], r["mean_accuracy"]) for n, r in results.items() if n.startswith("fixed:")]
    if fixed:
        points[FIXED_SERIES] = fixed
    for name, r in results.items():
        if r.get("bound"):
            points[name] = [(r["attainment"], r["mean_accuracy"])]
    xy_plot(
        points,
        out / "serving.svg",
        title=f"Bursty trace (CV² 4), SLO {serving['slo_ms']:.1f} ms: accuracy vs SLO attainment",
        x=Axis("SLO attainment (requests answered on time)", percent=True),
        y=Axis("mean accuracy of on-time answers", percent=True),
        colours=colours,
    )
    timeline_plot(
        {name: r for name, r in results.items() if r.get("series")},
        out / "timeline.svg",
        title="Serving over time: load, queue, misses, accuracy, chosen subnet",
        subnet_ids=serving.get("subnet_ids"),
        colours=colours,
    )


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td.label,td[data-format=text]{text-align:left}
table.facts th{text-align:left;font-weight:normal;white-space:nowrap} table.facts td{text-align:left}
figure{margin:1em 0} figure img{width:100%;height:auto;border:1px solid #eee}
.how{background:#f3f7fb;border-left:4px solid #6a9fd4;padding:.5em .8em}
.banner{background:#fff4d6;border:2px solid #e0a800;padding:.7em 1em;font-size:1.05em}
code{background:#f4f4f4;padding:0 .2em}
"""


def _banner(figures: dict[str, Any]) -> str:
    config, training = figures["config"], figures["training"]
    if not config.get("smoke"):
        return ""
    size = "×".join(str(v) for v in training["input_size"][1:])
    return (
        '<p class="banner"><b>Smoke run (<code>tailor demo --quick</code>).</b> '
        f"A small data set ({html.escape(training['data'])}: {training['train_size']:,} training and "
        f"{training['test_size']:,} test images of {size} pixels), {training['epochs']} epochs, "
        f"{figures['search']['budget']} subnets searched and a {config['trace_seconds']:g}-second trace: it checks "
        "that every step works end to end, at a size CI can afford. Its numbers show that the pipeline runs and "
        "learns; they are not findings about tailor. <code>tailor demo</code> is the full run.</p>"
    )


def render_html(figures: dict[str, Any]) -> str:
    """The report page; numbers come from `figures` through `data-key` cells."""
    sections = (_head, _run_section, _training_section, _predictor_section, _search_section, _profile_section,
                _cascade_section, _serving_section, _timings_section)  # fmt: skip
    parts = [part for section in sections for part in section(figures)] + ["</body></html>"]
    return "\n".join(p for p in parts if p)


def _head(figures: dict[str, Any]) -> list[str]:
    config = figures["config"]
    return [
        "<!doctype html><html><head><meta charset='utf-8'><title>tailor demo report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>tailor demo report</h1>",
        _banner(figures),
        f"<p>One {html.escape(config['model'])} supernet trained on <code>{html.escape(config['data'])}</code>, "
        "cut to many subnets, searched, profiled, cascaded and served in simulation. Every number below was "
        "measured in this run; <code>figures.json</code> holds them all.</p>",
    ]


_RUN_FACTS = [
    ("mode", "run.mode", "text"), ("data set", "run.data", "text"), ("model", "run.model", "text"),
    ("seed", "run.seed", "number"), ("torch threads", "run.threads", "number"),
    ("started", "run.started_utc", "text"), ("duration (s)", "run.duration_s", "number"),
    ("CPUs", "run.cpu_count", "number"), ("load average (1 min) at start", "run.load_average_start", "number"),
    ("load average (1 min) at end", "run.load_average_end", "number"),
    ("tailor", "run.tailor_version", "text"), ("torch", "run.torch_version", "text"),
    ("ONNX Runtime", "run.onnxruntime_version", "text"), ("numpy", "run.numpy_version", "text"),
    ("Optuna", "run.optuna_version", "text"), ("Python", "run.python_version", "text"),
    ("platform", "run.platform", "text"),
]  # fmt: skip


def _run_section(figures: dict[str, Any]) -> list[str]:
    return [
        "<h2>This run</h2>",
        _facts(figures, _RUN_FACTS),
        _how("Latencies depend on the machine and on what else runs on it: a load average above the number of "
             "CPUs at start or end means other processes competed for them, and latency figures are then noisy. "
             "Accuracies do not depend on load (a fixed seed and thread count give the same weights)."),
    ]  # fmt: skip


def _training_section(figures: dict[str, Any]) -> list[str]:
    training = figures["training"]
    return [
        "<h2>Training</h2>",
        _table(
            figures,
            ["epochs", "largest alone (epochs)", "train images", "test images", "largest subnet", "smallest subnet"],
            [["training.epochs", "training.largest_only_epochs", "training.train_size", "training.test_size",
              ("training.largest_accuracy", "percent"), ("training.smallest_accuracy", "percent")]],
        ),
        _table(
            figures,
            ["epoch", "largest: loss", "largest: accuracy", "smallest: accuracy", "seconds"],
            [[f"training.history.{i}.epoch", f"training.history.{i}.loss.largest",
              (f"training.history.{i}.accuracy.largest", "percent"),
              (f"training.history.{i}.accuracy.smallest", "percent"), f"training.history.{i}.seconds"]
             for i in range(len(training["history"]))],
        ),
        _figure("training.svg", "training loss and held-out accuracy per epoch"),
        _how("Every step trains several subnets of the one network together (the largest, the smallest and two "
             "random ones) and takes one optimizer step; for the first epochs the largest trains alone. The top "
             "panel is the training loss per epoch: the largest subnet's cross-entropy, and the mean loss of the "
             "other subnets, which learn from the largest's outputs (distillation, so their loss is on another "
             "scale). The bottom panel is held-out accuracy of the largest and the smallest subnet after each "
             "epoch, each with its own normalisation statistics. The gap between them is what the smallest "
             "subnet's far fewer MACs cost."),
    ]  # fmt: skip


def _predictor_section(figures: dict[str, Any]) -> list[str]:
    n_fit, n_held = figures["predictor"]["fitted_on"], figures["predictor"]["held_out"]
    return [
        "<h2>Latency predictor (ONNX Runtime, batch 1)</h2>",
        _table(
            figures,
            ["fitted on (subnets)", "held out (subnets)", "mean error (MAPE)", "worst error (max APE)"],
            [["predictor.fitted_on", "predictor.held_out", ("predictor.mape", "percent_value"),
              ("predictor.max_ape", "percent_value")]],
        ),
        _how(f"The predictor is fitted to the measured batch-1 latency of {n_fit} subnets and tested on {n_held} "
             "it never saw. MAPE is its mean absolute percentage error on those; a MAPE of 10% means a subnet "
             "predicted at 1.0 ms typically takes 0.9 to 1.1 ms. The search below ranks subnets by this "
             "prediction, so an error larger than the gaps between subnets blurs the front."),
    ]  # fmt: skip


def _search_section(figures: dict[str, Any]) -> list[str]:
    return [
        "<h2>Pareto front (NSGA-II)</h2>",
        _table(figures, ["subnets in the space", "subnets evaluated"], [["search.space_size", "search.budget"]]),
        _table(
            figures,
            ["subnet", "accuracy", "predicted latency (ms)", "MACs", "params"],
            [[(f"search.front.{i}.id", "text"), (f"search.front.{i}.accuracy", "percent"),
              f"search.front.{i}.latency", f"search.front.{i}.macs", f"search.front.{i}.params"]
             for i in range(len(figures["search"]["front"]))],
        ),
        _figure("acc_vs_macs.svg", "accuracy vs MACs"),
        _how("Each point is one subnet of the same supernet, calibrated and evaluated on held-out images; none was "
             "trained on its own. The front keeps the subnets that no other subnet beats on both accuracy and "
             "predicted latency. Read it left to right: each step to the right buys accuracy with compute "
             "(the MAC axis is logarithmic)."),
    ]  # fmt: skip


def _profile_section(figures: dict[str, Any]) -> list[str]:
    config = figures["config"]
    batch_sizes = config["batch_sizes"]
    return [
        "<h2>Serving profile (ONNX Runtime, median ms per batch)</h2>",
        _table(
            figures,
            ["subnet", "accuracy", "MACs"] + [f"batch {b}" for b in batch_sizes],
            [[(f"profile.{i}.id", "text"), (f"profile.{i}.accuracy", "percent"), f"profile.{i}.macs"]
             + [f"profile.{i}.latency_ms.{b}" for b in batch_sizes]
             for i in range(len(figures["profile"]))],
        ),
        _how(f"Up to {config['front_max']} front subnets, spread from the cheapest to the most accurate, measured "
             f"again on ONNX Runtime (one thread, median of {config['repeats']} runs) at every batch size: the table "
             "the serving simulator plans with. A batch costs less per image than single requests do, which is "
             "what a server gains by waiting for a batch to fill."),
    ]  # fmt: skip


def _cascade_section(figures: dict[str, Any]) -> list[str]:
    return [
        "<h2>Cascade (little → big, max-softmax confidence)</h2>",
        _table(
            figures,
            ["little", "big", "little ms", "big ms", "big alone: accuracy"],
            [[("cascade.little", "text"), ("cascade.big", "text"), "cascade.stage_latency_ms.0",
              "cascade.stage_latency_ms.1", ("cascade.big_accuracy", "percent")]],
        ),
        _table(
            figures,
            ["threshold", "accuracy", "expected ms per image", "escalated to big"],
            [[f"cascade.points.{i}.thresholds.0", (f"cascade.points.{i}.accuracy", "percent"),
              f"cascade.points.{i}.cost", (f"cascade.points.{i}.reached.1", "percent")]
             for i in range(len(figures["cascade"]["points"]))],
        ),
        _figure("acc_vs_latency.svg", "accuracy vs latency"),
        _how("Every input runs on the little subnet; those whose top softmax probability is below the threshold "
             "also run on the big one, which gives the answer. Threshold 0 never escalates (the little subnet "
             "alone), 1 escalates everything (both run). Expected ms = little ms + escalated share × big ms. A "
             "useful cascade reaches the big subnet's accuracy for less than the big subnet's latency: its "
             "curve lies above and to the left of the front subnets' line."),
    ]  # fmt: skip


def _serving_section(figures: dict[str, Any]) -> list[str]:
    serving = figures["serving"]
    results = serving["results"]
    online = _online(results)
    return [
        "<h2>Serving a bursty trace (simulated)</h2>",
        _table(
            figures,
            ["SLO (ms)", "requests", "mean rate (/s)", "most accurate subnet's capacity (/s)", "latency percentile"],
            [["serving.slo_ms", "serving.requests", "serving.mean_rate", "serving.best_subnet_capacity",
              ("serving.percentile", "text")]],
        ),
        _table(
            figures,
            ["policy", "attainment", "mean accuracy", "on time", "late", "expired", "rejected"],
            [["=" + name, (f"serving.results.{name}.attainment", "percent"),
              (f"serving.results.{name}.mean_accuracy", "percent"), f"serving.results.{name}.outcomes.on_time",
              f"serving.results.{name}.outcomes.late", f"serving.results.{name}.outcomes.expired",
              f"serving.results.{name}.outcomes.rejected"]
             for name in results],
        ),
        _figure("serving.svg", "accuracy vs attainment"),
        _how("Requests arrive in bursts (Gamma inter-arrivals, CV² 4) at 60–90% of what the most accurate subnet "
             "alone can serve, each with a deadline (the SLO). Attainment is the share answered within it; mean "
             "accuracy is the held-out accuracy of the subnets that answered on time. "
             + ("Policies named <code>fixed:…</code> always serve that one subnet; " if any(
                 n.startswith("fixed:") for n in results) else "")
             + ("<code>" + html.escape(", ".join(online)) + "</code> choose a subnet for every batch; "
                if online else "")
             + "an offline bound (when listed) sees the whole trace in advance: no online policy can beat it. "
             "Up and to the right is better."),
        _figure("timeline.svg", "serving timeline"),
        _table(
            figures,
            ["tick on the subnet axis", "accuracy"],
            [[(f"serving.subnet_ids.{i}", "text"), (f"profile.{_profile_index(figures, sid)}.accuracy", "percent")]
             for i, sid in enumerate(serving.get("subnet_ids", []))
             if _profile_index(figures, sid) is not None],
        ),
        _how("The trace over time, cut into 200 bins, for the policies listed in the legend. From the top: "
             "arrivals per second; the longest queue; the share of requests that arrived in the bin and missed "
             "the SLO; the accuracy of the answers given on time; and the subnet that served most requests in "
             "the bin (a gap: nothing served). The subnet axis is named by subnet id, least accurate at the "
             "bottom, as in the table above."),
    ]  # fmt: skip


def _timings_section(figures: dict[str, Any]) -> list[str]:
    return [
        "<h2>Wall time (s)</h2>",
        _table(figures, [k.removesuffix("_s").replace("_", " ") for k in figures["timings"]],
               [[f"timings.{k}" for k in figures["timings"]]]),
        _how("Seconds each step of this run took on this machine; with a load average above the CPU count "
             "(see the top), other processes took part of them."),
    ]  # fmt: skip


def _profile_index(figures: dict[str, Any], subnet_id: str) -> int | None:
    return next((i for i, p in enumerate(figures["profile"]) if p["id"] == subnet_id), None)


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
    write_json_atomic(out / "figures.json", figures)
    _plots(figures, out)
    page = out / "index.html"
    page.write_text(render_html(figures), encoding="utf-8")
    return page
