"""`search()`: the Pareto front of a supernet's subnets under latency, MAC and memory budgets.

Every algorithm (`tailor.search.algorithms`) runs inside an Optuna study, so results persist in its storage
and several workers can share one study. `search()` checks its arguments, opens (or resumes) the study,
evaluates what the algorithm chooses through a `SearchRun`, and builds the front. A trial suggests one index
per dimension (`SpaceEncoding`), the evaluator measures what is missing (cached by subnet, and shared through
the study's trials), and the trial records `{"subnet", "metrics", "violation", "evaluated", "worker"}` in its
user attribute `tailor`; its constraints go to `trial.set_constraint` (the successor of the `constraints_func`
argument, deprecated in Optuna 5.0), which NSGA-II and TPE read. The budget counts distinct subnets in the
study (all workers together); duplicates a sampler proposes again are answered from the cache and cost nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tailor.progress import Progress
from tailor.search.algorithms.base import SearchAlgorithm, make_algorithm
from tailor.search.encoding import SpaceEncoding
from tailor.search.evaluator import BaseEvaluator
from tailor.search.metrics import (
    ACCURACY,
    FRONT_METRICS,
    SearchError,
    check_constraints,
    check_metric,
    check_objectives,
    feasible,
    maximize,
    needed,
    violations,
)
from tailor.search.pareto import Candidate, MetricName, ParetoFront
from tailor.search.study import open_storage
from tailor.space import Subnet
from tailor.space.notation import SubnetSchema
from tailor.validation import validate

ATTR = "tailor"
STUDY_ATTR = "tailor.search"


class TrialRecord(BaseModel):
    """What a trial stores in its user attribute `tailor` (read back from a shared study by every worker)."""

    model_config = ConfigDict(extra="allow")
    subnet: SubnetSchema
    metrics: dict[MetricName, Annotated[float, Field(strict=True, allow_inf_nan=False)]]


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna without its per-trial INFO lines and experimental-feature warnings (restored afterwards)."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


class SearchRun:
    """One worker's share of a search, as an algorithm drives it: the study, the study-wide subnet table, the
    objective and the stopping rule.

    What an algorithm reads: `encoding`, `objectives`, `constraints`, `needed` (the metrics measured during the
    search), `budget`, `known` ({canonical subnet: metrics} of the whole study), `first` (the subnets to
    evaluate first: the largest and smallest of a new study, then `include`), `max_trials` (the trial cap of a
    sampler's run), `seed` and `worker` (this worker's number). What it calls: `evaluate(subnets)`,
    `optimize(n_trials, target)` and `sync()`.
    """

    def __init__(
        self,
        evaluator: BaseEvaluator,
        encoding: SpaceEncoding,
        objectives: tuple[str, ...],
        constraints: dict[str, float],
        budget: int,
        study: Any,
        progress: Progress,
        *,
        seed: int = 0,
        worker: int = 0,
        first: Sequence[Subnet] = (),
        max_trials: int | None = None,
        shared: bool = True,
    ) -> None:
        self.evaluator, self.encoding = evaluator, encoding
        self.objectives, self.constraints = objectives, constraints
        self.needed = needed(objectives, constraints)
        self.budget, self.study, self.progress = budget, study, progress
        self.seed, self.worker = seed, worker
        self.first = list(first)
        self.max_trials = max_trials or max(50, 20 * budget)
        self.known: dict[Subnet, dict[str, float]] = {}
        self.seen_trials: set[int] = set()
        self.evaluated_here = 0
        self.trials_here = 0
        self.label = f"{socket.gethostname()}:{os.getpid()}"  # the trial attribute "worker"
        self.target = budget
        self.shared = shared  # False: no other worker can write to the study (in-memory storage)

    def sync(self) -> None:
        """Adopt every completed trial's metrics (from any worker) into the table and the evaluator's cache."""
        import optuna

        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if trial.number in self.seen_trials:
                continue
            self.seen_trials.add(trial.number)
            record = trial.user_attrs.get(ATTR)
            if not isinstance(record, Mapping):
                continue
            parsed = validate(TrialRecord, record, SearchError, f"study trial {trial.number} ({ATTR!r})")
            sub = Subnet(parsed.subnet.widths, parsed.subnet.depths)
            metrics = dict(parsed.metrics)
            self.evaluator.record(sub, metrics)
            self.known.setdefault(self.evaluator.canonical(sub), {}).update(metrics)

    def objective(self, trial: Any) -> tuple[float, ...]:
        sub = self.encoding.suggest(trial)
        if self.shared and not all(name in self.evaluator.known(sub) for name in self.needed):
            self.sync()  # another worker may have measured it meanwhile
        before = self.evaluator.evaluations
        metrics = self.evaluator.metrics(sub, self.needed)
        evaluated = self.evaluator.evaluations > before
        self.evaluated_here += evaluated
        self.trials_here += 1
        self.known.setdefault(sub, {}).update(metrics)
        violation = violations(metrics, self.constraints)
        for name, value in zip(self.constraints, violation):
            trial.set_constraint(name, value)  # NSGA-II and TPE rank by constrained domination
        trial.set_user_attr(ATTR, {
            "subnet": sub.to_dict(),
            "metrics": metrics,
            "violation": violation,
            "evaluated": evaluated,
            "worker": self.label,
        })  # fmt: skip
        self._show()
        return tuple(metrics[name] for name in self.objectives)

    def _show(self) -> None:
        fitting = [m for m in self.known.values() if ACCURACY in m and feasible(m, self.constraints)]
        best = max((m[ACCURACY] for m in fitting), default=float("nan"))
        self.progress(min(len(self.known), self.budget), info=f"best feasible accuracy {best:.4f}")

    def stop_when_done(self, study: Any, _trial: Any) -> None:
        if len(self.known) >= self.target:
            self.sync()
        if len(self.known) >= self.target:
            study.stop()

    def optimize(self, n_trials: int, target: int | None = None) -> None:
        """Run up to `n_trials` trials, stopping once the study holds `target` (default: budget) subnets."""
        self.target = self.budget if target is None else target
        self.sync()
        if len(self.known) >= self.target or n_trials <= 0:
            return
        self.study.optimize(self.objective, n_trials=n_trials, callbacks=[self.stop_when_done], catch=())

    def evaluate(self, subs: Sequence[Subnet]) -> None:
        """Evaluate `subs` through the study (enqueued trials, so they persist and other workers see them)."""
        todo = [s for s in subs if s not in self.known]
        if not todo:
            return
        for sub in todo:
            self.study.enqueue_trial(self.encoding.params(sub))
        self.optimize(len(todo), target=min(self.budget, len(self.known) + len(todo)))


# -- the entry point ----------------------------------------------------------------------------------------
def _study_name(fingerprint: str, settings: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([fingerprint, settings], sort_keys=True).encode()).hexdigest()[:12]
    return f"tailor-{settings['algorithm']}-{digest}"


def _check_study(study: Any, expected: Mapping[str, Any]) -> None:
    """Refuse to continue a study made by another model, data, cost source or configuration."""
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise SearchError(f"study {study.study_name!r} holds trials that tailor.search did not write")
        study.set_user_attr(STUDY_ATTR, dict(expected))
        return
    for key, value in expected.items():
        if key == "evaluator":
            continue
        if json.dumps(stored.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            raise SearchError(
                f"study {study.study_name!r} was run with {key}={stored.get(key)!r}, this search has {value!r}; "
                "use another study_name"
            )


def _check_model(model: Any, evaluator: BaseEvaluator) -> None:
    """The evaluator is a `BaseEvaluator` built for `model` (or `model` is None)."""
    if not isinstance(evaluator, BaseEvaluator):
        raise SearchError(f"search: evaluator must be a BaseEvaluator, got {type(evaluator).__name__}")
    if model is not None:
        own = getattr(evaluator, "model", None)
        if own is not None and own is not model:
            raise SearchError("search: the evaluator was built for another model")
        if getattr(model, "space", evaluator.space) != evaluator.space:
            raise SearchError("search: the model's search space differs from the evaluator's")


def _check_budget(algorithm: SearchAlgorithm, budget: int | None, size: int) -> int:
    """The number of distinct subnets to evaluate: the algorithm's reading of `budget`, within the space."""
    budget = algorithm.budget(budget, size)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SearchError(f"budget must be a positive integer (distinct subnets to evaluate), got {budget!r}")
    if budget > size:
        raise SearchError(f"budget {budget} exceeds the {size} subnets of the space; use algorithm='exhaustive'")
    return budget


