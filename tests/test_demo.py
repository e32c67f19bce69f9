"""`tailor demo --quick`: the whole pipeline runs, learns, and its report is complete, labelled as a smoke run,
and consistent with its JSON."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor.cli import main
from tailor.report import PLOTS, format_value, lookup

SVG = "{http://www.w3.org/2000/svg}"
CELL = re.compile(r'<td data-key="([^"]+)" data-format="([a-z_]+)">([^<]*)</td>')


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


def svg_texts(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}


def test_every_plot_is_an_svg_with_labelled_percent_axes_referenced_by_the_page(report: Path) -> None:
    page = (report / "index.html").read_text()
    for name in PLOTS:
        texts = svg_texts(report / name)
        assert any(text.endswith("%") for text in texts), f"{name}: accuracies/attainment are shown in percent"
        assert f'src="{name}"' in page
    assert {"epoch", "accuracy", "training loss", "largest subnet, held out"} <= svg_texts(report / "training.svg")
    assert {"MMACs per image", "held-out accuracy"} <= svg_texts(report / "acc_vs_macs.svg")


def test_the_timeline_names_its_subnet_axis_by_subnet_id(report: Path) -> None:
    figures = json.loads((report / "figures.json").read_text())
    ids = figures["serving"]["subnet_ids"]
    texts = svg_texts(report / "timeline.svg")
    assert ids and set(ids) <= texts, "every tick of the subnet axis is a subnet id"
    assert "subnet serving most" in texts


def test_numbers_in_the_page_equal_those_in_the_json(report: Path) -> None:
    figures = json.loads((report / "figures.json").read_text())
    page = (report / "index.html").read_text()
    cells = CELL.findall(page)
    assert len(cells) > 60
    for key, kind, text in cells:
        assert text == format_value(lookup(figures, key), kind), key
    kinds = {key: kind for key, kind, _ in cells}
    for key in ("training.largest_accuracy", "serving.results.slackfit.attainment", "search.front.0.accuracy",
                "cascade.points.0.reached.1", "training.history.0.accuracy.smallest"):  # fmt: skip
        assert kinds[key] == "percent", key
    assert kinds["predictor.mape"] == "percent_value"
    assert all(text.endswith("%") for key, kind, text in cells if kind.startswith("percent") and text != "–")
    assert {"run.seed", "run.torch_version", "run.onnxruntime_version", "run.tailor_version", "run.threads",
            "run.started_utc", "run.load_average_start", "run.duration_s", "run.mode"} <= set(kinds)  # fmt: skip


def test_a_quick_run_says_it_is_a_smoke_run_and_learns(report: Path) -> None:
    figures = json.loads((report / "figures.json").read_text())
    page = (report / "index.html").read_text()
    assert 'class="banner"' in page and "Smoke run" in page and "not findings" in page
    assert figures["run"]["mode"] == "quick (smoke run)" and figures["config"]["smoke"] is True
    training = figures["training"]
    assert training["data"] == "digits" and training["input_size"] == [1, 8, 8]
    assert training["largest_accuracy"] >= 0.85, "ten classes: chance is 10%; the quick run must learn"
    assert training["smallest_accuracy"] >= 0.6
    history = training["history"]
    assert [h["epoch"] for h in history] == list(range(1, training["epochs"] + 1))
    assert history[-1]["loss"]["largest"] < history[0]["loss"]["largest"]
    assert page.count('class="how"') >= 7, "each section says how to read it"


def test_the_figures_are_internally_consistent(report: Path) -> None:
    figures = json.loads((report / "figures.json").read_text())
    serving = figures["serving"]
    for name, result in serving["results"].items():
        assert sum(result["outcomes"].values()) == serving["requests"], name
        assert 0.0 <= result["attainment"] <= 1.0
    bound = serving["results"]["upper_bound"]["attainment"]
    assert all(r["attainment"] <= bound + 1e-9 for r in serving["results"].values())
    front = figures["search"]["front"]
    assert front and all(0.0 <= c["accuracy"] <= 1.0 for c in front)
    served = {p["id"] for p in figures["profile"]}
    assert served <= {c["id"] for c in front}
    assert set(serving["subnet_ids"]) <= served
    assert {figures["cascade"]["little"], figures["cascade"]["big"]} <= served
    profile = json.loads((report / "profile.json").read_text())
    assert profile["schema"] == "tailor.profile/1" and len(profile["subnets"]) == len(served)


@given(st.floats(0.0, 1.0))
def test_percent_cells_read_back_to_the_fraction(value: float) -> None:
    text = format_value(value, "percent")
    assert text.endswith("%") and abs(float(text[:-1]) / 100 - value) <= 0.00005 + 1e-12


def test_format_value_writes_numbers_for_a_reader() -> None:
    assert format_value(1234567) == "1,234,567"
    assert format_value(33420.7) == "33,421"
    assert format_value(0.0123456) == "0.01235"
    assert format_value(27.44, "percent_value") == "27.44%"
    assert format_value(None, "percent") == "–"
    assert format_value("<b>", "text") == "&lt;b&gt;"
    with pytest.raises(ValueError, match="unknown format"):
        format_value(1.0, "fraction")
