"""What one subnet costs: parameters, MACs, peak memory, measured latency, energy where readable.

Every function takes the supernet and a `Subnet`, checks the subnet against `model.space` (an
`InvalidSubnetError` names the dimension and value). Parameters, MACs and memory are those of
`model.extract(sub)` in eval mode, the static network that is exported and served; latency is measured on
a runtime of `tailor.cost.runtimes` (eager PyTorch on the extracted subnet by default, or the supernet
switched in place, torch.compile, ONNX Runtime, int8, OpenVINO).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from tailor.cost.runtimes.base import (
    CLOCKS,
    PreparedModel,
    Runtime,
    Timings,
    check_device,
    check_warmup,
    get_runtime,
    runtime_argument,
    torch_threads,
)
from tailor.errors import InvalidSubnetError, ProfileError, UnsupportedModelError
from tailor.export._common import check_positive_int, example_input, input_shape_of, static_subnet
from tailor.ops import ElasticModel
from tailor.space import Subnet

UNAVAILABLE = "unavailable"
__all__ = [  # CLOCKS and Timings live with the runtimes; they are re-exported here for earlier importers
    "CLOCKS", "PERCENTILE_MIN_REPEATS", "LatencyStats", "MemoryStats", "Runner", "Timings", "check_backend",
    "check_runtime", "energy", "energy_source", "interleaved_samples", "interleaved_timings", "latency",
    "latency_table", "macs", "measure_interleaved", "params", "peak_memory", "prepare", "prepare_module",
    "prepare_onnx", "release_all", "supported_percentile",
]  # fmt: skip


def params(model: ElasticModel, sub: Subnet) -> int:
    """Number of parameters of the extracted subnet (weights and biases, incl. norm affine; no buffers)."""
    return sum(p.numel() for p in static_subnet(model, sub).parameters())


def macs(model: ElasticModel, sub: Subnet, input_shape: Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one forward pass on one input of `input_shape` (C, H, W).

    Counted with `torch.utils.flop_counter.FlopCounterMode` on the extracted subnet: MACs = FLOPs / 2,
    the convention papers report (one MAC = one multiply + one add). It counts convolutions and matrix
    products; elementwise ops, norms and pooling are not counted, as in the published figures.
    """
    shape = input_shape_of(model, input_shape)
    static = static_subnet(model, sub)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        static(torch.zeros((1, *shape)))
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one (subnet, batch size, runtime) in ms: percentiles, mean and spread over `repeats` timed runs.

    `mean`, `std` (population standard deviation) and `repeats` are None only for profiles written before
    they were recorded. `p99` of fewer than 100 repeats (`p90` of fewer than 20) rests on one or two samples
    of the tail: see `supported_percentile`.
    """

    p50: float
    p90: float
    p99: float
    mean: float | None = None
    std: float | None = None
    repeats: int | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Percentiles (linear interpolation), mean and standard deviation of the given per-call times in ms."""
        if len(samples_ms) == 0:
            raise ProfileError("latency statistics need at least one sample")
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return cls(p50, p90, p99, float(a.mean()), float(a.std()), len(a))

    def to_dict(self) -> dict[str, float | int]:
        """`{"p50", "p90", "p99"[, "mean", "std", "repeats"]}`: the form a profile stores under `latency_ms[batch]`."""
        out: dict[str, float | int] = {"p50": self.p50, "p90": self.p90, "p99": self.p99}
        for key in ("mean", "std", "repeats"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


#: the fewest timed repeats that put at least this many samples above each percentile (1 above p99 at 100)
PERCENTILE_MIN_REPEATS = {"p99": 100, "p90": 20, "p50": 1}


def supported_percentile(repeats: int | None) -> str:
    """The highest percentile `repeats` samples support: p99 needs >= 100, p90 >= 20, else p50 (None: p50)."""
    if repeats is None:
        return "p50"
    return next(p for p in ("p99", "p90", "p50") if repeats >= PERCENTILE_MIN_REPEATS[p])


def check_runtime(runtime: object) -> str:
    """The name of a registered runtime (`runtime` is a name or a `Runtime`), else a `ProfileError` listing them."""
    return get_runtime(runtime).name  # type: ignore[arg-type]


def check_backend(backend: object) -> str:
    """Deprecated name of `check_runtime`."""
    warnings.warn("check_backend is deprecated; use check_runtime", DeprecationWarning, stacklevel=2)
    return check_runtime(backend)


Runner = PreparedModel  # the earlier name of a prepared model


def prepare(
    model: ElasticModel,
    sub: Subnet,
    runtime: str | Runtime | None = None,
    threads: int | None = 1,
    input_shape: Sequence[int] | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str | None = None,
) -> PreparedModel:
    """Subnet `sub` ready to run and time on `runtime` (default "torch"; see `tailor.cost.runtimes`).

    `backend=` is the deprecated name of `runtime`. For "torch" the subnet is extracted; ONNX runtimes
    export it (BN folded, verified; int8: quantized); "torch-inplace" switches the supernet itself.
    """
    rt = get_runtime(runtime_argument(runtime, backend, "torch", "prepare"))
    model_check(model, sub)
    return rt.prepare(model, sub, device=device, threads=threads, precision=precision, input_shape=input_shape)


def model_check(model: ElasticModel, sub: Subnet) -> None:
    """`InvalidSubnetError`/`UnsupportedModelError` unless `sub` lies in `model.space`."""
    if not isinstance(model, ElasticModel):
        raise UnsupportedModelError(f"expected a tailor ElasticModel, got {type(model).__name__}")
    if not isinstance(sub, Subnet):
        raise InvalidSubnetError(f"expected a Subnet, got {type(sub).__name__}")
    model.space.validate(sub)


def prepare_module(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    runtime: str | Runtime | None = None,
    threads: int | None = 1,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str | None = None,
) -> PreparedModel:
    """Any single-input module, in eval mode, ready to time on `runtime` (ONNX runtimes: exported as is)."""
    rt = get_runtime(runtime_argument(runtime, backend, "torch", "prepare_module"))
    return rt.prepare_module(module.eval(), input_shape, device=device, threads=threads, precision=precision)


def prepare_onnx(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    threads: int | None = 1,
    runtime: str | Runtime | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str | None = None,
) -> PreparedModel:
    """An ONNX file (e.g. from `tailor export`, fp32 or int8) loaded into an ONNX runtime (default "onnxruntime")."""
    rt = get_runtime(runtime_argument(runtime, backend, "onnxruntime", "prepare_onnx"))
    return rt.prepare_onnx(path, input_shape, device=device, threads=threads, precision=precision)


def latency(
    model: ElasticModel,
    sub: Subnet,
    batch_size: int = 1,
    runtime: str | Runtime | None = None,
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str | None = None,
) -> LatencyStats:
    """Measured latency of one batch of the subnet on `runtime`: p50/p90/p99, mean and spread over `repeats` calls.

    `runtime` is a name from `tailor.cost.runtimes.list_runtimes()` (default "torch": eager PyTorch on the
    extracted subnet; "torch-inplace", "torch-compile", "onnxruntime" (the BN-folded export), "onnxruntime-int8"
    (statically quantized on random inputs: realistic ranges for timing only), "openvino") or a configured
    `Runtime`; `backend=` is its deprecated name. `threads` fixes intra-op threads (PyTorch's setting is
    restored afterwards; `None` leaves the runtime's default), `device` is "cpu" or "cuda[:i]" (every call
    synchronised), `precision` the runtime's (None: its default, fp32 for most). The first `warmup` calls are
    not timed; each call is timed on its own with `time.perf_counter_ns`; the input is a fixed random batch.
    """
    runtime = runtime_argument(runtime, backend, "torch", "latency")
    table = latency_table(model, sub, [batch_size], runtime, threads, warmup, repeats, input_shape,
                          device=device, precision=precision)  # fmt: skip
    return table[batch_size]


def _check_batches(batch_sizes: Iterable[int]) -> list[int]:
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Iterable):
        raise ProfileError(f"batch_sizes must be a list of positive integers, got {batch_sizes!r}")
    batches = [check_positive_int("batch_size", b) for b in batch_sizes]
    if not batches:
        raise ProfileError("batch_sizes: expected at least one batch size")
    if len(set(batches)) != len(batches):
        raise ProfileError(f"batch_sizes must not repeat, got {batches}")
    return batches


