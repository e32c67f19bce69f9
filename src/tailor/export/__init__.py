"""Static subnets out of a supernet: BatchNorm folding, ONNX export, int8 quantization (see README.md)."""

from tailor.export.fold import fold_batchnorm, fold_conv_bn
from tailor.export.onnx_export import ExportResult, export_module, run_onnx, to_onnx
from tailor.export.quantize import AccuracyComparison, compare_accuracy, onnx_accuracy, quantize_int8

__all__ = [
    "AccuracyComparison",
    "ExportResult",
    "compare_accuracy",
    "export_module",
    "fold_batchnorm",
    "fold_conv_bn",
    "onnx_accuracy",
    "quantize_int8",
    "run_onnx",
    "to_onnx",
]
