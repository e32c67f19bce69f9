"""`SurrogateModel`: predict a metric (accuracy, as Once-for-All's accuracy predictor, or a cost) from a subnet.

Fitted on the subnets a search has evaluated, it lets evolution screen thousands of candidates for
the price of a matrix product and spend real evaluations only on the promising ones.

- `"ridge"` (default): ridge regression on `SpaceEncoding.features` (ordinal widths/depths, one-hot
  choices, pairwise products), solved in the dual through one eigendecomposition; the regularisation
  strength is picked from a grid by exact leave-one-out error (`loo_rmse`).
- `"mlp"`: scikit-learn's `MLPRegressor` (two hidden layers of 64) on ordinal and one-hot features.

Evolution uses the chosen kind for accuracy and ridge for costs (MACs and latency are near-linear in the
pairwise features, and ridge refits in milliseconds).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from tailor.checks import one_of
from tailor.search.encoding import SpaceEncoding
from tailor.search.metrics import SearchError
from tailor.space import Subnet

KINDS = ("ridge", "mlp")
_ALPHAS = tuple(10.0**e for e in range(-4, 4))


class SurrogateModel:
    """Regression from subnet encodings to one metric; `fit(indices, values)` then `predict(indices)`."""

    def __init__(self, encoding: SpaceEncoding, kind: str = "ridge", seed: int = 0) -> None:
        one_of("surrogate kind", kind, KINDS, SearchError)
        self.encoding = encoding
        self.kind = kind
        self.seed = seed
        self.loo_rmse: float | None = None
        self.alpha: float | None = None
        self._fitted = False

    def _rows(self, indices: np.ndarray | Sequence[Subnet]) -> np.ndarray:
        if len(indices) and isinstance(indices[0], Subnet):  # type: ignore[index]
            indices = np.array([self.encoding.to_indices(s) for s in indices])  # type: ignore[union-attr]
        idx = np.atleast_2d(np.asarray(indices, dtype=np.int64))
        if idx.shape[1] != len(self.encoding):
            raise SearchError(f"surrogate: expected index vectors of length {len(self.encoding)}, got {idx.shape}")
        return idx

    def _features(self, idx: np.ndarray) -> np.ndarray:
        if self.kind == "ridge":
            return self.encoding.features(idx)
        full = self.encoding.features(idx)
        k = len(self.encoding)
        one_hot = int(sum(c for c in self.encoding.cardinalities if c > 1))
        return full[:, : k + one_hot]  # ordinal and one-hot, no pairwise products

    def fit(self, indices: np.ndarray | Sequence[Subnet], values: Sequence[float]) -> SurrogateModel:
        """Fit to `values` (one per row of `indices`, or per subnet)."""
        idx = self._rows(indices)
        y = np.asarray(values, dtype=np.float64)
        if y.shape != (len(idx),):
            raise SearchError(f"surrogate: {len(idx)} subnets but {y.shape} values")
        if len(y) < 2 or not np.isfinite(y).all():
            raise SearchError("surrogate: needs at least 2 finite values")
        X = self._features(idx)
        self._x_mean = X.mean(axis=0)
        scale = X.std(axis=0)
        self._x_scale = np.where(scale > 0, scale, 1.0)
        self._y_mean = float(y.mean())
        self._y_scale = float(y.std()) or 1.0
        Z = (X - self._x_mean) / self._x_scale
        t = (y - self._y_mean) / self._y_scale
        if self.kind == "ridge":
            self._fit_ridge(Z, t)
        else:
            from sklearn.exceptions import ConvergenceWarning  # deferred: scikit-learn is slow to import
            from sklearn.neural_network import MLPRegressor

            mlp = MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3, learning_rate_init=3e-3, max_iter=1000,
                               tol=1e-5, random_state=self.seed)  # fmt: skip
            with warnings.catch_warnings():  # a small regressor need not converge to rank candidates usefully
                warnings.simplefilter("ignore", ConvergenceWarning)
                self._mlp = mlp.fit(Z, t)
        self._fitted = True
        return self

    def _fit_ridge(self, Z: np.ndarray, t: np.ndarray) -> None:
        s, U = np.linalg.eigh(Z @ Z.T)  # kernel form: cheap when features outnumber samples
        s = np.clip(s, 0.0, None)
        Ut = U.T @ t
        best = None
        for alpha in _ALPHAS:
            shrink = s / (s + alpha)
            fitted = U @ (shrink * Ut)
            leverage = (U * U) @ shrink
            loo = (t - fitted) / np.clip(1.0 - leverage, 1e-9, None)
            rmse = float(np.sqrt(np.mean(loo * loo)))
            if best is None or rmse < best[0]:
                best = (rmse, alpha)
        assert best is not None
        self.loo_rmse, self.alpha = best[0] * self._y_scale, best[1]
        dual = U @ (Ut / (s + self.alpha))
        self._w = Z.T @ dual

    def predict(self, indices: np.ndarray | Sequence[Subnet]) -> np.ndarray:
        """Predicted metric for each row of `indices` (or each subnet)."""
        if not self._fitted:
            raise SearchError("surrogate: predict called before fit")
        idx = self._rows(indices)
        Z = (self._features(idx) - self._x_mean) / self._x_scale
        t = Z @ self._w if self.kind == "ridge" else self._mlp.predict(Z)
        return t * self._y_scale + self._y_mean
