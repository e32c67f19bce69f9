"""`onnxruntime-int8`: the export statically quantized to int8 (QDQ) and run by ONNX Runtime.

Quantization ranges come from `calibration` (a list of input batches, numpy or torch) when given, else
from two seeded random batches: enough to time the int8 kernels, not to judge accuracy (for that, give real
training images, or use `tailor.export.quantize_int8` with real data). `RuntimeInfo.options["calibration"]`
says which. The output check of `tailor profile` compares it against PyTorch fp32 like any runtime, so with
the default tolerance it is measured but not chosen for serving. `prepare_onnx` loads an int8 file as it is
(e.g. from `tailor export --int8 static`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from tailor.cost.runtimes.base import register_runtime
from tailor.cost.runtimes.onnxruntime import OnnxRuntimeRuntime
from tailor.errors import ProfileError
from tailor.export._common import example_input


@register_runtime
class OnnxRuntimeInt8Runtime(OnnxRuntimeRuntime):
    """ONNX Runtime on the static int8 (QDQ) quantization of the export; CPU."""

    name = "onnxruntime-int8"
    description = "ONNX Runtime, the export quantized to int8 (static QDQ)"
    precisions = ("int8",)
    devices = ("cpu", "cuda")
    OPTIONS: ClassVar[Mapping[str, Any]] = {**OnnxRuntimeRuntime.OPTIONS, "calibration": None}

    def _check_options(self) -> None:
        super()._check_options()
        batches = self.options["calibration"]
        if batches is not None and (isinstance(batches, (str, bytes)) or not len(batches)):
            raise ProfileError(f"runtime {self.name!r}: calibration must be a non-empty list of input batches")

    def info(self, device: torch.device, threads: int | None, precision: str, **extra: Any) -> Any:
        info = super().info(device, threads, precision, **extra)
        options = dict(info.options)
        options["calibration"] = "random (timing only)" if self.options["calibration"] is None else "given batches"
        return type(info)(info.runtime, info.version, info.precision, info.device, info.threads, options)

    def convert(self, fp32_path: Path, scratch: Path, input_shape: Sequence[int]) -> Path:
        from tailor.export import quantize_int8

        batches = self.options["calibration"]
        if batches is None:
            batches = [example_input(tuple(input_shape), 8, seed=s) for s in range(2)]
        return quantize_int8(fp32_path, scratch / "int8.onnx", batches, mode="static")
