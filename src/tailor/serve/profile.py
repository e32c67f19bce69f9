"""`ServingProfile`: the view of a `tailor.cost.Profile` that scheduling needs.

A profile measures subnets at a few batch sizes. Serving wants the Pareto subnets ordered from the
fastest/least accurate to the slowest/most accurate, one latency percentile, and latency lookups for
any batch size up to the largest measured one (a batch between two measured sizes costs what the next
measured size up costs: padding to it is always possible, so the figure is an upper bound).

Each subnet runs on the runtime the profile chose for it (the fastest measured within tolerance):
`runtime(id)` and `runtimes` say which, so a server loads every subnet on its own runtime; `runtimes=[...]`
restricts the choice (e.g. `["onnxruntime"]` for an ORT-only server). `percentile="auto"` plans with the
highest percentile the profile's repeats support (p99 needs >= 100 timed calls per entry, p90 >= 20, else
p50) and `percentile_reason` says why.

Nothing is dropped silently: subnets removed as dominated and batch sizes not measured for every subnet
are listed in `dropped_subnets` and `dropped_batch_sizes`; `check_monotonic()` lists the places where
latency does not grow with batch size or with accuracy.
"""

from __future__ import annotations

import bisect
import copy
import math
import os
from collections.abc import Sequence

from tailor.checks import integer, positive_float, positive_int
from tailor.cost.measure import PERCENTILE_MIN_REPEATS, supported_percentile
from tailor.cost.profile import Profile, ProfileIssue
from tailor.cost.runtimes import RuntimeInfo
from tailor.errors import ProfileError
from tailor.space import Subnet

PERCENTILES = ("p50", "p90", "p99")
AUTO = "auto"


def load_profile(
    source: Profile | ServingProfile | str | os.PathLike[str],
    percentile: str = "p99",
    runtimes: Sequence[str] | None = None,
) -> ServingProfile:
    """A `ServingProfile` from a profile, a serving profile (returned as is) or a profile JSON path."""
    if isinstance(source, ServingProfile):
        return source
    if isinstance(source, Profile):
        return ServingProfile(source, percentile=percentile, runtimes=runtimes)
    if isinstance(source, (str, os.PathLike)):
        return ServingProfile(Profile.load(source), percentile=percentile, runtimes=runtimes)
    raise ProfileError(f"expected a Profile, a ServingProfile or a path to a profile JSON, got {type(source).__name__}")


def auto_percentile(profile: Profile) -> tuple[str, str]:
    """(percentile, reason): the highest percentile every latency entry's repeats support (see module docstring)."""
    counts = [s.repeats for e in profile.subnets for s in e.latency_ms.values()]
    if any(c is None for c in counts):
        return "p50", "p50: the profile does not record how many calls each latency rests on"
    fewest = min(counts)  # type: ignore[type-var]
    chosen = supported_percentile(fewest)
    needs = ", ".join(f"{p} needs >= {PERCENTILE_MIN_REPEATS[p]}" for p in ("p99", "p90"))
    return chosen, f"{chosen}: the fewest timed calls behind a latency entry is {fewest} ({needs})"


