"""`tailor demo`: the whole system on the bundled default, from an untrained supernet to a serving report.

Train a resnet20 supernet on `synthetic` (largest-first, then the sandwich rule with in-place distillation),
profile subnets on ONNX Runtime and fit a latency predictor, search the accuracy/latency Pareto front
(NSGA-II, each candidate calibrated and evaluated on held-out images), measure the front on ONNX Runtime
at several batch sizes (the serving profile), build a little/big cascade and sweep its threshold, simulate
serving a bursty trace with DrainFit (the default policy) and SlackFit against every fixed front subnet, and write `report/index.html` with a
JSON of every figure. Every number in the report is computed in this run; nothing is quoted from elsewhere.
`--quick` is a smoke run of the same steps on `digits` (small 8x8 images on which the resnet20 supernet
passes 90% within its 10 epochs), sized for CI; its report says so at the top.
"""

from __future__ import annotations

import datetime
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailor.cost import Profile, build_profile, macs
from tailor.cost.predict import ErrorReport, LatencyPredictor
from tailor.data import default_augmentation, load_dataset
from tailor.errors import SubnetNormFallbackWarning, TailorError
from tailor.models import create_model
from tailor.ops import ElasticModel
from tailor.progress import Progress
from tailor.route.evaluate import sweep, threshold_grid
from tailor.route.policies import Confidence, StageOutput, softmax_confidence
from tailor.search import Candidate, Evaluator, ParetoFront, search
from tailor.search.costs import MeasuredCost, PredictedCost
from tailor.serve import DEFAULT_POLICY, simulate, traces
from tailor.serve.profile import ServingProfile
from tailor.space import Subnet
from tailor.train import EpochRecord, TrainConfig, Trainer

HELD_OUT_SUBNETS = 4  # measured but not fitted: the latency predictor's error is reported on these


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run; `quick()` is the CI-sized smoke run (about a minute on 2 cores; the full run about 6).

    `data` is `synthetic` or `digits`; `train_size`/`test_size` None take the data set's whole split.
    """

    model: str = "resnet20"
    data: str = "synthetic"
    train_size: int | None = 10000
    test_size: int | None = 2000
    epochs: int = 7
    batch_size: int = 128
    calib_batches: int = 4
    profile_subnets: int = 24  # measured on ONNX Runtime to fit the latency predictor
    search_budget: int = 40
    front_max: int = 6  # front subnets measured at every batch size and served
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    repeats: int = 30
    trace_seconds: float = 60.0
    seed: int = 0
    threads: int = 2
    smoke: bool = False  # a smoke run: its numbers check the pipeline, they are not findings

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The smoke run: digits (1,438 / 359 images of 8x8), 10 epochs, a small search and a 10 s trace."""
        values: dict[str, Any] = dict(
            data="digits",
            train_size=None,
            test_size=None,
            epochs=10,
            batch_size=64,
            calib_batches=2,
            profile_subnets=10,
            search_budget=10,
            front_max=4,
            batch_sizes=(1, 4, 16),
            repeats=8,
            trace_seconds=10.0,
            smoke=True,
        )
        values.update(overrides)
        return cls(**values)


# -- the figures each step hands on (serialised, in this order, to figures.json) ---------------------------
@dataclass
class RunInfo:
    """What a reader needs to weigh the numbers: mode, seed, versions, threads, machine, date, load."""

    mode: str
    data: str
    model: str
    seed: int
    threads: int
    started_utc: str
    cpu_count: int | None
    load_average_start: float | None
    tailor_version: str
    torch_version: str
    onnxruntime_version: str
    numpy_version: str
    optuna_version: str
    python_version: str
    platform: str
    duration_s: float | None = None
    load_average_end: float | None = None


@dataclass
class TrainingEpoch:
    """One epoch: mean training losses by role, held-out accuracy of the largest and smallest subnet, seconds."""

    epoch: int
    loss: dict[str, float]
    accuracy: dict[str, float]
    seconds: float


@dataclass
class TrainingFigures:
    """Step 1: the supernet's training (data, sizes, final accuracies, per-epoch history)."""

    data: str
    input_size: list[int]
    epochs: int
    largest_only_epochs: float | None
    train_size: int
    test_size: int
    largest_accuracy: float
    smallest_accuracy: float
    history: list[TrainingEpoch]


@dataclass
class PredictorFigures:
    """Step 2: the latency predictor, fitted on measured subnets and checked on held-out ones (percent errors)."""

    fitted_on: int
    held_out: int
    mape: float
    max_ape: float


