"""What one subnet costs: parameters, MACs, peak memory, measured latency, energy where readable.

Every function takes the supernet and a `Subnet`, checks the subnet against `model.space` (an
`InvalidSubnetError` names the dimension and value), and measures `model.extract(sub)` in eval mode,
i.e. the static network that is exported and served, not the supernet with its slicing machinery.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from tailor.errors import ProfileError
from tailor.export._common import check_positive_int, example_input, input_shape_of, static_subnet
from tailor.ops import ElasticModel
from tailor.space import Subnet

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
UNAVAILABLE = "unavailable"


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
    """Latency percentiles of one (subnet, batch size, backend) in milliseconds, from `repeats` timed runs."""

    p50: float
    p90: float
    p99: float
    mean: float = field(default=math.nan, compare=False)
    repeats: int = field(default=0, compare=False)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Percentiles (linear interpolation) of the given per-call times in ms."""
        if len(samples_ms) == 0:
            raise ProfileError("latency statistics need at least one sample")
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return cls(p50, p90, p99, float(a.mean()), len(a))

    def to_dict(self) -> dict[str, float]:
        """`{"p50", "p90", "p99"}`: the form a profile stores under `latency_ms[batch]`."""
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Timings:
    """Per-call times (ms) of the same calls on two clocks: wall time, and CPU time of the calling thread.

    `wall_ms` is the latency a caller waits for. `cpu_ms` (`time.thread_time_ns`) leaves out time spent
    preempted by other processes; with one intra-op thread both runtimes compute on the calling thread, so
    it is the work itself, which is what a predictor should be checked against on a shared machine.
    """

    wall_ms: list[float]
    cpu_ms: list[float]

    def clock(self, name: str) -> list[float]:
        """`wall_ms` for "wall", `cpu_ms` for "cpu"."""
        if name not in CLOCKS:
            raise ProfileError(f"unknown clock {name!r}; expected one of {list(CLOCKS)}")
        return self.wall_ms if name == "wall" else self.cpu_ms


CLOCKS = ("wall", "cpu")


def _time_calls(call: Callable[[], object], warmup: int, repeats: int) -> Timings:
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        start_cpu = time.thread_time_ns()
        start = time.perf_counter_ns()
        call()
        wall.append((time.perf_counter_ns() - start) / 1e6)
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
    return Timings(wall, cpu)


