"""`Profile`: measured cost (and optionally accuracy) of a set of subnets, on one or several runtimes, as JSON.

The contract between `tailor.cost` (which writes it), `tailor.search` and `tailor.serve` (which read it),
schema `"tailor.profile/1"` (the JSON Schema: `tailor/schemas/profile.schema.json`):

    {"schema": "tailor.profile/1", "model": "resnet20", "input_shape": [3, 32, 32],
     "device": "free text", "runtime": "onnxruntime", "threads": 1,
     "runtimes": {"onnxruntime": {"version": "1.22.0", "precision": "fp32", "device": "cpu", "threads": 1,
                                  "options": {...}}, "openvino": {...}},
     "subnets": [{"id": "...", "subnet": {...}, "accuracy": 0.80, "macs": 20400000, "params": 135000,
                  "runtime": "openvino",
                  "latency_ms": {"1": {"p50": 0.21, "p90": 0.24, "p99": 0.31, "mean": 0.22, "std": 0.02,
                                       "repeats": 100}, "8": {...}},
                  "alternatives": {"onnxruntime": {"1": {...}, "8": {...}}},
                  "checks": {"openvino": {"top1_agreement": 1.0, "max_abs_diff": 2e-6, ...}, ...}}]}

Each subnet is served on its `runtime` (default: the profile's `runtime`), and `latency_ms` holds that
runtime's measurements: search, routing and serving read `latency_ms` whatever the runtime. `alternatives`
keeps the other runtimes measured and `checks` each runtime's outputs against PyTorch fp32; `runtimes`
records what each runtime ran with (version, precision, device, threads, options). `subnet`, `accuracy`,
`runtimes`, `alternatives`, `checks` and the `mean`/`std`/`repeats` of a latency entry are optional. Files
that say `"backend"` instead of `"runtime"` (written before runtimes were a registry) load unchanged.

Loading validates everything with pydantic (`tailor.cost.profile_schema`) and raises a `ProfileError` naming
the field (`subnets[2].latency_ms['8'].p90`); unknown fields are rejected, not dropped.
`Profile.check(percentile)` lists what makes a profile unreliable to serve by: latency that falls with
batch size, and tail percentiles resting on too few samples.
"""

from __future__ import annotations

import itertools
import os
import platform
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.cost.measure import (
    PERCENTILE_MIN_REPEATS,
    LatencyStats,
    _check_batches,
    interleaved_timings,
    macs,
    params,
    release_all,
)
from tailor.cost.profile_schema import (
    SCHEMA,
    SCHEMA_FILE,
    profile_json_schema,
    validate_profile_json,
)
from tailor.cost.runtimes.base import (
    OutputCheck,
    PreparedModel,
    Runtime,
    RuntimeInfo,
    Tolerance,
    check_device,
    check_warmup,
    compare_outputs,
    get_runtime,
    run_batched,
    runtime_argument,
)
from tailor.errors import ProfileError
from tailor.export._common import check_positive_int, example_input, input_shape_of, static_subnet
from tailor.jsonio import read_json, write_json_atomic
from tailor.ops import ElasticModel
from tailor.space import Subnet

__all__ = [
    "SCHEMA",
    "SCHEMA_FILE",
    "Profile",
    "ProfileIssue",
    "ProfileWarning",
    "SubnetProfile",
    "build_profile",
    "choose_runtime",
    "device_name",
    "profile_json_schema",
]

PERCENTILES = ("p50", "p90", "p99")


class ProfileWarning(UserWarning):
    """A profile is valid but unreliable to plan with (latency falling with batch size, a thin percentile tail)."""


# -- building blocks ---------------------------------------------------------------------------------------