@dataclass
class SearchFigures:
    """Step 3: every evaluated subnet and the front (rows of metrics by name, with the subnet id)."""

    evaluated: list[dict[str, Any]]
    front: list[dict[str, Any]]
    budget: int
    space_size: int


@dataclass
class ProfileRow:
    """Step 4: one served front subnet, with its median latency (ms) per batch size."""

    id: str
    accuracy: float | None
    macs: int
    latency_ms: dict[str, float]


@dataclass
class CascadeFigures:
    """Step 5: the little/big cascade, its stage latencies and its threshold sweep."""

    little: str
    big: str
    stage_latency_ms: list[float]
    big_accuracy: float
    points: list[dict[str, Any]]


@dataclass
class ServingFigures:
    """Step 6: the bursty trace, the SLO, and each policy's simulated result."""

    percentile: str
    subnet_ids: list[str]
    slo_ms: float
    requests: int
    mean_rate: float
    best_subnet_capacity: float
    results: dict[str, dict[str, Any]]


@dataclass
class DemoFigures:
    """Every number of a demo run, by step; `to_dict()` is `figures.json` (what the report reads by key)."""

    run: RunInfo
    config: DemoConfig
    training: TrainingFigures
    predictor: PredictorFigures
    search: SearchFigures
    profile: list[ProfileRow]
    cascade: CascadeFigures
    serving: ServingFigures
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Steps:
    """Prints one line per pipeline step with its wall time (stderr), the demo's outer progress bar, and keeps
    each step's seconds (`timings`, by the key the step is run under)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def run(self, label: str, key: str, fn: Callable[[], Any]) -> Any:
        self.done += 1
        if self.enabled:
            print(f"[{self.done}/{self.total}] {label} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = fn()
        elapsed = self.timings[key] = time.perf_counter() - start
        if self.enabled:
            total = time.perf_counter() - self.started
            print(f"[{self.done}/{self.total}] {label}: {elapsed:.1f} s (total {total:.0f} s)", file=sys.stderr)
        return result


def _load_average() -> float | None:
    """The 1-minute load average, or None where the system does not report one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _run_info(config: DemoConfig) -> RunInfo:
    """What a reader needs to weigh the numbers: mode, seed, versions, threads, machine, date, load."""
    import numpy
    import onnxruntime
    import optuna

    import tailor

    return RunInfo(
        mode="quick (smoke run)" if config.smoke else "full",
        data=config.data,
        model=config.model,
        seed=config.seed,
        threads=config.threads,
        started_utc=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        cpu_count=os.cpu_count(),
        load_average_start=_load_average(),
        tailor_version=tailor.__version__,
        torch_version=torch.__version__,
        onnxruntime_version=onnxruntime.__version__,
        numpy_version=numpy.__version__,
        optuna_version=optuna.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
    )


def _history(history: list[EpochRecord], largest: Subnet, smallest: Subnet) -> list[TrainingEpoch]:
    """Per epoch: mean training losses by role, held-out accuracy of the largest and smallest subnets, seconds."""
    return [
        TrainingEpoch(
            epoch=index + 1,
            loss=dict(entry.loss),
            accuracy={"largest": entry.accuracy[largest.id], "smallest": entry.accuracy[smallest.id]},
            seconds=entry.seconds,
        )
        for index, entry in enumerate(history)
        if entry.accuracy is not None
    ]


