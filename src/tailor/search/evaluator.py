"""Evaluators: what a candidate subnet scores (accuracy on held-out data) and costs, each measured once.

`Evaluator` reads its calibration batches and held-out data once. Per candidate it computes the
subnet's own SubnetNorm statistics on the cached batches (`tailor.calibrate`), measures top-1 accuracy
and per-sample confidences on the held-out data, and asks its cost sources for latency, MACs, memory or
params, only for the metrics requested. Results are cached by canonical subnet, so no architecture is
ever evaluated twice. `BaseEvaluator` is the interface search needs; subclass it to score subnets
another way (a profile with accuracies, an analytic function in tests).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tailor.checks import positive_int
from tailor.errors import DataError, SubnetNormFallbackWarning
from tailor.ops import ElasticModel
from tailor.search.costs import CostSource, MeasuredCost, make_sources
from tailor.search.metrics import ACCURACY, METRICS, SearchError, check_metric
from tailor.space import SearchSpace, Subnet
from tailor.train import BatchSource, calibrate


class BaseEvaluator:
    """Cached metrics of subnets of `space`; subclasses implement `_accuracy`, `_cost` and `_predictions`."""

    def __init__(self, space: SearchSpace) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"evaluator: expected a SearchSpace, got {type(space).__name__}")
        self.space = space
        self._cache: dict[Subnet, dict[str, float]] = {}
        #: Distinct subnets whose accuracy this evaluator measured itself (not imported with `record`).
        self.evaluations = 0
        #: Cost metric values computed (each (subnet, metric) once).
        self.cost_calls = 0

    # -- to implement --------------------------------------------------------------------------------------
    def _accuracy(self, sub: Subnet) -> float:
        raise NotImplementedError

    def _cost(self, sub: Subnet, metric: str) -> float:
        raise NotImplementedError

    def _predictions(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        raise SearchError(f"{type(self).__name__} does not provide per-sample predictions (pair search needs them)")

    def describe(self) -> dict[str, Any]:
        """JSON description: what a shared study checks so that all its workers score alike."""
        return {"evaluator": type(self).__name__, "space": self.space.to_dict()}

    # -- the interface search uses -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A short hash of `describe()`."""
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def canonical(self, sub: Subnet) -> Subnet:
        """`sub` validated against the space and in canonical form (the cache key)."""
        self.space.validate(sub)
        return self.space.canonical(sub)

    def metrics(self, sub: Subnet, names: Iterable[str] = (ACCURACY,)) -> dict[str, float]:
        """The requested metrics of `sub`, computing (once) those not yet known."""
        key = self.canonical(sub)
        known = self._cache.setdefault(key, {})
        for name in names:
            check_metric(name, "metrics")
            if name in known:
                continue
            if name == ACCURACY:
                value = float(self._accuracy(key))
                self.evaluations += 1
            else:
                value = float(self._cost(key, name))
                self.cost_calls += 1
            if not np.isfinite(value) or value < 0:
                raise SearchError(f"subnet {key.id}: {name} = {value!r} is not a finite non-negative number")
            known[name] = value
        return {name: known[name] for name in names}

    def known(self, sub: Subnet) -> dict[str, float]:
        """The metrics of `sub` computed or recorded so far (no new work)."""
        return dict(self._cache.get(self.canonical(sub), {}))

    def record(self, sub: Subnet, metrics: Mapping[str, float]) -> None:
        """Adopt metrics measured elsewhere (another worker of a shared study); known values are kept."""
        known = self._cache.setdefault(self.canonical(sub), {})
        for name, value in metrics.items():
            if name in METRICS:
                known.setdefault(name, float(value))

    def predictions(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        """Per held-out sample: the max-softmax confidence and whether the prediction is right."""
        conf, correct = self._predictions(self.canonical(sub))
        return np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)

    def calibrate(self, subs: Sequence[Subnet]) -> None:
        """Leave `subs` with SubnetNorm statistics in the model (after a search: the front). No-op here."""

    @property
    def known_subnets(self) -> list[Subnet]:
        return list(self._cache)


def _inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise DataError(f"expected a tensor batch or (inputs, labels), got {type(batch).__name__}")


def _labelled(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, torch.Tensor) for t in batch[:2]):
        x, y = batch[0], batch[1]
        if len(x) != len(y):
            raise DataError(f"held-out batch has {len(x)} inputs but {len(y)} labels")
        return x, y
    raise DataError(f"held-out data must yield (inputs, labels) tensor pairs, got {type(batch).__name__}")


