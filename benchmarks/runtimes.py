"""Subnets on every runtime: the fastest runtime per subnet, and what it changes for the front, serving, cascades.

All figures come from one run on one machine, side by side. Every comparison is measured interleaved
(`tailor.cost.interleaved_timings`: round-robin passes over everything compared, so load drift on a shared
machine hits all of it alike); latencies are p50 over many calls of wall time. With one thread each call is
also timed on the calling thread's CPU clock (where the runtime computes on that thread), which
leaves out preemption by other processes; where wall and CPU ratios disagree the machine was busy.
1. p50 latency (ms) of uniform-width subnets (smallest ... largest) on every runtime (`--runtimes`) at batch
   1/8/32, and each runtime's ratio to the fastest one at that batch size;
2. ONNX Runtime int8 vs fp32 at full width: static QDQ (calibrated on training images) and dynamic; p50
   latency ratio at each batch size, and top-1 accuracy on held-out images of a model trained here
   (ResNet-20 at full width on scikit-learn's digits at 32x32 RGB, the same input shape as section 1;
   or `--checkpoint` with the data set of its recipe);
3. the latency predictor on ORT fp32: fitted on measured random subnets, its error (MAPE, worst) on other,
   held-out random subnets measured end to end, at each batch size; beside it the Once-for-All-style block
   table alone, a fit without the table, MACs alone, and the measurement's own noise (the p50 of the first
   half of the interleaved rounds vs the second half);
4. latency vs MACs across the space: the same subnets' MACs ratio and latency ratio to the smallest;
5. the runtime-aware profile of a trained supernet (`--checkpoint`, else a resnet20 supernet trained here on
   digits at 32x32 RGB with the sandwich rule): candidate subnets profiled on every fp32 runtime with their
   outputs checked against PyTorch fp32 on held-out images; for the accuracy-latency front, each runtime's
   p50 / the fastest's at batch 1/8/32, and the front's hypervolume with the best runtime per subnet against
   each single runtime;
6. served vs alone: the front's subnets loaded on their chosen runtimes in one process, as a serving worker
   holds them (`get_runtime(name).prepare(...)`), called in random order with a switch before every call,
   against each one called alone (the worst case); then (6b) in the order the default policy dispatches
   batches on a simulated bursty trace (subnets and batch sizes as a worker receives them), each (subnet,
   size) against the same call run again right after itself, interleaved (after half the calls at random);
   target: served p50 <= 1.05x alone for every pair called >= 100 times, and in total compute time;
7. serving simulation (`tailor.serve.simulate`, SlackFit, bursty traces at several loads): the runtime-aware
   profile against the ORT-only view of the same profile (`ServingProfile(..., runtimes=["onnxruntime"])`):
   attainment, and accuracy of the on-time answers at equal attainment;
8. cascades (`tailor.search.pair_search`, thresholds chosen on one half of the held-out images, accuracy on
   the other) under latency budgets, with the runtime-aware profile's latencies against ORT-only's: the chosen
   subnets, their runtimes, thresholds, accuracy and expected latency.

    python benchmarks/runtimes.py            # full: writes benchmarks/results/runtimes.json (25-35 min on 2 cores)
    python benchmarks/runtimes.py --quick    # smoke run: a few minutes; noisy, figures meaningless
    python benchmarks/runtimes.py --checkpoint ck/   # sections 2 and 5-8 on a trained supernet (its recipe's data)
    python benchmarks/runtimes.py --runtimes torch,torch-inplace,torch-compile,onnxruntime,openvino  # + Inductor

Threads are fixed (`--threads`, default 1) for every runtime; `--device cuda` runs the torch runtimes and
ONNX Runtime's CUDA/TensorRT providers on a GPU (OpenVINO is CPU only; not yet run on a GPU). torch-compile
is left out by default: Inductor takes 30-50 s to compile each subnet at each batch size on a small CPU.
Wall-clock figures are only meaningful on an otherwise idle machine; the JSON records the load average
before and after.
"""

from __future__ import annotations

