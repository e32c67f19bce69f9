"""Int8 quantization of an exported ONNX model with ONNX Runtime, and an fp32-vs-int8 accuracy check.

Static mode writes QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized op; uint8
activations, int8 weights), with activation ranges calibrated (MinMax) on batches you supply: use
held-out *training* images, never the evaluation set. Dynamic mode quantizes weights only and computes
activation ranges at run time (no calibration data; usually slower than static for convs on CPU).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.errors import ProfileError


def _as_array(batch: Any) -> np.ndarray:
    """The input tensor of a batch: `x`, `(x, y)` or `[x, y]`, as a float32 numpy array."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ProfileError("a calibration/evaluation batch is empty")
        batch = batch[0]
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    array = np.ascontiguousarray(batch, dtype=np.float32)
    if array.ndim < 2:
        raise ProfileError(f"a batch must have a batch axis, got shape {array.shape}")
    return array


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over a list of batches (`get_next` -> feed dict or None)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self._feeds = iter([{input_name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        raise NotImplementedError


def quantize_int8(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_batches: Iterable[Any] | None = None,
    mode: str = "static",
    per_channel: bool = False,
    preprocess: bool = True,
) -> Path:
    """Quantize the fp32 ONNX model at `onnx_path` to int8 at `out_path`; returns `out_path`.

    `mode="static"`: QDQ format, MinMax calibration over `calibration_batches` (an iterable of `x`
    or `(x, y)` batches, torch or numpy; at least one). `mode="dynamic"`: weights only, no calibration.
    `preprocess=True` first runs onnxruntime's `quant_pre_process` (shape inference and graph
    optimisation), which its documentation recommends before quantizing.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if mode not in ("static", "dynamic"):
        raise ProfileError(f"quantization mode must be 'static' or 'dynamic', got {mode!r}")
    if not onnx_path.is_file():
        raise ProfileError(f"no ONNX model at {str(onnx_path)!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batches: list[np.ndarray] = []
    if mode == "static":
        if calibration_batches is None:
            raise ProfileError("static quantization needs calibration_batches (a few batches of training inputs)")
        batches = [_as_array(b) for b in calibration_batches]
        if not batches:
            raise ProfileError("static quantization needs at least one calibration batch, got none")
    with tempfile.TemporaryDirectory() as scratch:
        source = onnx_path.resolve()
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(Path(scratch) / "pre.onnx"))
            source = Path(scratch) / "pre.onnx"
        if mode == "dynamic":
            quantize_dynamic(source, out_path.resolve(), weight_type=QuantType.QUInt8, per_channel=per_channel)
            return out_path
        import onnx

        input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
        quantize_static(
            source,
            out_path.resolve(),
            _BatchReader(input_name, batches),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
        )
    return out_path


@dataclass(frozen=True)
class AccuracyComparison:
    """Top-1 accuracy of the fp32 and int8 models on the same inputs, the drop, and argmax agreement."""

    fp32: float
    int8: float
    drop: float
    agreement: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare_accuracy(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    loader: Iterable[Any],
    threads: int | None = 1,
    **session_options: Any,
) -> AccuracyComparison:
    """Run both ONNX models on every `(x, y)` batch of `loader`; `drop = fp32 - int8` (accuracy points in [0, 1]).

    `session_options` go to `tailor.export.ort.session` (`device`, `providers`, `graph_optimization`).
    """
    from tailor.export.ort import session

    sessions = [session(p, threads, **session_options) for p in (fp32_path, int8_path)]
    names = [s.get_inputs()[0].name for s in sessions]
    correct = [0, 0]
    agree = total = 0
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ProfileError("compare_accuracy needs (inputs, labels) batches")
        x = _as_array(batch)
        y = np.asarray(batch[1].cpu() if isinstance(batch[1], torch.Tensor) else batch[1]).reshape(-1)
        preds = [s.run(None, {n: x})[0].argmax(axis=1) for s, n in zip(sessions, names)]
        for i, p in enumerate(preds):
            correct[i] += int((p == y).sum())
        agree += int((preds[0] == preds[1]).sum())
        total += len(y)
    if total == 0:
        raise ProfileError("compare_accuracy got an empty loader")
    fp32, int8 = correct[0] / total, correct[1] / total
    return AccuracyComparison(fp32, int8, fp32 - int8, agree / total, total)


def onnx_accuracy(
    path: str | os.PathLike[str], loader: Iterable[Any], threads: int | None = 1, **session_options: Any
) -> tuple[float, int]:
    """Top-1 accuracy of one ONNX model over `(x, y)` batches, and the number of samples (`session_options`: as
    `compare_accuracy`)."""
    from tailor.export.ort import session as ort_session

    session = ort_session(path, threads, **session_options)
    name = session.get_inputs()[0].name
    correct = total = 0
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ProfileError("onnx_accuracy needs (inputs, labels) batches")
        y = np.asarray(batch[1].cpu() if isinstance(batch[1], torch.Tensor) else batch[1]).reshape(-1)
        correct += int((session.run(None, {name: _as_array(batch)})[0].argmax(axis=1) == y).sum())
        total += len(y)
    if total == 0:
        raise ProfileError("onnx_accuracy got an empty loader")
    return correct / total, total
