"""One fixed subnet with Clipper-like adaptive batching."""

from __future__ import annotations

from typing import Any

from tailor.checks import positive_float
from tailor.errors import TailorError
from tailor.serve.policies.base import Policy, PolicyError, _Staircase, register_policy


@register_policy("fixed")
class FixedSubnet(Policy):
    """One subnet with Clipper-like adaptive batching (AIMD's fixed point computed from the profile)."""

    name = "fixed"

    def __init__(
        self, profile: Any, subnet_id: str, *, batch_slo_fraction: float = 0.5, fit_slack: bool = False, **common: Any
    ) -> None:
        super().__init__(profile, **common)
        p = self.profile
        try:
            self.position = p.index(subnet_id)
        except TailorError as exc:
            raise PolicyError(str(exc)) from None
        self.subnet_id = subnet_id
        fraction = positive_float("batch_slo_fraction", batch_slo_fraction, PolicyError)
        self.batch_slo_fraction = fraction
        self.fit_slack = bool(fit_slack)
        self.batch_cap = max(1, p.max_batch_within(self.position, self._require_slo() * fraction))  # type: ignore[operator]
        self.min_latency_ms = p.lat[self.position][p.batch_slot[1]]
        row = p.lat[self.position]
        self._fit = _Staircase([(row[j], (b,), b) for j, b in enumerate(p.batch_sizes) if b <= self.batch_cap])
        self.name = f"fixed:{subnet_id}"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        cap = self.batch_cap
        if self.fit_slack:
            fitted = self._fit.within(earliest_deadline_ms - now_ms)
            cap = fitted if fitted > 0 else 1
        return self.position, (queue_len if queue_len < cap else cap)

    def describe(self) -> str:
        extra = ", fit_slack" if self.fit_slack else ""
        return f"{self.name}(batch cap {self.batch_cap}{extra})"