def _logits(model: ElasticModel, sub: Subnet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Held-out logits of one subnet with its calibrated SubnetNorm statistics (eval mode)."""
    model.activate(sub)
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _pick_front(entries: list[Any], count: int) -> list[Any]:
    """At most `count` front entries spread evenly from the cheapest to the most accurate."""
    if len(entries) <= count:
        return list(entries)
    step = (len(entries) - 1) / (count - 1)
    return [entries[round(i * step)] for i in range(count)]


@dataclass
class _Pipeline:
    """What every step of one run reads: its sizes, where it writes, the supernet and the data."""

    config: DemoConfig
    out: Path
    progress: bool
    model: ElasticModel
    train: Any
    test: Any
    steps: _Steps


def run_demo(out_dir: str | Path, config: DemoConfig | None = None, progress: bool = True) -> DemoFigures:
    """Run the pipeline, write `out_dir/index.html`, `figures.json`, `profile.json`, `front.json` and the plots."""
    from tailor.report import write_report

    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    run_start = time.perf_counter()
    run = _run_info(config)
    p = _setup(config, out, progress)
    training = _train(p)
    predictor, error, predictor_figures = _fit_predictor(p)
    front, search_figures = _search(p, predictor, error)
    served, profile, rows = _profile_front(p, front)
    cascade = p.steps.run("build and sweep a little/big cascade", "cascade_s", lambda: _cascade(p, served, profile))
    serving = p.steps.run("simulate serving a bursty trace", "serving_s", lambda: _serve(p, profile))
    run.duration_s = time.perf_counter() - run_start
    run.load_average_end = _load_average()
    figures = DemoFigures(run, config, training, predictor_figures, search_figures, rows, cascade, serving,
                          dict(p.steps.timings))  # fmt: skip
    write_report(figures.to_dict(), out)
    return figures


def _setup(config: DemoConfig, out: Path, progress: bool) -> _Pipeline:
    """The data splits and the untrained supernet, sized to the data's images."""

    def split(name: str, size: int | None) -> Any:
        sizes = {} if size is None else {"n": size}
        return load_dataset(config.data, name, seed=config.seed, **sizes)

    train, test = split("train", config.train_size), split("test", config.test_size)
    model = create_model(config.model, num_classes=train.num_classes, in_chans=train.input_size[0])
    model.default_input_size = tuple(train.input_size)  # costs are measured at the size the data has
    return _Pipeline(config, out, progress, model, train, test, _Steps(6, progress))


def _train(p: _Pipeline) -> TrainingFigures:
    """1. Train the supernet (largest first, then the sandwich rule with in-place distillation)."""
    config, space = p.config, p.model.space
    augmentation = default_augmentation(config.data)
    train_config = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        largest_only_epochs=config.epochs / 4,
        calib_batches=config.calib_batches,
        crop_padding=augmentation.crop_padding,
        flip=augmentation.flip,
        seed=config.seed,
    )
    trainer = Trainer(
        p.model, p.train, train_config, eval_data=p.test, eval_subnets=[space.largest(), space.smallest()],
        device="cpu", progress=p.progress,
    )  # fmt: skip
    history = p.steps.run("train the supernet", "train_s", trainer.fit)
    final = history[-1].accuracy or {}
    return TrainingFigures(
        data=config.data,
        input_size=list(p.train.input_size),
        epochs=config.epochs,
        largest_only_epochs=train_config.largest_only_epochs,
        train_size=len(p.train),
        test_size=len(p.test),
        largest_accuracy=final[space.largest().id],
        smallest_accuracy=final[space.smallest().id],
        history=_history(history, space.largest(), space.smallest()),
    )


def _fit_predictor(p: _Pipeline) -> tuple[LatencyPredictor, ErrorReport, PredictorFigures]:
    """2. Profile subnets on ONNX Runtime and fit a latency predictor (batch 1), checked on held-out subnets."""
    config, model, space = p.config, p.model, p.model.space
    rng = random.Random(config.seed)
    probe = [space.largest(), space.smallest(), space.uniform(0.5), space.uniform(0.75)]
    while len(probe) < config.profile_subnets + HELD_OUT_SUBNETS:
        candidate = space.sample(rng)
        if candidate not in probe:
            probe.append(candidate)

    def measure_probe() -> Profile:
        return build_profile(model, probe, batch_sizes=(1,), runtime="onnxruntime", threads=1,
                             warmup=3, repeats=config.repeats, model_name=config.model,
                             progress=Progress("timing", enabled=p.progress, unit="run"))  # fmt: skip

    probe_profile = p.steps.run("profile subnets on ONNX Runtime", "profile_s", measure_probe)
    measured = {e.subnet: e.latency_ms[1].p50 for e in probe_profile.subnets}
    fit_subs, held_out = probe[:-HELD_OUT_SUBNETS], probe[-HELD_OUT_SUBNETS:]
    predictor = LatencyPredictor(model, batch_size=1).fit(fit_subs, [measured[s] for s in fit_subs])
    error = predictor.error_report(held_out, [measured[s] for s in held_out])
    return predictor, error, PredictorFigures(len(fit_subs), len(held_out), error.mape, error.max_ape)


def _search(p: _Pipeline, predictor: LatencyPredictor, error: ErrorReport) -> tuple[ParetoFront, SearchFigures]:
    """3. Search the accuracy / latency Pareto front (NSGA-II, latency predicted); writes `front.json`."""
    config, model = p.config, p.model
    evaluator = Evaluator(
        model, p.train, p.test, calib_batches=config.calib_batches, batch_size=config.batch_size, seed=config.seed,
        cost=[PredictedCost(predictor, error), MeasuredCost(model, memory="estimate")],
    )  # fmt: skip
    budget = min(config.search_budget, model.space.size)

    def run_search() -> ParetoFront:
        return search(model, evaluator, objectives=("accuracy", "latency"), algorithm="nsga2", budget=budget,
                      seed=config.seed, front_metrics=("macs", "params"), progress=p.progress)  # fmt: skip

    front = p.steps.run("search the Pareto front (NSGA-II)", "search_s", run_search)
    if not front.entries:
        raise TailorError("demo: the search returned an empty front")
    front.save(p.out / "front.json")
    return front, SearchFigures(
        evaluated=[{"id": c.subnet.id, **c.metrics, "macs": macs(model, c.subnet)} for c in front.evaluated],
        front=[{"id": c.subnet.id, **c.metrics} for c in front.entries],
        budget=budget,
        space_size=model.space.size,
    )


