"""Tests of `tailor.data.transforms`: shapes, exact crop windows, flips, identity cases, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.data.transforms import (
    BatchAugmentation,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    augment_batch,
    normalize,
    random_crop_batch,
    random_flip_batch,
    to_float01,
)

# -- strategies ------------------------------------------------------------------------------------

batch_shapes = st.tuples(
    st.integers(0, 5), st.sampled_from([1, 3]), st.integers(1, 10), st.integers(1, 10)
)  # (N, C, H, W)
dtypes = st.sampled_from([torch.uint8, torch.float32])


def distinct_batch(shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """A batch whose every pixel value is distinct and nonzero (so a crop window is identifiable)."""
    n = 1
    for s in shape:
        n *= s
    x = torch.arange(1, n + 1, dtype=torch.float64).reshape(shape)
    if dtype == torch.uint8:
        return (x % 255 + 1).to(torch.uint8)  # not distinct when large, used only for shape checks
    return (x / (n + 1)).to(dtype)


def find_window(padded: torch.Tensor, out: torch.Tensor) -> list[tuple[int, int]]:
    """All (top, left) at which `out` [C, H, W] equals a window of `padded` [C, H + 2p, W + 2p]."""
    h, w = out.shape[-2:]
    hits = []
    for top in range(padded.shape[-2] - h + 1):
        for left in range(padded.shape[-1] - w + 1):
            if torch.equal(padded[:, top : top + h, left : left + w], out):
                hits.append((top, left))
    return hits


# -- batched ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(shape=batch_shapes, padding=st.integers(0, 5), dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_crop_batch_keeps_shape_dtype(shape, padding, dtype, seed):
    x = distinct_batch(shape, dtype)
    out = random_crop_batch(x, padding, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    assert out.dtype == x.dtype


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.sampled_from([1, 3]), st.integers(2, 8), st.integers(2, 8)),
    padding=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_crop_batch_is_a_window_of_the_zero_padded_image(shape, padding, seed):
    x = distinct_batch(shape, torch.float32)
    out = random_crop_batch(x, padding, torch.Generator().manual_seed(seed))
    padded = F.pad(x, (padding,) * 4)
    for n in range(shape[0]):
        # (A window lying mostly in the zero border can match several offsets, all valid.)
        assert find_window(padded[n], out[n]), f"image {n}: output is not a window of the padded input"


def test_crop_batch_offsets_cover_the_whole_range_independently():
    # On an all-ones image, the zero border that shows identifies the (top, left) offset uniquely.
    x = torch.ones(400, 1, 6, 6)
    out = random_crop_batch(x, 2, torch.Generator().manual_seed(0))
    patterns = {tuple(o.flatten().tolist()) for o in out}
    assert len(patterns) == 25  # all 5 x 5 offsets are drawn, per image


@settings(max_examples=30, deadline=None)
@given(shape=batch_shapes, dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_flip_twice_with_p1_is_identity(shape, dtype, seed):
    x = distinct_batch(shape, dtype)
    g = torch.Generator().manual_seed(seed)
    once = random_flip_batch(x, 1.0, g)
    assert torch.equal(once, x.flip(-1))
    assert torch.equal(random_flip_batch(once, 1.0, g), x)


def test_flip_batch_flips_about_p_of_the_images_each_whole():
    x = torch.arange(2000 * 4, dtype=torch.float32).reshape(2000, 1, 1, 4)
    out = random_flip_batch(x, 0.3, torch.Generator().manual_seed(1))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == x).all(dim=(1, 2, 3))
    assert bool((flipped ^ kept).all()), "every image is either flipped or kept, never mixed"
    assert 0.26 < flipped.float().mean().item() < 0.34


@settings(max_examples=30, deadline=None)
@given(shape=batch_shapes, dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_augment_without_padding_or_flip_is_identity(shape, dtype, seed):
    x = distinct_batch(shape, dtype)
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(augment_batch(x, g, crop_padding=0, flip=False), x)
    assert torch.equal(augment_batch(x, g, crop_padding=0, flip=True, flip_p=0.0), x)
    assert torch.equal(BatchAugmentation(crop_padding=0, flip=False)(x, g), x)


@settings(max_examples=30, deadline=None)
@given(shape=batch_shapes, padding=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_augment_is_deterministic_given_the_generator_seed(shape, padding, seed):
    x = distinct_batch(shape, torch.float32)
    a = augment_batch(x, torch.Generator().manual_seed(seed), crop_padding=padding)
    b = augment_batch(x, torch.Generator().manual_seed(seed), crop_padding=padding)
    assert torch.equal(a, b)


def test_augment_differs_across_seeds_and_uses_global_rng_without_generator():
    x = torch.rand(64, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    torch.manual_seed(5)
    c = augment_batch(x)
    torch.manual_seed(5)
    assert torch.equal(c, augment_batch(x))


def test_batched_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_crop_batch(torch.zeros(3, 4, 4), 1)
    with pytest.raises(ValueError, match="padding"):
        random_crop_batch(torch.zeros(1, 3, 4, 4), -1)
    with pytest.raises(ValueError, match="probability"):
        random_flip_batch(torch.zeros(1, 3, 4, 4), 1.5)
    with pytest.raises(ValueError, match="padding"):
        BatchAugmentation(crop_padding=-2)


# -- per-sample ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    c=st.sampled_from([1, 3]),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    padding=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_crop_per_sample_shape_window_and_determinism(c, h, w, padding, seed):
    x = distinct_batch((1, c, h, w), torch.float32)[0]
    crop = RandomCrop((h, w), padding=padding, generator=torch.Generator().manual_seed(seed))
    out = crop(x)
    assert out.shape == x.shape
    assert find_window(F.pad(x, (padding,) * 4), out)
    again = RandomCrop((h, w), padding=padding, generator=torch.Generator().manual_seed(seed))(x)
    assert torch.equal(out, again)
    if padding == 0:
        assert torch.equal(out, x)


def test_random_crop_rejects_a_crop_larger_than_the_padded_image():
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(10, padding=1)(torch.zeros(3, 6, 6))
    with pytest.raises(ValueError, match="size"):
        RandomCrop(0)


def test_random_horizontal_flip_per_sample():
    x = torch.rand(3, 4, 5)
    assert torch.equal(RandomHorizontalFlip(1.0)(RandomHorizontalFlip(1.0)(x)), x)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    g = torch.Generator().manual_seed(3)
    flips = [torch.equal(RandomHorizontalFlip(0.5, g)(x), x.flip(-1)) for _ in range(400)]
    assert 160 < sum(flips) < 240


def test_normalize_exact_values_and_errors():
    x = torch.tensor([[[0, 255]], [[51, 102]]], dtype=torch.uint8)  # [2, 1, 2]
    out = Normalize((0.5, 0.2), (0.5, 0.1))(x)
    expected = torch.tensor([[[-1.0, 1.0]], [[0.0, 2.0]]])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(normalize(x.unsqueeze(0), (0.5, 0.2), (0.5, 0.1)), expected.unsqueeze(0))
    with pytest.raises(ValueError, match="2 channels"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(TypeError, match="dtype"):
        to_float01(torch.zeros(2, dtype=torch.int32))


def test_compose_and_per_sample_recipe():
    aug = BatchAugmentation(crop_padding=2, flip=True)
    per_sample = aug.per_sample(6, generator=torch.Generator().manual_seed(0))
    assert isinstance(per_sample, Compose)
    assert [type(t) for t in per_sample.transforms] == [RandomCrop, RandomHorizontalFlip]
    x = torch.rand(3, 6, 6)
    assert per_sample(x).shape == x.shape
    assert BatchAugmentation(crop_padding=0, flip=False).per_sample(6).transforms == []
    assert torch.equal(Compose([lambda t: t + 1, lambda t: t * 2])(torch.ones(1)), torch.tensor([4.0]))
