"""SubnetNorm calibration: exact per-subnet BatchNorm statistics from a few cached batches.

For each subnet, every SubnetNorm layer it runs accumulates the exact mean and (unbiased) variance
of its inputs over all cached batches (Chan's parallel update in float64), not a momentum average.
The batches are read from the loader once and reused for every subnet.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from tailor.checks import positive_int
from tailor.errors import InvalidSubnetError, SubnetNormFallbackWarning
from tailor.ops import ElasticModel
from tailor.space import Subnet


def _inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise InvalidSubnetError(f"calibrate: a batch must be a tensor or (inputs, ...), got {type(batch).__name__}")


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Run `action` without the fallback warning (uncalibrated subnets are expected here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubnetNormFallbackWarning)
        action(*args)


def calibrate(
    model: ElasticModel,
    subs: Iterable[Subnet],
    loader: Iterable[Any],
    batches: int = 8,
    device: torch.device | str | None = None,
) -> list[str]:
    """Compute SubnetNorm statistics of each subnet in `subs` from the first `batches` of `loader`.

    Returns the statistics keys written (one per distinct subnet). The model is left in the mode
    and with the active subnet it had.
    """
    positive_int("calibrate: batches", batches, InvalidSubnetError)
    subs = list(subs)
    if device is None:
        device = next(model.parameters()).device
    cached: Sequence[torch.Tensor] = []
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        cached.append(_inputs(batch).to(device))
    if not cached:
        raise InvalidSubnetError("calibrate: the loader yielded no batches")
    was_training = model.training
    previous = model.active_subnet
    keys: list[str] = []
    _quietly(model.train, False)
    try:
        with torch.no_grad():
            for sub in subs:
                key = model.stats_key(sub)
                if key in keys:
                    continue
                _quietly(model.activate, sub)
                norms = model.norm_layers(sub)
                for _, bn in norms:
                    bn.begin_calibration()
                try:
                    for x in cached:
                        model(x)
                    for _, bn in norms:
                        bn.finish_calibration(key)
                finally:
                    for _, bn in norms:
                        bn.cancel_calibration()
                keys.append(key)
    finally:
        _quietly(model.train, was_training)
        _quietly(model.activate, previous)
    return keys