def _check_counts(worker: int, max_trials: int | None) -> None:
    if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
        raise SearchError(f"worker must be a non-negative integer, got {worker!r}")
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1):
        raise SearchError(f"max_trials must be a positive integer or None, got {max_trials!r}")


def _open_study(store: Any, name: str, sampler: Any, objectives: Sequence[str], expected: Mapping[str, Any]) -> Any:
    """The study `name` in `store` (created, or resumed after checking that it was run with `expected`)."""
    import optuna

    directions = ["maximize" if maximize(m) else "minimize" for m in objectives]
    try:
        study = optuna.create_study(
            storage=store, sampler=sampler, study_name=name, directions=directions, load_if_exists=True
        )
    except ValueError as exc:  # e.g. an existing study with other directions
        raise SearchError(f"study {name!r}: {exc}") from None
    _check_study(study, expected)
    return study


def _first(study: Any, evaluator: BaseEvaluator, include: Sequence[Subnet], budget: int) -> list[Subnet]:
    """What to evaluate first: the largest and smallest subnets in a new study (they anchor both ends of the
    front), then `include`; canonical, each once, at most `budget`."""
    space = evaluator.space
    anchors = [evaluator.canonical(space.largest()), evaluator.canonical(space.smallest())]
    first = [] if study.get_trials(deepcopy=False) else anchors
    first += [evaluator.canonical(s) for s in include]
    return list(dict.fromkeys(first))[:budget]


