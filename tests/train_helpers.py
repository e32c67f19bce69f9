"""Small in-memory data and a norm-free elastic model shared by the training tests (and their subprocesses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tailor.ops import ElasticConv2d, ElasticLinear, ElasticModel
from tailor.space import SearchSpace, WidthDim


class BlobImages(torch.utils.data.Dataset):
    """Seeded 3x16x16 images whose class sets the mean brightness of one colour channel (learnable fast)."""

    def __init__(self, n: int, seed: int, num_classes: int = 4, size: int = 16) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        images = torch.randn(n, 3, size, size, generator=g) * 0.5
        images[torch.arange(n), self.labels % 3] += (1 + self.labels // 3).float().view(-1, 1, 1)
        self.images = images
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class PerSampleImages(BlobImages):
    """The same data served one sample at a time (no `images` attribute: takes the DataLoader path)."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self._x, self._y = self.images, self.labels
        del self.images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._x[index], int(self._y[index])


class NormFreeNet(ElasticModel):
    """conv -> relu -> conv -> relu -> pool -> linear, no normalisation (so data parallelism is exact)."""

    def __init__(self, num_classes: int = 4) -> None:
        space = SearchSpace([WidthDim("c1", 8, (0.5, 1.0)), WidthDim("c2", 16, (0.25, 0.5, 1.0))])
        super().__init__(space)
        self.default_input_size = (3, 16, 16)
        self.conv1 = ElasticConv2d(3, 8, 3, padding=1, bias=True, out_dim="c1")
        self.conv2 = ElasticConv2d(8, 16, 3, padding=1, bias=True, in_dim="c1", out_dim="c2")
        self.fc = ElasticLinear(16, num_classes, in_dim="c2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> list[str]:
    """Names whose tensors differ (by more than `atol`) or exist in only one of the two."""
    differ = sorted(set(a) ^ set(b))
    for name in set(a) & set(b):
        if a[name].shape != b[name].shape or not torch.allclose(a[name].float(), b[name].float(), atol=atol, rtol=0):
            differ.append(name)
    return differ
