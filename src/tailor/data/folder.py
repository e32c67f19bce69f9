"""`image_folder`: a labelled tree of image files, `root/<class>/<image>`, read lazily with PIL.

Classes are the sub-directories of `root`, sorted by name (or the `classes` given, in that order);
images are the files under each class directory (searched recursively, in sorted order) whose
extension is png, jpg, jpeg, bmp, gif or webp, in any case; other files are not images and are
skipped. Each image is converted to RGB, its shorter side resized to `image_size` (bilinear,
antialiased) and the centre `image_size x image_size` square cropped, so aspect ratio is kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.checks import positive_int
from tailor.data.base import TensorImageDataset, check_mean_std
from tailor.data.transforms import Transform, normalize, to_float01
from tailor.errors import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "ImageFolderDataset", "image_folder", "load_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Natural-image defaults (ImageNet's statistics); pass mean/std measured on your training tree to override.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str | os.PathLike[str], image_size: int) -> torch.Tensor:
    """Read one image file as uint8 RGB `[3, image_size, image_size]` (shorter side resized, centre crop).

    An unreadable or corrupt file raises `ValueError` naming it.
    """
    from PIL import Image  # deferred: only needed when images are actually read

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = image_size / min(w, h)
            nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    if array.shape != (image_size, image_size, 3):  # pragma: no cover - guarded by PIL's convert/crop
        raise DataError(f"{path}: decoded to shape {array.shape}, expected ({image_size}, {image_size}, 3)")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _scan(root: Path, classes: Sequence[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root is not a directory: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if not found:
            raise DataError(f"{root}: no class directories (expected {root}/<class>/<image files>)")
        classes = found
    else:
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise DataError(f"image_folder: classes must be a non-empty list of unique names, got {classes}")
        missing = [c for c in classes if not (root / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"{root}: no directory for class(es) {missing}")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = root / name
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(
                Path(dirpath) / f
                for f in sorted(filenames)
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
            )
        if not files:
            raise DataError(f"class directory {class_dir} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
        samples.extend((f, label) for f in files)
    return list(classes), samples


class ImageFolderDataset(Dataset):
    """Images on disk, read on access: item `i` is `(float32 image [3, S, S], int label)`.

    Same attributes as `TensorImageDataset` (`classes`, `num_classes`, `input_size`, `labels`,
    `mean`, `std`, `difficulty` (None), `normalize`, `subset`), plus `samples` (path, label) and
    `to_tensor_dataset()` to read everything into memory for batched training.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        image_size: int,
        transform: Transform | None = None,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "",
    ) -> None:
        self.samples = [(Path(p), int(lab)) for p, lab in samples]
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.transform = transform
        self.mean, self.std = check_mean_std(mean, std, 3, name or "image_folder")
        self.name = name
        self.labels = torch.tensor([lab for _, lab in self.samples], dtype=torch.int64)
        self.difficulty: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return 3, self.image_size, self.image_size

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """Sample `index` as uint8 `[3, S, S]`, before transform and normalisation."""
        return load_image(self.samples[index][0], self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_float01(self.load(index))
        if self.transform is not None:
            x = self.transform(x)
        return normalize(x, self.mean, self.std), self.samples[index][1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images (`[C, H, W]` or `[N, C, H, W]`) -> normalised float32."""
        return normalize(images, self.mean, self.std)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageFolderDataset:
        """The given samples as a new dataset with the same classes, size, mean/std and transform."""
        idx = [int(i) for i in torch.as_tensor(indices, dtype=torch.int64).reshape(-1)]
        return ImageFolderDataset(
            [self.samples[i] for i in idx],
            self.classes,
            self.image_size,
            self.transform,
            mean=self.mean,
            std=self.std,
            name=self.name,
        )

    def with_transform(self, transform: Transform | None) -> ImageFolderDataset:
        """The same samples with another per-sample transform."""
        return ImageFolderDataset(
            self.samples, self.classes, self.image_size, transform, mean=self.mean, std=self.std, name=self.name
        )

    def to_tensor_dataset(self) -> TensorImageDataset:
        """Read every image now into a uint8 `TensorImageDataset` (same classes, labels, mean/std, transform)."""
        n, s = len(self), self.image_size
        images = torch.empty((n, 3, s, s), dtype=torch.uint8)
        for i in range(n):
            images[i] = self.load(i)
        return TensorImageDataset(
            images,
            self.labels.clone(),
            self.classes,
            None,
            self.transform,
            mean=self.mean,
            std=self.std,
            name=self.name,
        )

    def __repr__(self) -> str:
        return f"ImageFolderDataset(n={len(self)}, classes={self.num_classes}, input_size={self.input_size})"


def image_folder(
    root: str | os.PathLike[str],
    image_size: int = 32,
    classes: Sequence[str] | None = None,
    transform: Transform | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> ImageFolderDataset:
    """Index `root/<class>/<image>` (see the module docstring); images are read when accessed.

    Raises `FileNotFoundError` for a missing root or class directory and `ValueError` for a tree
    without class directories or a class without images.
    """
    positive_int("image_folder: image_size", image_size, DataError)
    root_path = Path(root)
    class_names, samples = _scan(root_path, classes)
    return ImageFolderDataset(
        samples, class_names, image_size, transform, mean=mean, std=std, name=f"imagefolder:{root_path}"
    )
