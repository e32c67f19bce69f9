"""`torch-compile`: the extracted subnet through `torch.compile` (TorchInductor by default).

Compiling is slow (tens of seconds per subnet and batch size with Inductor on a small CPU), so `prepare`
compiles once on a batch of one and each new batch size recompiles on its first call (the timing's warm-up
absorbs it); `prepare_seconds` records the first compile. Options: `mode` (torch.compile's: "default",
"reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"), `compiler` (torch.compile's `backend=`:
"inductor", or "aot_eager"/"eager" to check the plumbing without code generation), `dynamic` (compile one
graph for all batch sizes instead of one per size), `allocator` (as the eager runtimes: see `torch_eager`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.checks import boolean, one_of
from tailor.cost.runtimes.base import TORCH_DTYPES, PreparedModel, register_runtime, torch_threads
from tailor.cost.runtimes.torch_eager import TorchPrepared, _TorchRuntimeBase
from tailor.errors import ProfileError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@register_runtime
class TorchCompileRuntime(_TorchRuntimeBase):
    """`torch.compile` of the extracted subnet; fp32/fp16/bf16 on CPU or CUDA."""

    name = "torch-compile"
    description = "torch.compile of the extracted subnet (TorchInductor)"
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")
    OPTIONS: ClassVar[Mapping[str, Any]] = {"mode": "default", "compiler": "inductor", "dynamic": False,
                                            "allocator": "keep"}  # fmt: skip

    def _check_options(self) -> None:
        super()._check_options()
        one_of("runtime 'torch-compile': mode", self.options["mode"], MODES, ProfileError)
        compiler = self.options["compiler"]
        if not isinstance(compiler, str) or compiler not in torch._dynamo.list_backends(exclude_tags=()):
            raise ProfileError(
                f"runtime 'torch-compile': compiler {compiler!r} is not a torch.compile backend "
                f"({', '.join(torch._dynamo.list_backends(exclude_tags=()))})"
            )
        boolean("runtime 'torch-compile': dynamic", self.options["dynamic"], ProfileError)

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
        compiled = torch.compile(
            module, mode=self.options["mode"], backend=self.options["compiler"], dynamic=self.options["dynamic"]
        )
        prepared = TorchPrepared(compiled, self.info(dev, threads, precision), input_shape, dev, dtype)  # type: ignore[arg-type]
        start = time.perf_counter()
        with torch_threads(threads):
            prepared.run(torch.zeros((1, *prepared.input_shape)))  # compile now, not in the first timed call
        prepared.prepare_seconds = time.perf_counter() - start
        return prepared
