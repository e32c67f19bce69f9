"""tailor.cost.profile: the "tailor.profile/1" JSON schema, its validation, round trips, checks and build_profile."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.cost import LatencyStats, OutputCheck, supported_percentile
from tailor.cost.profile import (
    SCHEMA,
    SCHEMA_FILE,
    Profile,
    ProfileWarning,
    SubnetProfile,
    build_profile,
    choose_runtime,
    profile_json_schema,
)
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


RUNTIME_NAMES = ["onnxruntime", "torch", "onnxruntime-int8", "openvino", "tensorrt"]


@st.composite
def latency_entry(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = draw(percentiles())
    if draw(st.booleans()):
        entry["mean"] = draw(ms)
        entry["std"] = draw(st.floats(0, 1e3))
        entry["repeats"] = draw(st.integers(1, 10**6))
    return entry


@st.composite
def latency_tables(draw: st.DrawFn) -> dict[str, Any]:
    batches = draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True))
    return {str(b): draw(latency_entry()) for b in sorted(batches)}


@st.composite
def output_checks(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "top1_agreement": draw(st.floats(0, 1)),
        "max_abs_diff": draw(st.floats(0, 1e3)),
        "reference_max_abs": draw(st.floats(0, 1e3)),
        "samples": draw(st.integers(1, 10**4)),
        "inputs": draw(st.text(min_size=1, max_size=20)),
        "within_tolerance": draw(st.booleans()),
    }


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    """Profile JSON as `Profile.to_dict` writes it: one or several runtimes, optional fields present or not."""
    ids = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
    measured = draw(st.lists(st.sampled_from(RUNTIME_NAMES), min_size=1, max_size=3, unique=True))
    top = measured[0]
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
        own = draw(st.sampled_from(measured))
        if own != top:
            entry["runtime"] = own
        entry["latency_ms"] = draw(latency_tables())
        others = [r for r in measured if r != own and draw(st.booleans())]
        if others:
            entry["alternatives"] = {r: draw(latency_tables()) for r in others}
        if draw(st.booleans()):
            entry["checks"] = {r: draw(output_checks()) for r in [own, *others]}
        subnets.append(entry)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "model": draw(st.text(min_size=1, max_size=20)),
        "input_shape": draw(st.lists(st.integers(1, 512), min_size=1, max_size=4)),
        "device": draw(st.text(min_size=1, max_size=30)),
        "runtime": top,
    }
    if draw(st.booleans()):
        data["runtimes"] = {
            r: {"version": "1.0", "precision": draw(st.sampled_from(["fp32", "int8", "bf16"])), "device": "cpu",
                "threads": draw(st.integers(1, 8)), "options": {"graph_optimization": "all"}}
            for r in measured
        }  # fmt: skip
    data["threads"] = draw(st.one_of(st.none(), st.integers(1, 64)))
    data["subnets"] = subnets
    return data


def test_the_design_example_loads() -> None:
    profile = Profile.from_dict(DESIGN_EXAMPLE)
    assert profile.ids == ["r20-w50-d2"]
    entry = profile["r20-w50-d2"]
    assert entry.latency_ms[8].p99 == 1.2 and entry.subnet is None and entry.accuracy == 0.8016
    assert profile.batch_sizes == [1, 8]
    assert profile.runtime == profile.runtime_of("r20-w50-d2") == "onnxruntime"
    written = {("runtime" if k == "backend" else k): v for k, v in DESIGN_EXAMPLE.items()}  # "backend" is read, not written
    assert profile.to_dict() == written
    assert Profile.from_dict(written) == profile
    with pytest.warns(DeprecationWarning, match="use .runtime"):
        assert profile.backend == "onnxruntime"


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
            d["schema"] = "tailor.profile/9"
            return d, "schema"
        case "text latency":
            lat["8"]["p50"] = "0.9"
            return d, r"subnets\[0\]\.latency_ms\['8'\]\.p50: Input should be a valid number"
        case "boolean repeats":
            lat["8"]["repeats"] = True
            return d, r"latency_ms\['8'\]\.repeats"
        case "negative spread":
            lat["1"]["std"] = -0.1
            return d, r"latency_ms\['1'\]\.std"
        case "runtime and backend":
            d["runtime"] = "torch"
            return d, "exactly one of 'runtime' and its deprecated name 'backend'"
        case "undescribed runtime":
            d["runtimes"] = {"onnxruntime": {"precision": "fp32"}}
            s["alternatives"] = {"openvino": copy.deepcopy(lat)}
            return d, r"subnets\[0\]: runtime 'openvino' is not described"
        case "bad alternative":
            s["alternatives"] = {"openvino": copy.deepcopy(lat)}
            s["alternatives"]["openvino"]["8"]["p50"] = 0.0
            return d, r"subnets\[0\]\.alternatives\['openvino'\]\['8'\]\.p50"
        case "own runtime as alternative":
            s["alternatives"] = {"onnxruntime": copy.deepcopy(lat)}
            return d, r"subnets\[0\]\.alternatives: lists 'onnxruntime'"
        case "bad precision":
            d["runtimes"] = {"onnxruntime": {"precision": "float32"}}
            return d, r"runtimes\['onnxruntime'\]\.precision"
        case "bad check":
            s["checks"] = {"onnxruntime": {"top1_agreement": 1.5, "max_abs_diff": 0.0, "reference_max_abs": 1.0,
                                           "samples": 4, "inputs": "x", "within_tolerance": True}}  # fmt: skip
            return d, r"subnets\[0\]\.checks\['onnxruntime'\]\.top1_agreement"
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
    "schema", "text latency", "boolean repeats", "negative spread", "runtime and backend", "undescribed runtime",
    "own runtime as alternative", "bad alternative", "bad precision", "bad check", "duplicate id", "negative latency", "zero latency", "unordered", "batch zero", "batch text",
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
        model, subs, batch_sizes=[1, 4], runtime="onnxruntime", threads=1, warmup=1, repeats=3,
        accuracy={subs[1]: 0.9},
    )  # fmt: skip
    assert profile.model == "small_cnn" and profile.runtime == "onnxruntime" and profile.threads == 1
    info = profile.runtime_info("onnxruntime")
    assert info.precision == "fp32" and info.device == "cpu" and info.threads == 1 and info.version
    assert info.options["providers"] == ["CPUExecutionProvider"] and info.options["graph_optimization"] == "all"
    assert all(s.repeats == 3 and s.mean is not None for e in profile.subnets for s in e.latency_ms.values())
    assert profile.input_shape == (3, 32, 32) and profile.batch_sizes == [1, 4]
    small, large = profile.subnets
    assert small.subnet == subs[0] and small.id == subs[0].id and small.accuracy is None
    assert large.accuracy == 0.9
    assert small.macs < large.macs and small.params < large.params
    assert Profile.load(profile.save(tmp_path / "p.json")) == profile
    with pytest.raises(ProfileError, match="batch_size"):
        build_profile(model, subs, batch_sizes=[0])
    with pytest.raises(ProfileError, match="tvm"):
        build_profile(model, subs, runtime="tvm")
    with pytest.raises(InvalidSubnetError):
        build_profile(model, [tailor.create_model("resnet20").space.largest()], runtime="torch")


def test_build_profile_interleaved_reports_progress_and_checks_every_subnet_first() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = [model.space.smallest(), model.space.uniform(0.5), model.space.largest()]
    calls: list[tuple[int, int]] = []
    profile = build_profile(
        model, subs, batch_sizes=[1, 2], runtime="torch", warmup=0, repeats=4, rounds=2,
        ids={subs[1]: "half"}, progress=lambda d, t: calls.append((d, t)),
    )  # fmt: skip
    assert profile.ids == [subs[0].id, "half", subs[2].id] and profile.batch_sizes == [1, 2]
    assert calls[-1] == (12, 12) and len(calls) == 12  # 2 rounds x 3 subnets x 2 batch sizes
    sequential: list[tuple[int, int]] = []
    build_profile(
        model, subs[:2], runtime="torch", warmup=0, repeats=1, progress=lambda d, t: sequential.append((d, t))
    )
    assert sequential == [(1, 2), (2, 2)]
    outside = model.space.largest().replace(widths={"stage3.out": 0.3})
    timed: list[int] = []
    with pytest.raises(InvalidSubnetError, match=r"stage3\.out"):
        build_profile(model, [subs[0], outside], runtime="torch", repeats=1, progress=lambda d, t: timed.append(d))
    assert timed == [], "a bad subnet is refused before anything is measured"
    with pytest.raises(ProfileError, match="rounds"):
        build_profile(model, subs, runtime="torch", rounds=0)
    with pytest.raises(ProfileError, match="no subnets"):
        build_profile(model, [], runtime="torch")


# -- the published schema ---------------------------------------------------------------------------------------


def test_the_committed_json_schema_is_the_generated_one() -> None:
    from tailor.schemas import schema_for

    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == schema_for("profile"), "regenerate it: python -m tailor.schemas"
    generated = profile_json_schema()
    assert generated["$id"] == SCHEMA and "subnets" in committed["required"]
    assert committed["properties"] == generated["properties"]


@settings(max_examples=25, deadline=None)
@given(data=profiles())
def test_every_profile_tailor_writes_is_valid_under_the_published_schema(data: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.validate(Profile.from_dict(data).to_dict(), schema)
    broken = copy.deepcopy(data)
    broken["subnets"][0]["latency_ms"] = {"0": {"p50": 1.0, "p90": 1.0, "p99": 1.0}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# -- what a reloaded profile keeps ------------------------------------------------------------------------------


def test_a_reloaded_measured_profile_keeps_repeats_mean_and_spread(tmp_path: Path) -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    profile = build_profile(model, [model.space.smallest()], [1, 2], runtime="torch", warmup=0, repeats=7)
    again = Profile.load(profile.save(tmp_path / "p.json"))
    for stats in again.subnets[0].latency_ms.values():
        assert stats.repeats == 7 and stats.mean is not None and math.isfinite(stats.mean) and stats.std >= 0
        assert stats.p50 <= stats.p99
    assert again == profile


# -- checks: where a profile is unreliable ----------------------------------------------------------------------


def _profile(tables: dict[str, dict[int, LatencyStats]], runtime: str = "torch") -> Profile:
    entries = tuple(
        SubnetProfile(id=i, macs=0, params=0, latency_ms=t, accuracy=0.5 + 0.1 * n)
        for n, (i, t) in enumerate(tables.items())
    )
    return Profile("m", (3, 8, 8), "cpu", runtime, 1, entries)


def test_check_names_the_subnet_and_batch_of_non_monotone_latency_and_thin_tails() -> None:
    fine = {1: LatencyStats(1.0, 1.1, 1.2, 1.0, 0.1, 200), 8: LatencyStats(4.0, 4.1, 4.2, 4.0, 0.1, 200)}
    falls = {1: LatencyStats(3.0, 3.1, 3.2, 3.0, 0.1, 200), 8: LatencyStats(2.0, 2.1, 2.2, 2.0, 0.1, 200)}
    thin = {1: LatencyStats(1.0, 1.1, 9.0, 1.2, 1.0, 50), 8: LatencyStats(4.0, 4.1, 9.5, 4.0, 0.1, 200)}
    profile = _profile({"fine": fine, "falls": falls, "thin": thin})
    with pytest.warns(ProfileWarning, match=r"'falls' \(torch\): batch 8 measured faster than batch 1"):
        issues = profile.check("p99")
    assert [(i.kind, i.subnet_id, i.batch_size) for i in issues] == [
        ("non-monotone", "falls", 8),
        ("thin tail", "thin", 1),
    ]
    assert "p99 rests on 50 repeats (needs >= 100)" in issues[1].message
    assert [i.kind for i in profile.check("p90", warn=False)] == ["non-monotone"]  # 50 repeats support p90
    assert _profile({"fine": fine}).check("p99", warn=False) == []
    unrecorded = _profile({"old": {1: LatencyStats(1.0, 1.1, 1.2)}})
    assert [i.kind for i in unrecorded.check("p90", warn=False)] == ["thin tail"]
    assert unrecorded.check("p50", warn=False) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=6))
def test_supported_percentile_matches_the_repeats_each_tail_needs(counts: list[int]) -> None:
    fewest = min(counts)
    expected = "p99" if fewest >= 100 else "p90" if fewest >= 20 else "p50"
    assert supported_percentile(fewest) == expected
    assert supported_percentile(None) == "p50"
    tables = {f"s{i}": {1: LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, c)} for i, c in enumerate(counts)}
    thin = {i.subnet_id for i in _profile(tables).check(expected, warn=False)}
    assert thin == set(), f"{expected} is supported by every entry"


# -- several runtimes: choosing, restricting --------------------------------------------------------------------


def _stats(ms_: float) -> LatencyStats:
    return LatencyStats(ms_, ms_, ms_, ms_, 0.0, 100)


def _check(ok: bool) -> OutputCheck:
    return OutputCheck(1.0 if ok else 0.5, 0.0 if ok else 3.0, 1.0, 64, "random", ok)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(RUNTIME_NAMES),
        st.tuples(st.lists(st.floats(0.01, 100), min_size=2, max_size=2), st.booleans()),
        min_size=1,
    )
)
def test_choose_runtime_takes_the_fastest_within_tolerance(drawn: dict[str, tuple[list[float], bool]]) -> None:
    measurements = {r: {1: _stats(t[0]), 8: _stats(t[1])} for r, (t, _) in drawn.items()}
    checks = {r: _check(ok) for r, (_, ok) in drawn.items()}
    chosen = choose_runtime(measurements, checks)
    passing = [r for r, (_, ok) in drawn.items() if ok]
    if not passing:
        assert chosen == (next(iter(drawn)) if len(drawn) == 1 else None)
        return
    assert chosen in passing
    best = {b: min(measurements[r][b].p50 for r in passing) for b in (1, 8)}
    worst = {r: max(measurements[r][b].p50 / best[b] for b in (1, 8)) for r in passing}
    assert worst[chosen] == min(worst.values())
    if len(passing) == 1 or all(measurements[r] == measurements[passing[0]] for r in passing):
        return
    dominated = [r for r in passing if all(measurements[r][b].p50 > measurements[chosen][b].p50 for b in (1, 8))]
    assert chosen not in dominated


def test_with_runtimes_rechooses_per_subnet_among_the_allowed_runtimes() -> None:
    entries = (
        SubnetProfile(id="a", macs=0, params=0, accuracy=0.6, runtime="openvino",
                      latency_ms={1: _stats(1.0)}, alternatives={"onnxruntime": {1: _stats(2.0)}, "torch": {1: _stats(9.0)}},
                      checks={"openvino": _check(True), "onnxruntime": _check(True)}),
        SubnetProfile(id="b", macs=0, params=0, accuracy=0.7, runtime="onnxruntime",
                      latency_ms={1: _stats(3.0)}, alternatives={"openvino": {1: _stats(2.0)}},
                      checks={"openvino": _check(False), "onnxruntime": _check(True)}),
    )  # fmt: skip
    profile = Profile("m", (3, 8, 8), "cpu", "onnxruntime", 1, entries)
    assert profile.measured_runtimes == ["onnxruntime", "openvino", "torch"]
    assert [profile.runtime_of(i) for i in ("a", "b")] == ["openvino", "onnxruntime"]
    ort = profile.with_runtimes(["onnxruntime"])
    assert [ort.runtime_of(i) for i in ("a", "b")] == ["onnxruntime", "onnxruntime"]
    assert ort["a"].latency_ms[1].p50 == 2.0 and ort.runtime == "onnxruntime"
    assert ort["a"].alternatives == {} and set(ort["a"].checks) == {"onnxruntime"}
    both = profile.with_runtimes(["openvino", "onnxruntime"])
    assert both["b"].latency_ms[1].p50 == 3.0, "openvino is faster for b but outside tolerance"
    with pytest.raises(ProfileError, match="'b' was not measured on any of \\['torch'\\]"):
        profile.with_runtimes(["torch"])
    with pytest.raises(ProfileError, match="tensorrt"):
        profile.with_runtimes(["tensorrt"])
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_build_profile_on_several_runtimes_serves_each_subnet_on_its_fastest_within_tolerance() -> None:
    model = tailor.create_model("small_cnn", num_classes=10).eval()
    subs = [model.space.smallest(), model.space.largest()]
    profile = build_profile(model, subs, [1, 2], runtime=["torch", "onnxruntime", "onnxruntime-int8"],
                            warmup=0, repeats=4)  # fmt: skip
    assert list(profile.runtimes) == ["torch", "onnxruntime", "onnxruntime-int8"]
    assert profile.runtimes["onnxruntime-int8"].precision == "int8"
    for entry in profile.subnets:
        assert set(entry.measurements(profile.runtime)) == {"torch", "onnxruntime", "onnxruntime-int8"}
        assert entry.checks["torch"].max_abs_diff == 0.0 and entry.checks["onnxruntime"].within_tolerance
        assert not entry.checks["onnxruntime-int8"].within_tolerance, "int8 logits are not within 1e-3 of fp32"
        assert entry.runtime != "onnxruntime-int8"
        assert entry.runtime == choose_runtime(entry.measurements(profile.runtime), entry.checks)
    with pytest.raises(ProfileError, match="must not repeat"):
        build_profile(model, subs, runtime=["torch", "torch"])
    with pytest.raises(ProfileError, match="check_inputs"):
        build_profile(model, subs, runtime="torch", check_inputs=np.zeros((4, 3, 8, 8), np.float32))
