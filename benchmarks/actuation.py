"""Actuation benchmark: activated supernet vs extracted static subnet, and subnet switch time.

Prints, in one run on one machine:
1. forward time (median ms) of resnet20 (or `--model`, e.g. vit_micro) activated at widths 0.25/0.5/0.75/1.0
   (each dimension at the nearest choice at or above), batch 1 and 32, at the model's input size,
   against the extracted static subnet (ratio = activated / extracted; target <= 1.05), and
   against the same supernet with its weight cache disabled (slicing and copying per forward);
2. time to switch subnets (`activate`) on resnet50 (and on `--model` when given): warm and cold;
3. bytes of per-subnet SubnetNorm statistics against bytes of shared weights.

Measurements are interleaved (the three alternate within each round, order flipped every round);
times are medians of per-round means and ratios are medians of per-round ratios, because these
machines are noisy.

    python benchmarks/actuation.py [--threads 2] [--rounds 40] [--model vit_micro]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings

import torch

import tailor
from tailor.errors import SubnetNormFallbackWarning


def time_forward(module: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    """Mean seconds per forward over `iters` calls."""
    start = time.perf_counter()
    for _ in range(iters):
        module(x)
    return (time.perf_counter() - start) / iters


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two timings taken back to back (cancels slow drift)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def forward_table(rounds: int, device: str, name: str = "resnet20") -> None:
    model = tailor.create_model(name).to(device).eval()
    naive = tailor.create_model(name).to(device).eval()
    naive.load_state_dict(model.state_dict())
    naive.set_weight_cache(0)
    print(f"\n## forward: activated supernet vs extracted static subnet ({name}, eval, inference_mode)")
    print(
        f"{'width':>6} {'batch':>5} {'extracted ms':>13} {'activated ms':>13} {'ratio':>6} "
        f"{'no-cache ms':>12} {'no-cache ratio':>15}"
    )
    worst = 0.0
    for batch in (1, 32):
        x = torch.randn(batch, *model.default_input_size, device=device)
        iters = 200 if batch == 1 else 20
        for width in (0.25, 0.5, 0.75, 1.0):
            sub = model.space.from_wm([width] * model.space.search_dim)
            static = model.extract(sub).eval()
            model.activate(sub)
            naive.activate(sub)
            samples: dict[str, list[float]] = {"static": [], "active": [], "naive": []}
            with torch.inference_mode():
                for module in (static, model, naive):
                    time_forward(module, x, iters)  # warm-up
                for r in range(rounds):
                    order = [("static", static), ("active", model), ("naive", naive)]
                    if r % 2:
                        order.reverse()
                    for name, module in order:
                        samples[name].append(time_forward(module, x, iters))
            med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
            ratio = paired_ratio(samples["active"], samples["static"])
            worst = max(worst, ratio)
            print(
                f"{width:>6.2f} {batch:>5d} {med['static']:>13.4f} {med['active']:>13.4f} {ratio:>6.3f} "
                f"{med['naive']:>12.4f} {paired_ratio(samples['naive'], samples['static']):>15.3f}"
            )
    print(f"worst activated/extracted ratio: {worst:.3f} (target <= 1.05)")


def switch_table(rounds: int, name: str = "resnet50") -> None:
    model = tailor.create_model(name).eval()
    rng = random.Random(0)
    subs = [model.space.sample(rng) for _ in range(16)]
    cold = []
    for sub in subs:  # first activation builds and caches the plan
        start = time.perf_counter()
        model.activate(sub)
        cold.append(time.perf_counter() - start)
    per_switch = []
    iters = 1000
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(iters):
            model.activate(subs[i % len(subs)])
        per_switch.append((time.perf_counter() - start) / iters)
    layers = sum(1 for _ in model.elastic_layers())
    print(
        f"\n## switch time: {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
        f"{layers} elastic layers, 16 random subnets cycled)"
    )
    print(
        f"warm activate (plan cached): median {statistics.median(per_switch) * 1e3:.4f} ms "
        f"(p90 of round means {sorted(per_switch)[int(0.9 * len(per_switch))] * 1e3:.4f} ms; target <= 0.1 ms)"
    )
    print(f"cold activate (first time, builds the plan): median {statistics.median(cold) * 1e3:.3f} ms")


def norm_bytes() -> None:
    print("\n## SubnetNorm: per-subnet statistics vs shared weights")
    for name, shape, count in (("resnet20", (8, 3, 32, 32), 64), ("resnet50", (2, 3, 64, 64), 8)):
        model = tailor.create_model(name)
        rng = random.Random(1)
        subs = [model.space.largest(), model.space.smallest()] + [model.space.sample(rng) for _ in range(count - 2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            tailor.calibrate(model, subs, [torch.randn(*shape)], batches=1)
        report = model.norm_stats_bytes()
        per = report["subnet_stats_bytes"] / report["subnets"]
        print(
            f"{name}: {report['subnets']} subnets calibrated, statistics {report['subnet_stats_bytes'] / 1024:.1f} KiB "
            f"({per / 1024:.2f} KiB per subnet = {100 * per / report['shared_bytes']:.3f}% of "
            f"{report['shared_bytes'] / 2**20:.2f} MiB shared weights)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet20", choices=tailor.list_models(), help="the forward table's model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, rounds {args.rounds}")
    forward_table(args.rounds, args.device, args.model)
    switch_table(args.rounds)
    if args.model != "resnet20":
        switch_table(args.rounds, args.model)
    norm_bytes()


if __name__ == "__main__":
    main()
