"""`tailor replay --sim` and the serving plots."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from serving_helpers import small_profile

from tailor.cli import main
from tailor.serve import simulate, traces
from tailor.serve.sim.plots import line_svg, timeline_svg


def test_replay_prints_json_for_each_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = small_profile().profile.save(tmp_path / "p.json")
    code = main(
        ["replay", "--sim", "--profile", str(profile), "--trace", "poisson", "--rate", "800", "--duration", "2",
         "--slo-ms", "30", "--policy", "slackfit,fixed:all,upper_bound", "--json", "--no-progress",
         "--out", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["results"]) == ["slackfit", "fixed:s0", "fixed:s1", "fixed:s2", "fixed:s3", "upper_bound"]
    n = report["trace"]["requests"]
    for result in report["results"].values():
        assert sum(result["outcomes"].values()) == n
    bound = report["results"]["upper_bound"]["attainment"]
    assert all(r["attainment"] <= bound for r in report["results"].values())
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == report


def test_replay_reads_a_rates_csv_and_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("200\n0\n600\n", encoding="utf-8")
    code = main(
        ["replay", "--sim", "--profile", "ofa-like", "--trace", "rates", "--csv", str(rates), "--policy", "maxacc",
         "--plot", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("maxacc ")
    assert (tmp_path / "replay_timeline.svg").exists()


def test_replay_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--profile", "ofa-like"]) == 2
    assert "--sim" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", str(tmp_path / "missing.json")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", "ofa-like", "--policy", "magic", "--duration", "1"]) == 2
    assert "unknown policy 'magic'" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", "ofa-like", "--trace", "rates"]) == 2
    assert "needs --csv" in capsys.readouterr().err


def test_line_and_timeline_svgs_are_well_formed(tmp_path: Path) -> None:
    path = line_svg(
        {"a": [(1, 0.5), (2, None), (3, 0.7), (4, 0.8)], "b": [(1, 0.2), (10, 0.9)]},
        tmp_path / "line.svg",
        title="t <&>",
        log_x=True,
    )
    root = ET.parse(path).getroot()
    polylines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(polylines) == 2  # 'a' is broken at the missing point: (1) alone, then (3, 4); 'b' one line
    scatter = line_svg({"a": [(1, 0.5), (3, 0.7)], "b": [(1, 0.2), (2, 0.9)]}, tmp_path / "s.svg", points_only=["a"])
    root = ET.parse(scatter).getroot()
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 1  # only 'b' is joined
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 4
    with pytest.raises(ValueError, match="no finite points"):
        line_svg({"a": [(1, None)]}, tmp_path / "empty.svg")
    p = small_profile()
    trace = traces.bursty(200, 600, 4, 5, seed=0)
    results = {name: simulate(p, trace, policy=name, slo_ms=30) for name in ("slackfit", "maxacc")}
    root = ET.parse(timeline_svg(results, tmp_path / "timeline.svg", title="x")).getroot()
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "max queue length" in texts and "slackfit" in texts
