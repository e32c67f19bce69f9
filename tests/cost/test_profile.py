"""tailor.cost.profile: the "tailor.profile/1" JSON schema, its validation, round trips and build_profile."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost.profile import SCHEMA, Profile, build_profile
from tailor.errors import InvalidSubnetError, ProfileError

DESIGN_EXAMPLE: dict[str, Any] = {
    "schema": "tailor.profile/1",
    "model": "resnet20",
    "input_shape": [3, 32, 32],
    "device": "free text: cpu model / gpu name",
    "backend": "onnxruntime",
    "threads": 2,
    "subnets": [
        {
            "id": "r20-w50-d2",
            "accuracy": 0.8016,
            "macs": 20400000,
            "params": 135000,
            "latency_ms": {"1": {"p50": 0.21, "p90": 0.24, "p99": 0.31}, "8": {"p50": 0.9, "p90": 1.0, "p99": 1.2}},
        }
    ],
}

ms = st.floats(0.001, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def percentiles(draw: st.DrawFn) -> dict[str, float]:
    a, b, c = sorted(draw(st.tuples(ms, ms, ms)))
    return {"p50": a, "p90": b, "p99": c}


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
    space = tailor.create_model("small_cnn").space
    subnets = []
    for i in ids:
        entry: dict[str, Any] = {"id": i}
        if draw(st.booleans()):
            entry["subnet"] = space.sample(draw(st.integers(0, 1000))).to_dict()
        if draw(st.booleans()):
            entry["accuracy"] = draw(st.floats(0, 1))
        entry["macs"] = draw(st.integers(0, 10**12))
        entry["params"] = draw(st.integers(0, 10**9))
        batches = draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True))
        entry["latency_ms"] = {str(b): draw(percentiles()) for b in sorted(batches)}
        subnets.append(entry)
    return {
        "schema": SCHEMA,
        "model": draw(st.text(min_size=1, max_size=20)),
        "input_shape": draw(st.lists(st.integers(1, 512), min_size=1, max_size=4)),
        "device": draw(st.text(min_size=1, max_size=30)),
        "backend": draw(st.sampled_from(["onnxruntime", "torch", "onnxruntime-int8", "tensorrt"])),
        "threads": draw(st.one_of(st.none(), st.integers(1, 64))),
        "subnets": subnets,
    }


def test_the_design_example_loads() -> None:
    profile = Profile.from_dict(DESIGN_EXAMPLE)
    assert profile.ids == ["r20-w50-d2"]
    entry = profile["r20-w50-d2"]
    assert entry.latency_ms[8].p99 == 1.2 and entry.subnet is None and entry.accuracy == 0.8016
    assert profile.batch_sizes == [1, 8]
    assert profile.to_dict() == DESIGN_EXAMPLE


@settings(max_examples=60, deadline=None)
@given(data=profiles())
def test_dict_and_file_round_trips_are_exact(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    profile = Profile.from_dict(data)
    assert profile.to_dict() == data
    assert json.loads(json.dumps(profile.to_dict())) == data
    path = profile.save(tmp_path_factory.mktemp("p") / "sub" / "profile.json")
    assert Profile.load(path) == profile
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temporary file left


def _broken(edit: str) -> tuple[dict[str, Any], str]:
    """DESIGN_EXAMPLE with one defect, and a regex for the field the error must name."""
    d = copy.deepcopy(DESIGN_EXAMPLE)
    s = d["subnets"][0]
    lat = s["latency_ms"]
    match edit:
        case "schema":
            d["schema"] = "tailor.profile/2"
            return d, "schema"
        case "duplicate id":
            d["subnets"].append(copy.deepcopy(s))
            return d, r"subnets\[1\]\.id"
        case "negative latency":
            lat["8"]["p50"] = -1.0
            return d, r"subnets\[0\]\.latency_ms\['8'\]\.p50"
        case "zero latency":
            lat["1"]["p90"] = 0
            return d, r"latency_ms\['1'\]\.p90"
        case "unordered":
            lat["1"] = {"p50": 0.3, "p90": 0.2, "p99": 0.4}
            return d, r"latency_ms\['1'\].*p50 <= p90 <= p99"
        case "batch zero":
            lat["0"] = lat.pop("1")
            return d, "'0'"
        case "batch text":
            lat["one"] = lat.pop("1")
            return d, "'one'"
        case "batch padded":
            lat["08"] = lat.pop("8")
            return d, "'08'"
        case "missing percentile":
            del lat["8"]["p99"]
            return d, r"latency_ms\['8'\]\.p99: missing"
        case "empty latency":
            s["latency_ms"] = {}
            return d, r"subnets\[0\]\.latency_ms"
        case "missing macs":
            del s["macs"]
            return d, r"subnets\[0\]\.macs: missing"
        case "negative params":
            s["params"] = -5
            return d, r"subnets\[0\]\.params"
        case "accuracy above one":
            s["accuracy"] = 80.16
            return d, r"subnets\[0\]\.accuracy"
        case "unknown field":
            s["energy_j"] = 0.1
            return d, "energy_j"
        case "bad subnet":
            s["subnet"] = {"widths": {"a": 2.0}}
            return d, r"subnets\[0\]\.subnet"
        case "threads":
            d["threads"] = 0
            return d, "threads"
        case "input shape":
            d["input_shape"] = [3, -32, 32]
            return d, "input_shape"
        case "no subnets":
            d["subnets"] = []
            return d, "subnets"
        case "missing model":
            del d["model"]
            return d, "model: missing"
    raise AssertionError(edit)


EDITS = [
    "schema", "duplicate id", "negative latency", "zero latency", "unordered", "batch zero", "batch text",
    "batch padded", "missing percentile", "empty latency", "missing macs", "negative params",
    "accuracy above one", "unknown field", "bad subnet", "threads", "input shape", "no subnets", "missing model",
]  # fmt: skip


@pytest.mark.parametrize("edit", EDITS)
def test_validation_names_the_offending_field(edit: str) -> None:
    data, field = _broken(edit)
    with pytest.raises(ProfileError, match=field):
        Profile.from_dict(data)


@settings(max_examples=40, deadline=None)
@given(profiles(), st.data())
def test_any_unordered_percentiles_are_rejected(data: dict[str, Any], draw: st.DataObject) -> None:
    entry = draw.draw(st.sampled_from(data["subnets"]))
    key = draw.draw(st.sampled_from(sorted(entry["latency_ms"])))
    p = entry["latency_ms"][key]
    if p["p50"] == p["p99"]:
        p["p99"] = p["p50"] * 2
    p["p50"], p["p99"] = p["p99"], p["p50"]
    with pytest.raises(ProfileError, match="p50 <= p90 <= p99"):
        Profile.from_dict(data)


def test_load_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.load(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="unknown"):
        Profile.from_dict(DESIGN_EXAMPLE)["unknown"]


def test_build_profile_measures_every_subnet_and_batch_size(tmp_path: Path) -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = [model.space.smallest(), model.space.largest()]
    profile = build_profile(
        model, subs, batch_sizes=[1, 4], backend="onnxruntime", threads=1, warmup=1, repeats=3,
        accuracy={subs[1]: 0.9},
    )  # fmt: skip
    assert profile.model == "small_cnn" and profile.backend == "onnxruntime" and profile.threads == 1
    assert profile.input_shape == (3, 32, 32) and profile.batch_sizes == [1, 4]
    small, large = profile.subnets
    assert small.subnet == subs[0] and small.id == subs[0].id and small.accuracy is None
    assert large.accuracy == 0.9
    assert small.macs < large.macs and small.params < large.params
    assert Profile.load(profile.save(tmp_path / "p.json")) == profile
    with pytest.raises(ProfileError, match="batch_size"):
        build_profile(model, subs, batch_sizes=[0])
    with pytest.raises(ProfileError, match="tvm"):
        build_profile(model, subs, backend="tvm")
    with pytest.raises(InvalidSubnetError):
        build_profile(model, [tailor.create_model("resnet20").space.largest()], backend="torch")


def test_build_profile_interleaved_reports_progress_and_checks_every_subnet_first() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = [model.space.smallest(), model.space.uniform(0.5), model.space.largest()]
    calls: list[tuple[int, int]] = []
    profile = build_profile(
        model, subs, batch_sizes=[1, 2], backend="torch", warmup=0, repeats=4, rounds=2,
        ids={subs[1]: "half"}, progress=lambda d, t: calls.append((d, t)),
    )  # fmt: skip
    assert profile.ids == [subs[0].id, "half", subs[2].id] and profile.batch_sizes == [1, 2]
    assert calls[-1] == (12, 12) and len(calls) == 12  # 2 rounds x 3 subnets x 2 batch sizes
    sequential: list[tuple[int, int]] = []
    build_profile(
        model, subs[:2], backend="torch", warmup=0, repeats=1, progress=lambda d, t: sequential.append((d, t))
    )
    assert sequential == [(1, 2), (2, 2)]
    outside = model.space.largest().replace(widths={"stage3.out": 0.3})
    timed: list[int] = []
    with pytest.raises(InvalidSubnetError, match=r"stage3\.out"):
        build_profile(model, [subs[0], outside], backend="torch", repeats=1, progress=lambda d, t: timed.append(d))
    assert timed == [], "a bad subnet is refused before anything is measured"
    with pytest.raises(ProfileError, match="rounds"):
        build_profile(model, subs, backend="torch", rounds=0)
    with pytest.raises(ProfileError, match="no subnets"):
        build_profile(model, [], backend="torch")
