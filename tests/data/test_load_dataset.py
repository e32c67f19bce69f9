"""Tests of `tailor.data.load_dataset`, `list_datasets` and `default_augmentation`."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tailor.data import (
    DATASETS,
    BatchAugmentation,
    ImageFolderDataset,
    default_augmentation,
    digits,
    list_datasets,
    load_dataset,
    synthetic,
)


def test_list_datasets():
    assert list_datasets() == ["digits", "synthetic", "cifar10", "cifar100", "imagefolder"] == list(DATASETS)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid names: digits, synthetic, cifar10"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="valid names"):
        default_augmentation("mnist")


def test_root_is_required_exactly_where_files_are_read(tmp_path):
    for name in ("cifar10", "cifar100", "imagefolder"):
        with pytest.raises(ValueError, match=f"dataset '{name}' reads local files: pass root"):
            load_dataset(name)
    with pytest.raises(ValueError, match="takes no root"):
        load_dataset("digits", root=tmp_path)


def test_builtin_sources_dispatch_with_kwargs():
    ds = load_dataset("digits", "test", seed=2)
    assert torch.equal(ds.images, digits("test", seed=2).images)
    syn = load_dataset("synthetic", "test", n=12, num_classes=4)
    assert torch.equal(syn.images, synthetic(n=12, split="test", num_classes=4).images)
    assert syn.num_classes == 4


def test_cifar_dispatch(cifar10_files, cifar100_files):
    c10 = load_dataset("cifar10", "test", root=cifar10_files["folder"].parent)
    assert c10.num_classes == 10 and c10.labels.tolist() == cifar10_files["test_labels"]
    c100 = load_dataset("cifar100", "train", root=cifar100_files["folder"].parent)
    assert c100.num_classes == 100 and c100.labels.tolist() == cifar100_files["train"][b"fine_labels"]


def test_imagefolder_uses_one_tree_per_split(tmp_path):
    for split, n in (("train", 2), ("val", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                path = tmp_path / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(path)
    train = load_dataset("imagefolder", "train", root=tmp_path, image_size=6)
    val = load_dataset("imagefolder", "val", root=tmp_path, image_size=6)
    assert isinstance(train, ImageFolderDataset) and len(train) == 4 and len(val) == 2
    assert train.input_size == (3, 6, 6) and val.classes == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"no directory .*test.*image_folder\(root\)"):
        load_dataset("imagefolder", "test", root=tmp_path)


def test_default_augmentation_recipes():
    assert default_augmentation("digits") == BatchAugmentation(crop_padding=1, flip=False)
    assert default_augmentation("digits", image_size=32) == BatchAugmentation(crop_padding=4, flip=False)
    for name in ("synthetic", "cifar10", "cifar100", "imagefolder"):
        assert default_augmentation(name) == BatchAugmentation(crop_padding=4, flip=True)
    assert default_augmentation("imagefolder", image_size=64).crop_padding == 8
    with pytest.raises(ValueError, match="image_size"):
        default_augmentation("cifar10", image_size=0)
