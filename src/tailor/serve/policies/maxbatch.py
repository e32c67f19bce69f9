"""MaxBatch: the largest batch that fits the slack, then the most accurate subnet at it."""

from __future__ import annotations

from tailor.serve.policies.base import _PerBatch, register_policy


@register_policy("maxbatch")
class MaxBatch(_PerBatch):
    """The largest measured batch size at which any subnet fits the slack, then the most accurate subnet there.

    If nothing fits at any batch size, the fastest subnet at the largest batch size (the head is late).
    """

    name = "maxbatch"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        p = self.profile
        slack = earliest_deadline_ms - now_ms
        for j in range(len(p.batch_sizes) - 1, -1, -1):
            s = self._stairs[j].within(slack)
            if s >= 0:
                return s, p.batch_sizes[j]
        return self._fastest[-1], p.max_batch
