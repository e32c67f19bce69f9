"""What a runtime is: `Runtime` (prepares a subnet), `PreparedModel` (runs and times it), the registry.

A runtime takes a subnet of a supernet (or any single-input module) and makes it ready to run on one
device, with a fixed intra-op thread count and a numeric precision: eager PyTorch, `torch.compile`, an
ONNX Runtime session, an OpenVINO compiled model, ... `prepare(...)` returns a `PreparedModel` whose
`run(batch)` takes a host batch (numpy or torch) and returns float32 logits as numpy, and whose
`timings(batch_size, ...)` times `run` on a fixed random batch after warm-up, on two clocks, with the
device synchronised after every call. `info` (a `RuntimeInfo`) records what ran: runtime, package version,
precision, device, threads and options; profiles store it with every measurement.

Runtimes register themselves by name (`register_runtime`, one file each in this package); callers ask
`get_runtime(name, **options)`. A runtime whose package is missing stays listed and raises
`RuntimeUnavailableError` naming the pip extra to install when it is used. No timing or conversion code
outside this package compares runtime names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from tailor.checks import fraction, non_negative_float, non_negative_int
from tailor.errors import ProfileError
from tailor.export._common import check_positive_int, example_input
from tailor.ops import ElasticModel
from tailor.space import Subnet

CLOCKS = ("wall", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEVICE_TYPES = ("cpu", "cuda")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class RuntimeUnavailableError(ProfileError):
    """A runtime cannot run here: its package is not installed (the message names the extra) or the device is missing."""


# -- what ran --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeInfo:
    """What one measurement ran on: runtime name, package version, precision, device, threads, options.

    `version`, `precision` and `device` are None only for profiles written before they were recorded.
    `options` holds the runtime's settings as JSON values (graph optimisation level, execution providers
    actually used, compiler mode, ...).
    """

    runtime: str
    version: str | None = None
    precision: str | None = None
    device: str | None = None
    threads: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the name, which keys it in a profile's `runtimes`)."""
        out: dict[str, Any] = {}
        for key in ("version", "precision", "device", "threads"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.options:
            out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, runtime: str, data: Mapping[str, Any]) -> RuntimeInfo:
        return cls(
            runtime,
            data.get("version"),
            data.get("precision"),
            data.get("device"),
            data.get("threads"),
            dict(data.get("options") or {}),
        )

    def describe(self) -> str:
        """One line: `onnxruntime 1.22.0, fp32, cpu, 1 thread(s), graph_optimization=all`."""
        parts = [self.runtime if self.version is None else f"{self.runtime} {self.version}"]
        parts += [v for v in (self.precision, self.device) if v is not None]
        if self.threads is not None:
            parts.append(f"{self.threads} thread(s)")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return ", ".join(parts)


@dataclass(frozen=True)
class Timings:
    """Per-call times (ms) of the same calls on two clocks: wall time, and CPU time of the calling thread.

    `wall_ms` is the latency a caller waits for. `cpu_ms` (`time.thread_time_ns`) leaves out time spent
    preempted by other processes; with one intra-op thread on a CPU runtime that computes on the calling
    thread, it is the work itself, which is what a predictor should be checked against on a shared machine.
    """

    wall_ms: list[float]
    cpu_ms: list[float]

    def clock(self, name: str) -> list[float]:
        """`wall_ms` for "wall", `cpu_ms` for "cpu"."""
        if name not in CLOCKS:
            raise ProfileError(f"unknown clock {name!r}; expected one of {list(CLOCKS)}")
        return self.wall_ms if name == "wall" else self.cpu_ms


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> Timings:
    """Run `call` `warmup` times untimed, then `repeats` times, each timed alone on both clocks."""
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


def check_warmup(warmup: object) -> int:
    return non_negative_int("warmup", warmup, ProfileError)


