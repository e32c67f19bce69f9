"""Search quality: each algorithm's Pareto front against the exhaustive front of a 1,728-subnet space.

A `small_cnn` supernet (16/32/64 channels, six widths per stage, depth 1 or 2 per stage: 6^3 * 2^3 =
1,728 subnets) is trained on digits with the sandwich rule, then every subnet is calibrated and
evaluated on the held-out split (the exhaustive front). Each algorithm (NSGA-II, TPE, random,
predictor-assisted evolution with a ridge and an MLP predictor) then searches with a budget of 10% of
the space (172 distinct subnets), from three seeds, each with a fresh evaluator that really calibrates
and evaluates. Reported per algorithm: the hypervolume of its front divided by the exhaustive front's,
at 2.5%, 5% and 10% of the space, the evaluations it needed to reach 0.99, and wall time per evaluated
subnet (sampler and storage included).

The cost objective here is MACs: deterministic, so hypervolume ratios measure the search, not timing
noise. Hypervolume reference point: (MACs of the largest subnet, accuracy of the smallest), the
nadir of the exhaustive front; a looser reference (nadir moved out by 10% of the front's range) is
reported too. A second part shows the latency objective through a fitted `LatencyPredictor` (its
held-out error quoted), and a third picks (little, big, threshold) cascades on one half of the test
split and reports them on the other half, against the best single subnet chosen the same way.

    python benchmarks/search_quality.py           # ~7 min on 2 cores from scratch, ~3 min with the cache
    python benchmarks/search_quality.py --quick   # 64-subnet space, under a minute

The trained supernet and the exhaustive evaluation are cached under `.cache/search_quality/`, so
reruns skip them. Full-mode figures go to `benchmarks/results/search_quality.json` (+ an SVG).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor import SubnetNormFallbackWarning, create_model, load, save
from tailor.cost import LatencyPredictor, latency
from tailor.data import default_augmentation, load_dataset
from tailor.data.base import TensorImageDataset
from tailor.plot import Axis, xy_plot
from tailor.search import (
    Evaluator,
    MeasuredCost,
    ParetoFront,
    PredictedCost,
    front_hypervolume,
    pair_search,
    pareto_mask,
    search,
)
from tailor.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "search_quality"
RESULTS = ROOT / "benchmarks" / "results"

SETTINGS = {
    # synthetic at 16x16: 4,000 held-out images, so accuracy moves in steps of 0.025 pt and one image's
    # noise is small next to the front's range (on digits, 359 images: 0.28 pt steps over a ~5 pt range)
    ("synthetic", "full"): {"channels": (16, 32, 64), "widths": (0.25, 0.375, 0.5, 0.625, 0.75, 1.0),
                            "epochs": 15, "train": 20_000, "test": 4_000, "image_size": 16, "seeds": (0, 1, 2),
                            "fraction": 0.10, "calib_batches": 4},
    ("digits", "full"): {"channels": (16, 32, 64), "widths": (0.25, 0.375, 0.5, 0.625, 0.75, 1.0), "epochs": 30,
                         "seeds": (0, 1, 2), "fraction": 0.10, "calib_batches": 4},
    ("synthetic", "quick"): {"channels": (8, 16, 16), "widths": (0.5, 1.0), "epochs": 1, "train": 1_000,
                             "test": 400, "image_size": 16, "seeds": (0,), "fraction": 0.25, "calib_batches": 2},
    ("digits", "quick"): {"channels": (8, 16, 16), "widths": (0.5, 1.0), "epochs": 2, "seeds": (0,), "fraction": 0.25,
                          "calib_batches": 2},
}  # fmt: skip


@dataclass(frozen=True)
class Bench:
    """One benchmark setting: the data source, full or quick, and where its cache and results go."""

    data: str
    mode: str

    @property
    def cfg(self) -> dict[str, Any]:
        return SETTINGS[(self.data, self.mode)]

    @property
    def input(self) -> tuple[int, int, int]:
        return (1, 8, 8) if self.data == "digits" else (3, self.cfg["image_size"], self.cfg["image_size"])

    @property
    def cache(self) -> Path:
        return CACHE / self.mode if self.data == "digits" else CACHE / f"{self.data}-{self.mode}"

    @property
    def results(self) -> Path:
        if self.mode != "full":
            return self.cache
        return RESULTS if self.data == "synthetic" else RESULTS / f"search_quality_{self.data}"

    def load(self) -> tuple[Any, Any]:
        """(train, test) splits."""
        if self.data == "digits":
            return load_dataset("digits", "train"), load_dataset("digits", "test")
        size = self.cfg["image_size"]
        return (load_dataset("synthetic", "train", n=self.cfg["train"], image_size=size),
                load_dataset("synthetic", "test", n=self.cfg["test"], image_size=size))  # fmt: skip


ALGORITHMS = {
    "nsga2": {"algorithm": "nsga2"},
    "tpe": {"algorithm": "tpe"},
    "random": {"algorithm": "random"},
    "evolution (ridge)": {"algorithm": "evolution", "predictor": "ridge"},
    "evolution (mlp)": {"algorithm": "evolution", "predictor": "mlp"},
}
OBJECTIVES = ("accuracy", "macs")


def supernet(bench: Bench, train: Any) -> tuple[Any, dict[str, Any]]:
    """The trained supernet: loaded from the cache, or trained (sandwich rule) and cached."""
    cfg = bench.cfg
    path = bench.cache / "supernet"
    if (path / "tailor.json").exists():
        return load(path), {"trained_s": None, "cached": True}
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_chans=bench.input[0], channels=cfg["channels"],
                         widths=cfg["widths"])  # fmt: skip
    if bench.data == "digits":
        config = TrainConfig(epochs=cfg["epochs"], batch_size=64, lr=0.1, crop_padding=1, flip=False,
                             warmup_epochs=1.0 if cfg["epochs"] > 2 else 0.0, seed=0,
                             largest_only_epochs=0.0, student_ramp_epochs=0.0)  # fmt: skip
    else:
        augmentation = default_augmentation("synthetic", image_size=cfg["image_size"])
        config = TrainConfig(epochs=cfg["epochs"], batch_size=128, lr=0.1, crop_padding=augmentation.crop_padding,
                             flip=augmentation.flip, largest_only_epochs=min(1.0, cfg["epochs"] / 4), seed=0,
                             student_ramp_epochs=0.0)  # fmt: skip
    print(f"training the supernet ({cfg['epochs']} epochs, sandwich rule) ...", file=sys.stderr)
    start = time.perf_counter()
    Trainer(model, train, config, device="cpu").fit()
    seconds = time.perf_counter() - start
    save(model, path, metadata={"recipe": {"data": {"name": bench.data}}, "train": config.to_dict()})
    return model, {"trained_s": seconds, "cached": False}


def evaluator(model: Any, train: Any, test: Any, bench: Bench, cost: Any = None) -> Evaluator:
    cost = cost or MeasuredCost(model, bench.input, memory="estimate", repeats=20)
    return Evaluator(model, train, test, calib_batches=bench.cfg["calib_batches"], batch_size=128, cost=cost)


def exhaustive(model: Any, train: Any, test: Any, bench: Bench) -> ParetoFront:
    """Every subnet's accuracy and MACs (cached; recomputed when the evaluator's fingerprint changes)."""
    ev = evaluator(model, train, test, bench)
    path = bench.cache / "exhaustive.json"
    if path.exists():
        cached = ParetoFront.load(path)
        if cached.info.get("evaluator", {}).get("fingerprint") == ev.fingerprint():
            return cached
    print(f"evaluating all {model.space.size} subnets ...", file=sys.stderr)
    front = search(model, ev, OBJECTIVES, algorithm="exhaustive", budget=None, front_metrics=OBJECTIVES,
                   calibrate_front=False, progress=True)  # fmt: skip
    front.save(path)
    return front


def references(full: ParetoFront) -> dict[str, tuple[float, float]]:
    """Hypervolume reference points: the exhaustive front's nadir, and the nadir moved out by 10%."""
    acc = [e.accuracy for e in full]
    cost = [e.macs for e in full]
    nadir = (float(max(cost)), float(min(acc)))
    loose = (nadir[0] + 0.1 * (max(cost) - min(cost)), nadir[1] - 0.1 * (max(acc) - min(acc)))
    return {"nadir": nadir, "loose": loose}


