"""`TensorImageDataset`: an in-memory labelled image set (digits, synthetic, CIFAR, loaded folders).

Images are stored as given (uint8 in [0, 255] or float in [0, 1]) so a whole split stays small and
can be moved to a device at once; `__getitem__` returns one float32 image normalised with the
dataset's per-channel `mean`/`std`, after the optional per-sample `transform` (which sees floats in
[0, 1], so zero padding is black). A trainer that augments whole batches uses `images`, `labels`
and `normalize(batch)` directly instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from tailor.data.transforms import Transform, normalize, to_float01
from tailor.errors import DataError

__all__ = ["TensorImageDataset", "channel_stats"]


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of `[N, C, H, W]` images, in [0, 1] units (float64 sums)."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise DataError(f"channel_stats: expected a non-empty [N, C, H, W] tensor, got shape {tuple(images.shape)}")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = to_float01(images[start : start + chunk]).to(torch.float64).cpu()
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())


def check_mean_std(mean: Sequence[float], std: Sequence[float], channels: int, where: str) -> tuple[tuple, tuple]:
    """Validate per-channel normalisation constants; returns them as float tuples."""
    mean_t = tuple(float(v) for v in mean)
    std_t = tuple(float(v) for v in std)
    if len(mean_t) != channels or len(std_t) != channels:
        raise DataError(f"{where}: mean/std need {channels} values (one per channel), got {mean_t} and {std_t}")
    if any(not math.isfinite(v) for v in mean_t) or any(not math.isfinite(v) or v <= 0 for v in std_t):
        raise DataError(f"{where}: mean must be finite and std finite and > 0, got {mean_t} and {std_t}")
    return mean_t, std_t


class TensorImageDataset(Dataset):
    """Labelled images held in memory: item `i` is `(float32 image [C, H, W], int label)`.

    `images`: uint8 `[N, C, H, W]` in [0, 255] or float in [0, 1]; `labels`: int64 `[N]` in
    `[0, len(classes))`; `difficulty`: optional float `[N]` in [0, 1] (the synthetic set records it).
    `mean`/`std` default to the images' own per-channel statistics; loaders pass the training split's
    so that train and test are normalised alike.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        difficulty: torch.Tensor | None = None,
        transform: Transform | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "",
    ) -> None:
        where = f"dataset {name!r}" if name else "TensorImageDataset"
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"{where}: images must be a [N, C, H, W] tensor, got {shape}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise DataError(f"{where}: images must be uint8 or floating point, got dtype {images.dtype}")
        if images.is_floating_point() and images.numel() and (images.min() < 0 or images.max() > 1):
            raise DataError(
                f"{where}: float images must lie in [0, 1], got range "
                f"[{float(images.min()):.4g}, {float(images.max()):.4g}]"
            )
        n = images.shape[0]
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != n:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise DataError(f"{where}: labels must be a 1-d tensor of length {n}, got {shape}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise DataError(f"{where}: labels must be integers, got dtype {labels.dtype}")
        classes = [str(c) for c in classes]
        if not classes:
            raise DataError(f"{where}: classes must not be empty")
        if len(set(classes)) != len(classes):
            raise DataError(f"{where}: class names must be unique, got {classes}")
        labels = labels.to(torch.int64)
        if n and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DataError(
                f"{where}: labels must be in [0, {len(classes)}), got range [{int(labels.min())}, {int(labels.max())}]"
            )
        if difficulty is not None:
            if not isinstance(difficulty, torch.Tensor) or difficulty.shape != (n,):
                shape = tuple(difficulty.shape) if isinstance(difficulty, torch.Tensor) else type(difficulty).__name__
                raise DataError(f"{where}: difficulty must be a float tensor of shape ({n},), got {shape}")
            difficulty = difficulty.to(torch.float32)
        if mean is None or std is None:
            if n == 0:
                raise DataError(f"{where}: an empty dataset needs explicit mean and std")
            stats = channel_stats(images)
            mean = stats[0] if mean is None else mean
            std = tuple(max(s, 1e-6) for s in stats[1]) if std is None else std
        self.mean, self.std = check_mean_std(mean, std, images.shape[1], where)
        self.images = images
        self.labels = labels
        self.classes = classes
        self.difficulty = difficulty
        self.transform = transform
        self.name = name

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of `classes`, even if some have no sample in this split)."""
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """`(C, H, W)` of the images `__getitem__` returns (without a size-changing transform)."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_float01(self.images[index])
        if self.transform is not None:
            x = self.transform(x)
        return normalize(x, self.mean, self.std), int(self.labels[index])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images (`[C, H, W]` or `[N, C, H, W]`, any device) -> normalised float32."""
        return normalize(images, self.mean, self.std)

    def _replace(
        self, index: torch.Tensor | slice | None, transform: Transform | None, name: str
    ) -> TensorImageDataset:
        sel = (lambda t: t) if index is None else (lambda t: t[index])
        return TensorImageDataset(
            sel(self.images),
            sel(self.labels),
            self.classes,
            None if self.difficulty is None else sel(self.difficulty),
            transform,
            mean=self.mean,
            std=self.std,
            name=name,
        )

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorImageDataset:
        """A new dataset of the given samples (copied), keeping classes, mean/std, difficulty and transform."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"subset: indices must lie in [-{n}, {n}), got range [{int(idx.min())}, {int(idx.max())}]")
        return self._replace(idx, self.transform, self.name)

    def with_transform(self, transform: Transform | None) -> TensorImageDataset:
        """The same samples (shared, not copied) with another per-sample transform, e.g. none for evaluation."""
        return self._replace(None, transform, self.name)

    def __repr__(self) -> str:
        c, h, w = self.input_size
        label = f"{self.name!r}, " if self.name else ""
        return (
            f"TensorImageDataset({label}n={len(self)}, classes={self.num_classes}, input_size=({c}, {h}, {w}), "
            f"dtype={self.images.dtype}, difficulty={'yes' if self.difficulty is not None else 'no'})"
        )
