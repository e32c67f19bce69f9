"""Eager PyTorch: the extracted subnet (`torch`) and the supernet switched in place (`torch-inplace`).

`torch` runs `model.extract(sub)`: plain `nn.Conv2d`/`nn.BatchNorm2d`/`nn.Linear` modules with copied weights,
one copy per prepared subnet. `torch-inplace` runs the supernet itself with `model.activate(sub)` (SubNetAct):
every prepared subnet shares the supernet's weights, and `run` switches to its subnet when another one is
active (a few attribute stores). Both run under `torch.inference_mode()`, on CPU or CUDA (synchronised).

The allocator: eager PyTorch on CPU allocates every activation with `malloc` and frees it an op later. glibc
returns freed memory at the top of its heap to the OS (and serves blocks above its mmap threshold with fresh
mappings), so the next forward pass faults the same pages in again: profiled on resnet20 and mobilenet_v2 at
batch 32, that page-fault churn was the largest cost outside the kernels and moved from run to run with the
heap's layout, putting the supernet and its extraction several percent apart either way for no reason in
their code.
With `allocator="keep"` (the default) preparing a torch runtime calls glibc's `mallopt` once for the process
(`keep_freed_memory`): no trimming, no mmap for blocks below 1 GiB, 64 MiB of top padding, so a worker keeps
the memory of its largest batch resident and reuses it (what jemalloc/tcmalloc do, which PyTorch's CPU
performance guide recommends; they replace malloc only when preloaded at process start, which a library
cannot do, hence the two `mallopt` calls by hand through ctypes). `allocator="system"` leaves malloc alone. `RuntimeInfo.options["allocator"]`
records the process's state; on a libc without `mallopt` it says so and nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tailor.checks import one_of
from tailor.cost.runtimes.base import (
    TORCH_DTYPES,
    PreparedModel,
    Runtime,
    RuntimeInfo,
    RuntimeUnavailableError,
    register_runtime,
    torch_threads,
)
from tailor.errors import InvalidSubnetError, ProfileError, SubnetNormFallbackWarning, UnsupportedModelError
from tailor.export._common import input_shape_of
from tailor.ops import ElasticModel
from tailor.ops.base import DEFAULT_CACHE_ENTRIES
from tailor.space import Subnet

ALLOCATORS = ("keep", "system")
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
_KEEP = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
_allocator_state = {"state": "system"}  # what this process's malloc does now (mallopt cannot be undone)


def keep_freed_memory() -> str:
    """Make glibc malloc keep freed memory for reuse (see the module docstring); returns the process's state.

    Idempotent and process-wide. "keep" when applied (now or before), "system (no mallopt: ...)" where the C
    library has no `mallopt` (musl, macOS): nothing is changed there.
    """
    if _allocator_state["state"] == "keep":
        return "keep"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        _allocator_state["state"] = f"system (no mallopt: {exc})"
        return _allocator_state["state"]
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if all(mallopt(param, value) == 1 for param, value in _KEEP):
        _allocator_state["state"] = "keep"
    else:
        _allocator_state["state"] = "system (mallopt refused the settings)"
    return _allocator_state["state"]


def allocator_state(requested: str) -> str:
    """Apply `requested` ("keep" or "system") and return what the process's malloc does now."""
    one_of("allocator", requested, ALLOCATORS, ProfileError)
    return keep_freed_memory() if requested == "keep" else _allocator_state["state"]


class _TorchRuntimeBase(Runtime):
    """What the torch runtimes share: the `allocator` option, applied at prepare and recorded."""

    OPTIONS: ClassVar[Mapping[str, Any]] = {"allocator": "keep"}

    def _check_options(self) -> None:
        one_of(f"runtime {self.name!r}: allocator", self.options["allocator"], ALLOCATORS, ProfileError)

    def check_device(self, device: torch.device) -> None:
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailableError(f"runtime {self.name!r}: device {str(device)!r} asked, but torch sees no CUDA GPU")

    def info(self, device: torch.device, threads: int | None, precision: str, **extra: Any) -> RuntimeInfo:
        state = allocator_state(self.options["allocator"]) if device.type == "cpu" else "device"
        return super().info(device, threads, precision, **{**extra, "allocator": state})


