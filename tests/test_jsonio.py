"""tailor.jsonio and the files tailor writes: atomic, and with the permissions the umask gives, never 0600."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import tailor
from tailor.export import to_onnx
from tailor.jsonio import default_file_mode, read_json, temporary_sibling, write_json_atomic
from tailor.route import add_early_exits, save_exits
from tailor.search import Candidate, ParetoFront


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_file_mode_is_what_open_gives(umask: int, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    assert default_file_mode() == mode(tmp_path / "plain") == 0o666 & ~umask
    assert os.umask(umask) == umask, "reading the mode leaves the umask as it was"


def test_json_is_written_atomically_with_umask_permissions(umask: int, tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "sub" / "data.json", {"a": [1, 2.5]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    assert mode(path) == 0o666 & ~umask != 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.json"], "no temporary file left behind"
    with pytest.raises(ValueError):
        write_json_atomic(path, {"nan": float("nan")})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}, "a failed write leaves the old file whole"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.json"]


def test_temporary_siblings_are_new_hidden_files_next_to_the_target(tmp_path: Path) -> None:
    first, second = temporary_sibling(tmp_path / "out.onnx", ".onnx"), temporary_sibling(tmp_path / "out.onnx")
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(".out.onnx.") and first.suffix == ".onnx" and first.stat().st_size == 0


def test_read_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(tailor.ProfileError, match=r"profile '.*bad\.json' is not valid JSON"):
        read_json(tmp_path / "bad.json", "profile", tailor.ProfileError)
    with pytest.raises(tailor.ProfileError, match="cannot read profile"):
        read_json(tmp_path / "missing.json", "profile", tailor.ProfileError)


def test_outputs_are_not_private_to_the_owner(umask: int, tmp_path: Path) -> None:
    """A front, an ONNX export, exit heads and a checkpoint get the mode every other new file gets."""
    expected = 0o666 & ~umask
    model = tailor.create_model("small_cnn", num_classes=10, channels=(8, 16, 16)).eval()
    space = model.space
    candidates = [Candidate(space.largest(), {"accuracy": 0.9, "macs": 2.0}),
                  Candidate(space.smallest(), {"accuracy": 0.5, "macs": 1.0})]  # fmt: skip
    front = ParetoFront.from_candidates(candidates, ("accuracy", "macs")).save(tmp_path / "front.json")
    onnx = to_onnx(model, space.smallest(), tmp_path / "small.onnx").path
    exits = save_exits(add_early_exits(model, ["stage1"]), tmp_path / "exits")
    checkpoint = tailor.save(model, tmp_path / "ck")
    written = [front, onnx, exits / "exits.safetensors", exits / "exits.json",
               *(p for p in Path(checkpoint).iterdir() if p.is_file())]  # fmt: skip
    assert {p.name: mode(p) for p in written} == {p.name: expected for p in written}
