"""Per-subnet normalisation statistics (SubnetNorm) across a model: which subnets have their own, and a warning
when an eval-mode subnet falls back to the shared running statistics while others are calibrated.

Each `ElasticBatchNorm2d` keeps the statistics of the subnets calibrated on it (`tailor.ops.norm`); this
module answers for a whole model, from the SubnetNorm layers a subnet's plan runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from torch import nn

from tailor.errors import SubnetNormFallbackWarning
from tailor.ops.norm import MEAN_PREFIX, VAR_PREFIX, ElasticBatchNorm2d
from tailor.ops.plans import Plan


def has_own_stats(plan: Plan) -> bool:
    """Whether every SubnetNorm layer the plan runs holds statistics of the plan's subnet."""
    key = plan.subnet.id
    return all(bn.has_subnet_stats(key) for _, bn in plan.norms)


def warn_if_shared(plan: Plan, stacklevel: int) -> None:
    """Warn when the plan's subnet lacks statistics of its own in some layer where other subnets have theirs
    (eval would then normalise it with the shared running statistics)."""
    key = plan.subnet.id  # runs at every eval-mode activation: the layers' own dicts, no copies
    missing = [name for name, bn in plan.norms if key not in bn._subnet_stats]
    if missing and any(bn._subnet_stats for _, bn in plan.norms):
        warnings.warn(
            f"subnet {key} has no SubnetNorm statistics of its own in {len(missing)} layer(s) "
            f"(first: {missing[0]!r}); eval uses the shared running statistics. "
            "Calibrate it with tailor.calibrate(model, [subnet], loader).",
            SubnetNormFallbackWarning,
            stacklevel=stacklevel + 1,
        )


def calibrated_keys(layers: Iterable[nn.Module]) -> set[str]:
    """Keys of the subnets that hold statistics in at least one of the SubnetNorm `layers`."""
    keys: set[str] = set()
    for module in layers:
        if isinstance(module, ElasticBatchNorm2d):
            keys.update(module.subnet_stats_keys())
    return keys


def stats_bytes(model: nn.Module, layers: Iterable[nn.Module]) -> dict[str, int]:
    """Bytes of per-subnet statistics in `layers` against bytes of `model`'s shared weights (parameters and
    buffers), and how many subnets hold statistics."""
    layers = list(layers)
    stats = sum(m.subnet_stats_bytes() for m in layers if isinstance(m, ElasticBatchNorm2d))
    shared = sum(p.numel() * p.element_size() for p in model.parameters())
    shared += sum(
        b.numel() * b.element_size()
        for name, b in model.named_buffers()
        if not name.rsplit(".", 1)[-1].startswith((MEAN_PREFIX, VAR_PREFIX))
    )
    return {"subnet_stats_bytes": stats, "shared_bytes": shared, "subnets": len(calibrated_keys(layers))}


__all__ = ["calibrated_keys", "has_own_stats", "stats_bytes", "warn_if_shared"]