class TorchPrepared(PreparedModel):
    """A module on one device and dtype; `run` converts the batch, runs under `inference_mode`, returns numpy."""

    def __init__(self, module: nn.Module, info: RuntimeInfo, input_shape: Sequence[int], device: torch.device,
                 dtype: torch.dtype) -> None:  # fmt: skip
        super().__init__(info, input_shape)
        self.module = module
        self._device = device
        self._dtype = dtype
        self._cuda = device.type == "cuda"

    def _timing_context(self) -> contextlib.AbstractContextManager[None]:
        return torch_threads(self.threads)

    def _apply_threads(self) -> None:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Outputs of one batch; sets PyTorch's (process-wide) intra-op threads to this model's if they differ."""
        self.check_input(batch)
        self._apply_threads()
        x = torch.as_tensor(batch)
        if x.device != self._device or x.dtype != self._dtype:
            x = x.to(self._device, self._dtype, non_blocking=self._cuda)
        with torch.inference_mode():
            out = self._forward(x)
            if self._cuda:
                torch.cuda.synchronize(self._device)
            return out.to("cpu", torch.float32).numpy()


@register_runtime
class TorchRuntime(_TorchRuntimeBase):
    """Eager PyTorch on the extracted subnet (or any module), fp32/fp16/bf16, CPU or CUDA."""

    name = "torch"
    description = "eager PyTorch, the extracted subnet (plain torch modules, copied weights)"
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")

    def prepare_module(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        dev, threads, precision = self.resolve(device, threads, precision)
        dtype = TORCH_DTYPES[precision]
        module = module.to(dev) if precision == "fp32" else module.to(dev, dtype)  # fp32: leave the module's dtype
        return TorchPrepared(module, self.info(dev, threads, precision), input_shape, dev, dtype)


# -- in place --------------------------------------------------------------------------------------------

#: prepared in-place subnets per supernet, so that its weight cache holds a slice for every one of them
_PREPARED_PER_MODEL: weakref.WeakKeyDictionary[ElasticModel, int] = weakref.WeakKeyDictionary()


def _quiet_activate(model: ElasticModel, sub: Subnet) -> None:
    """`model.activate(sub)` without the SubnetNorm fallback warning (timing does not depend on the statistics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        model.activate(sub)


class InPlacePrepared(TorchPrepared):
    """One subnet of a shared supernet: `run` activates it first if another subnet is active."""

    def __init__(self, model: ElasticModel, sub: Subnet, info: RuntimeInfo, input_shape: Sequence[int],
                 device: torch.device, restore: tuple[bool, Subnet]) -> None:  # fmt: skip
        super().__init__(model, info, input_shape, device, torch.float32)
        self.subnet = sub
        self._model = model
        self._plan_subnet = model.active_subnet  # the canonical Subnet object of sub's cached plan
        self._restore = restore

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self._model
        if model.active_subnet is not self._plan_subnet:
            _quiet_activate(model, self.subnet)
            self._plan_subnet = model.active_subnet
        return model(x)

    def release(self) -> None:
        """Put the supernet back in the train/eval mode and active subnet it had before `prepare`."""
        training, previous = self._restore
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            self._model.activate(previous)
            self._model.train(training)


@register_runtime
class TorchInPlaceRuntime(_TorchRuntimeBase):
    """Eager PyTorch on the supernet itself, switched to the subnet in place (no weights copied per subnet).

    Preparing puts the supernet in eval mode on `device` (moving it there, for every user of the model) and
    sizes its per-layer weight cache to hold a slice for every prepared subnet, so that alternating between
    them never slices and copies again. `release()` restores the previous mode and active subnet. A
    standalone module (a latency-table block) has nothing to switch and runs as `torch` runs it.
    """

    name = "torch-inplace"
    description = "eager PyTorch, the supernet switched in place (SubNetAct; shared weights)"
    precisions = ("fp32",)
    devices = ("cpu", "cuda")

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
        if not isinstance(model, ElasticModel):
            raise UnsupportedModelError(f"runtime 'torch-inplace' needs a tailor ElasticModel, got {type(model).__name__}")
        if not isinstance(sub, Subnet):
            raise InvalidSubnetError(f"expected a Subnet, got {type(sub).__name__}")
        model.space.validate(sub)
        shape = input_shape_of(model, input_shape)
        dev, threads, precision = self.resolve(device, threads, precision)
        restore = (model.training, model.active_subnet)
        count = _PREPARED_PER_MODEL.get(model, 0) + 1
        _PREPARED_PER_MODEL[model] = count
        if count > DEFAULT_CACHE_ENTRIES:
            ops = [m for _, m in model.elastic_layers() if hasattr(m, "cache_entries")]
            if ops and ops[0].cache_entries < count:
                model.set_weight_cache(count)
        model.to(dev)
        _quiet_activate(model, sub)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.eval()
        return InPlacePrepared(model, sub, self.info(dev, threads, precision), shape, dev, restore)

    def prepare_module(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        """A standalone module has no subnet to switch: it runs on the `torch` runtime."""
        return TorchRuntime(**self.options).prepare_module(
            module, input_shape, device=device, threads=threads, precision=precision
        )


def prepared_count(model: Any) -> int:
    """How many in-place subnets were prepared on `model` (its weight cache is sized to hold them all)."""
    return _PREPARED_PER_MODEL.get(model, 0)
