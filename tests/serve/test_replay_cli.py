"""`tailor replay --sim`: tables, JSON, errors and the `--plot` timeline."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from serving_helpers import small_profile

from tailor.cli import main


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
    assert out.splitlines()[1].startswith("latency p50: ")  # the percentile the profile supports, and why
    assert out.splitlines()[3].startswith("maxacc ")
    svg = ET.parse(tmp_path / "replay_timeline.svg").getroot()
    texts = {"".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"maxacc", "subnet serving most", "time (s)"} <= texts
    assert any(text.startswith("ofa-") for text in texts), "the subnet axis is labelled with the profile's ids"


def test_replay_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--profile", "ofa-like"]) == 2
    assert "--sim" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", str(tmp_path / "missing.json")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", "ofa-like", "--policy", "magic", "--duration", "1"]) == 2
    assert "unknown policy 'magic'" in capsys.readouterr().err
    assert main(["replay", "--sim", "--profile", "ofa-like", "--trace", "rates"]) == 2
    assert "needs --csv" in capsys.readouterr().err