def _stats_table(table: Any, where: str) -> dict[int, LatencyStats]:
    """A latency table keyed by batch size (ints or canonical strings) with `LatencyStats` or dict values."""
    if not isinstance(table, Mapping) or not table:
        raise ProfileError(f"{where}: expected a non-empty object keyed by batch size")
    out: dict[int, LatencyStats] = {}
    for key, value in table.items():
        batch = int(key) if isinstance(key, str) and key.isdigit() and str(int(key)) == key else key
        if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
            raise ProfileError(f"{where}: batch size key {str(key)!r} is not a positive integer in canonical form")
        if isinstance(value, Mapping):
            value = LatencyStats(**{k: value[k] for k in value if k in LatencyStats.__dataclass_fields__})
        if not isinstance(value, LatencyStats):
            raise ProfileError(f"{where}[{str(key)!r}]: expected latency statistics, got {type(value).__name__}")
        out[batch] = value
    return dict(sorted(out.items()))


def _table_json(table: Mapping[int, LatencyStats]) -> dict[str, dict[str, float | int]]:
    return {str(b): s.to_dict() for b, s in table.items()}


def _stat(stats: LatencyStats, percentile: str) -> float:
    return float(getattr(stats, percentile))


def choose_runtime(
    measurements: Mapping[str, Mapping[int, LatencyStats]],
    checks: Mapping[str, OutputCheck] | None = None,
    percentile: str = "p50",
) -> str | None:
    """The runtime to serve a subnet on: the fastest of those whose outputs passed their check.

    "Fastest" across batch sizes: the least worst-case ratio to the best runtime at each batch size measured by
    every candidate (ties: the lower geometric mean ratio, then the earlier runtime). A runtime without a
    recorded check counts as passing. None when no runtime passes, except that a single runtime measured is
    returned anyway (there is nothing else to serve on; `Profile.check` reports its failed check).
    """
    if percentile not in PERCENTILES:
        raise ProfileError(f"percentile {percentile!r}: expected one of {list(PERCENTILES)}")
    names = list(measurements)
    if not names:
        raise ProfileError("choose_runtime: no measurements")
    checks = checks or {}
    passing = [n for n in names if n not in checks or checks[n].within_tolerance]
    if not passing:
        return names[0] if len(names) == 1 else None
    common = set.intersection(*(set(measurements[n]) for n in passing))
    if not common:
        raise ProfileError(f"choose_runtime: runtimes {passing} share no measured batch size")
    best = {b: min(_stat(measurements[n][b], percentile) for n in passing) for b in common}

    def score(name: str) -> tuple[float, float, int]:
        ratios = [_stat(measurements[name][b], percentile) / best[b] for b in sorted(common)]
        return max(ratios), float(np.exp(np.mean(np.log(ratios)))), names.index(name)

    return min(passing, key=score)


