"""`search`: the Pareto front of a supernet's subnets under latency, MAC and memory budgets.

Every algorithm runs inside an Optuna study, so results persist in its storage and several workers
can share one study: NSGA-II and TPE are Optuna's samplers, constrained through `trial.set_constraint`
(the successor of the `constraints_func` argument, deprecated in Optuna 5.0); random search
is Optuna's random sampler; predictor-assisted evolution and exhaustive enumeration enqueue the
subnets they choose. A trial suggests one index per dimension (`SpaceEncoding`), the evaluator
measures what is missing (cached by subnet, and shared through the study's trials), and the trial
records `{"subnet", "metrics", "violation", "evaluated", "worker"}` in its user attribute `tailor`.
The budget counts distinct subnets in the study (all workers together); duplicates a sampler
proposes again are answered from the cache and cost nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tailor.progress import Progress
from tailor.search.encoding import SpaceEncoding
from tailor.search.evaluator import BaseEvaluator
from tailor.search.evolution import _select, evolve
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
from tailor.search.pareto import Candidate, MetricName, ParetoFront, pareto_mask
from tailor.search.predictor import KINDS, SurrogateModel
from tailor.search.study import open_storage
from tailor.space import Subnet
from tailor.space.notation import SubnetSchema
from tailor.validation import validate

ALGORITHMS = ("nsga2", "tpe", "random", "evolution", "exhaustive")
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


class _Run:
    """One worker's share of a search: the objective, the study-wide subnet table, the stopping rule."""

    def __init__(
        self,
        evaluator: BaseEvaluator,
        encoding: SpaceEncoding,
        objectives: tuple[str, ...],
        constraints: dict[str, float],
        budget: int,
        study: Any,
        progress: Progress,
    ) -> None:
        self.evaluator, self.encoding = evaluator, encoding
        self.objectives, self.constraints = objectives, constraints
        self.needed = needed(objectives, constraints)
        self.budget, self.study, self.progress = budget, study, progress
        self.known: dict[Subnet, dict[str, float]] = {}
        self.seen_trials: set[int] = set()
        self.evaluated_here = 0
        self.trials_here = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.target = budget
        self.shared = True  # False: no other worker can write to the study (in-memory storage)

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
            "worker": self.worker,
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


