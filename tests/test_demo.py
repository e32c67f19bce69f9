"""`tailor demo --quick`: the whole pipeline runs and its report is complete and consistent with its JSON."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tailor.cli import main
from tailor.report import PLOTS, format_value, lookup


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


def test_every_plot_is_a_non_empty_svg_referenced_by_the_page(report: Path) -> None:
    page = (report / "index.html").read_text()
    for name in PLOTS:
        root = ET.parse(report / name).getroot()
        assert root.tag.endswith("svg")
        drawn = [e for e in root.iter() if e.tag.split("}")[-1] in ("circle", "polyline", "path", "line", "rect")]
        assert len(drawn) > 5, name
        assert f'src="{name}"' in page


def test_numbers_in_the_page_equal_those_in_the_json(report: Path) -> None:
    figures = json.loads((report / "figures.json").read_text())
    page = (report / "index.html").read_text()
    cells = re.findall(r'<td data-key="([^"]+)">([^<]*)</td>', page)
    assert len(cells) > 40
    for key, text in cells:
        assert text == format_value(lookup(figures, key)), key
    keys = {key for key, _ in cells}
    assert {"training.largest_accuracy", "predictor.mape", "serving.results.slackfit.attainment"} <= keys


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
    assert {figures["cascade"]["little"], figures["cascade"]["big"]} <= served
    profile = json.loads((report / "profile.json").read_text())
    assert profile["schema"] == "tailor.profile/1" and len(profile["subnets"]) == len(served)
