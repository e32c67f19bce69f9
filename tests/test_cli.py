"""The command line: actuate runs every subnet activated and extracted and reports equal outputs."""

from __future__ import annotations

import json
import re

import pytest

from tailor.cli import main


def test_actuate_reports_matching_outputs_for_each_subnet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actuate", "--count", "5", "--repeats", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"sn-[0-9a-f]{12} ", line)]
    assert len(rows) == 5
    diffs = [float(row.split()[4]) for row in rows]
    assert all(d <= 1e-5 for d in diffs)
    params = [int(row.split()[3].replace(",", "")) for row in rows[:4]]  # largest, 0.75, 0.5, smallest
    assert params == sorted(params, reverse=True)
    assert "5 subnets" in out and "us per activate" in out


def test_space_prints_the_search_space_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "resnet20"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "tailor.space/1" and len(data["widths"]) == 12


def test_bad_arguments_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actuate", "--count", "0"]) == 2
    assert capsys.readouterr().err == "error: --count must be a positive integer, got 0\n"
    with pytest.raises(SystemExit):
        main(["actuate", "--model", "nope"])


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import tailor

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tailor {tailor.__version__}"