def hv(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Hypervolume of the non-dominated subset of (accuracy, macs) points."""
    if not points:
        return 0.0
    values = np.array(points, dtype=float)
    front = values[pareto_mask(values, [True, False])]
    return front_hypervolume(front[:, 0], front[:, 1], reference)


def ratios_by_count(found: ParetoFront, truth: dict[str, float], ref: tuple[float, float], full_hv: float) -> list:
    """Hypervolume ratio of the front of the first k evaluated subnets, for every k (evaluation order)."""
    points = [(truth[c.subnet.id], float(c.macs)) for c in found.evaluated]
    return [hv(points[:k], ref) / full_hv for k in range(1, len(points) + 1)]


def run_algorithms(model: Any, train: Any, test: Any, bench: Bench, full: ParetoFront) -> dict[str, Any]:
    cfg = bench.cfg
    size = model.space.size
    budget = int(cfg["fraction"] * size)
    refs = references(full)
    truth = {c.subnet.id: c.accuracy for c in full.evaluated}
    full_hv = {name: full.hypervolume("macs", ref) for name, ref in refs.items()}
    marks = sorted({max(1, int(f * size)) for f in (0.025, 0.05, cfg["fraction"])} | {budget})
    results: dict[str, Any] = {}
    fronts: dict[str, ParetoFront] = {}
    for label, kwargs in ALGORITHMS.items():
        runs = []
        for seed in cfg["seeds"]:
            ev = evaluator(model, train, test, bench)
            front = search(model, ev, OBJECTIVES, budget=budget, seed=seed, front_metrics=OBJECTIVES,
                           calibrate_front=False, **kwargs)  # fmt: skip
            mismatched = sum(1 for c in front.evaluated if c.accuracy != truth[c.subnet.id])
            curve = ratios_by_count(front, truth, refs["nadir"], full_hv["nadir"])
            reached = next((k + 1 for k, r in enumerate(curve) if r >= 0.99), None)
            runs.append({
                "seed": seed,
                "hv_ratio": {name: front.hypervolume("macs", ref) / full_hv[name] for name, ref in refs.items()},
                "hv_ratio_at": {str(k): curve[k - 1] for k in marks if k <= len(curve)},
                "evaluations_to_0.99": reached,
                "front_size": len(front),
                "evaluated": front.info["evaluated"],
                "trials": front.info["trials"],
                "seconds_per_evaluation": front.info["seconds_per_evaluation"],
                "accuracy_mismatches_vs_exhaustive": mismatched,
            })  # fmt: skip
            if seed == cfg["seeds"][0]:
                fronts[label] = front
            print(f"  {label:<18} seed {seed}: HV ratio {runs[-1]['hv_ratio']['nadir']:.4f} "
                  f"({len(front)} on the front, {front.info['seconds_per_evaluation'] * 1e3:.0f} ms/subnet)",
                  file=sys.stderr)  # fmt: skip
        results[label] = {"runs": runs, "budget": budget}
    return {"results": results, "fronts": fronts, "marks": marks, "budget": budget, "references": refs,
            "exhaustive_hv": full_hv}  # fmt: skip


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def print_quality(part: dict[str, Any], full: ParetoFront, size: int, floor_s: float) -> None:
    marks, budget = part["marks"], part["budget"]
    print(f"\nHypervolume ratio to the exhaustive front (objectives accuracy and MACs; median over seeds; "
          f"budget {budget} = {100 * budget / size:.1f}% of {size} subnets)")  # fmt: skip
    head = " ".join(f"{f'@{k} ({100 * k / size:.1f}%)':>15}" for k in marks)
    print(f"{'algorithm':<19} {head} {'loose ref':>10} {'evals to 0.99':>14} {'ms/subnet':>10} {'front':>6}")
    for label, entry in part["results"].items():
        runs = entry["runs"]
        at = " ".join(f"{median([r['hv_ratio_at'].get(str(k), float('nan')) for r in runs]):>15.4f}" for k in marks)
        reached = [r["evaluations_to_0.99"] for r in runs]
        reached_text = "/".join("-" if x is None else str(x) for x in reached)
        ms = median([r["seconds_per_evaluation"] for r in runs]) * 1e3
        print(f"{label:<19} {at} {median([r['hv_ratio']['loose'] for r in runs]):>10.4f} {reached_text:>14} "
              f"{ms:>10.1f} {median([r['front_size'] for r in runs]):>6.0f}")  # fmt: skip
    mism = sum(r["accuracy_mismatches_vs_exhaustive"] for e in part["results"].values() for r in e["runs"])
    on_front = set(full.subnets)
    rest = [(c.accuracy, float(c.macs)) for c in full.evaluated if c.subnet not in on_front]
    part["without_true_front"] = hv(rest, part["references"]["nadir"]) / part["exhaustive_hv"]["nadir"]
    print(f"every subnet except the {len(full)} on the exhaustive front: HV ratio {part['without_true_front']:.4f} "
          "(what a search that misses all of them can still reach)")  # fmt: skip
    print(f"evaluation alone (calibrate + evaluate + MACs, no sampler, same run): {floor_s * 1e3:.1f} ms/subnet")
    print(f"exhaustive: {len(full)} subnets on the front, {full.info['seconds_per_evaluation'] * 1e3:.1f} ms/subnet "
          f"({full.info['search_s']:.0f} s for all, when the cache was built); accuracies that differ from the "
          f"exhaustive run: {mism}")  # fmt: skip


def evaluation_only(model: Any, train: Any, test: Any, bench: Bench, count: int) -> float:
    """Seconds per subnet to calibrate, evaluate and count MACs with no sampler or study: the floor."""
    ev = evaluator(model, train, test, bench)
    rng = random.Random(1)
    subs = list(dict.fromkeys(model.space.canonical(model.space.sample(rng)) for _ in range(count)))
    start = time.perf_counter()
    for sub in subs:
        ev.metrics(sub, OBJECTIVES)
    return (time.perf_counter() - start) / len(subs)


def sqlite_overhead(model: Any, train: Any, test: Any, bench: Bench, budget: int) -> dict[str, float]:
    """NSGA-II with the study in a SQLite file instead of memory: seconds per evaluated subnet."""
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for where, storage in (("memory", None), ("sqlite", Path(scratch) / "study.db")):
            front = search(model, evaluator(model, train, test, bench), OBJECTIVES, algorithm="nsga2", budget=budget,
                           storage=storage, front_metrics=OBJECTIVES, calibrate_front=False)  # fmt: skip
            out[where] = front.info["seconds_per_evaluation"]
    print(f"\nstudy storage: {out['memory'] * 1e3:.1f} ms/subnet in memory, {out['sqlite'] * 1e3:.1f} ms/subnet in "
          f"SQLite (NSGA-II, {budget} subnets)")  # fmt: skip
    return out


def latency_part(model: Any, train: Any, test: Any, bench: Bench, full: ParetoFront, budget: int) -> dict[str, Any]:
    """Accuracy vs latency through a fitted LatencyPredictor: its held-out error, the front it gives, and
    the measured latency of that front's subnets."""
    space, rng = model.space, random.Random(0)
    fit_n, held_n = (24, 24) if bench.mode == "full" else (8, 8)
    subs = list(dict.fromkeys([space.largest(), space.smallest()]))
    while len(subs) < fit_n + held_n:
        sub = space.canonical(space.sample(rng))
        if sub not in subs:
            subs.append(sub)

    def measure(sub: Any) -> float:
        """Median of three p50s (50 timed calls each): a load spike on the shared machine moves one, not all."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            return float(np.median([latency(model, sub, 1, "torch", 1, 10, 50, bench.input).p50 for _ in range(3)]))

    start = time.perf_counter()
    measured = [measure(s) for s in subs]
    predictor = LatencyPredictor(model, 1, bench.input).fit(subs[:fit_n], measured[:fit_n])
    error = predictor.error_report(subs[fit_n:], measured[fit_n:])
    fit_s = time.perf_counter() - start
    ev = evaluator(model, train, test, bench, cost=[PredictedCost(predictor, error),
                                                   MeasuredCost(model, bench.input, memory="estimate", repeats=20)])  # fmt: skip
    front = search(model, ev, ("accuracy", "latency"), algorithm="nsga2", budget=budget, seed=0)
    # the exhaustive front in the (accuracy, predicted latency) plane
    truth = {c.subnet: c.accuracy for c in full.evaluated}
    start = time.perf_counter()
    predicted = {s: ev.metrics(s, ("latency",))["latency"] for s in truth}
    predict_all_s = time.perf_counter() - start
    smallest_acc = truth[space.canonical(space.smallest())]
    ref = (max(predicted.values()), smallest_acc)
    all_points = [(truth[s], predicted[s]) for s in truth]
    found_points = [(truth[c.subnet], c["latency"]) for c in front.evaluated]
    ratio = hv(found_points, ref) / hv(all_points, ref)
    front_measured = [measure(e.subnet) for e in front]
    front_ape = [abs(e.latency_ms - m) / m * 100 for e, m in zip(front, front_measured)]
    print(f"\nlatency objective via LatencyPredictor (fitted on {fit_n} measured subnets, torch, 1 thread, median of 3 p50s; "
          f"held-out MAPE {error.mape:.1f}%, worst {error.max_ape:.1f}% on {error.n}):")  # fmt: skip
    print(f"  NSGA-II, {budget} subnets: {len(front)} on the front; HV ratio {ratio:.4f} vs the exhaustive front under "
          f"predicted latency (reference: max predicted latency, accuracy {smallest_acc:.4f} of the smallest)")  # fmt: skip
    print(f"  front subnets re-measured: predicted vs measured latency MAPE {np.mean(front_ape):.1f}%, "
          f"worst {np.max(front_ape):.1f}%; {'ms':>3} predicted/measured: "
          + ", ".join(f"{e.latency_ms:.3f}/{m:.3f}" for e, m in zip(front, front_measured)))  # fmt: skip
    return {
        "predictor": {"fit_subnets": fit_n, "held_out": error.to_dict(), "fit_and_measure_s": fit_s,
                      "predict_all_s": predict_all_s},
        "hv_ratio_vs_exhaustive_predicted": ratio,
        "front": [{"id": e.subnet.id, "accuracy": e.accuracy, "predicted_ms": e.latency_ms, "measured_ms": m}
                  for e, m in zip(front, front_measured)],
        "front_mape": float(np.mean(front_ape)),
        "seconds_per_evaluation": front.info["seconds_per_evaluation"],
        "_front": front,
    }  # fmt: skip


def pair_part(model: Any, train: Any, test: Any, bench: Bench, front: ParetoFront) -> list[dict[str, Any]]:
    """Cascades chosen on half of the test split and reported on the other half, vs the best single subnet."""
    half = len(test) // 2
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    halves = []
    for idx in (order[:half], order[half:]):
        halves.append(TensorImageDataset(test.images[idx], test.labels[idx], test.classes, mean=test.mean,
                                         std=test.std, name=f"{bench.data}/test-half"))  # fmt: skip
    cost = MeasuredCost(model, bench.input, memory="estimate", repeats=50)
    select = evaluator(model, train, halves[0], bench, cost=cost)
    report = evaluator(model, train, halves[1], bench, cost=cost)
    subs = front.subnets
    lat = {s: select.metrics(s, ("latency",))["latency"] for s in subs}
    low, high = min(lat.values()), max(lat.values())
    rows = []
    print("\ncascades (little -> big when little's max-softmax < threshold), chosen on one half of the test split, "
          "reported on the other:")  # fmt: skip
    print(f"{'budget ms':>10} {'single: select':>15} {'report':>7} {'cascade: select':>16} {'report':>7} "
          f"{'expected ms (report)':>21} {'escalated (report)':>19}")  # fmt: skip
    for share in (0.25, 0.5, 0.75):
        budget = low + share * (high - low)
        fitting = [s for s in subs if lat[s] <= budget]
        best_single = max(fitting, key=lambda s: (select.metrics(s)["accuracy"], -lat[s]))
        single = {"select": select.metrics(best_single)["accuracy"], "report": report.metrics(best_single)["accuracy"]}
        choice = pair_search(select, subs, budget, test_evaluator=report)
        rows.append({"budget_ms": budget, "single": {"id": best_single.id, **single}, "cascade": choice.to_dict()})
        print(f"{budget:>10.3f} {single['select']:>15.4f} {single['report']:>7.4f} {choice.accuracy:>16.4f} "
              f"{choice.test['accuracy']:>7.4f} {choice.test['expected_latency_ms']:>21.3f} "
              f"{choice.test['escalation_rate']:>19.2%}")  # fmt: skip
    return rows


def plot(part: dict[str, Any], full: ParetoFront, path: Path) -> Path:
    series = {"exhaustive front": [(e.macs / 1e3, e.accuracy) for e in full]}
    for label, front in part["fronts"].items():
        series[label] = [(e.macs / 1e3, e.accuracy) for e in front]
    return xy_plot(series, path, title=f"Fronts after {part['budget']} of {full.info['space_size']} subnets "
                   "(seed 0) vs exhaustive", x=Axis("kMACs per image"), y=Axis("held-out accuracy", percent=True),
                   lines=list(series))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["synthetic", "digits"], default="synthetic",
                        help="synthetic (16x16, 4,000 held-out images; default) or digits (359 held-out images)")
    parser.add_argument("--quick", action="store_true", help="64-subnet space, tiny training, one seed (a smoke run)")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached supernet and evaluation")
    args = parser.parse_args()
    bench = Bench(args.data, "quick" if args.quick else "full")
    torch.set_num_threads(1)
    if args.retrain:
        for name in ("supernet/tailor.json", "exhaustive.json"):
            (bench.cache / name).unlink(missing_ok=True)
    started = time.perf_counter()
    train, test = bench.load()
    model, training = supernet(bench, train)
    full = exhaustive(model, train, test, bench)
    size = model.space.size
    print(f"small_cnn {bench.cfg['channels']} on {bench.data} {bench.input} ({len(train)} train / {len(test)} test): "
          f"{size} subnets; exhaustive front: {len(full)} subnets, accuracy {full[0].accuracy:.4f} .. "
          f"{full[-1].accuracy:.4f}, {full[0].macs} .. {full[-1].macs} MACs")  # fmt: skip
    part = run_algorithms(model, train, test, bench, full)
    floor_s = evaluation_only(model, train, test, bench, 50 if bench.mode == "full" else 10)
    print_quality(part, full, size, floor_s)
    storage = sqlite_overhead(model, train, test, bench, min(part["budget"], 60))
    lat = latency_part(model, train, test, bench, full, part["budget"])
    pairs = pair_part(model, train, test, bench, lat.pop("_front"))
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s (torch threads 1)")
    report = {
        "space": {"model": "small_cnn", **{k: bench.cfg[k] for k in ("channels", "widths", "epochs")},
                  "subnets": size, "data": bench.data, "input": list(bench.input), "train_samples": len(train),
                  "test_samples": len(test)},
        "training": training,
        "exhaustive": {"front": [c.to_dict() for c in full], "seconds_per_evaluation": full.info["seconds_per_evaluation"],
                       "search_s": full.info["search_s"]},
        "hypervolume": {"objectives": list(OBJECTIVES), "references": part["references"],
                        "exhaustive_hv": part["exhaustive_hv"], "budget": part["budget"], "marks": part["marks"],
                        "ratio_without_true_front": part["without_true_front"]},
        "algorithms": part["results"],
        "evaluation_only_seconds_per_subnet": floor_s,
        "storage_seconds_per_evaluation": storage,
        "latency_via_predictor": lat,
        "cascades": pairs,
        "total_s": total,
    }  # fmt: skip
    target = bench.results
    target.mkdir(parents=True, exist_ok=True)
    (target / "search_quality.json").write_text(json.dumps(report, indent=1) + "\n")
    figure = plot(part, full, target / "search_quality_fronts.svg")
    print(f"results: {target / 'search_quality.json'}  plot: {figure}")


if __name__ == "__main__":
    main()
