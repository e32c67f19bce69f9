"""`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, 10 classes).

The only real image data available offline everywhere. scikit-learn ships it inside the package, so
nothing is downloaded; it is imported only when `digits()` is called.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from tailor.checks import number, one_of, positive_int
from tailor.data.base import TensorImageDataset, channel_stats
from tailor.errors import DataError

__all__ = ["digits", "stratified_split"]

_INTERPOLATION = ("nearest", "bilinear")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: from each class, `round(test_fraction * n_class)` random samples go to test.

    Returns sorted train and test index arrays that partition `range(len(labels))`.
    """
    number("test_fraction", test_fraction, DataError, low=0, high=1, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = round(test_fraction * len(members))
        test.append(rng.permutation(members)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


@functools.lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """scikit-learn's digits as read-only uint8 pixels 0..255 `[1797, 8, 8]`, labels and class names (cached)."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

    bunch = load_digits()
    raw = np.asarray(bunch.images, dtype=np.float64)  # values 0..16
    if raw.min() < 0 or raw.max() > 16:
        raise DataError(f"digits: scikit-learn's images should lie in [0, 16], got [{raw.min()}, {raw.max()}]")
    pixels = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels, tuple(int(c) for c in bunch.target_names)


def _resize(images: torch.Tensor, image_size: int, interpolation: str) -> torch.Tensor:
    if images.shape[-1] == image_size:
        return images
    x = images.to(torch.float32)
    if interpolation == "nearest":
        y = F.interpolate(x, size=(image_size, image_size), mode="nearest-exact")
    else:
        y = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=image_size < x.shape[-1]
        )
    return y.round_().clamp_(0, 255).to(torch.uint8)


def digits(
    split: str = "train",
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int = 8,
    interpolation: str = "bilinear",
    channels: int = 1,
) -> TensorImageDataset:
    """One split of scikit-learn's digits: uint8 images `[N, channels, image_size, image_size]`, 10 classes.

    The split is stratified and fixed by `seed` (train and test partition the 1,797 images). Pixel
    values 0..16 are scaled to 0..255; `image_size != 8` resizes with `interpolation` ("nearest" or
    "bilinear"); `channels=3` repeats the grey channel for RGB models. `mean`/`std` are the
    training split's, for both splits.
    """
    if split not in ("train", "test"):
        raise DataError(f"digits: split must be 'train' or 'test', got {split!r}")
    positive_int("digits: image_size", image_size, DataError)
    one_of("digits: interpolation", interpolation, _INTERPOLATION, DataError)
    if channels not in (1, 3):
        raise DataError(f"digits: channels must be 1 or 3, got {channels!r}")

    pixels, labels, names = _load_raw()
    images = _resize(torch.from_numpy(pixels.copy()).unsqueeze(1), image_size, interpolation)
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    mean, std = channel_stats(images[torch.from_numpy(train_idx)])
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    classes = [str(c) for c in names]
    return TensorImageDataset(
        images[idx].contiguous(),
        torch.from_numpy(labels.copy())[idx],
        classes,
        mean=mean,
        std=std,
        name=f"digits/{split}",
    )
