"""Tests of `tailor.data.synthetic`: determinism, disjoint streams, difficulty and what it controls."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tailor.data import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
    TensorImageDataset,
    channel_stats,
    generate_synthetic,
    synthetic,
)
from tailor.data.synthetic import CHUNK


@pytest.fixture(scope="module")
def batch():
    return generate_synthetic(1200, "train", seed=0)


def hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in images}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def high_frequency(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally adjacent pixels, per image (pixel noise raises it)."""
    x = images.float() / 255
    return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))


def test_same_arguments_give_identical_tensors_and_prefixes(batch):
    again = generate_synthetic(1200, "train", seed=0)
    assert torch.equal(batch.images, again.images) and torch.equal(batch.labels, again.labels)
    assert torch.equal(batch.difficulty, again.difficulty)
    prefix = generate_synthetic(CHUNK + 7, "train", seed=0)  # crosses a chunk boundary
    assert torch.equal(prefix.images, batch.images[: CHUNK + 7])


def test_generation_does_not_depend_on_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = generate_synthetic(300, "test", seed=4)
    finally:
        torch.set_num_threads(before)
    one = generate_synthetic(300, "test", seed=4)
    assert torch.equal(one.images, two.images)


def test_splits_and_seeds_are_separate_streams(batch):
    test = generate_synthetic(600, "test", seed=0)
    other_seed = generate_synthetic(600, "train", seed=1)
    train_hashes = hashes(batch.images)
    assert len(train_hashes) == len(batch.images)  # no duplicate inside a split
    assert not train_hashes & hashes(test.images)
    assert not train_hashes & hashes(other_seed.images)


def test_shapes_labels_and_classes(batch):
    assert batch.images.shape == (1200, 3, 32, 32) and batch.images.dtype == torch.uint8
    assert batch.labels.dtype == torch.int64
    counts = torch.bincount(batch.labels, minlength=10)
    assert counts.min() > 80  # every class present, roughly balanced
    small = synthetic(n=50, num_classes=3, image_size=16)
    assert small.classes == ["disc", "square", "triangle"] and int(small.labels.max()) <= 2
    assert small.images.shape == (50, 3, 16, 16) and small.input_size == (3, 16, 16)
    assert synthetic(n=0).images.shape == (0, 3, 32, 32)


def test_difficulty_is_uniform_in_unit_interval_and_recorded(batch):
    d = batch.difficulty
    assert d.dtype == torch.float32 and float(d.min()) >= 0.0 and float(d.max()) <= 1.0
    assert abs(float(d.mean()) - 0.5) < 0.04
    assert abs(float((d < 0.3).float().mean()) - 0.3) < 0.05
    ds = synthetic(n=100)
    assert isinstance(ds, TensorImageDataset) and ds.difficulty is not None
    assert torch.equal(ds.difficulty, batch.difficulty[:100])
    assert torch.equal(ds.images, batch.images[:100])


def test_difficulty_drives_each_factor(batch):
    d = batch.difficulty
    torch.testing.assert_close(batch.noise_std, 0.02 + 0.18 * d)
    assert pearson(d, batch.radius) < -0.9  # harder -> smaller objects
    assert pearson(d, batch.contrast) < -0.4  # harder -> less contrast
    assert pearson(d, batch.distractors.float()) > 0.4  # harder -> more clutter
    assert bool((batch.distractors <= (1 + 3 * d).floor()).all())  # at most floor(1 + 3d) distractors
    assert int(batch.distractors.max()) == 3
    assert float(batch.occluded[d > 0.7].float().mean()) > 0.5
    assert float(batch.occluded[d < 0.1].float().mean()) < 0.1


def test_difficulty_is_visible_in_the_pixels(batch):
    # Pixel noise raises the high-frequency energy of an image; harder images have more of it.
    assert pearson(batch.difficulty, high_frequency(batch.images)) > 0.5
    easy = generate_synthetic(200, seed=3, difficulty=0.0)
    hard = generate_synthetic(200, seed=3, difficulty=1.0)
    assert float(high_frequency(hard.images).mean()) > 2 * float(high_frequency(easy.images).mean())
    assert int(easy.distractors.sum()) == 0 and not bool(easy.occluded.any())


def test_explicit_difficulty_forms():
    fixed = generate_synthetic(20, difficulty=0.25)
    assert torch.equal(fixed.difficulty, torch.full((20,), 0.25))
    ranged = generate_synthetic(300, difficulty=(0.6, 0.8))
    assert float(ranged.difficulty.min()) >= 0.6 and float(ranged.difficulty.max()) <= 0.8
    given = torch.linspace(0, 1, CHUNK + 3)
    per_image = generate_synthetic(CHUNK + 3, difficulty=given)
    assert torch.equal(per_image.difficulty, given)
    # Explicit difficulty changes only what it controls: labels come from the same stream.
    assert torch.equal(per_image.labels, generate_synthetic(CHUNK + 3).labels)


def test_colour_is_independent_of_class():
    train = generate_synthetic(2000, "train", seed=0)
    test = generate_synthetic(1000, "test", seed=0)

    def features(images: torch.Tensor) -> np.ndarray:
        return (images.float() / 255).mean(dim=(2, 3)).numpy()  # mean colour per image

    clf = LogisticRegression(max_iter=1000).fit(features(train.images), train.labels.numpy())
    assert clf.score(features(test.images), test.labels.numpy()) < 0.16  # chance is 0.10


def test_normalisation_constants_match_the_generated_data(batch):
    mean, std = channel_stats(batch.images)
    assert np.allclose(mean, SYNTHETIC_MEAN, atol=0.02) and np.allclose(std, SYNTHETIC_STD, atol=0.02)
    ds = synthetic(n=10, split="test")
    assert ds.mean == SYNTHETIC_MEAN and ds.std == SYNTHETIC_STD
    assert len(synthetic(split="test", n=None, image_size=8)) == 2000
    assert ds.classes == list(SYNTHETIC_CLASSES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split"),
        ({"n": -1}, "n must"),
        ({"num_classes": 11}, "num_classes"),
        ({"num_classes": 1}, "num_classes"),
        ({"image_size": 4}, "image_size"),
        ({"seed": -3}, "seed"),
        ({"difficulty": (0.8, 0.2)}, "difficulty"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": torch.zeros(3)}, "difficulty"),
        ({"difficulty": "hard"}, "difficulty"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        generate_synthetic(**args)