def check_threads(threads: object) -> int | None:
    return None if threads is None else check_positive_int("threads", threads)


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device` of a supported type (cpu, cuda), else a `ProfileError` naming it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ProfileError(f"unknown device {device!r}; expected one of {list(DEVICE_TYPES)} (e.g. 'cuda:0')") from None
    if parsed.type not in DEVICE_TYPES:
        raise ProfileError(f"unknown device {str(device)!r}; expected one of {list(DEVICE_TYPES)} (e.g. 'cuda:0')")
    return parsed


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` inside the block, restored after (None: unchanged)."""
    if threads is None or torch.get_num_threads() == threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def as_numpy_batch(batch: Any) -> np.ndarray:
    """A host batch (numpy array or torch tensor, any device) as a C-contiguous float32 numpy array."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


# -- a prepared subnet -----------------------------------------------------------------------------------


class PreparedModel(ABC):
    """A subnet (or module) made ready on one runtime: `run(batch)` for serving, `timings(...)` for profiling.

    `run` takes one batch `(N, *input_shape)` as a numpy array or torch tensor and returns the outputs as a
    float32 numpy array (synchronised with the device). Timing measures exactly `run` on a fixed random
    batch, so a profile's latency is what a serving worker pays per batch (host to device and back included).
    """

    #: whether, at threads=1 on a CPU, the work runs on the calling thread (so the thread-CPU clock sees it)
    computes_on_calling_thread: bool = True

    def __init__(self, info: RuntimeInfo, input_shape: Sequence[int]) -> None:
        self.info = info
        self.input_shape = tuple(int(d) for d in input_shape)
        self.prepare_seconds: float | None = None  # set by `Runtime.prepare`: export/compile time

    @property
    def runtime(self) -> str:
        return self.info.runtime

    @property
    def threads(self) -> int | None:
        return self.info.threads

    @property
    def device(self) -> str:
        return self.info.device or "cpu"

    @property
    def backend(self) -> str:
        """Deprecated name of `runtime`."""
        import warnings

        warnings.warn("PreparedModel.backend is deprecated; use .runtime", DeprecationWarning, stacklevel=2)
        return self.runtime

    def check_input(self, batch: Any) -> None:
        """`ProfileError` unless `batch` has shape (N, *input_shape) with N >= 1."""
        shape = tuple(batch.shape)
        if len(shape) != len(self.input_shape) + 1 or shape[1:] != self.input_shape or shape[0] < 1:
            raise ProfileError(
                f"{self.runtime}: expected a batch of shape (N, {', '.join(map(str, self.input_shape))}), got {shape}"
            )

    @abstractmethod
    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Outputs of one batch as float32 numpy (the device synchronised)."""

    def _timing_context(self) -> contextlib.AbstractContextManager[None]:
        """Entered around a timing loop (PyTorch runtimes fix the intra-op threads here)."""
        return contextlib.nullcontext()

    def timings(self, batch_size: int, warmup: int = 10, repeats: int = 50, seed: int = 0) -> Timings:
        """Wall and thread-CPU times (ms) of `repeats` calls of `run` on a fixed random batch, after `warmup` calls."""
        batch_size = check_positive_int("batch_size", batch_size)
        repeats = check_positive_int("repeats", repeats)
        warmup = check_warmup(warmup)
        x = example_input(self.input_shape, batch_size, seed=seed).numpy()
        with self._timing_context():
            return time_calls(lambda: self.run(x), warmup, repeats)

    def samples(
        self, batch_size: int, warmup: int = 10, repeats: int = 50, seed: int = 0, clock: str = "wall"
    ) -> list[float]:
        """Per-call times (ms) on one clock: "wall" (latency) or "cpu" (see `check_clock`)."""
        self.check_clock(clock)
        return self.timings(batch_size, warmup, repeats, seed).clock(clock)

    def check_clock(self, clock: str) -> None:
        """The thread-CPU clock only sees the work on a CPU runtime computing on the calling thread at threads=1."""
        if clock not in CLOCKS:
            raise ProfileError(f"unknown clock {clock!r}; expected one of {list(CLOCKS)}")
        if clock == "cpu":
            if self.threads != 1:
                raise ProfileError(
                    f"clock 'cpu' times the calling thread, so it needs threads=1, got threads={self.threads}"
                )
            if self.device != "cpu" or not self.computes_on_calling_thread:
                raise ProfileError(
                    f"clock 'cpu' cannot see {self.runtime}'s work on {self.device} (it does not run on the calling "
                    "thread); use the wall clock"
                )

    def release(self) -> None:  # noqa: B027 - an optional hook: most runtimes change no shared state
        """Give back what `prepare` changed on shared state (the in-place runtime restores the supernet)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.describe()} input {list(self.input_shape)}>"


