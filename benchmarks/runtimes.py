"""Extracted subnets on real runtimes: ONNX Runtime vs PyTorch eager, int8 vs fp32, latency predictor error.

All figures come from one run on one machine, side by side. Every comparison is measured interleaved
(`tailor.cost.interleaved_timings`: round-robin passes over everything compared, so load drift on a shared
machine hits all of it alike); latencies are p50 over many calls of wall time. Each call is also timed on
the calling thread's CPU clock, which leaves out time spent preempted by other processes (with one thread
both runtimes compute on the calling thread), and ratios are printed on both clocks: where they disagree,
the machine was busy and the CPU-clock figure is the one to trust.
1. p50 latency (ms) of uniform-width subnets (smallest ... largest) on eager PyTorch and on ONNX Runtime
   (BN-folded export) at batch 1/8/32, and the ratio torch/ORT;
2. ONNX Runtime int8 vs fp32 at full width: static QDQ (calibrated on training images) and dynamic; p50
   latency ratio at each batch size, and top-1 accuracy on held-out images of a model trained here
   (ResNet-20 at full width on scikit-learn's digits at 32x32 RGB, the same input shape as section 1;
   or `--checkpoint` with the data set of its recipe);
3. the latency predictor on ORT fp32: fitted on measured random subnets, its error (MAPE, worst) on other,
   held-out random subnets measured end to end, at each batch size; beside it the Once-for-All-style block
   table alone, a fit without the table, MACs alone, and the measurement's own noise (the p50 of the first
   half of the interleaved rounds vs the second half);
4. latency vs MACs across the space: the same subnets' MACs ratio and latency ratio to the smallest.

    python benchmarks/runtimes.py            # full: writes benchmarks/results/runtimes.json (about 10 min)
    python benchmarks/runtimes.py --quick    # smoke run, well under a minute on an idle machine; noisy
    python benchmarks/runtimes.py --checkpoint ck/   # section 2 on a trained supernet

Threads are fixed (`--threads`, default 1) for both runtimes. Wall-clock figures are only meaningful on an
otherwise idle machine; the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tailor
from tailor.cost import (
    CLOCKS,
    LatencyPredictor,
    LatencyTable,
    Timings,
    interleaved_timings,
    macs,
    params,
    prepare,
    prepare_onnx,
)
from tailor.cost.predict import FEATURES
from tailor.cost.profile import device_name
from tailor.data import load_dataset
from tailor.export import compare_accuracy, quantize_int8, to_onnx
from tailor.train import calibrate, load_checkpoint
from tailor.train.trainer import BatchSource

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.json"

# (clock, percentile) for the predictor: wall p50 is the target (the profile's figure); wall p10 is barely
# moved by preemption from other processes; thread-CPU p50 leaves preemption out entirely
STATISTICS = (("wall", 50), ("wall", 10), ("cpu", 50))


def _progress(label: str) -> Callable[[int, int], None]:
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        if sys.stderr.isatty() and (done == total or done % max(1, total // 50) == 0):
            sys.stderr.write(f"\r{label}: {done}/{total} ({time.perf_counter() - start:.0f} s)")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return report


def _p50(timings: Timings, clock: str) -> float:
    return float(np.median(timings.clock(clock)))


def _uniform_subnets(space: tailor.SearchSpace) -> dict[str, tailor.Subnet]:
    """smallest, every dimension at 0.25/0.5/0.75 (its nearest allowed width at or above), largest."""
    subs = {"smallest": space.smallest()}
    for width in (0.25, 0.5, 0.75):
        sub = space.from_wm([width] * space.search_dim)
        if sub not in subs.values():
            subs[f"w{width:g}"] = sub
    subs["largest"] = space.largest()
    return subs


def _distinct_random_subnets(space: tailor.SearchSpace, count: int, seed: int) -> list[tailor.Subnet]:
    rng = random.Random(seed)
    found: list[tailor.Subnet] = []
    for _ in range(100 * count):
        sub = space.sample(rng)
        if sub not in found:
            found.append(sub)
        if len(found) == count:
            return found
    raise SystemExit(f"the space has fewer than {count} distinct subnets")


# -- 1 -------------------------------------------------------------------------------------------------


def section_runtimes(model, subs, batches, threads, warmup, repeats, rounds) -> dict[str, Any]:
    runners = {
        (name, backend): prepare(model, sub, backend, threads)
        for name, sub in subs.items()
        for backend in ("torch", "onnxruntime")
    }
    timings = interleaved_timings(runners, batches, warmup, repeats, rounds, _progress("torch vs ORT"))
    print("\n## 1. eager PyTorch vs ONNX Runtime (p50 ms of wall time, interleaved; ratio on wall and CPU clock)")
    print(f"{'subnet':<9} {'MMACs':>7} {'batch':>5} {'torch':>9} {'ORT':>9} {'torch/ORT':>9} {'(cpu)':>6}")
    rows = []
    for name, sub in subs.items():
        m = macs(model, sub)
        for b in batches:
            t, o = timings[(name, "torch")][b], timings[(name, "onnxruntime")][b]
            row: dict[str, Any] = {"subnet": name, "id": sub.id, "macs": m, "params": params(model, sub), "batch": b}
            for clock in CLOCKS:
                row[f"torch_p50_ms_{clock}"] = _p50(t, clock)
                row[f"ort_p50_ms_{clock}"] = _p50(o, clock)
                row[f"torch_over_ort_{clock}"] = _p50(t, clock) / _p50(o, clock)
            rows.append(row)
            print(
                f"{name:<9} {m / 1e6:>7.2f} {b:>5} {row['torch_p50_ms_wall']:>9.3f} {row['ort_p50_ms_wall']:>9.3f} "
                f"{row['torch_over_ort_wall']:>9.2f} {row['torch_over_ort_cpu']:>6.2f}"
            )
    return {"rows": rows}


# -- 2 -------------------------------------------------------------------------------------------------


def _trained_model(args: argparse.Namespace, quick: bool) -> tuple[tailor.ElasticModel, Any, Any, str]:
    """The model for the int8 accuracy check and its (train, test) data, trained here unless --checkpoint."""
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint)
        recipe = loaded.config.get("metadata", {}).get("recipe", {}).get("data", {})
        if not recipe.get("name"):
            raise SystemExit("--checkpoint: it does not record its data set (train it with `tailor train`)")
        root = recipe.get("root") or None
        train = load_dataset(recipe["name"], "train", root, **recipe.get("train", {}))
        test = load_dataset(recipe["name"], "test", root, **recipe.get("test", {}))
        model = loaded.model.eval()
        calibrate(model, [model.space.largest()], BatchSource(train, 128, 0).batches(0), batches=8)
        return model, train, test, f"checkpoint {args.checkpoint} ({recipe['name']})"
    train = load_dataset("digits", "train", image_size=32, channels=3)
    test = load_dataset("digits", "test", image_size=32, channels=3)
    torch.manual_seed(0)
    model = tailor.create_model(args.model, num_classes=10)
    full = model.space.largest()
    epochs = 2 if quick else 8
    source = BatchSource(train, 64, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * len(source))
    model.activate(full)
    model.train()
    for epoch in range(epochs):
        for x, y in source.batches(epoch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    calibrate(model, [full], source.batches(0), batches=8)
    return model, train, test, f"{args.model} trained here: {epochs} epochs at full width on digits (32x32 RGB)"


def _random_calibration(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Random calibration batches for a timing-only copy (ranges do not change the speed of QDQ kernels)."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn((16, *shape), generator=gen) for _ in range(2)]


def section_int8(args, model, batches, threads, warmup, repeats, rounds, quick) -> dict[str, Any]:
    trained, train, test, what = _trained_model(args, quick)
    full = trained.space.largest()
    shape = tuple(test[0][0].shape)
    calibration = [x for _, (x, _y) in zip(range(4 if quick else 8), BatchSource(train, 64, 1).batches(0))]
    held_out = list(BatchSource(test, 256, 0, drop_last=False).batches(None))
    timing_shape = tuple(model.default_input_size)
    with tempfile.TemporaryDirectory() as scratch:
        files = {"fp32": to_onnx(trained, full, Path(scratch) / "fp32.onnx", input_shape=shape).path}
        files["static"] = quantize_int8(files["fp32"], Path(scratch) / "static.onnx", calibration, mode="static")
        files["dynamic"] = quantize_int8(files["fp32"], Path(scratch) / "dynamic.onnx", mode="dynamic")
        accuracy = {
            mode: compare_accuracy(files["fp32"], files[mode], held_out, threads=threads)
            for mode in ("static", "dynamic")
        }
        if shape != timing_shape:  # time section 1's input shape, so the ratios compare with section 1
            files = {"fp32": to_onnx(model, full, Path(scratch) / "fp32_t.onnx").path}
            files["static"] = quantize_int8(
                files["fp32"], Path(scratch) / "static_t.onnx", _random_calibration(timing_shape), mode="static"
            )
            files["dynamic"] = quantize_int8(files["fp32"], Path(scratch) / "dynamic_t.onnx", mode="dynamic")
        runners = {name: prepare_onnx(path, timing_shape, threads) for name, path in files.items()}
        timings = interleaved_timings(runners, batches, warmup, repeats, rounds, _progress("int8 vs fp32"))
    print(f"\n## 2. ONNX Runtime int8 vs fp32, full width ({what})")
    print(f"held-out accuracy ({accuracy['static'].samples} images never used for training or calibration):")
    out: dict[str, Any] = {"model": what, "held_out_samples": accuracy["static"].samples, "modes": {}}
    for mode, acc in accuracy.items():
        print(
            f"  {mode:<7} fp32 {acc.fp32:.4f}  int8 {acc.int8:.4f}  drop {acc.drop * 100:+.2f} points  "
            f"argmax agreement {acc.agreement:.4f}"
        )
        out["modes"][mode] = {"accuracy": acc.to_dict(), "latency": []}
    print("p50 ms of wall time, and the fp32/int8 ratio on wall and CPU clock:")
    print(
        f"{'batch':>5} {'fp32':>8} {'static':>8} {'fp32/static':>11} {'(cpu)':>6} {'dynamic':>8} {'fp32/dyn':>8} {'(cpu)':>6}"
    )
    for b in batches:
        line = f"{b:>5} {_p50(timings['fp32'][b], 'wall'):>8.3f}"
        for mode, width in (("static", 11), ("dynamic", 8)):
            entry: dict[str, Any] = {"batch": b}
            for clock in CLOCKS:
                f, q = _p50(timings["fp32"][b], clock), _p50(timings[mode][b], clock)
                entry.update({f"fp32_p50_ms_{clock}": f, f"int8_p50_ms_{clock}": q, f"fp32_over_int8_{clock}": f / q})
            out["modes"][mode]["latency"].append(entry)
            line += f" {entry['int8_p50_ms_wall']:>8.3f} {entry['fp32_over_int8_wall']:>{width}.2f}"
            line += f" {entry['fp32_over_int8_cpu']:>6.2f}"
        print(line)
    return out


# -- 3 -------------------------------------------------------------------------------------------------


def _fit_eval(X: np.ndarray, y: np.ndarray, n_train: int) -> dict[str, float]:
    """Least squares weighted for relative error (as LatencyPredictor does) on the first rows; APE on the rest."""
    coef, *_ = np.linalg.lstsq(X[:n_train] / y[:n_train, None], np.ones(n_train), rcond=None)
    ape = np.abs(X[n_train:] @ coef - y[n_train:]) / y[n_train:] * 100
    return {"mape": float(ape.mean()), "max_ape": float(ape.max())}


def _split_half_noise(values: list[list[float]]) -> float:
    """Mean |p50(first half of the rounds) - p50(second half)| / p50, in %."""
    return float(
        np.mean([abs(np.median(v[: len(v) // 2]) - np.median(v[len(v) // 2 :])) / np.median(v) for v in values]) * 100
    )


def section_predictor(model, batches, threads, warmup, repeats, rounds, n_train, n_test) -> dict[str, Any]:
    subs = _distinct_random_subnets(model.space, n_train + n_test, seed=1000)
    train, test = subs[:n_train], subs[n_train:]
    tables = {stat: LatencyTable(threads, backend="onnxruntime") for stat in STATISTICS}
    started = time.perf_counter()
    runners: dict[Any, Any] = {("subnet", s): prepare(model, s, "onnxruntime", threads) for s in subs}
    block_runners = tables[STATISTICS[0]].runners(model, subs, batches)
    runners.update({("block", k): r for k, r in block_runners.items()})
    # whole subnets and table blocks in one interleaved run, so both see the same machine load
    timings = interleaved_timings(runners, batches, warmup, repeats, rounds, _progress("predictor"))
    for (clock, q), table in tables.items():
        for key in block_runners:
            for b in batches:
                table.record(key, b, float(np.percentile(timings[("block", key)][b].clock(clock), q)))
    seconds = time.perf_counter() - started
    print(f"\n## 3. latency predictor, ORT fp32: fitted on {n_train} random subnets, error on {n_test} held-out ones")
    print(
        f"(block table: {len(block_runners)} distinct blocks; subnets and blocks measured interleaved in {seconds:.0f} s;"
    )
    print(" wall p50 is the target; wall p10 and CPU-clock p50 show the error without preemption by other processes;")
    print(" noise: |p50 of the first half of the rounds - p50 of the second half| / p50, mean over held-out subnets)")
    print(
        f"{'batch':>5} {'stat':>8} {'predictor':>16} {'table alone':>16} {'no table':>16} {'MACs alone':>16} {'noise':>6}"
    )
    print(f"{'':>14} " + " ".join(f"{'MAPE / worst %':>16}" for _ in range(4)) + f" {'%':>6}")
    out: dict[str, Any] = {"n_train": n_train, "n_test": n_test, "blocks": len(block_runners), "per_batch": []}
    mac = np.array([macs(model, s) for s in subs], dtype=float)
    for b in batches:
        predictor = LatencyPredictor(model, b)  # refitted per statistic: features are extracted once
        for (clock, q), table in tables.items():
            stat = f"{clock} p{q}"
            measured = {s: float(np.percentile(timings[("subnet", s)][b].clock(clock), q)) for s in subs}
            y = np.array([measured[s] for s in subs])
            predictor.table = table
            fitted = predictor.fit(train, measured).error_report(test, measured)
            rows = np.array([predictor.row(s) for s in subs])
            table_ape = np.abs(rows[n_train:, len(FEATURES)] - y[n_train:]) / y[n_train:] * 100
            row = {
                "batch": b,
                "statistic": stat,
                "predictor": fitted.to_dict(),
                "table_alone": {"mape": float(table_ape.mean()), "max_ape": float(table_ape.max())},
                "no_table": _fit_eval(np.c_[rows[:, : len(FEATURES)], np.ones(len(subs))], y, n_train),
                "macs_alone": _fit_eval(np.c_[mac, np.ones(len(subs))], y, n_train),
                "noise_split_half_pct": _split_half_noise([timings[("subnet", s)][b].clock(clock) for s in test]),
                "target_met": fitted.mape <= 5.0,
            }
            out["per_batch"].append(row)
            cells = [
                f"{r['mape']:.1f} / {r['max_ape']:.1f}"
                for r in (row["predictor"], row["table_alone"], row["no_table"], row["macs_alone"])
            ]
            print(f"{b:>5} {stat:>8} " + " ".join(f"{c:>16}" for c in cells) + f" {row['noise_split_half_pct']:>6.1f}")
    verdicts = [
        f"batch {r['batch']} {r['statistic']}: {'met' if r['target_met'] else 'MISSED'}" for r in out["per_batch"]
    ]
    print("target: predictor MAPE <= 5% -> " + ", ".join(verdicts))
    return out


# -- 4 -------------------------------------------------------------------------------------------------


def section_scaling(subs, rows, batches) -> dict[str, Any]:
    print("\n## 4. latency vs MACs across the space (ratios to the smallest subnet; p50 from section 1)")
    base = {r["batch"]: r for r in rows if r["subnet"] == "smallest"}
    head = " ".join(f"{'ORT b' + str(b):>7} {'(cpu)':>6} {'torch b' + str(b):>9}" for b in batches)
    print(f"{'subnet':<9} {'MMACs':>7} {'MACs x':>7} {head}")
    out = []
    for name in subs:
        mine = {r["batch"]: r for r in rows if r["subnet"] == name}
        ratio_macs = mine[batches[0]]["macs"] / base[batches[0]]["macs"]
        entry: dict[str, Any] = {"subnet": name, "macs": mine[batches[0]]["macs"], "macs_ratio": ratio_macs}
        entry["latency_ratio"] = {}
        cells = []
        for b in batches:
            ratio = {
                f"{backend}_{clock}": mine[b][f"{key}_p50_ms_{clock}"] / base[b][f"{key}_p50_ms_{clock}"]
                for backend, key in (("onnxruntime", "ort"), ("torch", "torch"))
                for clock in CLOCKS
            }
            entry["latency_ratio"][str(b)] = ratio
            cells.append(
                f"{ratio['onnxruntime_wall']:>7.1f} {ratio['onnxruntime_cpu']:>6.1f} {ratio['torch_wall']:>9.1f}"
            )
        out.append(entry)
        print(f"{name:<9} {mine[batches[0]]['macs'] / 1e6:>7.2f} {ratio_macs:>7.1f} " + " ".join(cells))
    return {"rows": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats/subnets/steps: a smoke run")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", help="a tailor checkpoint (trained with `tailor train`) for section 2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", help="JSON results (default: benchmarks/results/runtimes.json in full mode, none in quick)"
    )
    args = parser.parse_args()
    quick = args.quick
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    if quick:
        batches, warmup, repeats, rounds, n_train, n_test = (1, 8), 2, 6, 2, 12, 6
    else:
        batches, warmup, repeats, rounds, n_train, n_test = (1, 8, 32), 2, 60, 10, 40, 20
    model = tailor.create_model(args.model, num_classes=10).eval()
    subs = _uniform_subnets(model.space)
    print(
        f"# {args.model}, threads={args.threads}, p50 of {repeats} calls in {rounds} interleaved rounds"
        f"{' (quick: noisy)' if quick else ''}; {device_name()}; load average {load_before:.2f}"
    )
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "device": device_name(),
        "threads": args.threads,
        "quick": quick,
        "repeats": repeats,
        "rounds": rounds,
        "load_average_before": load_before,
    }
    results["runtimes"] = section_runtimes(model, subs, batches, args.threads, warmup, repeats, rounds)
    results["int8"] = section_int8(args, model, batches, args.threads, warmup, repeats, rounds, quick)
    results["predictor"] = section_predictor(model, batches, args.threads, warmup, repeats, rounds, n_train, n_test)
    results["scaling"] = section_scaling(subs, results["runtimes"]["rows"], batches)
    results["load_average_after"] = os.getloadavg()[0]
    results["seconds"] = time.perf_counter() - started
    print(
        f"\n{results['seconds']:.0f} s; load average {load_before:.2f} before, {results['load_average_after']:.2f} after"
    )
    out = Path(args.out) if args.out else (None if quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"results: {out}")


if __name__ == "__main__":
    main()