import argparse
import itertools
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
    Profile,
    Timings,
    build_profile,
    get_runtime,
    interleaved_timings,
    macs,
    params,
    prepare,
    prepare_onnx,
    release_all,
)
from tailor.cost.predict import FEATURES
from tailor.cost.profile import device_name
from tailor.data import load_dataset
from tailor.export import compare_accuracy, quantize_int8, to_onnx
from tailor.search import Evaluator, ProfileCost, pair_search
from tailor.search.pareto import front_hypervolume, pareto_mask
from tailor.serve import ServingProfile, simulate, traces
from tailor.train import TrainConfig, Trainer, calibrate, load_checkpoint
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


def _can_time_cpu(runner: Any) -> bool:
    try:
        runner.check_clock("cpu")
    except Exception:
        return False
    return True


def section_runtimes(model, subs, runtimes, batches, threads, warmup, repeats, rounds, device) -> dict[str, Any]:
    runners = {
        (name, rt): prepare(model, sub, rt, threads, device=device) for name, sub in subs.items() for rt in runtimes
    }
    try:
        timings = interleaved_timings(runners, batches, warmup, repeats, rounds, _progress("runtimes"))
    finally:
        release_all(runners.values())
    print("\n## 1. every runtime on uniform subnets (p50 ms of wall time, interleaved; / = ratio to the fastest)")
    print(f"{'subnet':<9} {'MMACs':>7} {'batch':>5} " + " ".join(f"{rt:>22}" for rt in runtimes))
    rows = []
    for name, sub in subs.items():
        m = macs(model, sub)
        for b in batches:
            p50 = {rt: _p50(timings[(name, rt)][b], "wall") for rt in runtimes}
            best = min(p50.values())
            row: dict[str, Any] = {"subnet": name, "id": sub.id, "macs": m, "params": params(model, sub), "batch": b}
            for rt in runtimes:
                row[f"{rt}_p50_ms_wall"] = p50[rt]
                row[f"{rt}_over_best_wall"] = p50[rt] / best
                if _can_time_cpu(runners[(name, rt)]):
                    row[f"{rt}_p50_ms_cpu"] = _p50(timings[(name, rt)][b], "cpu")
            if "torch" in runtimes and "onnxruntime" in runtimes:
                for clock in CLOCKS:
                    if f"torch_p50_ms_{clock}" in row and f"onnxruntime_p50_ms_{clock}" in row:
                        row[f"torch_over_ort_{clock}"] = row[f"torch_p50_ms_{clock}"] / row[f"onnxruntime_p50_ms_{clock}"]
            rows.append(row)
            cells = " ".join(f"{p50[rt]:>12.3f} / {p50[rt] / best:>6.2f}" for rt in runtimes)
            print(f"{name:<9} {m / 1e6:>7.2f} {b:>5} {cells}")
    return {"runtimes": list(runtimes), "rows": rows}


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
    tables = {stat: LatencyTable(threads, runtime="onnxruntime") for stat in STATISTICS}
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


def section_scaling(subs, rows, batches, runtimes) -> dict[str, Any]:
    print("\n## 4. latency vs MACs across the space (ratios to the smallest subnet; p50 of wall time from section 1)")
    base = {r["batch"]: r for r in rows if r["subnet"] == "smallest"}
    head = " ".join(f"{rt[:10] + ' b' + str(b):>15}" for b in batches for rt in runtimes)
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
                f"{rt}_{clock}": mine[b][f"{rt}_p50_ms_{clock}"] / base[b][f"{rt}_p50_ms_{clock}"]
                for rt in runtimes
                for clock in CLOCKS
                if f"{rt}_p50_ms_{clock}" in mine[b]
            }
            entry["latency_ratio"][str(b)] = ratio
            cells += [f"{ratio[rt + '_wall']:>15.1f}" for rt in runtimes]
        out.append(entry)
        print(f"{name:<9} {mine[batches[0]]['macs'] / 1e6:>7.2f} {ratio_macs:>7.1f} " + " ".join(cells))
    return {"rows": out}


# -- 5-8: a trained supernet, its runtime-aware profile, front, serving and cascades ------------------------


