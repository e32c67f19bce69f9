"""Export one subnet of a supernet to ONNX: extracted, BatchNorm folded, dynamic batch axis, checked.

The exporter is PyTorch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`): with torch
2.13 it works offline with only the `onnx` package, whereas the default dynamo exporter also needs
`onnxscript`. The extracted module is a plain graph of convs, linears and elementwise ops, which the
TorchScript exporter handles fully.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.errors import ProfileError, UnsupportedModelError
from tailor.export._common import example_input, input_shape_of, static_subnet
from tailor.export.fold import fold_batchnorm
from tailor.jsonio import temporary_sibling
from tailor.ops import ElasticModel
from tailor.space import Subnet

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """Where the model went and what was checked: BN pairs folded, worst |difference| of each check."""

    path: Path
    folded_batchnorms: int
    fold_max_abs_diff: float
    onnx_max_abs_diff: float | None


def _ort_session(path: str | os.PathLike[str], threads: int | None = 1) -> Any:
    import onnxruntime as ort  # lazy: keeps `import tailor` light

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | os.PathLike[str], x: np.ndarray | torch.Tensor, threads: int | None = 1) -> np.ndarray:
    """Run an exported model on one batch with ONNX Runtime (CPU) and return its output."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    session = _ort_session(path, threads)
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def export_module(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    opset: int = 17,
) -> None:
    """Write `module` (eval mode) to `path` as ONNX with a dynamic batch axis (no folding, no checks)."""
    x = example_input(input_shape, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )


def to_onnx(
    model: ElasticModel,
    sub: Subnet,
    path: str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
    verify: bool = True,
) -> ExportResult:
    """Export subnet `sub` of `model` to the ONNX file `path`, BatchNorm folded, batch axis dynamic.

    Steps: `model.extract(sub)` (eval mode), fold every Conv2d->BatchNorm2d pair (`fold_batchnorm`),
    check that the folded module matches the extracted one within 1e-4 on a random batch, export, and
    (`verify=True`) check that ONNX Runtime's output at batch 2 matches PyTorch's within 1e-4. A check
    that fails raises `UnsupportedModelError` with the difference, and nothing is left at `path`.
    `input_shape` is per sample (C, H, W); the default is `model.default_input_size`.
    """
    shape = input_shape_of(model, input_shape)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 9:
        raise ProfileError(f"opset must be an integer >= 9, got {opset!r}")
    static = static_subnet(model, sub)
    folded, count = fold_batchnorm(static)
    x = example_input(shape, 2, seed=1)
    with torch.inference_mode():
        reference = static(x)
        fold_diff = float((folded(x) - reference).abs().max())
    if not fold_diff <= TOLERANCE:
        raise UnsupportedModelError(f"BatchNorm folding changed subnet {sub.id}'s output by {fold_diff:.3g} (> 1e-4)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temporary_sibling(path, suffix=".onnx"))  # not mkstemp: its 0600 would stay on the export
    try:
        export_module(folded, tmp, shape, opset)
        onnx_diff = None
        if verify:
            onnx_diff = float(np.abs(run_onnx(tmp, x) - reference.numpy()).max())
            if not onnx_diff <= TOLERANCE:
                raise UnsupportedModelError(
                    f"ONNX Runtime's output for subnet {sub.id} differs from PyTorch's by {onnx_diff:.3g} (> 1e-4)"
                )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportResult(path, count, fold_diff, onnx_diff)
