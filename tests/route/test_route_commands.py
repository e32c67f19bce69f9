"""`tailor route`: tables/JSON and files from a checkpoint, early-exit stages, and errors (exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tailor
from tailor.cli import main
from tailor.route.commands import parse_stages


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small_cnn for digits (1x8x8), saved with the recipe `tailor train` would record."""
    torch.manual_seed(0)
    model = tailor.create_model("small_cnn", num_classes=10, in_chans=1)
    path = tmp_path_factory.mktemp("route") / "ck"
    tailor.save(model, path, metadata={"recipe": {"data": {"name": "digits", "root": None, "train": {}, "test": {}}}})
    return path


def test_route_writes_json_tables_and_plots(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = ["route", str(checkpoint), "--cost", "macs", "--policy", "confidence,margin,learned", "--thresholds", "6"]
    rc = main([*argv, "--calib-batches", "2", "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    small, large = (row["cost"] for row in result["stages"])
    assert 0 < small < large
    assert set(result["policies"]) == {"confidence", "margin", "learned"}
    for entry in result["policies"].values():
        front = entry["holdout_front"]
        assert front and all(0 <= p["test"]["accuracy"] <= 1 for p in front)
        costs = [p["cost"] for p in entry["test"]]
        assert min(costs) == pytest.approx(small) and max(costs) == pytest.approx(small + large)
    assert json.loads((out / "route.json").read_text())["cost_unit"] == "MACs"
    for name in ("acc_vs_latency.png", "escalation_vs_threshold.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_route_combine_mean_answers_escalated_inputs_with_the_ensemble(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["route", str(checkpoint), "--cost", "macs", "--policy", "confidence", "--thresholds", "6"]
    runs = {}
    for combine in ("last", "mean"):
        assert main([*argv, "--calib-batches", "2", "--combine", combine, "--json", "--no-progress"]) == 0
        runs[combine] = json.loads(capsys.readouterr().out)
    assert runs["mean"]["combine"] == "mean" and runs["last"]["combine"] == "last"
    assert runs["mean"]["stages"] == runs["last"]["stages"]  # per-stage figures are the stages' own
    by_cost = {c: sorted(r["policies"]["confidence"]["test"], key=lambda p: p["cost"]) for c, r in runs.items()}
    # nothing escalated: both answer with the first stage (temperature scaling keeps its argmax)
    assert by_cost["mean"][0]["accuracy"] == by_cost["last"][0]["accuracy"]
    assert by_cost["last"][-1]["accuracy"] == runs["last"]["stages"][1]["test_accuracy"]  # all escalated: stage 2
    with pytest.raises(SystemExit) as exit_info:  # argparse names the bad choice and exits with status 2
        main([*argv, "--combine", "vote", "--no-progress"])
    assert exit_info.value.code == 2
    assert "--combine" in capsys.readouterr().err


def test_route_trains_saves_and_reuses_exit_heads(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    exits_dir = tmp_path / "exits"
    argv = ["route", str(checkpoint), "--stages", "largest@stage1,largest", "--cost", "macs", "--policy", "entropy"]
    argv += ["--thresholds", "4", "--exit-epochs", "1", "--calib-batches", "2", "--exits-dir", str(exits_dir)]
    assert main([*argv, "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "entropy: held-out Pareto thresholds" in first
    assert (exits_dir / "exits.json").exists()
    assert main([*argv, "--no-progress"]) == 0  # loads the saved heads: same figures
    assert capsys.readouterr().out == first


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stages", "largest"], "at least two stages"),
        (["--stages", "huge,largest"], "--stages: unknown subnet 'huge'"),
        (["--stages", "w1.5,largest"], "width must be a number in (0, 1], got 1.5"),
        (["--stages", "largest@,smallest"], "empty exit name"),
        (["--policy", "oracle"], "--policy"),
        (["--thresholds", "1"], "--thresholds must be an integer >= 2, got 1"),
        (["--stages", "smallest@stage9,largest"], "stage9"),
    ],
)
def test_route_errors_exit_2_naming_the_problem(
    checkpoint: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    assert main(["route", str(checkpoint), "--cost", "macs", "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err


def test_route_rejects_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["route", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_parse_stages() -> None:
    space = tailor.create_model("resnet20").space
    stages = parse_stages("smallest, w0.5@stage2 ,largest", space)
    assert [s.exit for s in stages] == ["final", "stage2", "final"]
    assert stages[1].subnet == space.from_wm([0.5] * space.search_dim)