def _stopping_reason(run: SearchRun) -> str:
    """Why the run stopped: "budget", or "trial cap" (with a warning) when the sampler kept proposing known subnets."""
    if len(run.known) >= run.budget:
        return "budget"
    warnings.warn(
        f"search stopped after {run.max_trials} trials with {len(run.known)} of {run.budget} distinct subnets "
        "evaluated (the sampler kept proposing known subnets); raise max_trials or lower the budget",
        RuntimeWarning,
        stacklevel=4,  # the caller of search()
    )
    return "trial cap"


@dataclass(frozen=True)
class _Outcome:
    """What a finished run hands to the front: the run, the study, its algorithm's report and the timing."""

    run: SearchRun
    study: Any
    name: str
    where: str
    extra: dict[str, Any]
    search_s: float


def search(
    model: Any,
    evaluator: BaseEvaluator,
    objectives: Sequence[str] | str = ("accuracy", "latency"),
    constraints: Mapping[str, float] | None = None,
    algorithm: str | SearchAlgorithm = "nsga2",
    budget: int | None = 100,
    *,
    storage: Any = None,
    study_name: str | None = None,
    seed: int = 0,
    worker: int = 0,
    progress: bool = False,
    predictor: str | None = None,
    population: int | None = None,
    batch: int | None = None,
    front_metrics: Sequence[str] = FRONT_METRICS,
    calibrate_front: bool = True,
    max_trials: int | None = None,
    include: Sequence[Subnet] = (),
    **options: Any,
) -> ParetoFront:
    """Search `model`'s subnets for the Pareto front of `objectives` under `constraints`.

    `evaluator` scores subnets (an `Evaluator` on held-out data, or any `BaseEvaluator`); `model` must be
    its model (or None). `algorithm`: a registered name (`algorithm_names()`: "nsga2", "tpe", "random",
    "evolution", "exhaustive", ...) or a `SearchAlgorithm` instance. `predictor`, `population`, `batch` and any
    other keyword are options of the named algorithm (evolution's accuracy predictor and round size, NSGA-II's
    population, ...); one the algorithm does not take raises `SearchError` naming it. `budget`: distinct subnets evaluated in the study,
    all workers together (exhaustive: the whole space, pass None). `storage`: None (memory), a SQLite path, a
    database URL or an Optuna storage; `study_name` defaults to a hash of the evaluator and settings, so
    rerunning the same search resumes it; workers sharing a study pass the same `seed` and distinct `worker`
    numbers (their samplers draw differently). Front entries get every metric in `front_metrics`; with
    `calibrate_front` the model keeps their SubnetNorm statistics. `include`: subnets evaluated first, after
    the largest and the smallest (e.g. a previous front), within the budget. `max_trials` caps a sampler's
    trials (default `max(50, 20 * budget)`).
    """
    _check_model(model, evaluator)
    objectives = check_objectives(objectives)
    constraints = check_constraints(constraints)
    extra_metrics = [check_metric(m, "front_metrics") for m in front_metrics]
    front_metrics = tuple(dict.fromkeys((*objectives, *constraints, *extra_metrics)))
    named = {"predictor": predictor, "population": population, "batch": batch}
    chosen = make_algorithm(algorithm, **{k: v for k, v in named.items() if v is not None}, **options)
    encoding = SpaceEncoding(evaluator.space)
    budget = _check_budget(chosen, budget, encoding.size)
    _check_counts(worker, max_trials)
    description = evaluator.describe()
    fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:16]
    label = chosen.name or type(chosen).__name__
    settings = {"algorithm": label, "objectives": list(objectives), "constraints": constraints, "seed": seed}
    expected = {**settings, "fingerprint": fingerprint, "evaluator": description}
    name = study_name or _study_name(fingerprint, settings)
    started = time.perf_counter()
    bar = Progress(f"search {label}", budget, progress, unit="subnet")
    with _quiet_optuna():
        try:
            store, where = open_storage(storage)
            study = _open_study(store, name, chosen.sampler(seed + 7919 * worker, budget), objectives, expected)
            run = SearchRun(evaluator, encoding, objectives, constraints, budget, study, bar, seed=seed, worker=worker,
                            first=_first(study, evaluator, include, budget), max_trials=max_trials,
                            shared=storage is not None)  # fmt: skip
            run.sync()
            extra = chosen.run(run)
            run.sync()
        finally:
            bar.close()
    outcome = _Outcome(run, study, name, where, extra, time.perf_counter() - started)
    return _front(outcome, label, evaluator, front_metrics, calibrate_front, description, fingerprint)