def latency_table(
    model: ElasticModel,
    sub: Subnet,
    batch_sizes: Sequence[int] = (1,),
    runtime: str | Runtime | None = None,
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str | None = None,
) -> dict[int, LatencyStats]:
    """`latency` at several batch sizes, preparing (extracting, exporting, compiling) the subnet once."""
    rt = get_runtime(runtime_argument(runtime, backend, "torch", "latency_table"))
    batches = _check_batches(batch_sizes)
    repeats = check_positive_int("repeats", repeats)
    warmup = check_warmup(warmup)
    model_check(model, sub)
    prepared = rt.prepare(model, sub, device=device, threads=threads, precision=precision, input_shape=input_shape)
    try:
        return {b: LatencyStats.from_samples(prepared.samples(b, warmup, repeats)) for b in batches}
    finally:
        prepared.release()


K = TypeVar("K", bound=Hashable)


def interleaved_timings(
    runners: Mapping[K, PreparedModel],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[K, dict[int, Timings]]:
    """Per-call times (ms, wall and thread CPU) of every prepared model at every batch size, in `rounds` passes.

    On a shared machine the load drifts over seconds; measuring subnet A fully and then subnet B puts that
    drift into the A/B comparison. Alternating spreads it over all of them, so ratios and fitted models
    compare like with like. Each model gets `repeats` samples per batch size in all, in round order; every
    visit starts with `warmup` untimed calls (caches are cold after a switch). `progress(done, total)` is
    called after each visit.
    """
    batches = _check_batches(batch_sizes)
    repeats = check_positive_int("repeats", repeats)
    rounds = check_positive_int("rounds", rounds)
    warmup = check_warmup(warmup)
    if rounds > repeats:
        raise ProfileError(f"rounds ({rounds}) must not exceed repeats ({repeats}): each round takes >= 1 sample")
    share = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    wall: dict[K, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in runners}
    cpu: dict[K, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in runners}
    total, done = rounds * len(runners) * len(batches), 0
    for count in share:
        for key, runner in runners.items():
            for b in batches:
                t = runner.timings(b, warmup, count)
                wall[key][b] += t.wall_ms
                cpu[key][b] += t.cpu_ms
                done += 1
                if progress is not None:
                    progress(done, total)
    return {k: {b: Timings(wall[k][b], cpu[k][b]) for b in batches} for k in runners}


def interleaved_samples(
    runners: Mapping[K, PreparedModel],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
    clock: str = "wall",
) -> dict[K, dict[int, list[float]]]:
    """`interleaved_timings` on one clock ("wall", or "cpu" where every prepared model allows it)."""
    for runner in runners.values():
        runner.check_clock(clock)
    timings = interleaved_timings(runners, batch_sizes, warmup, repeats, rounds, progress)
    return {k: {b: t.clock(clock) for b, t in per.items()} for k, per in timings.items()}


def measure_interleaved(
    runners: Mapping[K, PreparedModel],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
    clock: str = "wall",
) -> dict[K, dict[int, LatencyStats]]:
    """`LatencyStats` of every prepared model at every batch size from `interleaved_samples` (same arguments)."""
    samples = interleaved_samples(runners, batch_sizes, warmup, repeats, rounds, progress, clock)
    return {k: {b: LatencyStats.from_samples(v) for b, v in per.items()} for k, per in samples.items()}


def release_all(prepared: Iterable[PreparedModel]) -> None:
    """`release()` every prepared model, last prepared first (in-place ones restore the supernet's state)."""
    for item in reversed(list(prepared)):
        item.release()


# -- memory ----------------------------------------------------------------------------------------------

_CHILD = r"""
import ctypes, json, resource, sys, torch

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None

path, shape, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
model = torch.export.load(path).module()
with torch.inference_mode():  # initialise the runtime's lazy state (thread pool, kernels) before measuring
    model(torch.zeros(shape))
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so the forward must grow RSS to use memory
except OSError:
    pass
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    method = "VmHWM after clear_refs"
except OSError:
    method = "ru_maxrss (lower bound: the peak may predate the forward pass)"
base = status("VmRSS")
with torch.inference_mode():
    x = torch.zeros(shape)
    model(x)
peak = status("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"activation_bytes": max(0, peak - base), "method": method}))
"""


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory of one inference of the extracted subnet: weights plus the forward pass's growth."""

    peak_bytes: int
    weight_bytes: int
    activation_bytes: int
    device: str
    method: str

    def to_dict(self) -> dict[str, int | str]:
        return {k: getattr(self, k) for k in ("peak_bytes", "weight_bytes", "activation_bytes", "device", "method")}


def peak_memory(
    model: ElasticModel,
    sub: Subnet,
    batch_size: int | Sequence[int] = 1,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    threads: int = 1,
) -> MemoryStats:
    """Measured peak memory of one forward pass (eval, no autograd) of the extracted subnet, in bytes.

    Arguments in the order of `latency`: `batch_size` third. The earlier order put `input_shape` third: a
    tuple or list there is still read as the input shape, with a `DeprecationWarning`.

    `peak_bytes = weight_bytes + activation_bytes`. `weight_bytes` is the exact size of the subnet's
    parameters and buffers. `activation_bytes` is measured:
    - CPU: in a fresh Python process (so earlier allocations in this one cannot hide it), which loads the
      subnet (saved with `torch.export`), runs it once to initialise the runtime, returns freed heap to the OS,
      resets the kernel's peak-RSS mark (`/proc/self/clear_refs`), and reports peak RSS minus RSS
      before creating the input and running the forward pass. It thus includes the input, activations,
      workspace and allocator overhead. Costs a process start (seconds).
    - CUDA: in this process, `torch.cuda.max_memory_allocated` minus the allocation before the forward.
    """
    if isinstance(batch_size, (tuple, list)):
        warnings.warn(
            "peak_memory(model, sub, input_shape) is deprecated: the third argument is batch_size, as in latency; "
            "pass input_shape=...",
            DeprecationWarning,
            stacklevel=2,
        )
        if input_shape is not None:
            raise ProfileError("peak_memory: input_shape given twice (third argument and input_shape=)")
        batch_size, input_shape = 1, batch_size
    shape = input_shape_of(model, input_shape)
    batch_size = check_positive_int("batch_size", batch_size)
    threads = check_positive_int("threads", threads)
    device = check_device(device)
    static = static_subnet(model, sub)
    weight_bytes = sum(t.numel() * t.element_size() for t in [*static.parameters(), *static.buffers()])
    if device.type == "cuda":
        static = static.to(device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            static(torch.zeros((batch_size, *shape), device=device))
        torch.cuda.synchronize(device)
        activation = torch.cuda.max_memory_allocated(device) - before
        return MemoryStats(
            weight_bytes + activation, weight_bytes, activation, str(device), "cuda max_memory_allocated"
        )
    if device.type != "cpu":
        raise ProfileError(f"peak_memory supports cpu and cuda devices, got {str(device)!r}")
    with tempfile.TemporaryDirectory(prefix="tailor-memory-") as scratch:
        path = os.path.join(scratch, "subnet.pt2")
        with torch.inference_mode():
            exported = torch.export.export(static, (torch.zeros((batch_size, *shape)),))
        torch.export.save(exported, path)  # a torch.export archive: no pickled code is loaded back
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, path, json.dumps([batch_size, *shape]), str(threads)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    if proc.returncode != 0:
        raise ProfileError(f"peak_memory: the measuring process failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    activation = int(result["activation_bytes"])
    return MemoryStats(
        weight_bytes + activation, weight_bytes, activation, "cpu", f"child process RSS, {result['method']}"
    )


# -- energy ----------------------------------------------------------------------------------------------

_RAPL = Path("/sys/class/powercap")


def _rapl_packages() -> list[Path]:
    """Readable top-level RAPL package domains (`intel-rapl:N`), or none."""
    if not _RAPL.is_dir():
        return []
    found = []
    for domain in sorted(_RAPL.glob("intel-rapl:*")):
        if domain.name.count(":") != 1:
            continue  # sub-domains (core, dram) are included in their package
        try:
            int((domain / "energy_uj").read_text())
            found.append(domain)
        except (OSError, ValueError):
            continue
    return found


def _nvml_handle(device: torch.device) -> object | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml  # optional; not a dependency

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return handle
    except Exception:
        return None


def energy_source(device: str | torch.device = "cpu") -> str:
    """`"rapl"`, `"nvml"` or `"unavailable"`: which energy counter `energy` would read on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return "nvml" if _nvml_handle(device) is not None else UNAVAILABLE
    return "rapl" if _rapl_packages() else UNAVAILABLE


def energy(
    model: ElasticModel,
    sub: Subnet,
    batch_size: int = 1,
    repeats: int = 50,
    threads: int | None = 1,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> float | str:
    """Joules per batch of the extracted subnet (eager PyTorch), from a hardware energy counter.

    Reads Intel/AMD RAPL package counters (`/sys/class/powercap`, whole-socket energy, so other load on
    the machine is included) on CPU, or NVML's total energy on CUDA. Where no counter is readable it
    returns the string `"unavailable"`: an estimate would be a made-up number.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    repeats = check_positive_int("repeats", repeats)
    device = torch.device(device)
    source = energy_source(device)
    static_subnet(model, sub)  # validate the subnet even when no counter is readable
    if source == UNAVAILABLE:
        return UNAVAILABLE
    shape = input_shape_of(model, input_shape)
    static = static_subnet(model, sub).to(device)
    x = example_input(shape, batch_size).to(device)

    if source == "rapl":
        domains = _rapl_packages()

        def read() -> list[int]:
            return [int((d / "energy_uj").read_text()) for d in domains]

        ranges = []
        for d in domains:
            try:
                ranges.append(int((d / "max_energy_range_uj").read_text()))
            except (OSError, ValueError):
                ranges.append(2**32)
    else:
        import pynvml

        handle = _nvml_handle(device)

        def read() -> list[int]:
            return [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) * 1000]  # mJ -> uJ

        ranges = [2**64]
    with torch_threads(threads), torch.inference_mode():
        static(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = read()
        for _ in range(repeats):
            static(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = read()
    total_uj = sum((e - s) % r for s, e, r in zip(start, end, ranges))  # counters wrap at their range
    return total_uj / 1e6 / repeats
