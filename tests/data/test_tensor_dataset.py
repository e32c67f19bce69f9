"""Tests of `TensorImageDataset`: items, normalisation, transforms, subsets and validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from tailor.data import TensorImageDataset, channel_stats


def make(n: int = 6, c: int = 3, size: int = 4, **kwargs) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    kwargs.setdefault("mean", (0.5,) * c)
    kwargs.setdefault("std", (0.25,) * c)
    return TensorImageDataset(images, labels, ["a", "b", "c"], **kwargs)


def test_item_is_normalised_float_image_and_int_label():
    ds = make()
    x, y = ds[4]
    assert x.dtype == torch.float32 and x.shape == (3, 4, 4)
    assert isinstance(y, int) and y == 1
    expected = (ds.images[4].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(ds.normalize(ds.images[4:5]), expected.unsqueeze(0))
    assert ds.num_classes == 3 and ds.input_size == (3, 4, 4) and len(ds) == 6


def test_float_images_in_unit_range_are_accepted_as_is():
    images = torch.full((2, 1, 2, 2), 0.75)
    ds = TensorImageDataset(images, torch.tensor([0, 1]), ["x", "y"], mean=(0.25,), std=(0.5,))
    torch.testing.assert_close(ds[0][0], torch.full((1, 2, 2), 1.0))


def test_transform_sees_unit_range_floats_before_normalisation():
    seen = []

    def transform(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.dtype, float(x.min()), float(x.max())))
        return torch.zeros_like(x)

    ds = make(transform=transform)
    x, _ = ds[0]
    assert seen[0][0] == torch.float32 and 0.0 <= seen[0][1] <= seen[0][2] <= 1.0
    torch.testing.assert_close(x, torch.full((3, 4, 4), -2.0))  # (0 - 0.5) / 0.25
    plain = ds.with_transform(None)
    assert plain.images is ds.images and plain.transform is None
    torch.testing.assert_close(plain[0][0], (ds.images[0].float() / 255 - 0.5) / 0.25)


def test_default_mean_std_are_the_images_own_statistics():
    ds = make(mean=None, std=None)
    x = ds.images.double() / 255
    torch.testing.assert_close(torch.tensor(ds.mean), x.mean(dim=(0, 2, 3)).float(), rtol=0, atol=1e-6)
    std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    torch.testing.assert_close(torch.tensor(ds.std), std.float(), rtol=0, atol=1e-6)
    assert channel_stats(ds.images) == (ds.mean, ds.std)


@settings(max_examples=25, deadline=None)
@given(indices=st.lists(st.integers(-6, 5), max_size=10))
def test_subset_selects_and_keeps_everything_else(indices):
    ds = make(difficulty=torch.linspace(0, 1, 6))
    sub = ds.subset(indices)
    assert len(sub) == len(indices)
    for k, i in enumerate(indices):
        assert torch.equal(sub.images[k], ds.images[i])
        assert int(sub.labels[k]) == int(ds.labels[i])
        assert float(sub.difficulty[k]) == float(ds.difficulty[i])
    assert sub.classes == ds.classes and sub.mean == ds.mean and sub.std == ds.std


def test_subset_rejects_out_of_range_indices():
    with pytest.raises(IndexError, match=r"\[-6, 6\)"):
        make().subset([0, 6])


def test_dataloader_batches():
    batch_x, batch_y = next(iter(DataLoader(make(), batch_size=4)))
    assert batch_x.shape == (4, 3, 4, 4) and batch_y.tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.zeros(2, 4, 4, dtype=torch.uint8)}, r"\[N, C, H, W\]"),
        ({"images": torch.zeros(2, 1, 4, 4, dtype=torch.int32)}, "uint8 or floating"),
        ({"images": torch.full((2, 1, 4, 4), 1.5)}, r"\[0, 1\]"),
        ({"labels": torch.tensor([0, 1, 2])}, "length 2"),
        ({"labels": torch.tensor([0.0, 1.0])}, "integers"),
        ({"labels": torch.tensor([0, 2])}, r"\[0, 2\)"),
        ({"labels": torch.tensor([-1, 0])}, r"\[0, 2\)"),
        ({"classes": ["a", "a"]}, "unique"),
        ({"classes": []}, "empty"),
        ({"difficulty": torch.zeros(3)}, r"shape \(2,\)"),
        ({"mean": (0.5, 0.5)}, "1 values"),
        ({"std": (0.0,)}, "std"),
    ],
)
def test_validation_names_the_problem(kwargs, match):
    args = {
        "images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
        "labels": torch.tensor([0, 1]),
        "classes": ["a", "b"],
        "mean": (0.5,),
        "std": (0.5,),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        TensorImageDataset(**args)