@dataclass(frozen=True)
class SubnetProfile:
    """One profiled subnet: id, MACs, params, latency per batch size on `runtime`, and optional extras.

    `runtime` is the runtime `latency_ms` was measured on and the subnet is served on (None: the profile's
    runtime). `alternatives` holds other runtimes' latency tables, `checks` each runtime's `OutputCheck`.
    """

    id: str
    macs: int
    params: int
    latency_ms: Mapping[int, LatencyStats]
    subnet: Subnet | None = None
    accuracy: float | None = None
    runtime: str | None = None
    alternatives: Mapping[str, Mapping[int, LatencyStats]] = field(default_factory=dict)
    checks: Mapping[str, OutputCheck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"subnet {self.id!r}"
        object.__setattr__(self, "latency_ms", _stats_table(self.latency_ms, f"{where}.latency_ms"))
        if not isinstance(self.alternatives, Mapping):
            raise ProfileError(f"{where}.alternatives: expected an object keyed by runtime name")
        object.__setattr__(
            self,
            "alternatives",
            {name: _stats_table(t, f"{where}.alternatives[{name!r}]") for name, t in self.alternatives.items()},
        )
        if not isinstance(self.checks, Mapping):
            raise ProfileError(f"{where}.checks: expected an object keyed by runtime name")
        checks = {}
        for name, check in self.checks.items():
            if isinstance(check, Mapping):
                check = OutputCheck.from_dict(check)
            if not isinstance(check, OutputCheck):
                raise ProfileError(f"{where}.checks[{name!r}]: expected an OutputCheck, got {type(check).__name__}")
            checks[name] = check
        object.__setattr__(self, "checks", checks)
        if self.subnet is not None and not isinstance(self.subnet, Subnet):
            raise ProfileError(f"{where}.subnet: expected a Subnet, got {type(self.subnet).__name__}")
        if self.runtime is not None and self.runtime in self.alternatives:
            raise ProfileError(f"{where}.alternatives: lists {self.runtime!r}, the subnet's own runtime")
        data = self.to_dict()
        probe = {"schema": SCHEMA, "model": "m", "input_shape": [1], "device": "d", "runtime": "r", "subnets": [data]}
        try:
            validate_profile_json(probe)
        except ProfileError as exc:
            raise ProfileError(str(exc).replace("subnets[0]", where, 1)) from None

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.latency_ms)

    def measurements(self, default_runtime: str | None = None) -> dict[str, Mapping[int, LatencyStats]]:
        """Latency tables by runtime: this subnet's own (named `runtime`, else `default_runtime`) and the alternatives."""
        own = self.runtime or default_runtime
        if own is None:
            raise ProfileError(f"subnet {self.id!r}: names no runtime and none was given")
        return {own: self.latency_ms, **self.alternatives}

    def to_dict(self, default_runtime: str | None = None) -> dict[str, Any]:
        """JSON form; `runtime` is left out when it equals `default_runtime` (the profile's)."""
        out: dict[str, Any] = {"id": self.id}
        if self.subnet is not None:
            out["subnet"] = self.subnet.to_dict()
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        out["macs"] = self.macs
        out["params"] = self.params
        if self.runtime is not None and self.runtime != default_runtime:
            out["runtime"] = self.runtime
        out["latency_ms"] = _table_json(self.latency_ms)
        if self.alternatives:
            out["alternatives"] = {name: _table_json(t) for name, t in self.alternatives.items()}
        if self.checks:
            out["checks"] = {name: c.to_dict() for name, c in self.checks.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "subnet") -> SubnetProfile:
        """A subnet entry of a profile JSON (validated on its own; errors name `where`)."""
        probe = {"schema": SCHEMA, "model": "m", "input_shape": [1], "device": "d", "runtime": "r",
                 "subnets": [dict(data) if isinstance(data, Mapping) else data]}  # fmt: skip
        try:
            validate_profile_json(probe)
        except ProfileError as exc:
            raise ProfileError(str(exc).replace("subnets[0]", where, 1)) from None
        return _subnet_from_json(data)


def _with_runtime(entry: SubnetProfile, runtime: str) -> SubnetProfile:
    """`entry` naming `runtime` (a copy; the fields are already validated)."""
    copy = object.__new__(SubnetProfile)
    for name in SubnetProfile.__dataclass_fields__:
        object.__setattr__(copy, name, getattr(entry, name))
    if runtime in entry.alternatives:
        raise ProfileError(f"subnet {entry.id!r}.alternatives: lists {runtime!r}, the subnet's own runtime")
    object.__setattr__(copy, "runtime", runtime)
    return copy


def _subnet_from_json(data: Mapping[str, Any]) -> SubnetProfile:
    sub = data.get("subnet")
    return SubnetProfile(
        id=data["id"],
        macs=data["macs"],
        params=data["params"],
        latency_ms=data["latency_ms"],
        subnet=None if sub is None else Subnet.from_dict(sub),
        accuracy=data.get("accuracy"),
        runtime=data.get("runtime"),
        alternatives=data.get("alternatives") or {},
        checks=data.get("checks") or {},
    )


@dataclass(frozen=True)
class ProfileIssue:
    """Something that makes a profile unreliable to plan with, and where: subnet id, batch size, runtime."""

    kind: str  # "non-monotone" | "thin tail" | "outside tolerance"
    subnet_id: str
    batch_size: int | None
    runtime: str
    message: str

    def __str__(self) -> str:
        return self.message