class ServingProfile:
    """Pareto subnets × batch sizes -> latency (one percentile, ms) and accuracy, with fast lookup tables.

    `pareto=True` drops subnets dominated by another one (at least as accurate and no slower at any batch
    size, better somewhere); they are listed in `dropped_subnets`. Every kept subnet needs an accuracy.
    `percentile` is "p50", "p90", "p99" or "auto" (the highest one the repeats support; `percentile` then
    holds the one chosen and `percentile_reason` why). `runtimes` restricts the runtimes subnets may run on
    (`Profile.with_runtimes`); by default each subnet runs on the one the profile chose for it.
    """

    def __init__(
        self, profile: Profile, percentile: str = "p99", pareto: bool = True, runtimes: Sequence[str] | None = None
    ) -> None:
        if not isinstance(profile, Profile):
            raise ProfileError(f"expected a tailor.cost.Profile, got {type(profile).__name__}")
        if percentile not in (*PERCENTILES, AUTO):
            raise ProfileError(f"percentile {percentile!r}: expected one of {[*PERCENTILES, AUTO]}")
        if runtimes is not None:
            if isinstance(runtimes, str):
                raise ProfileError(f"runtimes: expected a list of runtime names, got the string {runtimes!r}")
            profile = profile.with_runtimes(runtimes)
        self.profile = profile
        self.percentile_requested = percentile
        if percentile == AUTO:
            percentile, self.percentile_reason = auto_percentile(profile)
        else:
            self.percentile_reason = f"{percentile}: asked for"
        self.percentile = percentile
        batches = profile.batch_sizes
        if not batches:
            raise ProfileError("no batch size is measured for every subnet; serving needs a common set of batch sizes")
        self.batch_sizes: list[int] = batches
        common = set(batches)
        self.dropped_batch_sizes: dict[str, list[int]] = {
            s.id: sorted(set(s.latency_ms) - common) for s in profile.subnets if set(s.latency_ms) - common
        }
        for index, entry in enumerate(profile.subnets):
            if entry.accuracy is None:
                raise ProfileError(
                    f"subnets[{index}] ({entry.id!r}) has no accuracy: serving ranks subnets by accuracy, "
                    "so every subnet of a serving profile needs one"
                )
        table = {s.id: [getattr(s.latency_ms[b], percentile) for b in batches] for s in profile.subnets}
        accuracy = {s.id: float(s.accuracy) for s in profile.subnets}  # type: ignore[arg-type]
        ids = list(table)
        self.dropped_subnets: dict[str, str] = {}
        if pareto:
            for sid in ids:
                for other in ids:
                    if other == sid:
                        continue
                    no_worse = accuracy[other] >= accuracy[sid] and all(
                        a <= b for a, b in zip(table[other], table[sid])
                    )
                    better = accuracy[other] > accuracy[sid] or any(a < b for a, b in zip(table[other], table[sid]))
                    if no_worse and better:
                        self.dropped_subnets[sid] = other
                        break
            ids = [sid for sid in ids if sid not in self.dropped_subnets]
        ids.sort(key=lambda sid: (accuracy[sid], table[sid][0], sid))
        self.subnet_ids: list[str] = ids
        self._index = {sid: i for i, sid in enumerate(ids)}
        # Hot-path tables, indexed by subnet position and batch position.
        self.lat: list[list[float]] = [table[sid] for sid in ids]
        self.acc: list[float] = [accuracy[sid] for sid in ids]
        self.max_batch: int = batches[-1]
        # batch_slot[n] = position of the smallest measured batch size >= n, for n in 1..max_batch
        self.batch_slot: list[int] = [0] + [bisect.bisect_left(batches, n) for n in range(1, self.max_batch + 1)]
        self.min_latency_ms: float = min(min(row) for row in self.lat)
        self.max_latency_ms: float = max(max(row) for row in self.lat)

    def scaled(self, factor: float) -> ServingProfile:
        """The same profile with every latency multiplied by `factor` (> 0): what the server plans with when its
        workers run `factor` times slower than they were measured (cores shared with the front end)."""
        factor = positive_float("scale factor", factor, ProfileError)
        scaled = copy.copy(self)
        scaled.lat = [[latency * factor for latency in row] for row in self.lat]
        scaled.min_latency_ms = self.min_latency_ms * factor
        scaled.max_latency_ms = self.max_latency_ms * factor
        return scaled

    # -- the contract's accessors -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.subnet_ids)

    def index(self, subnet_id: str) -> int:
        """Position of a subnet in `subnet_ids` (0 = fastest); ProfileError for an unknown id."""
        try:
            return self._index[subnet_id]
        except KeyError:
            dropped = (
                f" (dropped as dominated by {self.dropped_subnets[subnet_id]!r})"
                if subnet_id in self.dropped_subnets
                else ""
            )
            raise ProfileError(
                f"no subnet {subnet_id!r} in the serving profile{dropped}; ids: {self.subnet_ids[:10]}"
            ) from None

    def batch_position(self, batch_size: int) -> int:
        """Position in `batch_sizes` of the smallest measured batch size >= `batch_size`."""
        positive_int("batch size", batch_size, ProfileError)
        if batch_size > self.max_batch:
            raise ProfileError(f"batch size {batch_size} is above the largest measured batch size {self.max_batch}")
        return self.batch_slot[batch_size]

    def latency_ms(self, subnet_id: str, batch_size: int) -> float:
        """Latency (the chosen percentile) of a batch; between measured sizes, the next measured size up."""
        return self.lat[self.index(subnet_id)][self.batch_position(batch_size)]

    def accuracy(self, subnet_id: str) -> float:
        return self.acc[self.index(subnet_id)]

    def subnet(self, subnet_id: str) -> Subnet | None:
        """The `Subnet` recorded for this id (None when the profile only has costs: simulation only)."""
        self.index(subnet_id)
        return self.profile[subnet_id].subnet

    def runtime(self, subnet_id: str) -> str:
        """The runtime subnet `subnet_id` runs on (a `tailor.cost.get_runtime` name): load it there."""
        self.index(subnet_id)
        return self.profile.runtime_of(subnet_id)

    @property
    def runtimes(self) -> dict[str, str]:
        """{subnet id: runtime} for every kept subnet, fastest first."""
        return {sid: self.profile.runtime_of(sid) for sid in self.subnet_ids}

    def runtime_info(self, subnet_id: str) -> RuntimeInfo:
        """What the subnet's runtime was measured with (precision, device, threads, options): prepare it the same way."""
        return self.profile.runtime_info(self.runtime(subnet_id))

    def issues(self, warn: bool = False) -> list[ProfileIssue]:
        """`Profile.check` at the percentile this view plans with (non-monotone entries, thin tails, failed checks)."""
        return self.profile.check(self.percentile, warn=warn)

    def per_request_ms(self, position: int) -> float:
        """The least time per request of subnet `position` over all measured batch sizes: min_b latency(b) / b."""
        return min(lat / b for lat, b in zip(self.lat[position], self.batch_sizes))

    def max_batch_within(self, position: int, budget_ms: float) -> int:
        """Largest measured batch size whose latency for subnet `position` is <= budget_ms (0 if none)."""
        best = 0
        for lat, b in zip(self.lat[position], self.batch_sizes):
            if lat <= budget_ms:
                best = b
        return best

    def check_monotonic(self) -> list[str]:
        """Violations of 'latency grows with batch size and with accuracy', as readable lines (empty: none)."""
        problems: list[str] = []
        for sid, row in zip(self.subnet_ids, self.lat):
            for j in range(1, len(row)):
                if row[j] < row[j - 1]:
                    problems.append(
                        f"{sid!r}: batch {self.batch_sizes[j]} is faster than batch {self.batch_sizes[j - 1]} "
                        f"({row[j]:.4g} ms < {row[j - 1]:.4g} ms, {self.percentile})"
                    )
        for j, b in enumerate(self.batch_sizes):
            for i in range(1, len(self.subnet_ids)):
                lo, hi = self.lat[i - 1][j], self.lat[i][j]
                if hi < lo:
                    problems.append(
                        f"batch {b}: {self.subnet_ids[i]!r} (accuracy {self.acc[i]:.4f}) is faster than "
                        f"{self.subnet_ids[i - 1]!r} (accuracy {self.acc[i - 1]:.4f}): {hi:.4g} ms < {lo:.4g} ms"
                    )
        for i in range(1, len(self.subnet_ids)):
            if self.acc[i] == self.acc[i - 1]:
                problems.append(
                    f"{self.subnet_ids[i - 1]!r} and {self.subnet_ids[i]!r} have the same accuracy {self.acc[i]:.4f}"
                )
        return problems

    def summary(self) -> list[str]:
        """One line per kept subnet (accuracy, latency at each batch size), then what was dropped."""
        head = "batch " + " ".join(f"{b:>8d}" for b in self.batch_sizes)
        width = max(len(r) for r in [*self.runtimes.values(), "runtime"])
        lines = [f"latency: {self.percentile_reason}", f"{'subnet':<20} {'acc':>6} {'runtime':<{width}}  {head}"]
        for sid, acc, row in zip(self.subnet_ids, self.acc, self.lat):
            runtime = self.profile.runtime_of(sid)
            lines.append(f"{sid:<20} {acc:>6.4f} {runtime:<{width}}  ms    " + " ".join(f"{v:>8.3f}" for v in row))
        for sid, by in self.dropped_subnets.items():
            lines.append(f"dropped {sid!r}: dominated by {by!r}")
        for sid, extra in self.dropped_batch_sizes.items():
            lines.append(f"ignored batch sizes {extra} of {sid!r}: not measured for every subnet")
        return lines


