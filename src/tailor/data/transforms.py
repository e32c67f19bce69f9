"""Augmentation and normalisation written with torch ops only (no torchvision).

Two flavours of the same recipe:

- per-sample transforms (`RandomCrop`, `RandomHorizontalFlip`, `Normalize`, `Compose`) take one
  image `[C, H, W]` and are what a `Dataset`'s `transform=` expects;
- batched ones (`random_crop_batch`, `random_flip_batch`, `augment_batch`, `BatchAugmentation`) take a
  whole `[N, C, H, W]` batch on any device, which is much faster than per-sample work on a CPU.

Randomness: every random transform takes an optional `torch.Generator`. With one, results are
reproducible (same seed, same output); without one, torch's global RNG is used, which is what
`DataLoader` workers reseed per worker. A generator object stored in a per-sample transform is
copied into each `DataLoader` worker, so all workers would draw the same stream: use the global RNG
(no generator) with `num_workers > 0`. Batched transforms draw their random numbers on the
generator's device (the CPU for `None`) and move only the small index tensors to the batch's device,
so one seed gives the same augmentation on CPU and GPU.

Images are float in [0, 1] (or uint8 in [0, 255]; crops and flips keep the dtype); zero padding is
black, as in the standard CIFAR recipe, so augment before `Normalize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tailor.checks import fraction, non_negative_int
from tailor.errors import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "BatchAugmentation",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Transform",
    "augment_batch",
    "normalize",
    "random_crop_batch",
    "random_flip_batch",
    "to_float01",
]


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_image(x: torch.Tensor, what: str, batched: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    want = 4 if batched else 3
    if x.dim() != want:
        shape = "[N, C, H, W]" if batched else "[C, H, W]"
        raise DataError(f"{what}: expected a {want}-d tensor {shape}, got shape {tuple(x.shape)}")


def _size_pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pair):
        raise DataError(f"{what}: size must be a positive int or a pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def to_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1]; floating images are returned as float32 unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got dtype {x.dtype}")
    return x.to(torch.float32)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`(to_float01(x) - mean) / std` per channel, for `[C, H, W]` or `[N, C, H, W]` on any device."""
    if x.dim() not in (3, 4):
        raise DataError(f"normalize: expected [C, H, W] or [N, C, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"normalize: images have {channels} channels but mean has {len(mean)} and std has {len(std)} values"
        )
    xf = to_float01(x)
    m = torch.tensor([float(v) for v in mean], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return (xf - m) / s


class Normalize:
    """Per-channel `(x - mean) / std`; uint8 input is scaled to [0, 1] first."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or not mean:
            raise DataError(f"Normalize: mean and std need one value per channel, got {mean!r} and {std!r}")
        if any(not math.isfinite(float(s)) or float(s) <= 0 for s in std):
            raise DataError(f"Normalize: every std must be a finite number > 0, got {std!r}")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomCrop:
    """Zero-pad by `padding` on each side, then crop a random `size` window from one `[C, H, W]` image.

    `generator=None` uses torch's global RNG (see the module docstring for `DataLoader` workers).
    """

    def __init__(self, size: int | Sequence[int], padding: int = 0, generator: torch.Generator | None = None) -> None:
        self.size = _size_pair(size, "RandomCrop")
        self.padding = non_negative_int("RandomCrop: padding", padding, DataError)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "RandomCrop", batched=False)
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        th, tw = self.size
        h, w = x.shape[-2:]
        if th > h or tw > w:
            raise DataError(f"RandomCrop: crop {th}x{tw} is larger than the padded image {h}x{w}")
        dev = _gen_device(self.generator)
        top = int(torch.randint(0, h - th + 1, (1,), generator=self.generator, device=dev))
        left = int(torch.randint(0, w - tw + 1, (1,), generator=self.generator, device=dev))
        return x[:, top : top + th, left : left + tw]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror one `[C, H, W]` image left-right with probability `p`."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = fraction("RandomHorizontalFlip: probability", p, DataError)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "RandomHorizontalFlip", batched=False)
        u = float(torch.rand((1,), generator=self.generator, device=_gen_device(self.generator)))
        return x.flip(-1) if u < self.p else x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def random_crop_batch(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad every image of `[N, C, H, W]` by `padding` and crop an independent random `H x W` window.

    The output has the input's shape, dtype and device; `padding=0` returns the input unchanged.
    """
    _check_image(x, "random_crop_batch", batched=True)
    p = non_negative_int("random_crop_batch: padding", padding, DataError)
    if p == 0 or x.shape[0] == 0:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=_gen_device(generator)).to(x.device)
    padded = F.pad(x, (p, p, p, p))
    rows = offsets[0].unsqueeze(1) + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1].unsqueeze(1) + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)
    # Advanced indices around a slice: the indexed dims come first -> [N, H, W, C].
    out = padded[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip_batch(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of `[N, C, H, W]` left-right independently with probability `p`."""
    _check_image(x, "random_flip_batch", batched=True)
    p = fraction("random_flip_batch: probability", p, DataError)
    if p == 0.0 or x.shape[0] == 0:
        return x
    mask = torch.rand((x.shape[0],), generator=generator, device=_gen_device(generator)) < p
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    crop_padding: int = 4,
    flip: bool = True,
    flip_p: float = 0.5,
) -> torch.Tensor:
    """The standard recipe on a whole batch: random crop with zero padding, then random horizontal flip.

    Crop offsets are drawn before flip decisions, both from `generator` (or the global RNG).
    """
    x = random_crop_batch(x, crop_padding, generator)
    if flip:
        x = random_flip_batch(x, flip_p, generator)
    return x


@dataclass(frozen=True)
class BatchAugmentation:
    """A named augmentation recipe: call it on a batch, or get the per-sample equivalent for a Dataset."""

    crop_padding: int = 4
    flip: bool = True
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        non_negative_int("BatchAugmentation: crop_padding", self.crop_padding, DataError)
        fraction("BatchAugmentation: flip_p", self.flip_p, DataError)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return augment_batch(x, generator, crop_padding=self.crop_padding, flip=self.flip, flip_p=self.flip_p)

    def per_sample(self, image_size: int | Sequence[int], generator: torch.Generator | None = None) -> Compose:
        """The same recipe as per-sample transforms for `Dataset(transform=...)` (image `[C, H, W]`)."""
        steps: list[Transform] = []
        if self.crop_padding:
            steps.append(RandomCrop(image_size, padding=self.crop_padding, generator=generator))
        if self.flip and self.flip_p > 0:
            steps.append(RandomHorizontalFlip(self.flip_p, generator=generator))
        return Compose(steps)
