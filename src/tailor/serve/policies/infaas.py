"""INFaaS-like variant selection: the subnet is re-chosen from the measured arrival rate."""

from __future__ import annotations

from typing import Any

from tailor.checks import fraction, positive_float
from tailor.serve.policies.base import Policy, PolicyError, register_policy


@register_policy("infaas")
class INFaaS(Policy):
    """INFaaS-like: the variant (subnet) is re-chosen every `interval_ms` from the measured arrival rate."""

    name = "infaas"

    def __init__(
        self,
        profile: Any,
        *,
        interval_ms: float = 1000.0,
        headroom: float = 1.1,
        batch_slo_fraction: float = 0.5,
        min_accuracy: float | None = None,
        **common: Any,
    ) -> None:
        super().__init__(profile, **common)
        p = self.profile
        self.interval_ms = positive_float("interval_ms", interval_ms, PolicyError)
        self.headroom = positive_float("headroom", headroom, PolicyError)
        self.batch_slo_fraction = positive_float("batch_slo_fraction", batch_slo_fraction, PolicyError)
        self.min_accuracy = None if min_accuracy is None else fraction("min_accuracy", min_accuracy, PolicyError)
        budget = self._require_slo() * self.batch_slo_fraction
        self.batch_caps = [max(1, p.max_batch_within(s, budget)) for s in range(len(p))]
        # requests per ms that all workers sustain with each variant at its batch cap
        self.throughput = [self.workers * cap / p.lat[s][p.batch_slot[cap]] for s, cap in enumerate(self.batch_caps)]
        self.current = len(p) - 1
        self.switches = 0
        self._last_ms: float | None = None
        self._last_arrivals = 0

    def take_over_from(self, previous: Policy) -> None:
        super().take_over_from(previous)
        if isinstance(previous, INFaaS):  # the variant in use and the measurement interval under way
            self.current, self.switches = previous.current, previous.switches
            self._last_ms, self._last_arrivals = previous._last_ms, previous._last_arrivals

    def select(self, rate_per_ms: float) -> int:
        """The variant for an arrival rate (requests per ms)."""
        p = self.profile
        need = self.headroom * rate_per_ms
        able = [s for s in range(len(p)) if self.throughput[s] >= need]
        if not able:
            return max(range(len(p)), key=lambda s: (self.throughput[s], p.acc[s]))
        if self.min_accuracy is not None:
            accurate = [s for s in able if p.acc[s] >= self.min_accuracy]
            if accurate:
                return min(accurate, key=lambda s: (p.lat[s][0], -p.acc[s]))
        return max(able, key=lambda s: p.acc[s])

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        if self._last_ms is None:
            self._last_ms, self._last_arrivals = now_ms, arrivals
        elif now_ms - self._last_ms >= self.interval_ms:
            rate = (arrivals - self._last_arrivals) / (now_ms - self._last_ms)
            chosen = self.select(rate)
            if chosen != self.current:
                self.current = chosen
                self.switches += 1
            self._last_ms, self._last_arrivals = now_ms, arrivals
        cap = self.batch_caps[self.current]
        return self.current, (queue_len if queue_len < cap else cap)

    def describe(self) -> str:
        return f"infaas(every {self.interval_ms:g} ms, headroom {self.headroom:g})"