def _front(
    outcome: _Outcome,
    label: str,
    evaluator: BaseEvaluator,
    front_metrics: tuple[str, ...],
    calibrate_front: bool,
    description: Mapping[str, Any],
    fingerprint: str,
) -> ParetoFront:
    """The front of what the run evaluated, its entries completed with every front metric, and the info."""
    run = outcome.run
    stopped = _stopping_reason(run)
    candidates = [Candidate(sub, m) for sub, m in run.known.items() if all(n in m for n in run.needed)]
    front = ParetoFront.from_candidates(candidates, run.objectives, run.constraints, space=evaluator.space)
    complete_start = time.perf_counter()
    entries = [Candidate(e.subnet, evaluator.metrics(e.subnet, front_metrics)) for e in front.entries]
    if calibrate_front:
        evaluator.calibrate([e.subnet for e in entries])
    complete_s = time.perf_counter() - complete_start
    completed = {e.subnet: e for e in entries}
    info = {
        "algorithm": label,
        "budget": run.budget,
        "seed": run.seed,
        "worker": run.worker,
        "space_size": run.encoding.size,
        "study_name": outcome.name,
        "storage": outcome.where,
        "trials": len(outcome.study.trials),
        "evaluated": len(run.known),
        "evaluated_here": run.evaluated_here,
        "trials_here": run.trials_here,
        "stopped": stopped,
        "search_s": outcome.search_s,
        "seconds_per_evaluation": outcome.search_s / max(1, run.evaluated_here),
        "complete_front_s": complete_s,
        "evaluator": {k: v for k, v in description.items() if k != "space"} | {"fingerprint": fingerprint},
        **({label: outcome.extra} if outcome.extra else {}),
    }
    evaluated = [completed.get(c.subnet, c) for c in candidates]
    return ParetoFront(entries, run.objectives, run.constraints, evaluated, info)