def check_backend(backend: object) -> str:
    """`backend` if it is one of `BACKENDS`, else a `ProfileError` listing them."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ProfileError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def _check_warmup(warmup: object) -> int:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ProfileError(f"warmup must be a non-negative integer, got {warmup!r}")
    return warmup


class Runner:
    """A static module made ready to time on one backend: an eager module, or a loaded ONNX Runtime session.

    Build it with `prepare` (a subnet) or `prepare_module` (any module, e.g. one block); then
    `samples(batch_size, warmup, repeats)` times single calls. Preparing once and timing many times is
    what lets `measure_interleaved` alternate between subnets without re-exporting them.
    """

    def __init__(self, backend: str, input_shape: Sequence[int], threads: int | None, target: Any) -> None:
        self.backend = check_backend(backend)
        self.input_shape = tuple(input_shape)
        self.threads = threads
        self._target = target  # nn.Module for "torch", onnxruntime.InferenceSession otherwise

    def timings(self, batch_size: int, warmup: int = 10, repeats: int = 50, seed: int = 0) -> Timings:
        """Wall and thread-CPU times (ms) of `repeats` calls on a fixed random batch, after `warmup` untimed calls."""
        batch_size = check_positive_int("batch_size", batch_size)
        repeats = check_positive_int("repeats", repeats)
        warmup = _check_warmup(warmup)
        x = example_input(self.input_shape, batch_size, seed=seed)
        if self.backend == "torch":
            module = self._target
            with _torch_threads(self.threads), torch.inference_mode():
                return _time_calls(lambda: module(x), warmup, repeats)
        session = self._target
        feed = {session.get_inputs()[0].name: x.numpy()}
        return _time_calls(lambda: session.run(None, feed), warmup, repeats)

    def samples(
        self, batch_size: int, warmup: int = 10, repeats: int = 50, seed: int = 0, clock: str = "wall"
    ) -> list[float]:
        """Per-call times (ms) on one clock: "wall" (latency) or "cpu" (needs threads=1; see `Timings`)."""
        _check_clock(clock, self.threads)
        return self.timings(batch_size, warmup, repeats, seed).clock(clock)


def _check_clock(clock: str, threads: int | None) -> None:
    if clock not in CLOCKS:
        raise ProfileError(f"unknown clock {clock!r}; expected one of {list(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise ProfileError(f"clock 'cpu' times the calling thread, so it needs threads=1, got threads={threads}")


def _check_threads(threads: object) -> int | None:
    return None if threads is None else check_positive_int("threads", threads)


def prepare(
    model: ElasticModel,
    sub: Subnet,
    backend: str = "torch",
    threads: int | None = 1,
    input_shape: Sequence[int] | None = None,
) -> Runner:
    """Extract `sub` (and for ONNX Runtime export it, BN folded and verified; int8: quantized) ready to time."""
    check_backend(backend)
    threads = _check_threads(threads)
    shape = input_shape_of(model, input_shape)
    if backend == "torch":
        return Runner(backend, shape, threads, static_subnet(model, sub))
    from tailor.export.onnx_export import _ort_session

    with tempfile.TemporaryDirectory(prefix="tailor-latency-") as scratch:
        path = onnx_model(model, sub, Path(scratch), backend, shape)
        return Runner(backend, shape, threads, _ort_session(path, threads))  # the session holds the model


def prepare_module(
    module: torch.nn.Module, input_shape: Sequence[int], backend: str = "torch", threads: int | None = 1
) -> Runner:
    """Any single-input module (eval mode) ready to time: eager, or exported as is (no folding, no checks) to ORT."""
    check_backend(backend)
    threads = _check_threads(threads)
    shape = tuple(input_shape)
    module = module.eval()
    if backend == "torch":
        return Runner(backend, shape, threads, module)
    from tailor.export import export_module, quantize_int8
    from tailor.export.onnx_export import _ort_session

    with tempfile.TemporaryDirectory(prefix="tailor-latency-") as scratch:
        path = Path(scratch) / "fp32.onnx"
        export_module(module, path, shape)
        if backend == "onnxruntime-int8":
            calibration = [example_input(shape, 8, seed=s) for s in range(2)]
            path = quantize_int8(path, Path(scratch) / "int8.onnx", calibration, mode="static")
        return Runner(backend, shape, threads, _ort_session(path, threads))


def prepare_onnx(
    path: str | os.PathLike[str], input_shape: Sequence[int], threads: int | None = 1, backend: str = "onnxruntime"
) -> Runner:
    """An ONNX file (e.g. from `tailor export`, fp32 or int8) loaded into ONNX Runtime, ready to time."""
    if check_backend(backend) == "torch":
        raise ProfileError("prepare_onnx runs ONNX files: backend must be 'onnxruntime' or 'onnxruntime-int8'")
    from tailor.export.onnx_export import _ort_session

    if not Path(path).is_file():
        raise ProfileError(f"no ONNX model at {str(path)!r}")
    shape = tuple(check_positive_int("input_shape", d) for d in input_shape)
    return Runner(backend, shape, _check_threads(threads), _ort_session(path, _check_threads(threads)))


def latency(
    model: ElasticModel,
    sub: Subnet,
    batch_size: int = 1,
    backend: str = "torch",
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
) -> LatencyStats:
    """Measured latency of one batch of the extracted subnet: p50/p90/p99 over `repeats` timed calls.

    Backends: `"torch"` (eager PyTorch, `torch.inference_mode`), `"onnxruntime"` (the BatchNorm-folded
    ONNX export on ORT's CPU provider, all graph optimisations), `"onnxruntime-int8"` (the same, statically
    quantized to int8 QDQ; calibrated on random inputs, which sets realistic ranges for timing only; use
    `tailor.export.quantize_int8` with real data for accuracy). `threads` fixes intra-op threads (PyTorch's
    setting is restored afterwards; `None` leaves the runtime's default). The first `warmup` calls are not
    timed. Each call is timed on its own with `time.perf_counter_ns`; the input is a fixed random batch.
    """
    return latency_table(model, sub, [batch_size], backend, threads, warmup, repeats, input_shape)[batch_size]


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
    backend: str = "torch",
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    input_shape: Sequence[int] | None = None,
) -> dict[int, LatencyStats]:
    """`latency` at several batch sizes, extracting (and, for ONNX Runtime, exporting) the subnet once."""
    check_backend(backend)
    batches = _check_batches(batch_sizes)
    repeats = check_positive_int("repeats", repeats)
    warmup = _check_warmup(warmup)
    runner = prepare(model, sub, backend, threads, input_shape)
    return {b: LatencyStats.from_samples(runner.samples(b, warmup, repeats)) for b in batches}


K = TypeVar("K", bound=Hashable)


def interleaved_timings(
    runners: Mapping[K, Runner],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[K, dict[int, Timings]]:
    """Per-call times (ms, wall and thread CPU) of every runner at every batch size, in `rounds` round-robin passes.

    On a shared machine the load drifts over seconds; measuring subnet A fully and then subnet B puts that
    drift into the A/B comparison. Alternating spreads it over all of them, so ratios and fitted models
    compare like with like. Each runner gets `repeats` samples per batch size in all, in round order; every
    visit starts with `warmup` untimed calls (caches are cold after a switch). `progress(done, total)` is
    called after each visit.
    """
    batches = _check_batches(batch_sizes)
    repeats = check_positive_int("repeats", repeats)
    rounds = check_positive_int("rounds", rounds)
    warmup = _check_warmup(warmup)
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
    runners: Mapping[K, Runner],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
    clock: str = "wall",
) -> dict[K, dict[int, list[float]]]:
    """`interleaved_timings` on one clock ("wall", or "cpu" when every runner has threads=1)."""
    for runner in runners.values():
        _check_clock(clock, runner.threads)
    timings = interleaved_timings(runners, batch_sizes, warmup, repeats, rounds, progress)
    return {k: {b: t.clock(clock) for b, t in per.items()} for k, per in timings.items()}


def measure_interleaved(
    runners: Mapping[K, Runner],
    batch_sizes: Sequence[int] = (1,),
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    progress: Callable[[int, int], None] | None = None,
    clock: str = "wall",
) -> dict[K, dict[int, LatencyStats]]:
    """`LatencyStats` of every runner at every batch size from `interleaved_samples` (same arguments)."""
    samples = interleaved_samples(runners, batch_sizes, warmup, repeats, rounds, progress, clock)
    return {k: {b: LatencyStats.from_samples(v) for b, v in per.items()} for k, per in samples.items()}


def onnx_model(model: ElasticModel, sub: Subnet, directory: Path, backend: str, shape: Sequence[int]) -> Path:
    """Export `sub` for an ONNX Runtime backend into `directory` (fp32, or int8 QDQ for `onnxruntime-int8`)."""
    from tailor.export import quantize_int8, to_onnx

    check_backend(backend)
    fp32 = to_onnx(model, sub, directory / "fp32.onnx", input_shape=shape).path
    if backend != "onnxruntime-int8":
        return fp32
    calibration = [example_input(shape, 8, seed=s) for s in range(2)]
    return quantize_int8(fp32, directory / "int8.onnx", calibration, mode="static")


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
    input_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    threads: int = 1,
) -> MemoryStats:
    """Measured peak memory of one forward pass (eval, no autograd) of the extracted subnet, in bytes.

    `peak_bytes = weight_bytes + activation_bytes`. `weight_bytes` is the exact size of the subnet's
    parameters and buffers. `activation_bytes` is measured:
    - CPU: in a fresh Python process (so earlier allocations in this one cannot hide it), which loads the
      subnet (saved with `torch.export`), runs it once to initialise the runtime, returns freed heap to the OS,
      resets the kernel's peak-RSS mark (`/proc/self/clear_refs`), and reports peak RSS minus RSS
      before creating the input and running the forward pass. It thus includes the input, activations,
      workspace and allocator overhead. Costs a process start (seconds).
    - CUDA: in this process, `torch.cuda.max_memory_allocated` minus the allocation before the forward.
    """
    shape = input_shape_of(model, input_shape)
    batch_size = check_positive_int("batch_size", batch_size)
    threads = check_positive_int("threads", threads)
    device = torch.device(device)
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
    with _torch_threads(threads), torch.inference_mode():
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