def _supernet(args: argparse.Namespace, quick: bool) -> tuple[tailor.ElasticModel, Any, Any, Any, str]:
    """(model, train, held-out A, held-out B, description): `--checkpoint`, else a supernet trained here on digits."""
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint)
        recipe = loaded.config.get("metadata", {}).get("recipe", {}).get("data", {})
        if not recipe.get("name"):
            raise SystemExit("--checkpoint: it does not record its data set (train it with `tailor train`)")
        root = recipe.get("root") or None
        train = load_dataset(recipe["name"], "train", root, **recipe.get("train", {}))
        test = load_dataset(recipe["name"], "test", root, **recipe.get("test", {}))
        model, what = loaded.model.eval(), f"checkpoint {args.checkpoint} ({recipe['name']})"
    else:
        train = load_dataset("digits", "train", image_size=32, channels=3)
        test = load_dataset("digits", "test", image_size=32, channels=3)
        torch.manual_seed(0)
        model = tailor.create_model(args.model, num_classes=10)
        epochs = 1 if quick else 16
        config = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, largest_only_epochs=epochs / 4,
                             student_ramp_epochs=epochs / 4, crop_padding=2, flip=False, seed=0)  # fmt: skip
        start = time.perf_counter()
        Trainer(model, train, config, device="cpu").fit()
        model.eval()
        what = f"{args.model} supernet trained here: {epochs} epoch(s), sandwich rule, digits at 32x32 RGB " \
               f"({time.perf_counter() - start:.0f} s)"  # fmt: skip
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    half = len(test) // 2
    return model, train, test.subset(order[:half]), test.subset(order[half:]), what


def _candidates(space: tailor.SearchSpace, count: int) -> list[tailor.Subnet]:
    subs = list(_uniform_subnets(space).values())
    for sub in _distinct_random_subnets(space, count, seed=7):
        if sub not in subs:
            subs.append(sub)
    return subs


def _hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """(latency, accuracy) points -> hypervolume below `reference` latency and above its accuracy."""
    return front_hypervolume([a for _, a in points], [lat for lat, _ in points], reference)