class Evaluator(BaseEvaluator):
    """Accuracy after per-candidate SubnetNorm calibration, and costs from pluggable sources (cached).

    `calib_data`: a dataset (its first `calib_batches` shuffled, un-augmented batches of `batch_size`, as
    `tailor calibrate` uses) or an iterable of batches. `eval_data`: a held-out dataset or an iterable of
    (inputs, labels). `cost`: a `CostSource` or a list in priority order (default: `MeasuredCost`).
    The model's SubnetNorm statistics are left as they were unless `keep_stats=True`.
    """

    def __init__(
        self,
        model: ElasticModel,
        calib_data: Any,
        eval_data: Any,
        *,
        calib_batches: int = 8,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        seed: int = 0,
        cost: CostSource | Sequence[CostSource] | None = None,
        device: torch.device | str | None = None,
        keep_stats: bool = False,
        prediction_cache: int = 256,
    ) -> None:
        if not isinstance(model, ElasticModel):
            raise SearchError(f"Evaluator: expected a tailor ElasticModel, got {type(model).__name__}")
        for name, value in (("calib_batches", calib_batches), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):  # fmt: skip
            positive_int(f"Evaluator: {name}", value, SearchError)
        super().__init__(model.space)
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.keep_stats = keep_stats
        self.calib_batches = self._calibration_batches(calib_data, calib_batches, batch_size, seed)
        self.eval_batches = self._eval_batches(eval_data, eval_batch_size)
        self.eval_samples = sum(len(y) for _, y in self.eval_batches)
        self.input_shape = tuple(self.eval_batches[0][0].shape[1:])
        self.sources = make_sources(cost if cost is not None else MeasuredCost(model, self.input_shape))
        self._prediction_cache: OrderedDict[Subnet, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._prediction_cache_size = max(0, int(prediction_cache))

    # -- data, read once ------------------------------------------------------------------------------------
    def _calibration_batches(self, data: Any, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
        if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise DataError("Evaluator: the calibration dataset is empty")
            source = BatchSource(data, min(batch_size, len(data)), seed)
            iterator = (x for x, _ in source.batches(0))
        else:
            iterator = (_inputs(b) for b in data)
        cached = []
        for x in iterator:
            if len(cached) == batches:
                break
            cached.append(x.to(self.device))
        if not cached:
            raise DataError("Evaluator: the calibration data yielded no batches")
        return cached

    def _eval_batches(self, data: Any, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise DataError("Evaluator: the held-out dataset is empty")
            batches: Iterable[Any] = BatchSource(data, batch_size, 0, drop_last=False).batches(None)
        else:
            batches = data
        cached = []
        for batch in batches:
            x, y = _labelled(batch)
            cached.append((x.to(self.device), y.to(self.device)))
        if not cached or sum(len(y) for _, y in cached) == 0:
            raise DataError("Evaluator: the held-out data yielded no samples")
        return cached

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            if name.rsplit(".", 1)[-1].startswith(("subnet_mean_", "subnet_var_")):
                continue  # per-subnet statistics are recomputed for every candidate
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        labels = torch.cat([y for _, y in self.eval_batches]).cpu().numpy().tobytes()
        return {
            **super().describe(),
            "weights_sha256": digest.hexdigest()[:16],
            "calibration": {"batches": len(self.calib_batches), "samples": sum(len(x) for x in self.calib_batches)},
            "held_out": {"samples": self.eval_samples, "labels_sha256": hashlib.sha256(labels).hexdigest()[:16]},
            "cost": [s.describe() for s in self.sources],
        }

    # -- accuracy ---------------------------------------------------------------------------------------------
    def _norms_snapshot(self, sub: Subnet) -> tuple[str, list[tuple[Any, Any]]]:
        key = self.model.stats_key(sub)
        saved = []
        for _, bn in self.model.norm_layers(sub):
            stats = bn.subnet_stats(key)
            saved.append((bn, None if stats is None else (stats[0].clone(), stats[1].clone())))
        return key, saved

    @torch.no_grad()
    def _run(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        """Calibrate `sub` on the cached batches, then its confidences and correctness on the held-out data."""
        model = self.model
        key, saved = self._norms_snapshot(sub)
        calibrate(model, [sub], self.calib_batches, batches=len(self.calib_batches), device=self.device)
        was_training, previous = model.training, model.active_subnet
        conf, correct = [], []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SubnetNormFallbackWarning)
                model.eval()
                model.activate(sub)
                for x, y in self.eval_batches:
                    probs = torch.softmax(model(x).float(), dim=1)
                    top, pred = probs.max(dim=1)
                    conf.append(top.cpu())
                    correct.append((pred == y).cpu())
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SubnetNormFallbackWarning)
                model.train(was_training)
                model.activate(previous)
            if not self.keep_stats:
                for bn, stats in saved:
                    if stats is None:
                        bn.remove_subnet_stats(key)
                    else:
                        bn.set_subnet_stats(key, *stats)
        result = (torch.cat(conf).numpy().astype(np.float64), torch.cat(correct).numpy().astype(bool))
        if self._prediction_cache_size:
            self._prediction_cache[sub] = result
            while len(self._prediction_cache) > self._prediction_cache_size:
                self._prediction_cache.popitem(last=False)
        return result

    def _accuracy(self, sub: Subnet) -> float:
        _, correct = self._run(sub)
        return float(correct.mean())

    def _predictions(self, sub: Subnet) -> tuple[np.ndarray, np.ndarray]:
        cached = self._prediction_cache.get(sub)
        if cached is not None:
            self._prediction_cache.move_to_end(sub)
            return cached
        conf, correct = self._run(sub)
        self._cache.setdefault(sub, {}).setdefault(ACCURACY, float(correct.mean()))
        return conf, correct

    def calibrate(self, subs: Sequence[Subnet]) -> None:
        """Compute and keep SubnetNorm statistics of `subs` (e.g. the front, ready for `tailor.save`)."""
        canonical = [self.canonical(s) for s in subs]
        if canonical:
            calibrate(self.model, canonical, self.calib_batches, batches=len(self.calib_batches), device=self.device)

    # -- cost ---------------------------------------------------------------------------------------------------
    def _cost(self, sub: Subnet, metric: str) -> float:
        uncovered = None
        for source in self.sources:
            if metric not in source.metrics:
                continue
            if getattr(source, "covers", lambda _s: True)(sub):
                return source.value(sub, metric)
            uncovered = uncovered or source
        if uncovered is not None:
            return uncovered.value(sub, metric)  # raises, naming the subnet the source lacks
        supplied = sorted({m for s in self.sources for m in s.metrics})
        raise SearchError(
            f"no cost source supplies {metric!r} for subnet {sub.id} (sources: "
            f"{[type(s).__name__ for s in self.sources]}, supplying {supplied})"
        )