# -- the profile ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Measured costs of subnets of one model on one machine, each on its runtime; see the module docstring.

    `runtime` is the runtime of subnets that name none; `runtimes` describes each runtime measured (version,
    precision, device, threads, options); a runtime missing from it is recorded by name only.
    """

    model: str
    input_shape: tuple[int, ...]
    device: str
    runtime: str
    threads: int | None
    subnets: tuple[SubnetProfile, ...] = field(default_factory=tuple)
    runtimes: Mapping[str, RuntimeInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        subs = tuple(self.subnets) if isinstance(self.subnets, (list, tuple)) else None
        if not subs:
            raise ProfileError("subnets: expected a non-empty list")
        for i, s in enumerate(subs):
            if not isinstance(s, SubnetProfile):
                raise ProfileError(f"subnets[{i}]: expected a SubnetProfile, got {type(s).__name__}")
        if not isinstance(self.runtime, str) or not self.runtime:
            raise ProfileError(f"runtime: expected a non-empty string, got {self.runtime!r:.100}")
        # every subnet names its runtime (the profile's unless its own), so equal profiles compare equal
        subs = tuple(s if s.runtime is not None else _with_runtime(s, self.runtime) for s in subs)
        object.__setattr__(self, "subnets", subs)
        if not isinstance(self.runtimes, Mapping):
            raise ProfileError("runtimes: expected an object keyed by runtime name")
        infos = {}
        for name, info in self.runtimes.items():
            if isinstance(info, Mapping):
                info = RuntimeInfo.from_dict(name, info)
            if not isinstance(info, RuntimeInfo) or info.runtime != name:
                raise ProfileError(f"runtimes[{name!r}]: expected a RuntimeInfo of runtime {name!r}")
            infos[name] = info
        object.__setattr__(self, "runtimes", infos)
        if not isinstance(self.input_shape, (list, tuple)):
            raise ProfileError(f"input_shape: expected a list of positive integers, got {self.input_shape!r:.100}")
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        validate_profile_json(self.to_dict())

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

    @property
    def backend(self) -> str:
        """Deprecated name of `runtime`."""
        warnings.warn("Profile.backend is deprecated; use .runtime (or runtime_of(id))", DeprecationWarning, stacklevel=2)
        return self.runtime

    def runtime_of(self, subnet_id: str) -> str:
        """The runtime subnet `subnet_id` is served on (its own, else the profile's)."""
        return self[subnet_id].runtime or self.runtime

    def runtime_info(self, name: str) -> RuntimeInfo:
        """What runtime `name` ran with (name only, when the profile predates that record)."""
        return self.runtimes.get(name) or RuntimeInfo(name, threads=self.threads)

    @property
    def measured_runtimes(self) -> list[str]:
        """Every runtime with a measurement in the profile, in first-seen order."""
        names = dict.fromkeys([self.runtime])
        for s in self.subnets:
            names.update(dict.fromkeys(s.measurements(self.runtime)))
        return list(names)

    def with_runtimes(self, runtimes: Iterable[str], percentile: str = "p50") -> Profile:
        """The profile as if only `runtimes` had been measured: each subnet on the fastest of them within tolerance
        (`choose_runtime`). A subnet measured on none of them, or on none within tolerance, is a `ProfileError`."""
        allowed = list(dict.fromkeys(runtimes))
        unknown = [r for r in allowed if r not in self.measured_runtimes]
        if not allowed or unknown:
            raise ProfileError(f"runtimes {unknown or allowed}: the profile measured {self.measured_runtimes}")
        entries = []
        for s in self.subnets:
            measured = {r: t for r, t in s.measurements(self.runtime).items() if r in allowed}
            if not measured:
                raise ProfileError(f"subnet {s.id!r} was not measured on any of {allowed}")
            checks = {r: c for r, c in s.checks.items() if r in measured}
            chosen = choose_runtime(measured, checks, percentile)
            if chosen is None:
                raise ProfileError(f"subnet {s.id!r}: no runtime of {allowed} is within tolerance ({_checks_line(checks)})")
            others = {r: t for r, t in measured.items() if r != chosen}
            entries.append(replace(s, runtime=chosen, latency_ms=measured[chosen], alternatives=others, checks=checks))
        return self._rebuilt(entries, allowed)

    def _rebuilt(self, entries: list[SubnetProfile], order: Sequence[str]) -> Profile:
        counts = Counter(e.runtime for e in entries)
        top = max(order, key=lambda r: (counts.get(r, 0), -list(order).index(r)))
        kept = {e.runtime for e in entries} | {r for e in entries for r in e.alternatives}
        infos = {r: i for r, i in self.runtimes.items() if r in kept}
        return Profile(self.model, self.input_shape, self.device, top, self.threads, tuple(entries), infos)

    # -- reliability -----------------------------------------------------------------------------------------
    def check(self, percentile: str = "p99", warn: bool = True) -> list[ProfileIssue]:
        """What makes the profile unreliable to plan with at `percentile`, each naming subnet and batch size:

        - "non-monotone": a larger batch measured faster than a smaller one (a noisy or preempted measurement);
        - "thin tail": `percentile` rests on fewer repeats than it needs (p99: 100, p90: 20), or the repeats
          were not recorded;
        - "outside tolerance": a subnet is served on a runtime whose output check failed.

        With `warn`, one `ProfileWarning` summarises them (the first few in full).
        """
        if percentile not in PERCENTILES:
            raise ProfileError(f"percentile {percentile!r}: expected one of {list(PERCENTILES)}")
        issues: list[ProfileIssue] = []
        need = PERCENTILE_MIN_REPEATS[percentile]
        for s in self.subnets:
            runtime = s.runtime or self.runtime
            batches = list(s.latency_ms)
            for small, large in itertools.pairwise(batches):
                a, b = _stat(s.latency_ms[small], percentile), _stat(s.latency_ms[large], percentile)
                if b < a:
                    issues.append(ProfileIssue(
                        "non-monotone", s.id, large, runtime,
                        f"subnet {s.id!r} ({runtime}): batch {large} measured faster than batch {small} "
                        f"({b:.4g} ms < {a:.4g} ms, {percentile})",
                    ))  # fmt: skip
            for batch, stats in s.latency_ms.items():
                if percentile != "p50" and (stats.repeats is None or stats.repeats < need):
                    got = "unrecorded" if stats.repeats is None else str(stats.repeats)
                    issues.append(ProfileIssue(
                        "thin tail", s.id, batch, runtime,
                        f"subnet {s.id!r} batch {batch} ({runtime}): {percentile} rests on {got} repeats "
                        f"(needs >= {need})",
                    ))  # fmt: skip
            check = s.checks.get(runtime)
            if check is not None and not check.within_tolerance:
                issues.append(ProfileIssue(
                    "outside tolerance", s.id, None, runtime,
                    f"subnet {s.id!r} is served on {runtime}, whose outputs are outside tolerance "
                    f"(max |diff| {check.max_abs_diff:.3g}, top-1 agreement {check.top1_agreement:.4f})",
                ))  # fmt: skip
        if warn and issues:
            warnings.warn(_summary(issues, percentile), ProfileWarning, stacklevel=2)
        return issues

    # -- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "device": self.device,
            "runtime": self.runtime,
        }
        if self.runtimes:
            out["runtimes"] = {name: info.to_dict() for name, info in self.runtimes.items()}
        out["threads"] = self.threads
        out["subnets"] = [s.to_dict(self.runtime) for s in self.subnets]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Validate (pydantic, see `tailor.cost.profile_schema`) and build; a `ProfileError` names the first bad field."""
        validate_profile_json(dict(data) if isinstance(data, Mapping) else data)
        runtime = data.get("runtime") or data["backend"]
        subs = tuple(_subnet_from_json(s) for s in data["subnets"])
        infos = {name: RuntimeInfo.from_dict(name, info) for name, info in (data.get("runtimes") or {}).items()}
        return cls(data["model"], data["input_shape"], data["device"], runtime, data.get("threads"), subs, infos)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read and validate a profile JSON file."""
        return cls.from_dict(read_json(path, "profile", ProfileError))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (a temporary file in the same folder, then rename)."""
        return write_json_atomic(path, self.to_dict())


def _summary(issues: Sequence[ProfileIssue], percentile: str, shown: int = 4) -> str:
    kinds = Counter(i.kind for i in issues)
    head = "; ".join(f"{n} {k}" for k, n in kinds.items())
    lines = [f"the profile is unreliable to plan with at {percentile} ({head}):"]
    lines += [f"  {i.message}" for i in issues[:shown]]
    if len(issues) > shown:
        lines.append(f"  ... and {len(issues) - shown} more (Profile.check(warn=False) lists them)")
    return "\n".join(lines)


def _checks_line(checks: Mapping[str, OutputCheck]) -> str:
    return "; ".join(
        f"{r}: max |diff| {c.max_abs_diff:.3g}, top-1 agreement {c.top1_agreement:.4f}" for r, c in checks.items()
    ) or "no checks recorded"


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


# -- measuring a profile -------------------------------------------------------------------------------------


def _runtime_list(runtime: Any) -> list[Runtime]:
    items = [runtime] if isinstance(runtime, (str, Runtime)) else list(runtime)
    if not items:
        raise ProfileError("runtimes: expected at least one runtime")
    runtimes = [get_runtime(r) for r in items]
    names = [r.name for r in runtimes]
    if len(set(names)) != len(names):
        raise ProfileError(f"runtimes must not repeat, got {names}")
    return runtimes


#: round-robin passes between runtimes when one subnet is measured on several (rounds=1)
SIDE_BY_SIDE_ROUNDS = 5


def build_profile(
    model: ElasticModel,
    subs: Iterable[Subnet],
    batch_sizes: Sequence[int] = (1,),
    runtime: str | Runtime | Sequence[str | Runtime] | None = None,
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
    accuracy: Mapping[Subnet, float] | Callable[[Subnet], float] | None = None,
    model_name: str | None = None,
    ids: Mapping[Subnet, str] | None = None,
    rounds: int = 1,
    progress: Callable[[int, int], None] | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    check: bool = True,
    check_inputs: np.ndarray | torch.Tensor | None = None,
    check_inputs_label: str | None = None,
    tolerance: Tolerance | None = None,
    backend: str | None = None,
) -> Profile:
    """Measure MACs, params and latency (each batch size, each runtime) of every subnet and return a `Profile`.

    `runtime` is one runtime or a list (names from `tailor.cost.list_runtimes()` or configured `Runtime`s;
    default "onnxruntime"; `backend=` is its deprecated name). With several, each subnet is measured on every
    runtime side by side (alternating, so load drift hits them alike), each runtime's outputs are compared with
    PyTorch fp32 on `check_inputs` (default: 64 seeded random inputs; pass held-out images for a truer check),
    and the subnet is served on the fastest runtime within `tolerance` (`choose_runtime`); the others are kept
    as `alternatives`. `check=False` skips the comparison. `device` is "cpu" or "cuda[:i]"; `precision` applies
    to every runtime (None: each runtime's default).

    `accuracy` maps a subnet to its held-out accuracy (a dict or a function), or is None (not recorded).
    Ids default to `Subnet.id`; `model_name` defaults to the registry name (`create_model`'s), else the class
    name. `rounds=1` measures one subnet after the other, holding one subnet's prepared runtimes at a time;
    `rounds > 1` prepares them all and alternates between all of them (`measure_interleaved`), which keeps
    load drift out of the comparison at the price of memory for every subnet at once. `progress(done,
    total)` reports timing. Every subnet and runtime is checked before anything is measured.
    """
    runtimes = _runtime_list(runtime_argument(runtime, backend, "onnxruntime", "build_profile"))
    dev = check_device(device)
    for rt in runtimes:
        rt.resolve(dev, threads, precision)  # a missing package, device or precision fails before any timing
    batches = _check_batches(batch_sizes)
    repeats = check_positive_int("repeats", repeats)
    warmup = check_warmup(warmup)
    rounds = check_positive_int("rounds", rounds)
    if rounds > repeats:
        raise ProfileError(f"rounds ({rounds}) must not exceed repeats ({repeats}): each round takes >= 1 sample")
    shape = input_shape_of(model, input_shape)
    subs = list(subs)
    if not subs:
        raise ProfileError("build_profile: no subnets to measure")
    for sub in subs:
        static_subnet(model, sub)  # every subnet lies in the space before anything is timed
    inputs, label = _check_inputs(shape, check_inputs, check_inputs_label)
    bench = _Bench(model, runtimes, dev, threads, precision, shape, check, inputs, label,
                   Tolerance() if tolerance is None else tolerance)  # fmt: skip
    if rounds == 1:
        measured = _measure_one_by_one(bench, subs, batches, warmup, repeats, progress)
    else:
        measured = _measure_all_at_once(bench, subs, batches, warmup, repeats, rounds, progress)
    entries = _entries(bench, subs, measured, accuracy, ids)
    order = [rt.name for rt in runtimes]
    arch = getattr(model, "architecture", None)
    name = model_name or (arch.get("name") if isinstance(arch, Mapping) else None) or type(model).__name__
    counts = Counter(e.runtime for e in entries)
    top = max(order, key=lambda r: (counts.get(r, 0), -order.index(r)))
    infos = {n: measured.infos[n] for n in order}
    profile = Profile(name, shape, device_name(dev), top, threads, tuple(entries), infos)
    failed = [i for i in profile.check("p50", warn=False) if i.kind == "outside tolerance"]
    if failed:
        warnings.warn("; ".join(i.message for i in failed), ProfileWarning, stacklevel=2)
    return profile


def _check_inputs(
    shape: tuple[int, ...], check_inputs: np.ndarray | torch.Tensor | None, label: str | None
) -> tuple[np.ndarray, str]:
    """The inputs every runtime's outputs are compared on (default: 64 seeded random inputs) and their label."""
    if check_inputs is None:
        return example_input(shape, 64, seed=20260).numpy(), label or "64 random normal inputs"
    inputs = np.ascontiguousarray(
        check_inputs.detach().cpu().numpy() if isinstance(check_inputs, torch.Tensor) else check_inputs,
        dtype=np.float32,
    )
    if inputs.ndim != len(shape) + 1 or tuple(inputs.shape[1:]) != shape or not len(inputs):
        raise ProfileError(f"check_inputs: expected shape (N, {', '.join(map(str, shape))}), got {inputs.shape}")
    return inputs, label or f"{len(inputs)} given inputs"


@dataclass(frozen=True)
class _Bench:
    """What measuring a profile needs: the model, the runtimes and how they run, the inputs outputs are checked on."""

    model: ElasticModel
    runtimes: list[Runtime]
    device: torch.device
    threads: int | None
    precision: str | None
    shape: tuple[int, ...]
    check: bool
    inputs: np.ndarray
    label: str
    tolerance: Tolerance

    def prepare_all(self, sub: Subnet) -> dict[str, PreparedModel]:
        """`sub` prepared on every runtime (all released again if one fails)."""
        prepared: dict[str, PreparedModel] = {}
        try:
            for rt in self.runtimes:
                prepared[rt.name] = rt.prepare(self.model, sub, device=self.device, threads=self.threads,
                                               precision=self.precision, input_shape=self.shape)  # fmt: skip
        except BaseException:
            release_all(prepared.values())
            raise
        return prepared

    def checks_of(self, sub: Subnet, prepared: Mapping[str, PreparedModel]) -> dict[str, OutputCheck]:
        """Each runtime's outputs on the check inputs against PyTorch fp32 ({} without `check`)."""
        if not self.check:
            return {}
        with torch.inference_mode():
            reference = static_subnet(self.model, sub)(torch.from_numpy(self.inputs)).numpy()
        return {name: compare_outputs(run_batched(p, self.inputs), reference, self.tolerance, self.label)
                for name, p in prepared.items()}  # fmt: skip


@dataclass
class _Measured:
    """Latency per subnet, runtime and batch size; output checks per subnet and runtime; what each runtime ran."""

    latency: dict[Subnet, dict[str, dict[int, LatencyStats]]] = field(default_factory=dict)
    checks: dict[Subnet, dict[str, OutputCheck]] = field(default_factory=dict)
    infos: dict[str, RuntimeInfo] = field(default_factory=dict)


def _measure_one_by_one(
    bench: _Bench,
    subs: Sequence[Subnet],
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    progress: Callable[[int, int], None] | None,
) -> _Measured:
    """One subnet after the other, its runtimes side by side; one subnet's prepared runtimes held at a time."""
    measured = _Measured()
    side = min(SIDE_BY_SIDE_ROUNDS, repeats) if len(bench.runtimes) > 1 else 1
    for index, sub in enumerate(subs):
        prepared = bench.prepare_all(sub)
        try:
            timings = interleaved_timings(prepared, batches, warmup, repeats, side)
            measured.checks[sub] = bench.checks_of(sub, prepared)
        finally:
            release_all(prepared.values())
        measured.latency[sub] = {n: {b: LatencyStats.from_samples(t.wall_ms) for b, t in per.items()}
                                 for n, per in timings.items()}  # fmt: skip
        for name, p in prepared.items():
            measured.infos.setdefault(name, p.info)
        if progress is not None:
            progress(index + 1, len(subs))
    return measured


def _measure_all_at_once(
    bench: _Bench,
    subs: Sequence[Subnet],
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    rounds: int,
    progress: Callable[[int, int], None] | None,
) -> _Measured:
    """Every subnet on every runtime prepared at once, alternating in `rounds` (`measure_interleaved`)."""
    measured = _Measured()
    everything: dict[tuple[Subnet, str], PreparedModel] = {}
    try:
        for sub in subs:
            for name, p in bench.prepare_all(sub).items():
                everything[(sub, name)] = p
        timings_all = interleaved_timings(everything, batches, warmup, repeats, rounds, progress)
        for sub in subs:
            measured.checks[sub] = bench.checks_of(sub, {rt.name: everything[(sub, rt.name)] for rt in bench.runtimes})
    finally:
        release_all(everything.values())
    for (sub, name), per in timings_all.items():
        measured.latency.setdefault(sub, {})[name] = {b: LatencyStats.from_samples(t.wall_ms) for b, t in per.items()}
        measured.infos.setdefault(name, everything[(sub, name)].info)
    return measured


def _entries(
    bench: _Bench,
    subs: Sequence[Subnet],
    measured: _Measured,
    accuracy: Mapping[Subnet, float] | Callable[[Subnet], float] | None,
    ids: Mapping[Subnet, str] | None,
) -> list[SubnetProfile]:
    """One `SubnetProfile` per subnet, served on the fastest runtime within tolerance (`choose_runtime`)."""
    entries = []
    for sub in subs:
        acc = None
        if accuracy is not None:
            acc = accuracy(sub) if callable(accuracy) else accuracy.get(sub)
        ident = (ids or {}).get(sub, sub.id)
        tables = {rt.name: measured.latency[sub][rt.name] for rt in bench.runtimes}
        chosen = choose_runtime(tables, measured.checks[sub])
        if chosen is None:
            raise ProfileError(
                f"subnet {ident!r}: no runtime is within tolerance ({_checks_line(measured.checks[sub])})"
            )
        entries.append(
            SubnetProfile(
                id=ident,
                macs=macs(bench.model, sub, bench.shape),
                params=params(bench.model, sub),
                latency_ms=tables[chosen],
                subnet=sub,
                accuracy=None if acc is None else float(acc),
                runtime=chosen,
                alternatives={n: t for n, t in tables.items() if n != chosen},
                checks=measured.checks[sub],
            )
        )
    return entries
