"""`Profile`: measured cost (and optionally accuracy) of a set of subnets, as versioned JSON.

The contract between `tailor.cost` (which writes it), `tailor.search` and `tailor.serve` (which read it),
schema `"tailor.profile/1"`:

    {"schema": "tailor.profile/1", "model": "resnet20", "input_shape": [3, 32, 32],
     "device": "free text", "backend": "onnxruntime", "threads": 2,
     "subnets": [{"id": "...", "subnet": {...}, "accuracy": 0.80, "macs": 20400000, "params": 135000,
                  "latency_ms": {"1": {"p50": 0.21, "p90": 0.24, "p99": 0.31}, "8": {...}}}]}

`subnet` and `accuracy` are optional (null or absent). Loading validates everything and raises a
`ProfileError` naming the field (`subnets[2].latency_ms['8'].p90`); unknown fields are rejected, not dropped.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailor.cost.measure import (
    LatencyStats,
    check_backend,
    latency_table,
    macs,
    measure_interleaved,
    params,
    prepare,
)
from tailor.errors import InvalidSubnetError, ProfileError
from tailor.export._common import check_positive_int, input_shape_of, static_subnet
from tailor.jsonio import read_json, write_json_atomic
from tailor.ops import ElasticModel
from tailor.space import Subnet

SCHEMA = "tailor.profile/1"
_TOP_KEYS = {"schema", "model", "input_shape", "device", "backend", "threads", "subnets"}
_SUBNET_KEYS = {"id", "subnet", "accuracy", "macs", "params", "latency_ms"}
_PERCENTILES = ("p50", "p90", "p99")


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ProfileError(f"{where}{key}: missing")
    return data[key]


def _check_keys(data: Any, allowed: set[str], required: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where or 'profile'}: expected an object, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise ProfileError(f"{where or 'profile'}: unknown field(s) {sorted(map(str, unknown))}")
    for key in sorted(required):
        _require(data, key, where + "." if where else "")


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{name}: expected a non-empty string, got {value!r:.100}")
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(f"{name}: expected a non-negative integer, got {value!r:.100}")
    return int(value)


def _ms(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProfileError(f"{name}: expected a positive finite number of milliseconds, got {value!r:.100}")
    return float(value)


def _latency_stats(value: Any, name: str) -> LatencyStats:
    if isinstance(value, LatencyStats):
        value = value.to_dict()
    _check_keys(value, set(_PERCENTILES), set(_PERCENTILES), name)
    p50, p90, p99 = (_ms(value[p], f"{name}.{p}") for p in _PERCENTILES)
    if not p50 <= p90 <= p99:
        raise ProfileError(f"{name}: percentiles must satisfy p50 <= p90 <= p99, got {p50}, {p90}, {p99}")
    return LatencyStats(p50, p90, p99)


def _batch_key(key: Any, name: str) -> int:
    value = key
    if isinstance(key, str) and key.isdigit() and str(int(key)) == key:
        value = int(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProfileError(f"{name}: batch size key {str(key)!r} is not a positive integer in canonical form")
    return value


@dataclass(frozen=True)
class SubnetProfile:
    """One profiled subnet: id, optional `Subnet` and accuracy, MACs, params, latency per batch size."""

    id: str
    macs: int
    params: int
    latency_ms: Mapping[int, LatencyStats]
    subnet: Subnet | None = None
    accuracy: float | None = None

    def __post_init__(self) -> None:
        self._validate(f"subnet {self.id!r}")

    def _validate(self, where: str) -> None:
        _string(self.id, f"{where}.id")
        _count(self.macs, f"{where}.macs")
        _count(self.params, f"{where}.params")
        if self.subnet is not None and not isinstance(self.subnet, Subnet):
            raise ProfileError(f"{where}.subnet: expected a Subnet, got {type(self.subnet).__name__}")
        if self.accuracy is not None:
            acc = self.accuracy
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
                raise ProfileError(f"{where}.accuracy: expected a number in [0, 1] or null, got {acc!r:.100}")
        if not isinstance(self.latency_ms, Mapping) or not self.latency_ms:
            raise ProfileError(f"{where}.latency_ms: expected a non-empty object keyed by batch size")
        table = {}
        for key, stats in self.latency_ms.items():
            batch = _batch_key(key, f"{where}.latency_ms")
            table[batch] = _latency_stats(stats, f"{where}.latency_ms[{str(key)!r}]")
        object.__setattr__(self, "latency_ms", dict(sorted(table.items())))

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.subnet is not None:
            out["subnet"] = self.subnet.to_dict()
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        out["macs"] = self.macs
        out["params"] = self.params
        out["latency_ms"] = {str(b): s.to_dict() for b, s in self.latency_ms.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "subnet") -> SubnetProfile:
        _check_keys(data, _SUBNET_KEYS, {"id", "macs", "params", "latency_ms"}, where)
        sub = data.get("subnet")
        if sub is not None:
            try:
                sub = Subnet.from_dict(sub)
            except (InvalidSubnetError, TypeError, ValueError, AttributeError) as exc:
                raise ProfileError(f"{where}.subnet: {exc}") from None
        latency_ms = data["latency_ms"]
        if not isinstance(latency_ms, Mapping) or not latency_ms:
            raise ProfileError(f"{where}.latency_ms: expected a non-empty object keyed by batch size")
        probe = cls.__new__(cls)
        for name, value in (
            ("id", data["id"]),
            ("macs", data["macs"]),
            ("params", data["params"]),
            ("latency_ms", latency_ms),
            ("subnet", sub),
            ("accuracy", data.get("accuracy")),
        ):
            object.__setattr__(probe, name, value)
        probe._validate(where)
        return probe


@dataclass(frozen=True)
class Profile:
    """Measured costs of subnets of one model on one device/backend; see the module docstring for the JSON."""

    model: str
    input_shape: tuple[int, ...]
    device: str
    backend: str
    threads: int | None
    subnets: tuple[SubnetProfile, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _string(self.model, "model")
        _string(self.device, "device")
        _string(self.backend, "backend")
        shape = self.input_shape
        if (
            not isinstance(shape, (list, tuple))
            or not shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape)
        ):
            raise ProfileError(f"input_shape: expected a list of positive integers, got {shape!r:.100}")
        object.__setattr__(self, "input_shape", tuple(shape))
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads <= 0
        ):
            raise ProfileError(f"threads: expected a positive integer or null, got {self.threads!r:.100}")
        subs = tuple(self.subnets) if isinstance(self.subnets, (list, tuple)) else None
        if not subs:
            raise ProfileError("subnets: expected a non-empty list")
        seen: dict[str, int] = {}
        for i, s in enumerate(subs):
            if not isinstance(s, SubnetProfile):
                raise ProfileError(f"subnets[{i}]: expected a SubnetProfile, got {type(s).__name__}")
            if s.id in seen:
                raise ProfileError(f"subnets[{i}].id: {s.id!r} repeats subnets[{seen[s.id]}].id (ids must be unique)")
            seen[s.id] = i
        object.__setattr__(self, "subnets", subs)

    # -- access ------------------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.subnets]

    def __len__(self) -> int:
        return len(self.subnets)

    def __getitem__(self, subnet_id: str) -> SubnetProfile:
        for s in self.subnets:
            if s.id == subnet_id:
                return s
        raise ProfileError(f"no subnet with id {subnet_id!r} in the profile (ids: {self.ids[:10]})")

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes measured for every subnet (the intersection), ascending."""
        common = set(self.subnets[0].latency_ms)
        for s in self.subnets[1:]:
            common &= set(s.latency_ms)
        return sorted(common)

    # -- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "device": self.device,
            "backend": self.backend,
            "threads": self.threads,
            "subnets": [s.to_dict() for s in self.subnets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Validate and build; a `ProfileError` names the first offending field."""
        _check_keys(data, _TOP_KEYS, _TOP_KEYS - {"threads"}, "")
        if data["schema"] != SCHEMA:
            raise ProfileError(f"schema: expected {SCHEMA!r}, got {data['schema']!r:.100}")
        raw = data["subnets"]
        if not isinstance(raw, list) or not raw:
            raise ProfileError("subnets: expected a non-empty list")
        subs = tuple(SubnetProfile.from_dict(s, f"subnets[{i}]") for i, s in enumerate(raw))
        shape = data["input_shape"]
        return cls(data["model"], shape, data["device"], data["backend"], data.get("threads"), subs)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read and validate a profile JSON file."""
        return cls.from_dict(read_json(path, "profile", ProfileError))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (a temporary file in the same folder, then rename)."""
        return write_json_atomic(path, self.to_dict())


def device_name(device: str | torch.device = "cpu") -> str:
    """Free-text device description for a profile: the GPU's name, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def build_profile(
    model: ElasticModel,
    subs: Iterable[Subnet],
    batch_sizes: Sequence[int] = (1,),
    backend: str = "onnxruntime",
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
    accuracy: Mapping[Subnet, float] | Callable[[Subnet], float] | None = None,
    model_name: str | None = None,
    ids: Mapping[Subnet, str] | None = None,
    rounds: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Profile:
    """Measure MACs, params and latency (each batch size) of every subnet and return a `Profile`.

    `accuracy` maps a subnet to its held-out accuracy (a dict or a function), or is None (not recorded).
    Ids default to `Subnet.id`; `model_name` defaults to the registry name (`create_model`'s), else the class name.
    `rounds=1` measures one subnet after the other, holding one prepared subnet at a time; `rounds > 1`
    prepares them all and alternates between them (`measure_interleaved`), which keeps load drift out of
    the comparison at the price of memory for every subnet at once. `progress(done, total)` reports timing.
    """
    check_backend(backend)
    batches = [check_positive_int("batch_size", b) for b in batch_sizes]
    if not batches:
        raise ProfileError("batch_sizes: expected at least one batch size")
    rounds = check_positive_int("rounds", rounds)
    shape = input_shape_of(model, input_shape)
    subs = list(subs)
    if not subs:
        raise ProfileError("build_profile: no subnets to measure")
    for sub in subs:
        static_subnet(model, sub)  # every subnet lies in the space before anything is timed
    if rounds == 1:
        tables = {}
        for index, sub in enumerate(subs):
            tables[sub] = latency_table(model, sub, batches, backend, threads, warmup, repeats, shape)
            if progress is not None:
                progress(index + 1, len(subs))
    else:
        runners = {sub: prepare(model, sub, backend, threads, shape) for sub in subs}
        tables = measure_interleaved(runners, batches, warmup, repeats, rounds, progress)
    entries = []
    for sub in subs:
        acc = None
        if accuracy is not None:
            acc = accuracy(sub) if callable(accuracy) else accuracy.get(sub)
        entries.append(
            SubnetProfile(
                id=(ids or {}).get(sub, sub.id),
                macs=macs(model, sub, shape),
                params=params(model, sub),
                latency_ms=tables[sub],
                subnet=sub,
                accuracy=None if acc is None else float(acc),
            )
        )
    arch = getattr(model, "architecture", None)
    name = model_name or (arch.get("name") if isinstance(arch, Mapping) else None) or type(model).__name__
    return Profile(name, shape, device_name(), backend, threads, tuple(entries))