def section_front(args, quick, runtimes, batches, threads, warmup, repeats, rounds, device) -> dict[str, Any]:
    model, train, held_a, held_b, what = _supernet(args, quick)
    subs = _candidates(model.space, 6 if quick else 24)
    started = time.perf_counter()
    accuracy_eval = Evaluator(model, train, held_a, calib_batches=4 if quick else 8, batch_size=64)
    accuracy = {s: accuracy_eval.metrics(s, ("accuracy",))["accuracy"] for s in subs}
    calibrate(model, subs, BatchSource(train, 64, 0).batches(0), batches=4 if quick else 8)
    check_x = torch.cat([x for x, _ in BatchSource(held_a, 64, 0, drop_last=False).batches(None)])[:256]
    profile = build_profile(
        model, subs, batches, runtime=runtimes, threads=threads, warmup=warmup, repeats=repeats, rounds=rounds,
        accuracy=accuracy, device=device, check_inputs=check_x, check_inputs_label=f"{len(check_x)} held-out images",
        progress=_progress("runtime-aware profile"),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"\n## 5. the runtime-aware profile and front ({what}; {len(subs)} candidates; {seconds:.0f} s)")
    served = {e.id: profile.runtime_of(e.id) for e in profile.subnets}
    counts = {rt: sum(1 for r in served.values() if r == rt) for rt in runtimes}
    print("subnets served per runtime (fastest within tolerance): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    views = {"best runtime per subnet": profile}
    for rt in runtimes:
        views[rt] = profile.with_runtimes([rt])
    b0 = batches[0]
    points = np.array([[profile[s.id].latency_ms[b0].p50, accuracy[s]] for s in subs])
    front = [s for s, keep in zip(subs, pareto_mask(points, [False, True])) if keep]
    front.sort(key=lambda s: accuracy[s])
    print(f"front ({len(front)} subnets; batch {b0}, best runtime per subnet): p50 ms / ratio to the fastest runtime")
    rows = []
    for sub in front:
        entry = profile[sub.id]
        tables = entry.measurements(profile.runtime)
        for b in batches:
            best = min(t[b].p50 for t in tables.values())
            cells = " ".join(f"{rt}:{tables[rt][b].p50:.3f}/{tables[rt][b].p50 / best:.2f}" for rt in runtimes)
            print(f"  {sub.id} acc {accuracy[sub]:.4f} served on {entry.runtime:<14} b{b:<3} {cells}")
            rows.append({"id": sub.id, "accuracy": accuracy[sub], "batch": b, "served_on": entry.runtime,
                         "p50_ms": {rt: tables[rt][b].p50 for rt in runtimes},
                         "over_best": {rt: tables[rt][b].p50 / best for rt in runtimes}})  # fmt: skip
    hv: dict[str, dict[str, float]] = {}
    print("hypervolume of the accuracy-latency front (candidates' Pareto set under each view; reference: the "
          "slowest p50 of any view x1.05, the lowest accuracy - 0.01); ratio to the best-runtime view")  # fmt: skip
    for b in batches:
        ref = (1.05 * max(v[s.id].latency_ms[b].p50 for v in views.values() for s in subs),
               min(accuracy.values()) - 0.01)  # fmt: skip
        hv[str(b)] = {
            name: _hypervolume([(v[s.id].latency_ms[b].p50, accuracy[s]) for s in subs], ref)
            for name, v in views.items()
        }
        base = hv[str(b)]["best runtime per subnet"]
        print(f"  batch {b}: " + ", ".join(f"{k} {val / base:.3f}" for k, val in hv[str(b)].items()))
    return {
        "model": what, "candidates": len(subs), "profile": profile.to_dict(), "served_on": served,
        "front": [s.id for s in front], "front_rows": rows, "hypervolume": hv, "seconds": seconds,
        "_model": model, "_profile": profile, "_front": front, "_train": train, "_held": (held_a, held_b),
    }  # fmt: skip


def _served_and_alone(prepared: dict[str, Any], batches, repeats: int, shape) -> dict[tuple[str, int], dict]:
    """Per (subnet, batch): p50 ms of calls in random order (a switch before each) and of the same call repeated."""
    x = {b: np.random.default_rng(b).standard_normal((b, *shape)).astype(np.float32) for b in batches}
    keys = [(i, b) for i in prepared for b in batches]
    samples: dict[tuple[str, int], dict[str, list[float]]] = {
        k: {"served_wall": [], "served_cpu": [], "alone_wall": [], "alone_cpu": []} for k in keys
    }
    rng = random.Random(0)

    def timed(key: tuple[str, int], kind: str) -> None:
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        prepared[key[0]].run(x[key[1]])
        samples[key][f"{kind}_wall"].append((time.perf_counter_ns() - wall) / 1e6)
        samples[key][f"{kind}_cpu"].append((time.thread_time_ns() - cpu) / 1e6)

    for key in keys:
        prepared[key[0]].run(x[key[1]])  # first calls allocate
    for _ in range(repeats):
        rng.shuffle(keys)
        for key in keys:  # served: another subnet (or batch size) ran just before
            timed(key, "served")
        for key in keys:  # alone: the same call again, right after itself
            prepared[key[0]].run(x[key[1]])
            timed(key, "alone")
    return {k: {name: float(np.median(v)) for name, v in per.items()} for k, per in samples.items()}


def _capacity_per_s(view: ServingProfile, position: int) -> float:
    """Requests per second of one subnet on one worker, at its best batch size."""
    return 1000.0 * max(b / view.lat[position][j] for j, b in enumerate(view.batch_sizes))


def _slo_ms(view: ServingProfile) -> float:
    """The SLO sections 6b and 7 serve under: 4x the most accurate subnet's latency at batch 8."""
    top = len(view) - 1
    return 4 * view.lat[top][view.batch_position(min(8, view.max_batch))]


def _policy_batches(profile: Profile, seconds: float) -> tuple[list[tuple[str, int]], float, float]:
    """The batches (subnet id, size) the default policy dispatches on the runtime-aware profile for a bursty
    trace (CV^2 4) at 0.8x its most accurate subnet's capacity, with section 7's SLO; and that SLO and load."""
    view = ServingProfile(profile, "auto")
    capacity, slo_ms = _capacity_per_s(view, len(view) - 1), _slo_ms(view)
    trace = traces.bursty(0.4 * capacity, 0.4 * capacity, 4.0, seconds, seed=0)
    result = simulate(view, trace, slo_ms=slo_ms, percentile=view.percentile)
    assert result.batch_log is not None
    return [(view.subnet_ids[int(s)], int(n)) for _, s, n in result.batch_log], slo_ms, 0.8 * capacity


def _replayed_and_alone(prepared: dict[str, Any], sequence: list[tuple[str, int]], shape, min_calls: int,
                        alone_share: float = 0.5) -> dict[tuple[str, int], dict[str, float]]:
    """Per (subnet, size) called at least `min_calls` times: p50 ms of its calls in the policy's order, and of the
    same call run again right after itself (after a random `alone_share` of the calls, so that both are
    measured under the same conditions, interleaved in time)."""
    largest = max(n for _, n in sequence)
    x = np.random.default_rng(0).standard_normal((largest, *shape)).astype(np.float32)
    for key in set(sequence):
        prepared[key[0]].run(x[: key[1]])  # first calls allocate
    served: dict[tuple[str, int], list[float]] = {}
    alone: dict[tuple[str, int], list[float]] = {}
    rng = random.Random(0)
    for sid, n in sequence:
        start = time.perf_counter_ns()
        prepared[sid].run(x[:n])
        served.setdefault((sid, n), []).append((time.perf_counter_ns() - start) / 1e6)
        if rng.random() < alone_share:
            start = time.perf_counter_ns()
            prepared[sid].run(x[:n])
            alone.setdefault((sid, n), []).append((time.perf_counter_ns() - start) / 1e6)
    pairs = [k for k, v in served.items() if len(v) >= min_calls and len(alone.get(k, ())) >= 3]
    return {k: {"calls": len(served[k]), "alone_calls": len(alone[k]), "served_ms": float(np.median(served[k])),
                "alone_ms": float(np.median(alone[k])), "served_total_ms": float(np.sum(served[k]))}
            for k in pairs}  # fmt: skip


def section_as_served(model, profile, front, threads, device, quick: bool) -> dict[str, Any]:
    """The front on its runtimes in one process, called in the order the default policy dispatches batches."""
    sequence, slo_ms, rate = _policy_batches(profile, 10.0 if quick else 30.0)
    runtime_of = {s.id: profile.runtime_of(s.id) for s in front}
    used = sorted({sid for sid, _ in sequence})
    missing = [sid for sid in used if sid not in runtime_of]
    sequence = [(sid, n) for sid, n in sequence if sid in runtime_of]
    subnet_of = {s.id: s for s in front}
    prepared = {sid: get_runtime(runtime_of[sid]).prepare(model, subnet_of[sid], device=device, threads=threads)
                for sid in {sid for sid, _ in sequence}}  # fmt: skip
    try:
        measured = _replayed_and_alone(prepared, sequence, profile.input_shape, 5 if quick else 20)
    finally:
        release_all(prepared.values())
    switches = sum(1 for a, b in itertools.pairwise(sequence) if a[0] != b[0])
    sizes = sum(1 for a, b in itertools.pairwise(sequence) if a[1] != b[1])
    print(f"\n## 6b. as served: {len(sequence)} batches in the order the default policy dispatches them (bursty CV^2 4, "
          f"{rate:.0f} req/s, SLO {slo_ms:.2f} ms, simulated); {switches} subnet switches, {sizes} batch-size changes"
          + (f"; {len(missing)} subnets off the front skipped" if missing else ""))  # fmt: skip
    print(f"  {'subnet':<16} {'size':>4} {'runtime':<14} {'calls':>5} {'served p50':>10} {'alone p50':>9} {'ratio':>6}")
    rows = []
    for (sid, n), m in sorted(measured.items(), key=lambda kv: -kv[1]["calls"]):
        rows.append({"id": sid, "batch": n, "runtime": runtime_of[sid], **m, "ratio": m["served_ms"] / m["alone_ms"]})
        print(f"  {sid:<16} {n:>4} {runtime_of[sid]:<14} {m['calls']:>5} {m['served_ms']:>10.3f} {m['alone_ms']:>9.3f} "
              f"{rows[-1]['ratio']:>6.3f}")  # fmt: skip
    worst = max((r["ratio"] for r in rows if r["calls"] >= 100), default=float("nan"))  # medians of >= 50 alone calls
    counted = sum(r["calls"] for r in rows)
    weighted = sum(r["served_total_ms"] for r in rows) / sum(r["calls"] * r["alone_ms"] for r in rows) if rows else float("nan")
    met = worst <= 1.05 and weighted <= 1.05
    print(f"  compute time served / alone over the {counted} batches of these pairs: {weighted:.3f}; worst pair called "
          f">= 100 times: {worst:.3f} (target <= 1.05: {'met' if met else 'MISSED'})")  # fmt: skip
    per_subnet = {}  # compute time served / alone over each subnet's pairs: the "each subnet"
    for sid in sorted({r["id"] for r in rows}):
        mine = [r for r in rows if r["id"] == sid]
        per_subnet[sid] = sum(r["served_total_ms"] for r in mine) / sum(r["calls"] * r["alone_ms"] for r in mine)
    print("  per subnet, compute time served / alone: " + ", ".join(f"{sid} {v:.3f}" for sid, v in per_subnet.items())
          + f" (target <= 1.05: {'met' if all(v <= 1.05 for v in per_subnet.values()) else 'MISSED'})")
    return {"batches": len(sequence), "subnet_switches": switches, "size_changes": sizes, "slo_ms": slo_ms,
            "rate_per_s": rate, "rows": rows, "worst": worst, "weighted": weighted,
            "per_subnet": per_subnet}  # fmt: skip


def section_served(model, profile, front, batches, threads, repeats, device) -> dict[str, Any]:
    """The front in one process as a worker holds it (each subnet on its runtime), against an ORT-only worker."""
    workers = {
        "runtime-aware": {s.id: profile.runtime_of(s.id) for s in front},
        "ORT-only": {s.id: "onnxruntime" for s in front},
    }
    measured = {}
    for name, runtimes_of in workers.items():
        prepared = {i: get_runtime(rt).prepare(model, s, device=device, threads=threads)
                    for s, (i, rt) in zip(front, runtimes_of.items())}  # fmt: skip
        try:
            measured[name] = _served_and_alone(prepared, batches, repeats, profile.input_shape)
        finally:
            release_all(prepared.values())
    print("\n## 6. served vs alone: the front loaded in one process as a worker holds it, a switch before every call")
    print("  (served = p50 of calls in random order; alone = p50 of the same call repeated; ratios on wall ; CPU clock)")
    print(f"  {'subnet':<16} {'b':>3} {'runtime':<14} {'served ms':>9} {'/ alone':>13}   {'ORT-only served':>15} "
          f"{'/ alone':>13}   {'aware / ORT served':>18}")  # fmt: skip
    rows, worst = [], 0.0
    for (i, b), aware in measured["runtime-aware"].items():
        ort = measured["ORT-only"][(i, b)]
        ratio = aware["served_wall"] / aware["alone_wall"]
        worst = max(worst, ratio)
        row = {"id": i, "batch": b, "runtime": workers["runtime-aware"][i], "runtime_aware": aware, "ort_only": ort,
               "served_over_alone_wall": ratio, "served_over_alone_cpu": aware["served_cpu"] / aware["alone_cpu"],
               "aware_over_ort_served_wall": aware["served_wall"] / ort["served_wall"]}  # fmt: skip
        rows.append(row)
        print(f"  {i:<16} {b:>3} {row['runtime']:<14} {aware['served_wall']:>9.3f} "
              f"{ratio:>6.3f} ; {row['served_over_alone_cpu']:>4.2f}   {ort['served_wall']:>15.3f} "
              f"{ort['served_wall'] / ort['alone_wall']:>6.3f} ; {ort['served_cpu'] / ort['alone_cpu']:>4.2f}   "
              f"{row['aware_over_ort_served_wall']:>18.3f}")  # fmt: skip
    print(f"  worst served / alone, runtime-aware worker: {worst:.3f} (target <= 1.05: "
          f"{'met' if worst <= 1.05 else 'MISSED'}); the ORT-only columns show what switching alone costs")  # fmt: skip
    return {"rows": rows, "worst": worst}


def section_serving(profile: Profile, quick: bool) -> dict[str, Any]:
    views = {"runtime-aware": ServingProfile(profile, "auto"),
             "ORT-only": ServingProfile(profile, "auto", runtimes=["onnxruntime"])}  # fmt: skip
    ort = views["ORT-only"]
    capacity, fastest = _capacity_per_s(ort, len(ort) - 1), _capacity_per_s(ort, 0)
    slo_ms = _slo_ms(ort)
    duration = 10.0 if quick else 60.0
    loads = np.geomspace(0.5, 1.2 * fastest / capacity, 6)
    print(f"\n## 7. serving simulation (SlackFit, bursty CV^2 4, {duration:.0f} s per trace, SLO {slo_ms:.2f} ms, "
          f"1 worker); load = x the ORT-only capacity of its most accurate subnet ({capacity:.0f} req/s; its fastest "
          f"subnet's: {fastest:.0f} req/s)")  # fmt: skip
    for name, view in views.items():
        print(f"  {name}: {len(view)} Pareto subnets, {view.percentile_reason}; runtimes "
              + ", ".join(sorted(set(view.runtimes.values()))))
    print(f"  {'load':>5} " + " ".join(f"{n + ' attain':>22} {n + ' acc':>20}" for n in views))
    rows = []
    for load in (float(v) for v in loads):
        # half Poisson, half gamma bursts (CV^2 4): mean rate = load x capacity
        trace = traces.bursty(load * capacity / 2, load * capacity / 2, 4.0, duration, seed=len(rows))
        row: dict[str, Any] = {"load": load}
        for name, view in views.items():
            result = simulate(view, trace, policy="slackfit", slo_ms=slo_ms, percentile=view.percentile)
            row[name] = {"attainment": result.attainment, "accuracy": result.mean_accuracy or 0.0}
        rows.append(row)
        print(f"  {load:>5.2f} " + " ".join(f"{row[n]['attainment']:>22.4f} {row[n]['accuracy']:>20.4f}" for n in views))
    equal = [r for r in rows if min(r[n]["attainment"] for n in views) >= 0.99]
    verdict = {
        "loads_where_both_attain_0.99": [r["load"] for r in equal],
        "accuracy_gain_pt": [100 * (r["runtime-aware"]["accuracy"] - r["ORT-only"]["accuracy"]) for r in equal],
    }
    print("  at equal attainment (both >= 0.99): " + (", ".join(
        f"load {r['load']:.2f}: {100 * (r['runtime-aware']['accuracy'] - r['ORT-only']['accuracy']):+.2f} pt"
        for r in equal) or "no load"))  # fmt: skip
    return {"slo_ms": slo_ms, "capacity_req_s": capacity, "rows": rows, **verdict}


def section_cascade(model, profile: Profile, front, train, held: tuple[Any, Any], quick: bool) -> dict[str, Any]:
    """pair_search on the front with latencies of the runtime-aware profile vs ORT-only; thresholds on A, accuracy on B."""
    views = {"runtime-aware": profile, "ORT-only": profile.with_runtimes(["onnxruntime"])}
    slowest = max(views["ORT-only"][s.id].latency_ms[1].p50 for s in front)
    print("\n## 8. cascades (pair_search over the front; latency = expected batch-1 p50; thresholds chosen on held-out "
          "half A, accuracy on half B)")  # fmt: skip
    rows = []
    for fraction in (0.3, 0.5, 0.7, 1.0):
        budget = fraction * slowest
        row: dict[str, Any] = {"budget_ms": budget, "fraction_of_slowest_ort": fraction}
        for name, view in views.items():
            cost = ProfileCost(view, batch_size=1, space=model.space)
            kwargs = {"calib_batches": 4 if quick else 8, "batch_size": 64, "cost": cost}
            val, test = Evaluator(model, train, held[0], **kwargs), Evaluator(model, train, held[1], **kwargs)
            try:
                choice = pair_search(val, front, budget, test_evaluator=test)
            except Exception as exc:  # no cascade fits the budget
                row[name] = {"error": str(exc)}
                continue
            row[name] = {
                "little": choice.little.id, "little_runtime": view.runtime_of(choice.little.id),
                "big": None if choice.big is None else choice.big.id,
                "big_runtime": None if choice.big is None else view.runtime_of(choice.big.id),
                "threshold": choice.threshold, "expected_latency_ms": choice.expected_latency_ms,
                "accuracy_A": choice.accuracy, "accuracy_B": (choice.test or {}).get("accuracy"),
            }  # fmt: skip
        rows.append(row)
        print(f"  budget {budget:.3f} ms ({fraction:.0%} of the slowest front subnet on ORT):")
        for name in views:
            r = row[name]
            if "error" in r:
                print(f"    {name:<13} none fits")
                continue
            big = f" -> {r['big']} ({r['big_runtime']}) below confidence {r['threshold']:.3f}" if r["big"] else " alone"
            print(f"    {name:<13} {r['little']} ({r['little_runtime']}){big}; expected {r['expected_latency_ms']:.3f} ms; "
                  f"accuracy A {r['accuracy_A']:.4f}, B {r['accuracy_B']:.4f}")  # fmt: skip
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats/subnets/steps: a smoke run")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", help="a tailor checkpoint (trained with `tailor train`) for sections 2, 5-8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--runtimes", default="torch,torch-inplace,onnxruntime,openvino",
                        help="fp32 runtimes compared in sections 1 and 5-8 (add torch-compile for Inductor)")
    parser.add_argument("--sections", default="1,2,3,4,5,6,7,8", help="which sections to run (4 needs 1, 6-8 need 5)")
    parser.add_argument(
        "--out", help="JSON results (default: benchmarks/results/runtimes.json in full mode, none in quick)"
    )
    args = parser.parse_args()
    quick = args.quick
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    for name in runtimes:
        get_runtime(name).resolve(args.device, args.threads, None)  # a missing package or device: fail now
    sections = {int(x) for x in args.sections.split(",")}
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
        f"# {args.model}, threads={args.threads}, device {args.device}, runtimes {runtimes}, p50 of {repeats} calls in "
        f"{rounds} interleaved rounds{' (quick: noisy)' if quick else ''}; {device_name()}; load average {load_before:.2f}"
    )
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "device": device_name(args.device),
        "threads": args.threads,
        "runtimes": runtimes,
        "quick": quick,
        "repeats": repeats,
        "rounds": rounds,
        "load_average_before": load_before,
    }
    if 1 in sections:
        results["runtimes_uniform"] = section_runtimes(
            model, subs, runtimes, batches, args.threads, warmup, repeats, rounds, args.device
        )
    if 2 in sections:
        results["int8"] = section_int8(args, model, batches, args.threads, warmup, repeats, rounds, quick)
    if 3 in sections:
        results["predictor"] = section_predictor(model, batches, args.threads, warmup, repeats, rounds, n_train, n_test)
    if 4 in sections and 1 in sections:
        shown = [rt for rt in ("onnxruntime", "torch") if rt in runtimes]
        results["scaling"] = section_scaling(subs, results["runtimes_uniform"]["rows"], batches, shown)
    if 5 in sections:
        front = section_front(args, quick, runtimes, batches, args.threads, warmup, repeats, rounds, args.device)
        trained, profile, subnets = front.pop("_model"), front.pop("_profile"), front.pop("_front")
        train, held = front.pop("_train"), front.pop("_held")
        results["front"] = front
        if 6 in sections:
            results["served"] = section_served(trained, profile, subnets, batches, args.threads, 10 if quick else 60,
                                               args.device)  # fmt: skip
            results["as_served"] = section_as_served(trained, profile, subnets, args.threads, args.device, quick)
        if 7 in sections and "onnxruntime" in runtimes:
            results["serving"] = section_serving(profile, quick)
        if 8 in sections and "onnxruntime" in runtimes:
            results["cascade"] = section_cascade(trained, profile, subnets, train, held, quick)
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