def synthetic_profile(
    accuracies: Sequence[float],
    base_ms: Sequence[float],
    per_item_ms: Sequence[float],
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    spread: float = 0.1,
    model: str = "synthetic",
    ids: Sequence[str] | None = None,
) -> Profile:
    """A `Profile` with latency p99(b) = base + per_item * b (p50 and p90 `spread` lower), for tests and studies."""
    from tailor.cost.measure import LatencyStats
    from tailor.cost.profile import SubnetProfile

    if not (len(accuracies) == len(base_ms) == len(per_item_ms)) or not accuracies:
        raise ProfileError("synthetic_profile: accuracies, base_ms and per_item_ms need the same non-zero length")
    if not 0 <= spread < 1 or not math.isfinite(spread):
        raise ProfileError(f"synthetic_profile: spread {spread!r} must be in [0, 1)")
    names = list(ids) if ids is not None else [f"s{i}" for i in range(len(accuracies))]
    entries = []
    for name, acc, base, item in zip(names, accuracies, base_ms, per_item_ms):
        table = {}
        for b in batch_sizes:
            p99 = base + item * b
            table[b] = LatencyStats(p99 * (1 - spread), p99 * (1 - spread / 2), p99)
        entries.append(SubnetProfile(id=name, macs=0, params=0, latency_ms=table, accuracy=acc))
    return Profile(model, (3, 32, 32), "synthetic", "simulated", None, tuple(entries))


def ofa_like_profile(subnets: int = 7, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32)) -> Profile:
    """A synthetic profile with OFA-ResNet's accuracy range (73.8%–80.2% top-1, as SuperServe served it).

    Latency p99(b) = base + per_item * b, from (1.0 + 0.25 b) ms for the smallest subnet to (3.5 + 1.0 b) ms
    for the largest, spaced evenly: a GPU-like shape (batching amortises a fixed cost) with a 1:4 cost range.
    """
    integer("ofa_like_profile: subnets", subnets, ProfileError, low=2)
    steps = [i / (subnets - 1) for i in range(subnets)]
    return synthetic_profile(
        accuracies=[round(0.738 + (0.802 - 0.738) * f, 4) for f in steps],
        base_ms=[1.0 + 2.5 * f for f in steps],
        per_item_ms=[0.25 + 0.75 * f for f in steps],
        batch_sizes=batch_sizes,
        model="ofa-like",
        ids=[f"ofa-{round(0.738 + (0.802 - 0.738) * f, 4) * 100:.1f}" for f in steps],
    )
