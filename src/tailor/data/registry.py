"""`load_dataset(name, split, root)`: one entry point for every data source, and each one's augmentation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from tailor.checks import positive_int
from tailor.data.cifar import cifar
from tailor.data.digits import digits
from tailor.data.folder import image_folder
from tailor.data.synthetic import synthetic
from tailor.data.transforms import BatchAugmentation
from tailor.errors import DataError

__all__ = ["DATASETS", "default_augmentation", "list_datasets", "load_dataset"]

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
_NEEDS_ROOT = frozenset({"cifar10", "cifar100", "imagefolder"})
_DEFAULT_SIZE = {"digits": 8, "synthetic": 32, "cifar10": 32, "cifar100": 32, "imagefolder": 32}


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts."""
    return list(DATASETS)


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return name


def load_dataset(name: str, split: str = "train", root: str | os.PathLike[str] | None = None, **kwargs: Any) -> Dataset:
    """Load split `split` of data source `name`; `kwargs` go to its loader (`digits`, `synthetic`, ...).

    `cifar10`/`cifar100` need `root` (the extracted folder or its parent); `imagefolder` needs a
    `root` holding one tree per split, `root/<split>/<class>/<image>` (call `image_folder` directly
    for a single tree). `digits` and `synthetic` take no root.
    """
    _check_name(name)
    if name in _NEEDS_ROOT and root is None:
        raise DataError(f"dataset {name!r} reads local files: pass root=<directory>")
    if name not in _NEEDS_ROOT and root is not None:
        raise DataError(f"dataset {name!r} is built in and takes no root (got root={str(root)!r})")
    if name == "digits":
        return digits(split=split, **kwargs)
    if name == "synthetic":
        return synthetic(split=split, **kwargs)
    if name in ("cifar10", "cifar100"):
        return cifar(root, split=split, num_classes=10 if name == "cifar10" else 100, **kwargs)
    tree = Path(root) / split
    if not tree.is_dir():
        raise FileNotFoundError(
            f"imagefolder: no directory {tree}; load_dataset expects {root}/<split>/<class>/<image> "
            "(use tailor.data.image_folder(root) for a tree without splits)"
        )
    return image_folder(tree, **kwargs)


def default_augmentation(name: str, image_size: int | None = None) -> BatchAugmentation:
    """The standard training augmentation for data source `name`.

    Random crop with zero padding of `image_size // 8` pixels (4 at 32x32, 1 at 8x8) for all; a
    random horizontal flip for all except `digits`, whose classes are not mirror-invariant.
    """
    _check_name(name)
    size = _DEFAULT_SIZE[name] if image_size is None else image_size
    positive_int("default_augmentation: image_size", size, DataError)
    return BatchAugmentation(crop_padding=max(1, size // 8), flip=name != "digits")