def _profile_front(p: _Pipeline, front: ParetoFront) -> tuple[list[Candidate], Profile, list[ProfileRow]]:
    """4. Measure the chosen front subnets at every batch size: the serving profile (`profile.json`)."""
    config = p.config
    served = _pick_front(list(front.entries), config.front_max)
    accuracy = {c.subnet: c.accuracy for c in served}

    def measure_front() -> Profile:
        return build_profile(p.model, [c.subnet for c in served], batch_sizes=config.batch_sizes,
                             runtime="onnxruntime", threads=1, warmup=3, repeats=config.repeats, accuracy=accuracy,
                             model_name=config.model, progress=Progress("timing", enabled=p.progress, unit="run"))  # fmt: skip

    profile = p.steps.run("measure the front at every batch size", "front_profile_s", measure_front)
    profile.save(p.out / "profile.json")
    entries = sorted(profile.subnets, key=lambda e: e.latency_ms[1].p50)
    rows = [ProfileRow(e.id, e.accuracy, e.macs, {str(b): e.latency_ms[b].p50 for b in config.batch_sizes})
            for e in entries]  # fmt: skip
    return served, profile, rows


def _cascade(p: _Pipeline, served: list[Candidate], profile: Profile) -> CascadeFigures:
    """5. A little/big cascade over the served front subnets, confidence policy, thresholds swept."""
    model, test = p.model, p.test
    big = max(served, key=lambda c: c.accuracy)
    cheap = [c for c in served if c.subnet != big.subnet]
    little = min(cheap, key=lambda c: c.latency_ms) if cheap else big
    images = test.normalize(test.images)
    with warnings.catch_warnings():  # front subnets keep their calibrated statistics (calibrate_front)
        warnings.simplefilter("error", SubnetNormFallbackWarning)
        outputs = [StageOutput(_logits(model, c.subnet, images)) for c in (little, big)]
    lat = {e.subnet: e.latency_ms[1].p50 for e in profile.subnets}
    costs = [lat[little.subnet], lat[big.subnet]]
    points = sweep(outputs, test.labels, Confidence(0.5), costs,
                   threshold_grid(softmax_confidence(outputs[0].logits), points=21))  # fmt: skip
    largest_alone = float((outputs[1].logits.argmax(1) == test.labels).float().mean())
    return CascadeFigures(little.subnet.id, big.subnet.id, costs, largest_alone, [pt.to_dict() for pt in points])


def _serve(p: _Pipeline, profile: Profile) -> ServingFigures:
    """6. Serve a bursty trace: DrainFit and SlackFit against every fixed front subnet (and the upper bound)."""
    config = p.config
    view = ServingProfile(profile, percentile="p50")
    biggest = view.subnet_ids[-1]
    top_batch = view.batch_sizes[-1]
    capacity = top_batch / view.latency_ms(biggest, top_batch) * 1000.0  # req/s of the best subnet alone
    slo_ms = 2.0 * view.latency_ms(biggest, min(8, top_batch)) + view.latency_ms(view.subnet_ids[0], 1)
    trace = traces.bursty(0.6 * capacity, 0.9 * capacity, cv2=4.0, duration_s=config.trace_seconds, seed=config.seed)
    policies = [DEFAULT_POLICY, "slackfit", "maxacc", "infaas"]
    policies += [f"fixed:{sid}" for sid in view.subnet_ids] + ["upper_bound"]
    results = {name: simulate(view, trace, policy=name, slo_ms=slo_ms, workers=1) for name in policies}
    with_series = (DEFAULT_POLICY, "slackfit", f"fixed:{biggest}")
    return ServingFigures(
        percentile=view.percentile,
        subnet_ids=list(view.subnet_ids),
        slo_ms=slo_ms,
        requests=len(trace),
        mean_rate=len(trace) / config.trace_seconds,
        best_subnet_capacity=capacity,
        results={name: r.to_dict(series=name in with_series) for name, r in results.items()},
    )
