"""MaxAcc: the most accurate subnet that serves the whole queue within the slack."""

from __future__ import annotations

from tailor.serve.policies.base import _PerBatch, register_policy


@register_policy("maxacc")
class MaxAcc(_PerBatch):
    """The most accurate subnet that serves the whole queue (capped at the largest batch) within the slack.

    If none fits, the next measured batch size down (serving the earliest deadlines first), again the most
    accurate that fits. If nothing fits even one request, the fastest subnet for the whole queue (the head is late).
    """

    name = "maxacc"

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        p = self.profile
        slack = earliest_deadline_ms - now_ms
        batch = queue_len if queue_len < p.max_batch else p.max_batch
        top = p.batch_slot[batch]
        s = self._stairs[top].within(slack)
        if s >= 0:
            return s, batch
        for j in range(top - 1, -1, -1):
            s = self._stairs[j].within(slack)
            if s >= 0:
                return s, p.batch_sizes[j]
        return self._fastest[top], batch
