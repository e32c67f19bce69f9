"""`onnxruntime`: the BatchNorm-folded ONNX export in an ONNX Runtime session.

Options: `graph_optimization` ("disable", "basic", "extended", "all"; default "all") and `providers`
(execution providers in order; default by device: CPU, or TensorRT then CUDA then CPU on a GPU, each where
this onnxruntime build has it: `pip install 'tailor[cuda]'` installs `onnxruntime-gpu`). The providers the
session really uses are recorded in `RuntimeInfo.options["providers"]`. `session.run` copies its result
to the host, so a call is synchronised with the device.
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
    RuntimeUnavailableError,
    check_onnx_file,
    register_runtime,
)
from tailor.errors import ProfileError


class OnnxRuntimePrepared(PreparedModel):
    """An `onnxruntime.InferenceSession` with one input; `run` feeds a float32 batch and returns the first output."""

    def __init__(self, session: Any, info: RuntimeInfo, input_shape: Sequence[int]) -> None:
        super().__init__(info, input_shape)
        self.session = session
        self._input = session.get_inputs()[0].name

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        self.check_input(batch)
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        if batch.dtype != np.float32 or not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self._input: batch})[0]


@register_runtime
class OnnxRuntimeRuntime(OnnxFileRuntime):
    """ONNX Runtime, fp32: CPU, or CUDA/TensorRT execution providers on a GPU."""

    name = "onnxruntime"
    description = "ONNX Runtime session of the BatchNorm-folded export"
    requires = ("onnxruntime",)
    devices = ("cpu", "cuda")
    OPTIONS: ClassVar[Mapping[str, Any]] = {"graph_optimization": "all", "providers": None}

    def _check_options(self) -> None:
        from tailor.export.ort import check_graph_optimization

        check_graph_optimization(self.options["graph_optimization"])
        providers = self.options["providers"]
        if providers is not None:
            if isinstance(providers, str) or not isinstance(providers, (list, tuple)) or not providers:
                raise ProfileError(f"runtime {self.name!r}: providers must be a list of names, got {providers!r}")
            self.options["providers"] = list(providers)

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)  # the module's: onnxruntime-gpu installs it under another distribution

    def check_device(self, device: torch.device) -> None:
        """The execution providers for `device` exist in this onnxruntime build (else the message names onnxruntime-gpu)."""
        from tailor.export.ort import providers_for

        try:
            providers_for(device, self.options["providers"])
        except ProfileError as exc:
            raise RuntimeUnavailableError(f"runtime {self.name!r}: {exc}") from None

    def session(self, path: Any, device: torch.device, threads: int | None) -> Any:
        """An ONNX Runtime session of `path` with this runtime's options."""
        from tailor.export.ort import session

        return session(
            path,
            threads,
            device=device,
            providers=self.options["providers"],
            graph_optimization=self.options["graph_optimization"],
        )

    def prepare_onnx(
        self,
        path: Any,
        input_shape: Sequence[int],
        *,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
        precision: str | None = None,
    ) -> PreparedModel:
        dev, threads, precision = self.resolve(device, threads, precision)
        path, shape = check_onnx_file(path, input_shape)
        session = self.session(path, dev, threads)
        info = self.info(dev, threads, precision, providers=list(session.get_providers()))
        return OnnxRuntimePrepared(session, info, shape)
