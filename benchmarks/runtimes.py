"""Extracted subnets on real runtimes: ONNX Runtime vs eager PyTorch, int8 vs fp32, latency predictor error.

All figures come from one run on one machine, side by side:
1. p50 latency (ms) of the smallest, a middle and the largest subnet on eager PyTorch and ONNX Runtime
   (BN-folded export) at batch 1/8/32, and the torch/ORT ratio;
2. ONNX Runtime int8 (static QDQ, calibrated on training images) vs fp32: latency ratio, and top-1
   accuracy on held-out synthetic images of a briefly trained full-width model (or `--checkpoint`);
3. the least-squares latency predictor's error (MAPE, worst) on held-out random subnets;
4. latency vs MACs: how much of the smallest-to-largest MAC ratio shows up as a latency ratio.

    python benchmarks/runtimes.py            # full: more repeats, subnets and training
    python benchmarks/runtimes.py --quick    # a quick smoke run (figures are noisy)
    python benchmarks/runtimes.py --checkpoint ck/   # int8 accuracy of a trained supernet (recommended)

Without `--checkpoint`, section 2 trains the model briefly (a few minutes in full mode; in `--quick` mode it
stays near chance, so only the argmax agreement and latency ratio mean anything there).

Threads are fixed (`--threads`, default 1) for both runtimes. Latency figures are only meaningful on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import tailor
from tailor.cost import LatencyPredictor, latency, macs
from tailor.data import SYNTHETIC_MEAN, SYNTHETIC_STD, generate_synthetic
from tailor.export import compare_accuracy, quantize_int8, to_onnx


def _data(n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = generate_synthetic(n, split, seed)
    x = batch.images.float()
    if batch.images.dtype == torch.uint8:
        x = x / 255
    mean = torch.tensor(SYNTHETIC_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(SYNTHETIC_STD).view(1, -1, 1, 1)
    return (x - mean) / std, batch.labels


def _train(model: tailor.ElasticModel, steps: int, batch: int) -> None:
    """Plain SGD on the full-width subnet (epochs over at most 4,096 images; generating them is slow)."""
    n = min(steps * batch, 4096)
    x, y = _data(n, "train", 0)
    model.activate(model.space.largest())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for i in range(steps):
        start = (i * batch) % n
        xb, yb = x[start : start + batch], y[start : start + batch]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats/subnets/steps: a smoke run")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", help="a tailor.save folder to use instead of brief training")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    quick = args.quick
    repeats, warmup = (5, 2) if quick else (100, 20)
    batches = (1, 8) if quick else (1, 8, 32)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = tailor.load(args.checkpoint) if args.checkpoint else tailor.create_model(args.model, num_classes=10)
    model.eval()
    space = model.space
    subs = {"smallest": space.smallest(), "middle": space.uniform(0.5), "largest": space.largest()}

    def p50(sub: tailor.Subnet, batch: int, backend: str) -> float:
        return latency(model, sub, batch, backend=backend, threads=args.threads, warmup=warmup, repeats=repeats).p50

    print(f"# {args.model}, threads={args.threads}, repeats={repeats}{' (quick)' if quick else ''}")
    print("\n## 1. eager PyTorch vs ONNX Runtime (p50 ms)")
    print(f"{'subnet':<10} {'batch':>5} {'MACs':>10} {'torch':>9} {'ORT':>9} {'torch/ORT':>9}")
    for name, sub in subs.items():
        for b in batches:
            t, o = p50(sub, b, "torch"), p50(sub, b, "onnxruntime")
            print(f"{name:<10} {b:>5} {macs(model, sub) / 1e6:>9.2f}M {t:>9.3f} {o:>9.3f} {t / o:>9.2f}")

    print("\n## 2. ONNX Runtime int8 (static QDQ) vs fp32, full width")
    if not args.checkpoint:
        steps = 30 if quick else 600
        _train(model, steps, 64)
        print(f"(model trained briefly: {steps} SGD steps of 64 synthetic images at full width)")
    x_cal, _ = _data(256 if quick else 1024, "train", 1)
    x_test, y_test = _data(512 if quick else 2000, "test", 0)
    full = space.largest()
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = to_onnx(model, full, Path(scratch) / "fp32.onnx").path
        int8 = quantize_int8(fp32, Path(scratch) / "int8.onnx", x_cal.split(64), mode="static")
        loader = list(zip(x_test.split(256), y_test.split(256)))
        acc = compare_accuracy(fp32, int8, loader, threads=args.threads)
    print(f"accuracy fp32 {acc.fp32:.4f}  int8 {acc.int8:.4f}  drop {acc.drop * 100:+.2f} points  "
          f"argmax agreement {acc.agreement:.4f}  ({acc.samples} held-out images)")  # fmt: skip
    for b in batches:
        f, q = p50(full, b, "onnxruntime"), p50(full, b, "onnxruntime-int8")
        print(f"batch {b:>3}: fp32 {f:.3f} ms  int8 {q:.3f} ms  fp32/int8 {f / q:.2f}")

    print("\n## 3. latency predictor (least squares on graph features), ORT fp32, batch 8")
    n_train, n_test = (8, 4) if quick else (40, 20)
    sampled = [space.sample(1000 + i) for i in range(n_train + n_test)]
    measured = {s: p50(s, 8, "onnxruntime") for s in sampled}
    predictor = LatencyPredictor(model, batch_size=8).fit(sampled[:n_train], measured)
    report = predictor.error_report(sampled[n_train:], measured)
    print(f"fitted on {n_train} subnets; held-out {report.n}: MAPE {report.mape:.1f}%, worst {report.max_ape:.1f}%")

    print("\n## 4. latency vs MACs, smallest vs largest (ORT fp32)")
    ratio_macs = macs(model, subs["largest"]) / macs(model, subs["smallest"])
    for b in batches:
        ratio_lat = p50(subs["largest"], b, "onnxruntime") / p50(subs["smallest"], b, "onnxruntime")
        print(f"batch {b:>3}: MACs x{ratio_macs:.1f}, latency x{ratio_lat:.1f}")


if __name__ == "__main__":
    main()