# -- runtimes and the registry ----------------------------------------------------------------------------


class Runtime(ABC):
    """Prepares subnets to run on one kind of engine. Subclass, set the class attributes, `register_runtime` it.

    Class attributes: `name` (registry key), `description` (one line), `requires` (modules it imports),
    `extra` (the `pip install 'tailor[EXTRA]'` that provides them, None for core dependencies), `precisions`
    (the first is the default), `devices` (device types), `folds_batchnorm` (it runs the BatchNorm-folded
    export, so a latency table cuts folded blocks). Options given to the constructor are kept in `options`
    and recorded in every `RuntimeInfo`; `OPTIONS` lists the allowed names with their defaults.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    folds_batchnorm: ClassVar[bool] = False
    OPTIONS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            allowed = sorted(self.OPTIONS) or "none"
            raise ProfileError(f"runtime {self.name!r}: unknown option(s) {unknown}; allowed: {allowed}")
        self.options: dict[str, Any] = {**self.OPTIONS, **options}
        self._check_options()

    def _check_options(self) -> None:  # noqa: B027 - an optional hook: runtimes without options check nothing
        """Validate `self.options` (override; raise `ProfileError` naming the option)."""

    # -- availability --------------------------------------------------------------------------------------
    @classmethod
    def missing(cls) -> str | None:
        """Why this runtime cannot be used here (a missing package, with the extra to install), or None."""
        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                how = f"pip install 'tailor[{cls.extra}]'" if cls.extra else f"pip install {module}"
                return f"runtime {cls.name!r} needs the {module!r} package, which is not installed: {how}"
        return None

    def check_available(self) -> None:
        reason = self.missing()
        if reason is not None:
            raise RuntimeUnavailableError(reason)

    def version(self) -> str:
        """The version of the package doing the work (e.g. onnxruntime's)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.requires[0]) if self.requires else torch.__version__
        except PackageNotFoundError:
            return "unknown"

    # -- arguments ---------------------------------------------------------------------------------------
    def resolve(self, device: str | torch.device, threads: int | None, precision: str | None) -> tuple[torch.device, int | None, str]:
        """Checked (device, threads, precision); `precision=None` is this runtime's default (its first)."""
        self.check_available()
        parsed = check_device(device)
        if parsed.type not in self.devices:
            raise ProfileError(f"runtime {self.name!r} runs on {list(self.devices)}, not on {str(device)!r}")
        self.check_device(parsed)
        precision = self.precisions[0] if precision is None else precision
        if precision not in self.precisions:
            raise ProfileError(
                f"runtime {self.name!r} supports precision {list(self.precisions)}, not {precision!r}"
                + ("" if precision in PRECISIONS else f" (known precisions: {list(PRECISIONS)})")
            )
        return parsed, check_threads(threads), precision

    def check_device(self, device: torch.device) -> None:  # noqa: B027 - an optional hook
        """Raise `RuntimeUnavailableError` when this machine cannot run the runtime on `device` (a GPU missing, ...)."""

    def info(self, device: torch.device, threads: int | None, precision: str, **extra: Any) -> RuntimeInfo:
        """The `RuntimeInfo` of a model prepared with these settings (`extra`: options found at prepare time)."""
        return RuntimeInfo(self.name, self.version(), precision, str(device), threads, {**self.options, **extra})

    # -- preparing -----------------------------------------------------------------------------------------
    @abstractmethod
    def prepare_module(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        """Any single-input module (a static subnet, a block) on this runtime, as it is (mode and BN untouched)."""

    def prepare(
        self,
        model: ElasticModel,
        sub: Subnet,
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> PreparedModel:
        """Subnet `sub` of `model` ready to run: by default extracted (eval mode) and handed to `prepare_module`."""
        from tailor.export._common import input_shape_of, static_subnet

        shape = input_shape_of(model, input_shape)
        self.resolve(device, threads, precision)
        return self.prepare_module(static_subnet(model, sub), shape, device=device, threads=threads, precision=precision)

    def prepare_onnx(
        self,
        path: Any,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        """An ONNX file on this runtime (only runtimes that run ONNX support it)."""
        raise ProfileError(f"runtime {self.name!r} does not run ONNX files")

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({options})"


R = TypeVar("R", bound=type[Runtime])
_RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(cls: R) -> R:
    """Class decorator: make a `Runtime` subclass available by its `name` to `get_runtime`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or not isinstance(cls, type) or not issubclass(cls, Runtime):
        raise ProfileError(f"register_runtime expects a Runtime subclass with a name, got {cls!r}")
    if name in _RUNTIMES and _RUNTIMES[name] is not cls:
        raise ProfileError(f"a runtime named {name!r} is already registered ({_RUNTIMES[name].__qualname__})")
    _RUNTIMES[name] = cls
    return cls


def list_runtimes(available: bool = False) -> list[str]:
    """Registered runtime names (sorted); `available=True`: only those whose packages are installed."""
    names = sorted(_RUNTIMES)
    return [n for n in names if _RUNTIMES[n].missing() is None] if available else names


def get_runtime(name: str | Runtime, **options: Any) -> Runtime:
    """The runtime registered as `name`, configured with `options` (a `Runtime` instance is returned as is)."""
    if isinstance(name, Runtime):
        if options:
            raise ProfileError("get_runtime: options apply to a runtime name, not to a Runtime instance")
        return name
    if not isinstance(name, str) or name not in _RUNTIMES:
        raise ProfileError(f"unknown runtime {name!r}; expected one of {list_runtimes()}")
    return _RUNTIMES[name](**options)


def runtime_argument(runtime: Any, backend: Any, default: str, where: str) -> Any:
    """`runtime`, or the deprecated `backend=` spelling of it (a DeprecationWarning); both given must agree."""
    import warnings

    if backend is None:
        return default if runtime is None else runtime
    warnings.warn(f"{where}: backend= is deprecated; use runtime=", DeprecationWarning, stacklevel=3)
    if runtime is not None and runtime != backend:
        raise ProfileError(f"{where}: runtime={runtime!r} and backend={backend!r} disagree (backend is its old name)")
    return backend


# -- output checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How close a runtime's outputs must be to PyTorch fp32: max |logit diff| <= atol + rtol * max |reference logit|,
    and top-1 agreement >= `min_top1_agreement`.

    Relative by default: an untrained network's logits are ~0.05, a trained one's ~10, and a fixed absolute
    limit would pass int8 on the first and fail fp32 reorderings on neither. fp32 runtimes differ from PyTorch by
    ~1e-6 of the largest logit; bf16 by ~1e-3 and more; int8 by ~1e-2.
    """

    atol: float = 1e-5
    rtol: float = 1e-3
    min_top1_agreement: float = 0.99

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            non_negative_float(f"tolerance {name}", getattr(self, name), ProfileError)
        fraction("tolerance min_top1_agreement", self.min_top1_agreement, ProfileError)

    def allows(self, max_abs_diff: float, reference_max_abs: float, top1_agreement: float) -> bool:
        return max_abs_diff <= self.atol + self.rtol * reference_max_abs and top1_agreement >= self.min_top1_agreement


@dataclass(frozen=True)
class OutputCheck:
    """A runtime's outputs against PyTorch fp32 on the same held-out inputs."""

    top1_agreement: float
    max_abs_diff: float
    reference_max_abs: float
    samples: int
    inputs: str
    within_tolerance: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1_agreement": self.top1_agreement,
            "max_abs_diff": self.max_abs_diff,
            "reference_max_abs": self.reference_max_abs,
            "samples": self.samples,
            "inputs": self.inputs,
            "within_tolerance": self.within_tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputCheck:
        return cls(
            float(data["top1_agreement"]),
            float(data["max_abs_diff"]),
            float(data["reference_max_abs"]),
            int(data["samples"]),
            str(data["inputs"]),
            bool(data["within_tolerance"]),
        )


def run_batched(prepared: PreparedModel, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """`prepared.run` over `inputs` in batches of `batch_size`, outputs concatenated."""
    return np.concatenate([prepared.run(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def compare_outputs(
    outputs: np.ndarray, reference: np.ndarray, tolerance: Tolerance, inputs: str = "random"
) -> OutputCheck:
    """Top-1 agreement and max |difference| of `outputs` against `reference` (both (N, classes)), judged by `tolerance`."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if outputs.shape != reference.shape or not len(outputs):
        raise ProfileError(f"output check: shapes {outputs.shape} and {reference.shape} differ (or are empty)")
    finite = bool(np.isfinite(outputs).all())
    diff = float(np.abs(outputs - reference).max()) if finite else math.inf
    scale = float(np.abs(reference).max())
    agreement = float((outputs.argmax(1) == reference.argmax(1)).mean())
    ok = finite and tolerance.allows(diff, scale, agreement)
    return OutputCheck(agreement, diff if math.isfinite(diff) else 1e300, scale, len(outputs), inputs, ok)


# -- runtimes that run the ONNX export -------------------------------------------------------------------


class OnnxFileRuntime(Runtime):
    """A runtime that runs the exported ONNX file: `prepare` exports the subnet BatchNorm-folded and checked
    (`tailor.export.to_onnx`), `prepare_module` exports a module as it is, and both hand the file (after
    `convert`, e.g. int8 quantization) to `prepare_onnx`, which subclasses implement."""

    folds_batchnorm = True

    def convert(self, fp32_path: Path, scratch: Path, input_shape: Sequence[int]) -> Path:
        """The file this runtime loads, made from the fp32 export (default: the export itself)."""
        return fp32_path

    def _prepare_exported(self, export: Callable[[Path], None], input_shape: Sequence[int], device: Any,
                          threads: int | None, precision: str | None) -> PreparedModel:  # fmt: skip
        self.resolve(device, threads, precision)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"tailor-{self.name}-") as scratch:
            fp32 = Path(scratch) / "fp32.onnx"
            export(fp32)
            path = self.convert(fp32, Path(scratch), input_shape)
            prepared = self.prepare_onnx(path, input_shape, device=device, threads=threads, precision=precision)
        prepared.prepare_seconds = time.perf_counter() - start
        return prepared

    def prepare(
        self,
        model: ElasticModel,
        sub: Subnet,
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> PreparedModel:
        from tailor.export import to_onnx
        from tailor.export._common import input_shape_of

        shape = input_shape_of(model, input_shape)
        return self._prepare_exported(
            lambda path: to_onnx(model, sub, path, input_shape=shape), shape, device, threads, precision
        )

    def prepare_module(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        from tailor.export import export_module

        shape = tuple(check_positive_int("input_shape", d) for d in input_shape)
        return self._prepare_exported(lambda path: export_module(module, path, shape), shape, device, threads, precision)

    @abstractmethod
    def prepare_onnx(
        self,
        path: Any,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        """The ONNX file at `path`, as it is, loaded into this runtime."""


def check_onnx_file(path: Any, input_shape: Sequence[int]) -> tuple[Path, tuple[int, ...]]:
    """(path, shape) checked: the file exists and the shape is positive integers."""
    if not Path(path).is_file():
        raise ProfileError(f"no ONNX model at {str(path)!r}")
    return Path(path), tuple(check_positive_int("input_shape", d) for d in input_shape)
