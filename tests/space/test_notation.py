"""The one subnet notation (`parse_subnets`) and the one subnet-file reader (`read_subnets`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tailor
from tailor.errors import InvalidSubnetError
from tailor.search import Candidate, ParetoFront
from tailor.space import NamedSubnet, SearchSpace, parse_subnets, read_subnets, uniform_width

RESNET = tailor.create_model("resnet20").space
MOBILE = tailor.create_model("mobilenet_v2").space


def _ids(named: list[NamedSubnet]) -> list[str]:
    return [n.subnet.id for n in named]


def test_names_and_widths() -> None:
    named = parse_subnets("largest, smallest ,w0.5,w0.5:min,w1", RESNET)
    assert [n.name for n in named] == ["largest", "smallest", "w0.5", "w0.5:min", "w1"]
    assert named[0].subnet == RESNET.largest() and named[1].subnet == RESNET.smallest()
    assert named[2].subnet == RESNET.uniform(0.5) and named[4].subnet == RESNET.largest()
    assert named[3].subnet.depths == {d.name: d.min for d in RESNET.depths}
    assert all(n.exit is None for n in named)


def test_old_spellings_are_aliases() -> None:
    assert _ids(parse_subnets("uniform:0.5,uniform:0.25:min", RESNET)) == _ids(parse_subnets("w0.5,w0.25:min", RESNET))
    # and the route's: w<W>@<exit>
    stages = parse_subnets("smallest,w0.5@stage2,largest", RESNET, exits=True)
    assert [n.exit for n in stages] == [None, "stage2", None]
    assert stages[1].subnet == RESNET.from_wm([0.5] * RESNET.search_dim)


def test_a_width_snaps_only_in_dimensions_without_it() -> None:
    sub = parse_subnets("w0.75", MOBILE)[0].subnet  # expand ratios allow 1/2, 2/3, 1: they take 1
    for dim in MOBILE.widths:
        expected = 0.75 if dim.contains(0.75) else dim.snap(0.75)
        assert sub.width(dim.name) == expected
    with pytest.raises(InvalidSubnetError, match=r"'w0.3': no width dimension allows 0.3 \(allowed: 0.25, 0.5"):
        parse_subnets("w0.3", RESNET)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([0.25, 0.5, 0.75, 1.0]), st.sampled_from(["max", "min"]))
def test_uniform_width_is_canonical_and_in_the_space(width: float, depth: str) -> None:
    for space in (RESNET, MOBILE):
        sub = uniform_width(space, width, depth)
        assert space.contains(sub) and space.canonical(sub) == sub


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no subnets given"),
        ("largest,,smallest", "empty item"),
        ("biggest", "unknown subnet 'biggest'"),
        ("wide", "unknown subnet 'wide'"),
        ("w0.5:deep", "the depth after ':' must be min or max"),
        ("w1.5", r"subnet 'w1.5': width must be a number in \(0, 1\], got 1.5"),
        ("uniform:x", "width 'x' is not a number"),
        ("uniform:0.5:min:x", "expected uniform:W or uniform:W:min"),
        ("largest@stage1", "names an early exit"),
        ("nothere.json", "cannot read subnet file 'nothere.json'"),
    ],
)
def test_bad_items_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(InvalidSubnetError, match=message) as caught:
        parse_subnets(spec, RESNET, what="--subnets")
    assert str(caught.value).startswith("--subnets: ")


def test_reads_a_list_a_profile_and_a_front(tmp_path: Path) -> None:
    subs = [RESNET.largest(), RESNET.sample(1), RESNET.smallest()]
    bare = tmp_path / "list.json"
    bare.write_text(json.dumps([s.to_dict() for s in subs]))
    profile = tmp_path / "prof.json"
    profile.write_text(json.dumps({"schema": "tailor.profile/1", "model": "resnet20",
                                   "subnets": [{"id": f"p{i}", "subnet": s.to_dict(), "macs": 1} for i, s in enumerate(subs)]}))  # fmt: skip
    cands = [Candidate(s, {"accuracy": 0.5 + 0.1 * i, "macs": 10 ** (i + 1)}) for i, s in enumerate(subs)]
    front = ParetoFront.from_candidates(cands, ("accuracy", "macs")).save(tmp_path / "front.json")
    expected = {RESNET.canonical(s) for s in subs}
    for path in (bare, profile, front):
        named = read_subnets(path, RESNET)
        assert {n.subnet for n in named} == expected, path.name
        assert parse_subnets(str(path), RESNET)[0].subnet in expected
    assert [n.name for n in read_subnets(profile, RESNET)] == ["p0", "p1", "p2"]
    # FILE#ID: one entry, by the file's id or the subnet's id
    assert parse_subnets(f"{profile}#p1", RESNET)[0].subnet == RESNET.canonical(subs[1])
    target = read_subnets(front, RESNET)[1]
    assert parse_subnets(f"{front}#{target.subnet.id}", RESNET) == [target]
    with pytest.raises(InvalidSubnetError, match="has no entry with id 'p9'"):
        parse_subnets(f"{profile}#p9", RESNET)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"subnetz": []}, "expected a JSON list of subnets, a profile"),
        ([], "holds no subnets"),
        ([{"widths": {"stage1.out": "wide"}}], r"entry 0: widths.stage1.out: expected a number"),
        ([{"widths": {}, "depth": {}}], r"entry 0: unknown key 'depth'; known keys: depths, widths"),
        ({"subnets": [{"id": 3, "subnet": {}}]}, r"subnets\[0\]: id: expected a string, got 3"),
        ({"subnets": [{"id": "a", "subnet": None}]}, r"subnets\[0\]: has no subnet"),
        ({"front": [{"subnet": {"widths": {"nope": 0.5}}}]}, r"front\[0\]: subnet sn-\w+ lacks width dimension"),
        ([{"widths": {"stage1.out": 0}}], r"entry 0: widths.stage1.out: input should be greater than 0"),
    ],
)
def test_malformed_files_name_the_entry_and_key(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidSubnetError, match=message):
        read_subnets(path, RESNET)


def test_exits_in_a_file_are_kept_for_route_and_refused_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps([{"subnet": RESNET.smallest().to_dict(), "exit": "stage2"},
                                {"subnet": RESNET.largest().to_dict()}]))  # fmt: skip
    assert [n.exit for n in parse_subnets(str(path), RESNET, exits=True)] == ["stage2", None]
    with pytest.raises(InvalidSubnetError, match="holds early exits"):
        parse_subnets(str(path), RESNET)


def test_subnets_come_back_canonical_one_network_one_id(tmp_path: Path) -> None:
    rng = random.Random(0)
    sub = next(s for s in (RESNET.sample(rng) for _ in range(100)) if RESNET.skipped(s))
    renamed = sub.replace(widths={name: 1.0 for name in RESNET.skipped(sub)})  # the same network, another name
    assert renamed != sub
    path = tmp_path / "two.json"
    path.write_text(json.dumps([sub.to_dict(), renamed.to_dict()]))
    a, b = read_subnets(path, RESNET)
    assert a.subnet == b.subnet == RESNET.canonical(renamed)


def test_reader_without_a_space_checks_types_only(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"widths": {"x": 0.5}, "depths": {"s": 2}}]))
    (named,) = read_subnets(path)
    assert named.subnet.widths == {"x": 0.5} and named.name == named.subnet.id
    with pytest.raises(InvalidSubnetError, match="lacks width dimension|not in the space"):
        read_subnets(path, SearchSpace(RESNET.widths, RESNET.depths))


def test_a_position_picks_an_entry_when_no_id_matches(tmp_path: Path) -> None:
    subs = [RESNET.smallest(), RESNET.uniform(0.5), RESNET.largest()]
    path = tmp_path / "list.json"
    path.write_text(json.dumps([s.to_dict() for s in subs]))
    assert parse_subnets(f"{path}#0", RESNET)[0].subnet == subs[0]
    assert parse_subnets(f"{path}#-1", RESNET)[0].subnet == subs[2]
    with pytest.raises(InvalidSubnetError, match="has 3 entries; #3 is not one of them"):
        parse_subnets(f"{path}#3", RESNET)
    named = tmp_path / "named.json"
    named.write_text(json.dumps([{"id": "1", "subnet": subs[2].to_dict()}, {"id": "0", "subnet": subs[0].to_dict()}]))
    assert parse_subnets(f"{named}#1", RESNET)[0].subnet == subs[2], "an id wins over a position"
