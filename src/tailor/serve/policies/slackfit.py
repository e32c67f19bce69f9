"""SlackFit (SuperServe, NSDI'25), as the paper describes it: equal-width latency buckets."""

from __future__ import annotations

import bisect
from typing import Any

from tailor.checks import positive_int
from tailor.serve.policies.base import Policy, PolicyError, register_policy


@register_policy("slackfit")
class SlackFit(Policy):
    """SuperServe's SlackFit: equal-width latency buckets; run the bucket closest below the head's slack.

    A bucket is "below the slack" when its upper edge is <= slack (`fit="edge"`, default: every choice in
    it fits), or when its chosen choice's latency is (`fit="choice"`). Slack below every bucket:
    `below="drop"` (default) runs the lowest bucket's choice while it still fits, and makes its latency this
    policy's `min_latency_ms`: a request with less slack than that is answered "deadline exceeded" (by the
    simulator's `expire_hopeless`, or a server) instead of forcing a tiny batch; if asked anyway, the lowest
    bucket's choice runs. `below="serve"`: among the choices that still fit (all in the lowest bucket) the
    largest batch, ties the most accurate; if nothing fits, the lowest bucket's choice (the head is late).
    """

    name = "slackfit"

    def __init__(
        self, profile: Any, *, buckets: int = 8, fit: str = "edge", below: str = "drop", **common: Any
    ) -> None:
        super().__init__(profile, **common)
        positive_int("buckets", buckets, PolicyError)
        if fit not in ("choice", "edge"):
            raise PolicyError(f"fit {fit!r}: expected 'edge' (a bucket's upper edge fits the slack) or 'choice'")
        if below not in ("drop", "serve"):
            raise PolicyError(
                f"below {below!r}: expected 'drop' or 'serve' (what to do when the slack is below every bucket)"
            )
        self.buckets = buckets
        self.fit = fit
        self.below = below
        p = self.profile
        lo, hi = p.min_latency_ms, p.max_latency_ms
        width = (hi - lo) / buckets
        edges = [lo + width * k for k in range(1, buckets + 1)]
        edges[-1] = hi  # exact, whatever the rounding
        self.edges_ms = edges
        members: list[list[tuple[float, int, int]]] = [[] for _ in range(buckets)]  # (latency, subnet, batch)
        for s, row in enumerate(p.lat):
            for j, lat in enumerate(row):
                members[bisect.bisect_left(edges, lat)].append((lat, s, p.batch_sizes[j]))
        self.upper_ms: list[float] = []  # upper edges of the non-empty buckets, ascending
        self.choices: list[tuple[int, int]] = []  # their (subnet, batch)
        self.choice_latency_ms: list[float] = []
        for k, group in enumerate(members):
            if not group:
                continue
            lat, s, b = max(group, key=lambda m: (m[2], p.acc[m[1]], -m[0]))
            self.upper_ms.append(edges[k])
            self.choices.append((s, b))
            self.choice_latency_ms.append(lat)
        self._thresholds = self.choice_latency_ms if fit == "choice" else self.upper_ms
        if below == "drop":  # the least slack at which any bucket's choice is on time
            self.min_latency_ms = self.choice_latency_ms[0]
        # below the lowest bucket ("serve"): the best (largest batch, then accuracy) choice that still fits
        first = sorted(members[0]) if below == "serve" else []
        self._low_lat = [m[0] for m in first]
        self._low_best: list[tuple[int, int]] = []
        best: tuple[int, float, float] | None = None
        pick = (0, 0)
        for lat, s, b in first:
            key = (b, p.acc[s], -lat)
            if best is None or key > best:
                best, pick = key, (s, b)
            self._low_best.append(pick)

    def choose(
        self, now_ms: float, earliest_deadline_ms: float, queue_len: int, arrivals: int, idle_workers: int
    ) -> tuple[int, int] | None:
        slack = earliest_deadline_ms - now_ms
        k = bisect.bisect_right(self._thresholds, slack) - 1
        if k >= 0:
            return self.choices[k]
        k = bisect.bisect_right(self._low_lat, slack) - 1
        return self._low_best[k] if k >= 0 else self.choices[0]

    def bucket_table(self) -> list[dict[str, Any]]:
        """The non-empty buckets: upper edge, chosen subnet and batch, that choice's latency and accuracy."""
        p = self.profile
        return [
            {"upper_ms": u, "subnet": p.subnet_ids[s], "batch": b, "latency_ms": lat, "accuracy": p.acc[s]}
            for u, (s, b), lat in zip(self.upper_ms, self.choices, self.choice_latency_ms)
        ]

    def describe(self) -> str:
        return f"slackfit({self.buckets} buckets, {len(self.choices)} non-empty, fit={self.fit}, below={self.below})"
