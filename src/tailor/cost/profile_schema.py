"""The profile JSON's schema as pydantic models: validation on load, and the published JSON Schema.

`validate_profile_json(data)` checks a parsed profile file and raises a `ProfileError` naming the first
offending field the way a user would write it (`subnets[2].latency_ms['8'].p90: ...`); unknown fields are
rejected, not dropped, and types are strict (`"0.5"` is not a number, `true` is not an integer).
`profile_json_schema()` is the JSON Schema generated from these models; the copy shipped in
`tailor/schemas/profile.schema.json` is checked against it by the tests (`python -m tailor.schemas` rewrites it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tailor.errors import InvalidSubnetError, ProfileError
from tailor.space import Subnet

SCHEMA = "tailor.profile/1"
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "profile.schema.json"

Ms = Annotated[float, Field(gt=0, allow_inf_nan=False, description="milliseconds")]
BatchKey = Annotated[str, Field(pattern=r"^[1-9][0-9]*$", description="a batch size, in canonical decimal form")]
Name = Annotated[str, Field(min_length=1)]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LatencyEntry(_Strict):
    """Latency of one batch size on one runtime: percentiles, and the mean, spread and count of the timed calls."""

    p50: Ms
    p90: Ms
    p99: Ms
    mean: Ms | None = Field(None, description="mean of the timed calls (ms)")
    std: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="population standard deviation of the timed calls (ms)"
    )
    repeats: Annotated[int, Field(ge=1)] | None = Field(None, description="number of timed calls")

    @model_validator(mode="after")
    def _ordered(self) -> LatencyEntry:
        if not self.p50 <= self.p90 <= self.p99:
            raise ValueError(f"percentiles must satisfy p50 <= p90 <= p99, got {self.p50}, {self.p90}, {self.p99}")
        return self


LatencyTableJson = Annotated[dict[BatchKey, LatencyEntry], Field(min_length=1)]


class RuntimeInfoJson(_Strict):
    """What a runtime ran with (`tailor.cost.RuntimeInfo`); every measurement names its runtime."""

    version: Name | None = None
    precision: Precision | None = None
    device: Name | None = Field(None, description="torch device string: cpu, cuda, cuda:1")
    threads: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class OutputCheckJson(_Strict):
    """A runtime's outputs against PyTorch fp32 on the same held-out inputs (`tailor.cost.OutputCheck`)."""

    top1_agreement: Annotated[float, Field(ge=0, le=1)]
    max_abs_diff: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    reference_max_abs: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    samples: Annotated[int, Field(ge=1)]
    inputs: Name
    within_tolerance: bool


class SubnetJson(_Strict):
    """One profiled subnet: costs, optional accuracy and `Subnet`, latency on its runtime and on the others."""

    id: Name
    subnet: dict[str, Any] | None = Field(None, description="Subnet.to_dict(); absent: simulation only")
    accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    macs: Annotated[int, Field(ge=0)]
    params: Annotated[int, Field(ge=0)]
    runtime: Name | None = Field(None, description="the runtime this subnet is served on (default: the profile's)")
    latency_ms: LatencyTableJson
    alternatives: dict[Name, LatencyTableJson] = Field(
        default_factory=dict, description="latency on the other runtimes measured, by runtime name"
    )
    checks: dict[Name, OutputCheckJson] = Field(
        default_factory=dict, description="output checks against PyTorch fp32, by runtime name"
    )

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Subnet.from_dict(value)
            except (InvalidSubnetError, TypeError, ValueError, AttributeError, KeyError) as exc:
                raise ValueError(str(exc)) from None
        return value


class ProfileJson(_Strict):
    """A `tailor.profile/1` file: measured subnets of one model on one machine, and the runtimes they ran on."""

    model_config = ConfigDict(extra="forbid", strict=True, title="tailor profile", populate_by_name=False)

    schema_: Literal["tailor.profile/1"] = Field(alias="schema")
    model: Name
    input_shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    device: Name = Field(description="free text: CPU model or GPU name")
    runtime: Name | None = Field(None, description="the runtime of subnets that do not name their own")
    backend: Name | None = Field(None, description="deprecated: the earlier name of `runtime`")
    runtimes: dict[Name, RuntimeInfoJson] = Field(default_factory=dict, description="each runtime measured")
    threads: Annotated[int, Field(ge=1)] | None = None
    subnets: Annotated[list[SubnetJson], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> ProfileJson:
        if (self.runtime is None) == (self.backend is None):
            raise ValueError("runtime: give exactly one of 'runtime' and its deprecated name 'backend'")
        seen: dict[str, int] = {}
        default = self.runtime or self.backend
        for i, s in enumerate(self.subnets):
            if s.id in seen:
                raise ValueError(f"subnets[{i}].id: {s.id!r} repeats subnets[{seen[s.id]}].id (ids must be unique)")
            seen[s.id] = i
            own = s.runtime or default
            if own in s.alternatives:
                raise ValueError(f"subnets[{i}].alternatives: lists {own!r}, the subnet's own runtime")
            if self.runtimes:
                for name in [own, *s.alternatives, *s.checks]:
                    if name not in self.runtimes:
                        raise ValueError(f"subnets[{i}]: runtime {name!r} is not described in 'runtimes'")
        return self


def _where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a field path: ('subnets', 2, 'latency_ms', '8', 'p90') -> subnets[2].latency_ms['8'].p90."""
    path = ""
    parents: list[Any] = []
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif (parents and parents[-1] in ("latency_ms", "alternatives", "checks", "runtimes")) or (
            len(parents) >= 2 and parents[-2] == "alternatives"
        ):
            path += f"[{part!r}]"
        else:
            path += f".{part}" if path else str(part)
        parents.append(part)
    return path


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return f"unknown field {loc[-1]!r}"
    if loc and loc[-1] == "[key]":
        return f"batch size key {str(loc[-2])!r} is not a positive integer in canonical form"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error"):
        message += f", got {error.get('input')!r:.100}"
    return message


def validate_profile_json(data: Any) -> ProfileJson:
    """`data` (a parsed profile file) checked against the schema; a `ProfileError` names the first bad field."""
    if not isinstance(data, dict):
        raise ProfileError(f"profile: expected a JSON object, got {type(data).__name__}")
    try:
        return ProfileJson.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _where(tuple(error["loc"]))
        message = _message(error)
        raise ProfileError(f"{where}: {message}" if where else message) from None


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a profile file, generated from the pydantic models."""
    schema = ProfileJson.model_json_schema(by_alias=True, mode="validation")
    _close_pattern_objects(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA, **schema}


def _close_pattern_objects(node: Any) -> None:
    """Objects keyed by a pattern (batch sizes) reject other keys, as the pydantic model does."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_pattern_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_objects(value)
