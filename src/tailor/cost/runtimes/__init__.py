"""Runtimes: one registry of the engines a subnet can run on (see `base.py` and the cost README).

`get_runtime(name, **options).prepare(model, subnet, device=..., threads=..., precision=...)` returns a
`PreparedModel` with `run(batch) -> numpy` and `timings(batch_size, warmup, repeats)`. Registered here:
`torch` (eager, extracted subnet), `torch-inplace` (eager, the supernet switched in place),
`torch-compile`, `onnxruntime`, `onnxruntime-int8`, `openvino` (the `openvino` extra). A new runtime is one
file in this package with a `@register_runtime` class, imported below, plus its test.
"""

from tailor.cost.runtimes import onnxruntime, onnxruntime_int8, openvino, torch_compile, torch_eager
from tailor.cost.runtimes.base import (
    CLOCKS,
    PRECISIONS,
    OnnxFileRuntime,
    OutputCheck,
    PreparedModel,
    Runtime,
    RuntimeInfo,
    RuntimeUnavailableError,
    Timings,
    Tolerance,
    compare_outputs,
    get_runtime,
    list_runtimes,
    register_runtime,
    run_batched,
)

__all__ = [
    "CLOCKS",
    "PRECISIONS",
    "OnnxFileRuntime",
    "OutputCheck",
    "PreparedModel",
    "Runtime",
    "RuntimeInfo",
    "RuntimeUnavailableError",
    "Timings",
    "Tolerance",
    "compare_outputs",
    "get_runtime",
    "list_runtimes",
    "onnxruntime",
    "onnxruntime_int8",
    "openvino",
    "register_runtime",
    "run_batched",
    "torch_compile",
    "torch_eager",
]
