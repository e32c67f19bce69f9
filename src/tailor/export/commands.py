"""`tailor export`: one subnet of a checkpoint (or registry model) as ONNX, optionally int8, with its accuracy drop.

Steps (progress bar on stderr): SubnetNorm calibration of the subnet on training data (when data is known),
extraction + BatchNorm folding + ONNX export with a dynamic batch axis (checked against PyTorch), int8
quantization (static QDQ calibrated on training images, or dynamic), and top-1 accuracy of fp32 and int8
on the held-out split. Prints one JSON object. Bad arguments exit with status 2 and one line, before any
file is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import tailor.cli_args as cli_args
from tailor.errors import DataError, InvalidSubnetError, ProfileError
from tailor.export._cli import (
    Progress,
    calibrate_subnets,
    calibration_batches,
    held_out_batches,
    input_shape,
    parse_shape,
    parse_subnets,
    resolve,
)
from tailor.export.onnx_export import to_onnx
from tailor.export.quantize import compare_accuracy, onnx_accuracy, quantize_int8
from tailor.models import list_models

INT8_MODES = ("static", "dynamic")


def add_commands(commands: Any) -> None:
    """Register `export` on the `tailor` parser's subcommands."""
    p = commands.add_parser("export", help="a subnet as ONNX (BatchNorm folded, dynamic batch axis), optionally int8")
    cli_args.add_checkpoint(p, models=list_models())
    cli_args.add_subnets(p, default="largest", help="the one subnet to export (default largest)")
    cli_args.add_out(p, required=True, help="fp32 ONNX file to write")
    cli_args.checked(p, "--int8", check=cli_args.one_of(INT8_MODES),
                     help="also write an int8 model: static (QDQ, calibrated on training data) or dynamic")  # fmt: skip
    p.add_argument("--int8-out", help="int8 ONNX file (default: <out without .onnx>.int8.onnx)")
    p.add_argument("--per-channel", action="store_true", help="int8: per-channel weight scales")
    cli_args.add_data(p, use=" for calibration and held-out accuracy")
    cli_args.add_calibration(p, batch_size=64)
    cli_args.add_input_shape(p)
    p.add_argument("--opset", type=int, default=17)
    cli_args.add_num_classes(p)
    cli_args.add_threads(p, default=1, help="threads for PyTorch and ONNX Runtime")
    cli_args.add_progress(p)
    p.set_defaults(run=cmd_export)


def _int8_path(out: Path, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".int8.onnx")


def cmd_export(args: argparse.Namespace) -> int:
    """Export one subnet (and optionally its int8 version); print what was written and the accuracies."""
    out = Path(args.out)
    int8_out = _int8_path(out, args.int8_out) if args.int8 else None
    if int8_out is not None and int8_out.resolve() == out.resolve():
        raise ProfileError(f"--int8-out {str(int8_out)!r} would overwrite the fp32 model --out")
    torch.set_num_threads(args.threads)
    source, ref = resolve(args.source, args.data, args.data_root, args.num_classes)
    model = source.model
    subs = parse_subnets(model.space, args.subnet, "--subnet")
    if len(subs) != 1:
        raise InvalidSubnetError(f"--subnet {args.subnet!r} names {len(subs)} subnets; export takes exactly one")
    sub = subs[0][1]
    if args.int8 == "static" and ref is None:
        raise DataError("--int8 static calibrates on training images: pass --data (this model records no data set)")
    train = test = None
    if ref is not None:
        train, test = ref.load("train"), ref.load("test")
    shape = input_shape(parse_shape(args.input_shape), test, model)
    calibration = calibration_batches(train, args.batch_size, args.calib_batches) if train is not None else None

    steps = 1 + (calibration is not None) + (args.int8 is not None) + (test is not None)
    progress = Progress("export", steps, enabled=not args.no_progress)
    done = 0
    if calibration is not None:
        calibrate_subnets(model, [sub], calibration)  # the subnet's own SubnetNorm statistics
        done += 1
        progress(done, info="calibrated")
    exported = to_onnx(model, sub, out, input_shape=shape, opset=args.opset)
    done += 1
    progress(done, info="exported")
    report: dict[str, Any] = {
        "model": source.name,
        "subnet": sub.to_dict(),
        "id": sub.id,
        "input_shape": list(shape),
        "onnx": str(exported.path),
        "folded_batchnorms": exported.folded_batchnorms,
        "max_abs_diff_vs_pytorch": exported.onnx_max_abs_diff,
        "int8": None,
        "accuracy": None,
    }
    if args.int8:
        quantize_int8(exported.path, int8_out, calibration, mode=args.int8, per_channel=args.per_channel)
        done += 1
        progress(done, info="quantized")
        report["int8"] = {"mode": args.int8, "path": str(int8_out), "per_channel": args.per_channel}
    if test is not None:
        held_out = held_out_batches(test, max(args.batch_size, 1))
        if args.int8:
            report["accuracy"] = compare_accuracy(exported.path, int8_out, held_out, threads=args.threads).to_dict()
        else:
            fp32, samples = onnx_accuracy(exported.path, held_out, threads=args.threads)
            report["accuracy"] = {"fp32": fp32, "samples": samples}
        report["accuracy"]["data"] = ref.name if ref is not None else None
        done += 1
        progress(done, info="evaluated")
        acc = report["accuracy"]
        summary = f"fp32 accuracy {acc['fp32']:.4f}"
        if args.int8:
            summary += f", int8 ({args.int8}) {acc['int8']:.4f}: drop {acc['drop'] * 100:+.2f} points"
        print(f"{summary} on {acc['samples']} held-out images ({acc['data']}, test split)", file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0
