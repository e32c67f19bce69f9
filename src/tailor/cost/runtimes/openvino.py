"""`openvino`: the BatchNorm-folded ONNX export compiled by OpenVINO for its CPU plugin.

OpenVINO picks its own inference precision per CPU (bf16 where the CPU has AMX/AVX512-BF16), which changes
results: the precision is pinned to what was asked (`precision="fp32"` by default; "bf16"/"fp16" when asked)
with `INFERENCE_PRECISION_HINT`, and the precision the compiled model reports is what `RuntimeInfo` records.
Threads: `INFERENCE_NUM_THREADS`, one stream, `PERFORMANCE_HINT=LATENCY`. With one thread the inference runs on
the calling thread (its thread CPU time equals the process's), so the thread-CPU clock can time it; with more,
OpenVINO's own worker threads do the work (wall clock only). Needs `pip install 'tailor[openvino]'`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from tailor.cost.runtimes.base import (
    OnnxFileRuntime,
    PreparedModel,
    RuntimeInfo,
    check_onnx_file,
    register_runtime,
)
from tailor.errors import ProfileError

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}


class OpenVinoPrepared(PreparedModel):
    """An OpenVINO compiled model and one infer request (one batch at a time, as a serving worker runs it)."""

    def __init__(self, compiled: Any, info: RuntimeInfo, input_shape: Sequence[int]) -> None:
        super().__init__(info, input_shape)
        self.computes_on_calling_thread = info.threads == 1
        self.compiled = compiled
        self._request = compiled.create_infer_request()

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        self.check_input(batch)
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        if batch.dtype != np.float32 or not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._request.infer({0: batch})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)


@register_runtime
class OpenVinoRuntime(OnnxFileRuntime):
    """OpenVINO on CPU, precision pinned (fp32 unless asked) and recorded."""

    name = "openvino"
    description = "OpenVINO CPU plugin on the BatchNorm-folded export, precision pinned"
    requires = ("openvino",)
    extra = "openvino"
    precisions = ("fp32", "bf16", "fp16")
    devices = ("cpu",)
    OPTIONS: ClassVar[Mapping[str, Any]] = {"performance_hint": "LATENCY"}

    def _check_options(self) -> None:
        if self.options["performance_hint"] not in ("LATENCY", "THROUGHPUT"):
            raise ProfileError(
                f"runtime 'openvino': performance_hint must be 'LATENCY' or 'THROUGHPUT', "
                f"got {self.options['performance_hint']!r}"
            )

    def version(self) -> str:
        import openvino

        return str(openvino.get_version())

    def prepare_onnx(
        self,
        path: Any,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        import openvino

        dev, threads, precision = self.resolve(device, threads, precision)
        path, shape = check_onnx_file(path, input_shape)
        core = openvino.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": self.options["performance_hint"],
            "NUM_STREAMS": 1,
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        reported = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        actual = _NAMES.get(reported, reported)
        if actual != precision:
            raise ProfileError(f"runtime 'openvino': asked for {precision}, the compiled model runs {reported}")
        info = self.info(dev, threads, actual)
        return OpenVinoPrepared(compiled, info, shape)
