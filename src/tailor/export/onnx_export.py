"""Export one subnet of a supernet to ONNX: extracted, BatchNorm folded, dynamic batch axis, checked.

The exporter is PyTorch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`): with torch
2.13 it works offline with only the `onnx` package, whereas the default dynamo exporter also needs
`onnxscript`. The extracted module is a plain graph of convs, linears and elementwise ops, which the
TorchScript exporter handles fully.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tailor.checks import integer
from tailor.errors import ProfileError, UnsupportedModelError
from tailor.export import ort
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


def run_onnx(
    path: str | os.PathLike[str],
    x: np.ndarray | torch.Tensor,
    threads: int | None = 1,
    *,
    device: str | torch.device = "cpu",
    providers: Sequence[str] | None = None,
    graph_optimization: str = "all",
) -> np.ndarray:
    """Run an exported model on one batch with ONNX Runtime and return its output.

    The session is `tailor.export.ort.session(path, threads, device=..., providers=..., graph_optimization=...)`:
    CPU by default; `device="cuda"` uses the TensorRT/CUDA execution providers where installed.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    session = ort.session(path, threads, device=device, providers=providers, graph_optimization=graph_optimization)
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _export_failure(exc: BaseException, module: torch.nn.Module) -> str:
    """A one-paragraph reason from a torch exporter error, with the fx code line it points at when it names one."""
    raw = str(exc)
    text = " ".join(raw.split())
    text = re.sub(r",? scope: [^ ]+", "", text)
    for marker in (" [Caused by", " Inputs: #0"):
        cut = text.find(marker)
        if cut > 0:
            text = text[:cut]
    text = text if len(text) <= 600 else text[:600] + " ..."
    where = ""
    line = re.search(r"<eval_with_key>\.\d+(?: from .*? in \w+)?:(\d+):\d+", raw)
    code = getattr(module, "code", None)
    if line is not None and isinstance(code, str):
        lines = code.splitlines()
        number = int(line.group(1))
        if 0 < number <= len(lines):
            where = f" (at the extracted graph's `{lines[number - 1].strip()}`)"
    return f"{type(exc).__name__}: {text}{where}"


def export_module(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    opset: int = 17,
) -> None:
    """Write `module` (eval mode) to `path` as ONNX with a dynamic batch axis (no folding, no checks).

    A module the exporter cannot convert (e.g. a pooling whose kernel size is read from `x.size()`, which the
    TorchScript exporter refuses as "not constant") raises `UnsupportedModelError` with the exporter's reason
    and, for an fx graph, the line of the graph it points at.
    """
    x = example_input(input_shape, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            with _graph_dump_dropped():
                _torch_export(module, x, path, opset)
        except (RuntimeError, TypeError, ValueError, AttributeError, IndexError, KeyError, NotImplementedError) as exc:
            raise UnsupportedModelError(
                f"ONNX export of {type(module).__name__} failed: {_export_failure(exc, module)}"
            ) from exc


@contextlib.contextmanager
def _graph_dump_dropped() -> Iterator[None]:
    """On a failed export the TorchScript exporter writes its whole IR graph to the process's stdout (from C++,
    past `sys.stdout`); capture file descriptor 1 meanwhile and replay it only if the export succeeded."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable stdout (e.g. closed): nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            if not failed:
                capture.seek(0)
                data = capture.read()
                if data:
                    os.write(1, data)


def _torch_export(module: torch.nn.Module, x: torch.Tensor, path: str | os.PathLike[str], opset: int) -> None:
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
    *,
    device: str | torch.device = "cpu",
    providers: Sequence[str] | None = None,
    graph_optimization: str = "all",
) -> ExportResult:
    """Export subnet `sub` of `model` to the ONNX file `path`, BatchNorm folded, batch axis dynamic.

    Steps: `model.extract(sub)` (eval mode), fold every Conv2d->BatchNorm2d pair (`fold_batchnorm`),
    check that the folded module matches the extracted one within 1e-4 on a random batch, export, and
    (`verify=True`) check that ONNX Runtime's output at batch 2 matches PyTorch's within 1e-4. A check
    that fails raises `UnsupportedModelError` with the difference, and nothing is left at `path`; so does a
    subnet that `torch.onnx.export` cannot convert (the exporter's reason and the graph line it names).
    `input_shape` is per sample (C, H, W); the default is `model.default_input_size`. The check's session is
    `tailor.export.ort.session(..., device=, providers=, graph_optimization=)` (CPU, all optimisations by default).
    """
    shape = input_shape_of(model, input_shape)
    integer("opset", opset, ProfileError, low=9)
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
        try:
            export_module(folded, tmp, shape, opset)
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"subnet {sub.id}: {exc}") from exc.__cause__
        onnx_diff = None
        if verify:
            got = run_onnx(tmp, x, device=device, providers=providers, graph_optimization=graph_optimization)
            onnx_diff = float(np.abs(got - reference.numpy()).max())
            if not onnx_diff <= TOLERANCE:
                raise UnsupportedModelError(
                    f"ONNX Runtime's output for subnet {sub.id} differs from PyTorch's by {onnx_diff:.3g} (> 1e-4)"
                )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportResult(path, count, fold_diff, onnx_diff)
