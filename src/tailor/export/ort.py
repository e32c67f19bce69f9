"""ONNX Runtime sessions with explicit settings: graph optimisation level, threads, execution providers.

Everything in tailor that opens an ONNX Runtime session goes through `session` (the export checks, int8
accuracy, and the `onnxruntime` runtimes of `tailor.cost.runtimes`, which pass their own options), so no
provider or optimisation level is fixed anywhere else. `providers_for(device)` picks the execution providers
for a device: CPU; on CUDA, TensorRT then CUDA (each when this onnxruntime build has it) with CPU as the
fallback for unsupported nodes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from tailor.errors import ProfileError

#: names of ONNX Runtime's graph optimisation levels (`GraphOptimizationLevel.ORT_*`)
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_LEVEL_NAMES = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                "all": "ORT_ENABLE_ALL"}  # fmt: skip
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def check_graph_optimization(level: object) -> str:
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise ProfileError(f"graph_optimization {level!r}: expected one of {list(GRAPH_OPTIMIZATION_LEVELS)}")
    return level  # type: ignore[return-value]


def providers_for(device: str | torch.device = "cpu", providers: Sequence[str] | None = None) -> list[str]:
    """Execution providers for `device` (or the given ones, checked against this onnxruntime build).

    cpu: `CPUExecutionProvider`. cuda: TensorRT and CUDA where available, then CPU. A device or provider
    this build lacks raises a `ProfileError` saying which package has it (`onnxruntime-gpu`).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is not None:
        if isinstance(providers, str) or not providers:
            raise ProfileError(f"providers must be a non-empty list of execution provider names, got {providers!r}")
        missing = [p for p in providers if p not in available]
        if missing:
            raise ProfileError(f"execution provider(s) {missing} are not in this onnxruntime build (has {available})")
        return list(providers)
    kind = torch.device(device).type
    if kind == "cpu":
        return [CPU]
    if kind == "cuda":
        gpu = [p for p in (TENSORRT, CUDA) if p in available]
        if not gpu:
            raise ProfileError(
                f"onnxruntime {ort.__version__} has no CUDA or TensorRT execution provider (has {available}); "
                "install onnxruntime-gpu in place of onnxruntime: pip install 'tailor[cuda]'"
            )
        return [*gpu, CPU]
    raise ProfileError(f"ONNX Runtime runs on cpu or cuda, not on {str(device)!r}")


def _provider_options(providers: Sequence[str], device: str | torch.device) -> list[dict[str, Any]]:
    index = torch.device(device).index or 0
    return [{"device_id": index} if p in (CUDA, TENSORRT) else {} for p in providers]


def session(
    path: str | os.PathLike[str],
    threads: int | None = 1,
    *,
    device: str | torch.device = "cpu",
    providers: Sequence[str] | None = None,
    graph_optimization: str = "all",
) -> Any:
    """An `onnxruntime.InferenceSession` for the model at `path`.

    `threads` fixes intra-op threads (inter-op 1; None: ORT's default), `graph_optimization` is one of
    `GRAPH_OPTIMIZATION_LEVELS`, `providers` defaults to `providers_for(device)`. `session.get_providers()`
    tells which providers it really uses.
    """
    import onnxruntime as ort  # lazy: keeps `import tailor` light

    level = check_graph_optimization(graph_optimization)
    chosen = providers_for(device, providers)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVEL_NAMES[level])
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), options, providers=chosen, provider_options=_provider_options(chosen, device)
    )
