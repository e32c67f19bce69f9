"""Actuation benchmark: the supernet switched in place vs the extracted static subnet, and switch time.

Prints, in one run on one machine:
1. forward time (median ms) of resnet20 and mobilenet_v2 (or `--models`, e.g. vit_micro) activated in place at
   every uniform width (0.25/0.5/0.75/1.0; each dimension at its nearest allowed value at or above), batch 1
   and 32, against the extracted static subnet: ratio = in place / extracted (target <= 1.05), and the
   same supernet with its weight cache disabled (slicing and copying weights on every forward);
2. time to switch subnets (`activate`) on resnet50, and on each of `--models` other than resnet20 and
   mobilenet_v2: warm (plan cached) and cold (first time);
3. bytes of per-subnet SubnetNorm statistics against bytes of shared weights.

Section 1 runs both paths through the runtimes a server uses (`tailor.cost.runtimes`: "torch-inplace" and
"torch"), so it times exactly what a worker pays per batch. Measurements are interleaved (the paths
alternate within each round, order flipped every round); times are medians over rounds of each round's
median, and ratios are medians of per-round ratios, because these machines are noisy. With one thread the
ratio is also given on the calling thread's CPU clock, which leaves out time spent preempted by other
processes (on a shared machine, trust that column). The load average is printed before and after.

    python benchmarks/actuation.py [--threads 1] [--rounds 30] [--models resnet20,mobilenet_v2]
    python benchmarks/actuation.py --models vit_micro --threads 2 --rounds 40      # the ViT (vit_tiny: --rounds 5)
    python benchmarks/actuation.py --quick     # a smoke run (few rounds, resnet20 at 32x32 and mobilenet_v2 at 64x64)
    python benchmarks/actuation.py --allocator system   # the same without the torch runtimes' malloc setting
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings

import torch

import tailor
from tailor.cost import get_runtime
from tailor.errors import SubnetNormFallbackWarning

WIDTHS = (0.25, 0.5, 0.75, 1.0)
BATCHES = (1, 32)


def _round_medians(prepared, batch: int, warmup: int, repeats: int, cpu: bool) -> tuple[float, float | None]:
    timings = prepared.timings(batch, warmup, repeats)
    return statistics.median(timings.wall_ms), statistics.median(timings.cpu_ms) if cpu else None


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two timings taken back to back (cancels slow drift)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def forward_table(
    name: str, size: int | None, rounds: int, device: str, threads: int, no_cache: bool, allocator: str
) -> float:
    """Print the in-place vs extracted table of one model; return its worst wall-clock ratio."""
    model = tailor.create_model(name).to(device).eval()
    naive = None
    if no_cache:
        naive = tailor.create_model(name).to(device).eval()
        naive.load_state_dict(model.state_dict())
        naive.set_weight_cache(0)
    channels, height, width = model.default_input_size
    shape = (channels, size or height, size or width)
    cpu = threads == 1 and device == "cpu"
    inplace, extracted = get_runtime("torch-inplace", allocator=allocator), get_runtime("torch", allocator=allocator)
    print(f"\n## forward: {name} at {shape[1]}x{shape[2]}, in place (torch-inplace) vs extracted (torch), eval, inference_mode")
    head = f"{'width':>6} {'batch':>5} {'extracted ms':>13} {'in place ms':>12} {'ratio':>6}"
    head += f" {'(cpu)':>6}" if cpu else ""
    head += f" {'no-cache ms':>12} {'no-cache ratio':>15}" if no_cache else ""
    print(head)
    worst = 0.0
    for batch in BATCHES:
        for w in WIDTHS:
            sub = model.space.from_wm([w] * model.space.search_dim)
            paths = {"extracted": extracted.prepare(model, sub, device=device, threads=threads, input_shape=shape),
                     "in place": inplace.prepare(model, sub, device=device, threads=threads, input_shape=shape)}  # fmt: skip
            if naive is not None:
                paths["no cache"] = inplace.prepare(naive, sub, device=device, threads=threads, input_shape=shape)
            one = statistics.median(paths["extracted"].timings(batch, 1, 3).wall_ms)  # ms per call, roughly
            repeats = max(3, min(50, int(60 / max(one, 1e-3))))  # ~60 ms per visit
            wall: dict[str, list[float]] = {k: [] for k in paths}
            clock: dict[str, list[float]] = {k: [] for k in paths}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SubnetNormFallbackWarning)
                for r in range(rounds):
                    order = list(paths.items())
                    if r % 2:
                        order.reverse()
                    for key, prepared in order:
                        wall_ms, cpu_ms = _round_medians(prepared, batch, 2, repeats, cpu)
                        wall[key].append(wall_ms)
                        if cpu_ms is not None:
                            clock[key].append(cpu_ms)
            for prepared in reversed(list(paths.values())):
                prepared.release()
            ratio = paired_ratio(wall["in place"], wall["extracted"])
            worst = max(worst, ratio)
            line = (
                f"{w:>6.2f} {batch:>5d} {statistics.median(wall['extracted']):>13.4f} "
                f"{statistics.median(wall['in place']):>12.4f} {ratio:>6.3f}"
            )
            if cpu:
                line += f" {paired_ratio(clock['in place'], clock['extracted']):>6.3f}"
            if naive is not None:
                line += f" {statistics.median(wall['no cache']):>12.4f} {paired_ratio(wall['no cache'], wall['extracted']):>15.3f}"
            print(line, flush=True)
    print(f"{name}: worst in place / extracted ratio {worst:.3f} (target <= 1.05)")
    return worst


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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (not run on a GPU yet)")
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--mobilenet-size", type=int, default=None, help="mobilenet_v2 input size (default 224)")
    parser.add_argument("--no-cache-column", action="store_true", help="also time the supernet without its cache")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, mobilenet_v2 at 64x64")
    parser.add_argument("--sections", default="forward,switch,norm", help="which of forward, switch, norm to run")
    parser.add_argument("--allocator", default="keep", choices=("keep", "system"),
                        help="the torch runtimes' malloc setting (system: glibc as it comes; for the A/B)")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    size = args.mobilenet_size or (64 if args.quick else None)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, rounds {rounds}, "
          f"allocator {args.allocator}, load average {load:.2f}")  # fmt: skip
    started = time.perf_counter()
    sections = set(args.sections.split(","))
    worst = {}
    models = args.models.split(",")
    for name in models if "forward" in sections else []:
        worst[name] = forward_table(name, size if name == "mobilenet_v2" else None, rounds, args.device, args.threads,
                                    args.no_cache_column, args.allocator)  # fmt: skip
    if worst:
        print("worst ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()) + " (target <= 1.05)")
    if not args.quick and "switch" in sections:
        switch_table(args.rounds)
        for name in models:
            if name not in ("resnet20", "mobilenet_v2"):
                switch_table(args.rounds, name)
    if not args.quick and "norm" in sections:
        norm_bytes()
    print(f"\n{time.perf_counter() - started:.0f} s; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
