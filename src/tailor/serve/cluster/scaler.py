"""How many Ray workers to run, from tailor's own signals: rejections, attainment and the queue, not request counts.

`ScalingPolicy.decide` is pure (signals in, a worker count out), so it is tested without a cluster;
`Autoscaler` samples the engine every `interval_s` and applies the decision to a `RayExecutor`.
Scale up (one worker per interval) while requests are refused for lack of capacity, attainment over the
last interval is below `target_attainment`, or more than `queue_per_worker` requests wait per worker;
scale down (one per `down_after_s`) after that long with a worker idle, an empty queue and nothing refused.
Written here because no autoscaler sees a deadline queue (Ray Serve's counts ongoing requests).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("tailor.serve")


@dataclass(frozen=True)
class ScalingSignals:
    """What the ingress saw over one interval."""

    workers: int
    idle_workers: int
    queue_length: int
    requests: int  # requests that reached an outcome in the interval (invalid ones excluded)
    on_time: int
    refused: int  # 503s for lack of capacity (admission, queue full)


@dataclass
class ScalingPolicy:
    """Target worker count from `ScalingSignals`; bounds are enforced by the executor."""

    target_attainment: float = 0.99
    queue_per_worker: int = 32
    down_after_s: float = 10.0
    _quiet_s: float = 0.0

    def decide(self, signals: ScalingSignals, interval_s: float) -> int:
        attainment = signals.on_time / signals.requests if signals.requests else 1.0
        short = (signals.refused > 0 or attainment < self.target_attainment
                 or signals.queue_length > self.queue_per_worker * max(1, signals.workers))
        if short:
            self._quiet_s = 0.0
            return signals.workers + 1
        if signals.idle_workers > 0 and signals.queue_length == 0 and signals.refused == 0:
            self._quiet_s += interval_s
            if self._quiet_s >= self.down_after_s:
                self._quiet_s = 0.0
                return max(1, signals.workers - 1)
        else:
            self._quiet_s = 0.0
        return signals.workers


class Autoscaler:
    """Samples the engine's counters every `interval_s` and scales the executor by `policy`."""

    def __init__(self, engine: Any, executor: Any, policy: ScalingPolicy | None = None, interval_s: float = 1.0) -> None:
        self.engine, self.executor = engine, executor
        self.policy = policy or ScalingPolicy()
        self.interval_s = interval_s
        self.history: list[tuple[float, int]] = []
        self._task: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start sampling on the server's event loop (the first call must come from it; later ones may not)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None:
            assert running is not None, "the first Autoscaler.start() must run on the server's event loop"
            self._loop = running
        if running is self._loop:
            self._task = asyncio.ensure_future(self._run())
        else:
            self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def stop(self) -> None:
        if self._task is not None:
            task, loop = self._task, self._loop
            if isinstance(task, asyncio.Task) and loop is not None:
                loop.call_soon_threadsafe(task.cancel)
            else:
                task.cancel()

    def _counts(self) -> tuple[int, int, int]:
        counts = self.engine.metrics.counts
        rejections = self.engine.metrics.rejections
        done = sum(v for k, v in counts.items() if k != "invalid")
        return done, counts["on_time"], rejections["admission"] + rejections["queue_full"]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = self._counts()
        while True:
            await asyncio.sleep(self.interval_s)
            now = self._counts()
            signals = ScalingSignals(
                workers=len(self.executor.live()), idle_workers=self.executor.idle_workers(),
                queue_length=len(self.engine.scheduler.queue), requests=now[0] - last[0], on_time=now[1] - last[1],
                refused=now[2] - last[2],
            )
            last = now
            target = self.policy.decide(signals, self.interval_s)
            if target != signals.workers:
                applied = self.executor.scale_to(target)
                if applied != signals.workers:
                    logger.info("scaling from %d to %d workers (%s)", signals.workers, applied, signals)
                    self.history.append((loop.time(), applied))
