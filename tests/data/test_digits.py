"""Tests of `tailor.data.digits`: exact pixels, stratified disjoint splits, resizing, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from tailor.data import channel_stats, digits, stratified_split


@pytest.fixture(scope="module")
def raw():
    bunch = load_digits()
    return np.rint(bunch.images * 255 / 16).astype(np.uint8), bunch.target.astype(np.int64)


def test_pixels_and_labels_match_scikit_learn(raw):
    pixels, labels = raw
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        ds = digits(split)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(idx), 1, 8, 8)
        assert np.array_equal(ds.images[:, 0].numpy(), pixels[idx])
        assert np.array_equal(ds.labels.numpy(), labels[idx])
        assert ds.classes == [str(i) for i in range(10)] and ds.input_size == (1, 8, 8)
    assert int(digits("train").images.max()) == 255  # 16 -> 255


def test_splits_partition_the_data_and_are_stratified(raw):
    _, labels = raw
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    assert len(train_idx) + len(test_idx) == 1797
    assert not set(train_idx) & set(test_idx)
    for cls in range(10):
        n_cls = int((labels == cls).sum())
        assert int((labels[test_idx] == cls).sum()) == round(0.2 * n_cls)
    assert len(digits("train")) == len(train_idx) and len(digits("test")) == len(test_idx)


@settings(max_examples=20, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_stratified_split_property(labels, fraction, seed):
    y = np.array(labels)
    train, test = stratified_split(y, fraction, seed)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    for cls in np.unique(y):
        assert (y[test] == cls).sum() == round(fraction * (y == cls).sum())
    again = stratified_split(y, fraction, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_split_is_deterministic_and_depends_on_seed():
    a, b = digits("test", seed=0), digits("test", seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = digits("test", seed=1)
    assert not torch.equal(a.images, c.images)


def test_nearest_upsampling_replicates_pixels():
    small, big = digits("test"), digits("test", image_size=32, interpolation="nearest")
    assert big.images.shape == (len(small), 1, 32, 32) and big.input_size == (1, 32, 32)
    assert torch.equal(big.images, small.images.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def test_bilinear_upsampling_and_three_channels():
    ds = digits("test", image_size=16, channels=3)
    assert ds.images.shape[1:] == (3, 16, 16) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(ds.images[:, 0], ds.images[:, 2])
    mean_small = digits("test").images.float().mean()
    assert abs(ds.images.float().mean() - mean_small) < 2.0  # resizing keeps overall brightness


def test_mean_std_come_from_the_training_split_for_both():
    train, test = digits("train"), digits("test")
    assert train.mean == test.mean and train.std == test.std
    assert (train.mean, train.std) == channel_stats(train.images)
    x, _ = test[0]
    torch.testing.assert_close(x, (test.images[0].float() / 255 - train.mean[0]) / train.std[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"image_size": 0}, "image_size"),
        ({"interpolation": "bicubic"}, "interpolation"),
        ({"channels": 2}, "channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits(**kwargs)
