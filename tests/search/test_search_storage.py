"""Studies in Optuna storage: SQLite persistence, resuming, refusing a foreign study, two workers sharing one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from search_helpers import AnalyticEvaluator

from tailor.search import Candidate, ParetoFront, SearchError, open_storage, search
from tailor.space import Subnet

HERE = Path(__file__).parent
OBJECTIVES = ("accuracy", "macs")


def test_sqlite_study_persists_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    first = AnalyticEvaluator()
    front = search(None, first, OBJECTIVES, {"latency": 1.0}, algorithm="nsga2", budget=12, storage=db)
    assert first.evaluations == 12 and db.exists()
    assert front.info["storage"] == f"sqlite:///{db.resolve()}"

    again = AnalyticEvaluator()  # a fresh process would start like this: nothing cached
    resumed = search(None, again, OBJECTIVES, {"latency": 1.0}, algorithm="nsga2", budget=12, storage=db)
    assert again.evaluations == 0, "every subnet comes back from the study"
    assert resumed.to_dict()["front"] == front.to_dict()["front"]

    more = AnalyticEvaluator()
    grown = search(None, more, OBJECTIVES, {"latency": 1.0}, algorithm="nsga2", budget=18, storage=db)
    assert more.evaluations == 6 and grown.info["evaluated"] == 18
    assert grown.info["study_name"] == front.info["study_name"], "the budget is not part of the study's identity"


def test_a_study_of_another_search_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="random", budget=5, storage=db, study_name="s")
    with pytest.raises(SearchError, match="objectives"):
        search(None, AnalyticEvaluator(), ("accuracy", "latency"), algorithm="random", budget=5, storage=db,
               study_name="s")  # fmt: skip
    with pytest.raises(SearchError, match="constraints"):
        search(None, AnalyticEvaluator(), OBJECTIVES, {"macs": 1e5}, algorithm="random", budget=5, storage=db,
               study_name="s")  # fmt: skip
    storage, _ = open_storage(db)
    optuna.create_study(storage=storage, study_name="foreign").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    with pytest.raises(SearchError, match="did not write"):
        search(None, AnalyticEvaluator(), OBJECTIVES, algorithm="random", budget=5, storage=db, study_name="foreign")


def test_bad_storage_is_named(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cannot open storage"):
        open_storage("nosuchdialect://user:secret@host/db")
    with pytest.raises(SearchError, match="storage must be"):
        open_storage(42)


def test_two_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    db, ready, budget = tmp_path / "shared.db", tmp_path / "ready", 16
    ready.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "search_worker.py"), str(db), "shared", str(ready), str(w), "2", str(budget)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(2)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["evaluated_here"] > 0 for r in reports), f"both workers evaluated subnets: {reports}"

    storage, _ = open_storage(db)
    study = optuna.load_study(study_name="shared", storage=storage)
    records = [t.user_attrs["tailor"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    by_subnet: dict[Subnet, list[dict]] = {}
    for record in records:
        by_subnet.setdefault(Subnet.from_dict(record["subnet"]), []).append(record["metrics"])
    assert len(by_subnet) >= budget, reports
    assert len({r["worker"] for r in records if r["evaluated"]}) == 2, reports
    for sub, seen in by_subnet.items():
        assert all(m == seen[0] for m in seen), f"{sub.id} was scored differently by the two workers"
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert list(trial.constraints.values()) == trial.user_attrs["tailor"]["violation"]

    # a third process (here: this one) sees the whole study, evaluates nothing, and agrees on the front
    late = AnalyticEvaluator()
    front = search(None, late, OBJECTIVES, {"latency": 1.0}, algorithm="nsga2", budget=budget, storage=db,
                   study_name="shared")  # fmt: skip
    assert late.evaluations == 0, reports
    expected = ParetoFront.from_candidates(
        [Candidate(s, m[0]) for s, m in by_subnet.items()], OBJECTIVES, {"latency": 1.0}
    )
    assert front.subnets == expected.subnets
