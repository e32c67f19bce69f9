"""`tailor search`: a checkpoint's front from the command line, resumed from its SQLite study."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from tailor import create_model, save
from tailor.cli import main
from tailor.search import ParetoFront


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_chans=1, channels=(4, 8, 8), widths=(0.5, 1.0))
    path = tmp_path_factory.mktemp("ck") / "ck"
    save(model, path, metadata={"recipe": {"data": {"name": "digits"}}})
    return path


def test_search_writes_front_plot_and_pair_then_resumes(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "front.json"
    args = ["search", str(checkpoint), "--out", str(out), "--algorithm", "random", "--budget", "6",
            "--objectives", "accuracy,macs", "--constraint", "latency=1000", "--calib-batches", "1",
            "--repeats", "3", "--plot", str(tmp_path / "front.svg"), "--pair-budget", "1000", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    front = ParetoFront.load(out)
    assert summary["evaluated"] == 6 == summary["evaluated_here"]
    assert [e["id"] for e in summary["front"]] == [e.subnet.id for e in front]
    assert {"accuracy", "latency", "macs", "memory", "params"} <= set(summary["front"][0])
    assert ET.parse(tmp_path / "front.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert (tmp_path / "front.db").exists(), "the study persists in SQLite next to the front"
    assert summary["pair"]["expected_latency_ms"] <= 1000

    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["evaluated_here"] == 0 and again["front"] == summary["front"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--constraint", "latency"], "METRIC=BOUND"),
        (["--constraint", "speed=3"], "unknown metric 'speed'"),
        (["--objectives", "accuracy,speed"], "unknown metric 'speed'"),
        (["--budget", "0"], "budget"),
        (["--latency-source", "profile"], "--profile"),
        (["--predictor", "mlp"], "algorithm 'nsga2' takes no option 'predictor'"),
    ],
)
def test_bad_arguments_exit_2(checkpoint: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    args = ["search", str(checkpoint), "--out", str(tmp_path / "f.json"), "--calib-batches", "1", "--no-progress"]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