# -- algorithms -------------------------------------------------------------------------------------------
def _make_sampler(algorithm: str, seed: int, budget: int, population: int | None) -> Any:
    """Optuna's sampler for `algorithm`; constraints reach NSGA-II and TPE through `trial.set_constraint`."""
    import optuna

    if algorithm == "nsga2":
        size = population or max(8, min(50, budget // 8))
        return optuna.samplers.NSGAIISampler(population_size=size, seed=seed)
    if algorithm == "tpe":
        startup = max(5, min(20, budget // 8))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def _enqueue_and_run(run: _Run, subs: Sequence[Subnet]) -> None:
    """Evaluate `subs` through the study (so they persist and other workers see them)."""
    todo = [s for s in subs if s not in run.known]
    if not todo:
        return
    for sub in todo:
        run.study.enqueue_trial(run.encoding.params(sub))
    run.optimize(len(todo), target=min(run.budget, len(run.known) + len(todo)))


def _exhaustive(run: _Run) -> None:
    ranges = [range(int(c)) for c in run.encoding.cardinalities]
    chunk: list[Subnet] = []
    for indices in itertools.product(*ranges):
        sub = run.encoding.from_indices(indices)  # canonical: the widths of skipped blocks repeat a network
        if sub not in run.known and sub not in chunk:
            chunk.append(sub)
        if len(chunk) == 64:
            _enqueue_and_run(run, chunk)
            chunk = []
    _enqueue_and_run(run, chunk)


def _spread(order_values: np.ndarray, count: int) -> np.ndarray:
    """`count` positions spread evenly along `order_values` (sorted ascending)."""
    order = np.argsort(order_values, kind="stable")
    if count >= len(order):
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, count).round().astype(int))]


def _scorer(models: Mapping[str, SurrogateModel], objectives: Sequence[str], constraints: Mapping[str, float]):
    """Predicted objectives (all minimised) and relative predicted constraint violation of index vectors."""

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = {name: model.predict(idx) for name, model in models.items()}
        F = np.column_stack([-pred[n] if maximize(n) else pred[n] for n in objectives])
        v = np.zeros(len(idx))
        for name, bound in constraints.items():
            excess = bound - pred[name] if maximize(name) else pred[name] - bound
            v += np.clip(excess, 0.0, None) / max(abs(bound), 1e-12)
        return F, v

    return score


LOCAL_SHARE = 0.5
INITIAL_SHARE = 0.2


def _neighbours(encoding: SpaceEncoding, rows: np.ndarray, exclude: set[tuple[int, ...]]) -> np.ndarray:
    """Index vectors one step (one dimension, one choice up or down) from `rows`, minus `exclude`."""
    found: set[tuple[int, ...]] = set()
    for row in rows:
        for dim, card in enumerate(encoding.cardinalities):
            for step in (-1, 1):
                moved = row.copy()
                moved[dim] += step
                key = tuple(int(v) for v in moved)
                if 0 <= moved[dim] < card and key not in exclude:
                    found.add(key)
    return np.array(sorted(found), dtype=np.int64).reshape(-1, len(encoding))


def _evolution(run: _Run, rng: np.random.Generator, predictor: str, seed: int, batch: int | None) -> dict[str, Any]:
    """Predictor-assisted evolution (Once-for-All style); returns what it did, for the front's info."""
    encoding, objectives = run.encoding, run.objectives
    metrics = run.needed
    initial = max(len(run.known), min(run.budget, max(4, int(INITIAL_SHARE * run.budget))))
    run.optimize(4 * initial, target=initial)  # random start (after the largest/smallest anchors)
    batch = batch or max(2, run.budget // 10)
    rounds, loo = 0, {}
    while True:
        run.sync()
        remaining = run.budget - len(run.known)
        if remaining <= 0:
            break
        subs = [s for s, m in run.known.items() if all(n in m for n in metrics)]
        indices = np.array([encoding.to_indices(s) for s in subs])
        models = {}
        for name in metrics:
            kind = predictor if name == ACCURACY else "ridge"  # costs are near-linear in the pairwise features
            models[name] = SurrogateModel(encoding, kind, seed=seed + rounds).fit(
                indices, [run.known[s][name] for s in subs]
            )
            loo[name] = models[name].loo_rmse

        score = _scorer(models, objectives, run.constraints)
        true = np.array([[run.known[s][n] for n in objectives] for s in subs])
        fits = np.array([feasible(run.known[s], run.constraints) for s in subs])
        seeds = indices[:0]
        if fits.any():  # start from the measured front
            seeds = indices[fits][pareto_mask(true[fits], [maximize(n) for n in objectives])]
        pop, F, v = evolve(encoding, score, seeds, rng)
        known_keys = {tuple(i) for i in indices}
        fresh = [i for i in range(len(pop)) if tuple(pop[i]) not in known_keys]
        take = min(batch, remaining)
        # exploitation: the best-predicted unevaluated neighbours of the measured front
        local: list[Subnet] = []
        if LOCAL_SHARE > 0 and len(seeds):
            near = _neighbours(encoding, seeds, known_keys)
            if len(near):
                Fn, vn = score(near)
                picks = _select(Fn, vn, min(round(LOCAL_SHARE * take), len(near)))
                local = [encoding.from_indices(near[i]) for i in picks]
        # exploration: the surrogate's own front, spread along the first cost objective
        ranked = [i for i in fresh if v[i] <= 0] or fresh
        ranked = [i for i in ranked if encoding.from_indices(pop[i]) not in local]
        proposals: list[Subnet] = []
        if ranked and take > len(local):
            costs = [j for j, n in enumerate(objectives) if not maximize(n)]
            key = F[ranked, costs[0]] if costs else F[ranked, 0]
            proposals = [encoding.from_indices(pop[ranked[p]]) for p in _spread(np.asarray(key), take - len(local))]
        proposals += local
        while len(proposals) < take:  # the predicted front is exhausted: explore at random
            sub = encoding.from_indices(encoding.random(rng, 1)[0])
            if sub not in run.known and sub not in proposals:
                proposals.append(sub)
        _enqueue_and_run(run, proposals)
        rounds += 1
    return {"rounds": rounds, "batch": batch, "initial_random": initial, "predictor": predictor,
            "predictor_loo_rmse": {k: float(v) for k, v in loo.items() if v is not None}}  # fmt: skip


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


def search(
    model: Any,
    evaluator: BaseEvaluator,
    objectives: Sequence[str] | str = ("accuracy", "latency"),
    constraints: Mapping[str, float] | None = None,
    algorithm: str = "nsga2",
    budget: int | None = 100,
    *,
    storage: Any = None,
    study_name: str | None = None,
    seed: int = 0,
    worker: int = 0,
    progress: bool = False,
    predictor: str = "ridge",
    population: int | None = None,
    batch: int | None = None,
    front_metrics: Sequence[str] = FRONT_METRICS,
    calibrate_front: bool = True,
    max_trials: int | None = None,
    include: Sequence[Subnet] = (),
) -> ParetoFront:
    """Search `model`'s subnets for the Pareto front of `objectives` under `constraints`.

    `evaluator` scores subnets (an `Evaluator` on held-out data, or any `BaseEvaluator`); `model` must be
    its model (or None). `algorithm`: "nsga2", "tpe", "random", "evolution" or "exhaustive". `budget`:
    distinct subnets evaluated in the study, all workers together (exhaustive: the whole space). `storage`:
    None (memory), a SQLite path, a database URL or an Optuna storage; `study_name` defaults to a hash of
    the evaluator and settings, so rerunning the same search resumes it; workers sharing a study pass the
    same `seed` and distinct `worker` numbers (their samplers draw differently). Front entries get every metric
    in `front_metrics`; with `calibrate_front` the model keeps their SubnetNorm statistics. `include`: subnets
    evaluated first, after the largest and the smallest (e.g. a previous front), within the budget.
    """
    if not isinstance(evaluator, BaseEvaluator):
        raise SearchError(f"search: evaluator must be a BaseEvaluator, got {type(evaluator).__name__}")
    if model is not None:
        own = getattr(evaluator, "model", None)
        if own is not None and own is not model:
            raise SearchError("search: the evaluator was built for another model")
        if getattr(model, "space", evaluator.space) != evaluator.space:
            raise SearchError("search: the model's search space differs from the evaluator's")
    objectives = check_objectives(objectives)
    constraints = check_constraints(constraints)
    extra_metrics = [check_metric(m, "front_metrics") for m in front_metrics]
    front_metrics = tuple(dict.fromkeys((*objectives, *constraints, *extra_metrics)))
    if algorithm not in ALGORITHMS:
        raise SearchError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")
    if predictor not in KINDS:
        raise SearchError(f"unknown predictor {predictor!r}; expected one of {list(KINDS)}")
    encoding = SpaceEncoding(evaluator.space)
    size = encoding.size
    if algorithm == "exhaustive":
        if budget is not None and budget != size:
            raise SearchError(f"exhaustive search evaluates all {size} subnets; pass budget=None (got {budget})")
        budget = size
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SearchError(f"budget must be a positive integer (distinct subnets to evaluate), got {budget!r}")
    if budget > size:
        raise SearchError(f"budget {budget} exceeds the {size} subnets of the space; use algorithm='exhaustive'")
    if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
        raise SearchError(f"worker must be a non-negative integer, got {worker!r}")
    for name, value in (("population", population), ("batch", batch), ("max_trials", max_trials)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SearchError(f"{name} must be a positive integer or None, got {value!r}")

    import optuna

    description = evaluator.describe()
    fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:16]
    settings = {"algorithm": algorithm, "objectives": list(objectives), "constraints": constraints, "seed": seed}
    expected = {**settings, "fingerprint": fingerprint, "evaluator": description}
    name = study_name or _study_name(fingerprint, settings)
    started = time.perf_counter()
    bar = Progress(f"search {algorithm}", budget, progress, unit="subnet")
    with _quiet_optuna():
        store, where = open_storage(storage)
        sampler = _make_sampler(algorithm, seed + 7919 * worker, budget, population)
        directions = ["maximize" if maximize(m) else "minimize" for m in objectives]
        try:
            study = optuna.create_study(
                storage=store, sampler=sampler, study_name=name, directions=directions, load_if_exists=True
            )
        except ValueError as exc:  # e.g. an existing study with other directions
            raise SearchError(f"study {name!r}: {exc}") from None
        _check_study(study, expected)
        run = _Run(evaluator, encoding, objectives, constraints, budget, study, bar)
        run.shared = storage is not None
        run.sync()
        extra: dict[str, Any] = {}
        cap = max_trials or max(50, 20 * budget)
        try:
            if algorithm == "exhaustive":
                _exhaustive(run)
            else:
                space = evaluator.space
                anchors = [evaluator.canonical(space.largest()), evaluator.canonical(space.smallest())]
                first = [] if study.get_trials(deepcopy=False) else anchors
                first += [evaluator.canonical(s) for s in include]
                _enqueue_and_run(run, list(dict.fromkeys(first))[:budget])
                if algorithm == "evolution":
                    extra = _evolution(run, np.random.default_rng([seed, worker]), predictor, seed, batch)
                else:
                    run.optimize(cap)
            run.sync()
        finally:
            bar.close()
    search_s = time.perf_counter() - started
    stopped = "budget" if len(run.known) >= budget else "trial cap"
    if stopped == "trial cap":
        warnings.warn(
            f"search stopped after {cap} trials with {len(run.known)} of {budget} distinct subnets evaluated "
            "(the sampler kept proposing known subnets); raise max_trials or lower the budget",
            RuntimeWarning,
            stacklevel=2,
        )
    candidates = [Candidate(sub, m) for sub, m in run.known.items() if all(n in m for n in run.needed)]
    front = ParetoFront.from_candidates(candidates, objectives, constraints, space=evaluator.space)
    complete_start = time.perf_counter()
    entries = [Candidate(e.subnet, evaluator.metrics(e.subnet, front_metrics)) for e in front.entries]
    if calibrate_front:
        evaluator.calibrate([e.subnet for e in entries])
    complete_s = time.perf_counter() - complete_start
    completed = {e.subnet: e for e in entries}
    info = {
        "algorithm": algorithm,
        "budget": budget,
        "seed": seed,
        "worker": worker,
        "space_size": size,
        "study_name": name,
        "storage": where,
        "trials": len(study.trials),
        "evaluated": len(run.known),
        "evaluated_here": run.evaluated_here,
        "trials_here": run.trials_here,
        "stopped": stopped,
        "search_s": search_s,
        "seconds_per_evaluation": search_s / max(1, run.evaluated_here),
        "complete_front_s": complete_s,
        "evaluator": {k: v for k, v in description.items() if k != "space"} | {"fingerprint": fingerprint},
        **({"evolution": extra} if extra else {}),
    }
    evaluated = [completed.get(c.subnet, c) for c in candidates]
    return ParetoFront(entries, objectives, constraints, evaluated, info)
