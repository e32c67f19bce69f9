"""Subprocess entry point of the shared-study test: one worker of a search on a SQLite study.

usage: python search_worker.py DB STUDY READY_DIR WORKER WORKERS BUDGET

Waits until all WORKERS have started (files in READY_DIR), so that they really run side by side, then
searches and prints one JSON line with what this worker did.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from search_helpers import AnalyticEvaluator

from tailor.search import search


def main() -> None:
    db, study, ready, worker, workers, budget = sys.argv[1:7]
    ready_dir = Path(ready)
    (ready_dir / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while len(list(ready_dir.glob("ready-*"))) < int(workers):
        if time.monotonic() > deadline:
            raise SystemExit("the other workers never started")
        time.sleep(0.01)
    evaluator = AnalyticEvaluator(delay_s=0.05)
    front = search(None, evaluator, ("accuracy", "macs"), {"latency": 1.0}, algorithm="nsga2", budget=int(budget),
                   storage=db, study_name=study, seed=0, worker=int(worker))  # fmt: skip
    print(json.dumps({"worker": int(worker), "evaluated_here": evaluator.evaluations, "front": len(front),
                      "evaluated": front.info["evaluated"]}))  # fmt: skip


if __name__ == "__main__":
    main()
