"""`synthetic`: seeded RGB images of ten shape classes whose per-image difficulty varies.

Dynamic inference needs inputs that are easy and inputs that are hard; this generator makes both,
offline, in any number, and records how hard each one is. Every image shows one *main* shape whose
kind is the label (disc, square, triangle, ring, plus, horizontal bars, vertical bars, diamond,
checker, x) with a random colour, position, size, aspect and a small rotation (at most 15 degrees,
so that square/diamond, plus/x and the two bar classes stay distinct) on a random background with a
colour gradient. Colours are drawn independently of the class, so mean colour says nothing about it.

A per-image `difficulty` in [0, 1] (uniform by default) sets, jointly:
- scale: the main shape's radius falls from 40% to 17% of the image side;
- contrast: the colour distance between shape and background falls from 0.75 to 0.45 (+-10%);
- clutter: up to 3 smaller distractor shapes of *other* classes (0 at difficulty 0);
- occlusion: with probability 0.8 * difficulty a random-coloured rectangle covers part of the shape;
- noise: Gaussian pixel noise with std 0.02 + 0.18 * difficulty.

Generation is vectorised torch on the CPU, in chunks of 512 images; chunk `k` of split `s` with
seed `seed` draws from its own generator seeded from `(seed, s, k)`, so the same call gives the same
tensors bit for bit, a smaller `n` is a prefix of a larger one, and train and test are separate
streams. Nothing is cached on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tailor.checks import integer
from tailor.data.base import TensorImageDataset
from tailor.errors import DataError

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_MEAN", "SYNTHETIC_STD", "SyntheticBatch", "generate_synthetic", "synthetic"]

SYNTHETIC_CLASSES = ("disc", "square", "triangle", "ring", "plus", "hbars", "vbars", "diamond", "checker", "x")
# Per-channel statistics of the generator's distribution (difficulty uniform in [0, 1]), measured on
# 20,000 training images at 32x32, seed 0; used for every split, size and seed so that all normalise alike.
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.3, 0.3, 0.3)

CHUNK = 512
MAX_DISTRACTORS = 3
_SPLITS = {"train": 0, "test": 1}
_MAX_ROTATION = math.radians(15.0)
_SQRT2 = math.sqrt(2.0)


# -- signed distance functions in the shape's unit frame (the shape spans about [-1, 1]) ------------


def _sdf_disc(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v) - 0.9


def _sdf_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.75


def _sdf_triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral, apex up (image rows grow downwards), circumradius 1, vertically centred.
    v = v - 0.25
    c = math.sqrt(3.0) / 2.0
    return torch.maximum(torch.maximum(v, c * u - 0.5 * v), -c * u - 0.5 * v) - 0.5


def _sdf_ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (torch.sqrt(u * u + v * v) - 0.7).abs() - 0.2


def _plus(u: torch.Tensor, v: torch.Tensor, half_width: float, length: float) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - half_width, av - length), torch.maximum(av - half_width, au - length))


def _sdf_plus(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _plus(u, v, 0.26, 0.92)


def _bars(across: torch.Tensor, along: torch.Tensor) -> torch.Tensor:
    # Three bars centred at across = -0.62, 0, 0.62, half thickness 0.17, length 1.8.
    d = torch.minimum(torch.minimum(across.abs(), (across - 0.62).abs()), (across + 0.62).abs()) - 0.17
    return torch.maximum(d, along.abs() - 0.9)


def _sdf_hbars(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _bars(v, u)


def _sdf_vbars(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _bars(u, v)


def _sdf_diamond(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() + v.abs() - 1.0) / _SQRT2


def _sdf_checker(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # A 4x4 checkerboard of cells 0.45 wide inside the box [-0.9, 0.9]^2.
    cell = 0.45
    a, b = (u + 0.9) / cell, (v + 0.9) / cell
    fa, fb = a - a.floor(), b - b.floor()
    to_edge = cell * torch.minimum(torch.minimum(fa, 1 - fa), torch.minimum(fb, 1 - fb))
    filled = (a.floor() + b.floor()).remainder(2) == 0
    inner = torch.where(filled, -to_edge, to_edge)
    return torch.maximum(inner, torch.maximum(u.abs(), v.abs()) - 0.9)


def _sdf_x(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _plus((u + v) / _SQRT2, (v - u) / _SQRT2, 0.22, 1.05)


_SDFS = (
    _sdf_disc,
    _sdf_square,
    _sdf_triangle,
    _sdf_ring,
    _sdf_plus,
    _sdf_hbars,
    _sdf_vbars,
    _sdf_diamond,
    _sdf_checker,
    _sdf_x,
)


def _shape_alpha(
    cls: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    theta: torch.Tensor,
    aspect: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Anti-aliased coverage `[B, S, S]` of shape `cls[b]` centred at `(cx, cy)` with the given radius (pixels)."""
    pos = torch.arange(size, dtype=torch.float32) + 0.5
    dx = pos.view(1, 1, size) - cx.view(-1, 1, 1)
    dy = pos.view(1, size, 1) - cy.view(-1, 1, 1)
    cos, sin = theta.cos().view(-1, 1, 1), theta.sin().view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    a = aspect.view(-1, 1, 1)
    u = (dx * cos + dy * sin) / (r * a)
    v = (dy * cos - dx * sin) * a / r
    alpha = torch.empty(cls.shape[0], size, size)
    for k, sdf in enumerate(_SDFS):
        sel = (cls == k).nonzero().flatten()
        if sel.numel():
            # Distance in pixels ~ unit-frame distance * radius; a one-pixel ramp gives anti-aliasing.
            alpha[sel] = (0.5 - sdf(u[sel], v[sel]) * r[sel]).clamp_(0.0, 1.0)
    return alpha


def _composite(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    a = alpha.unsqueeze(1)
    return img * (1 - a) + colour.view(-1, 3, 1, 1) * a


def _colour_at_distance(bg: torch.Tensor, candidate: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """A colour `distance` away from `bg` (RGB, Euclidean) in the direction of `candidate` or the opposite one.

    Of the two, the one that loses less to clipping at [0, 1] is kept, so the distance is met unless
    `bg` is near a corner of the colour cube.
    """
    diff = candidate - bg
    direction = diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-6)
    step = direction * distance.view(-1, 1)
    up, down = (bg + step).clamp(0, 1), (bg - step).clamp(0, 1)
    keep_up = (up - bg).norm(dim=1) >= (down - bg).norm(dim=1)
    return torch.where(keep_up.view(-1, 1), up, down)


def _lerp(a: float, b: float, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t


@dataclass(frozen=True)
class SyntheticBatch:
    """Generated images with their labels, difficulty and the factors the difficulty set."""

    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]
    difficulty: torch.Tensor  # float32 [N] in [0, 1]
    noise_std: torch.Tensor  # float32 [N]: std of the Gaussian pixel noise, in [0, 1] units
    radius: torch.Tensor  # float32 [N]: main shape radius in pixels
    contrast: torch.Tensor  # float32 [N]: colour distance between main shape and background centre
    distractors: torch.Tensor  # int64 [N]: number of distractor shapes
    occluded: torch.Tensor  # bool [N]: whether an occluding rectangle was drawn


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, _SPLITS[split], chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _render_chunk(
    gen: torch.Generator,
    size: int,
    num_classes: int,
    lo: float,
    hi: float,
    difficulty: torch.Tensor | None,
) -> SyntheticBatch:
    b, s = CHUNK, size

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen)

    # Every draw happens in this fixed order whatever is used, so streams never shift.
    labels = torch.randint(0, num_classes, (b,), generator=gen)
    d = lo + (hi - lo) * rand(b)
    if difficulty is not None:
        d = difficulty
    bg_colour, bg_slope, bg_angle = rand(b, 3), (rand(b, 3) - 0.5) * 0.5, rand(b) * 2 * math.pi
    fg_candidate, contrast_jitter = rand(b, 3), rand(b)
    radius = s * _lerp(0.40, 0.17, d) * (0.9 + 0.2 * rand(b))
    cx, cy = rand(b), rand(b)
    theta = (rand(b) * 2 - 1) * _MAX_ROTATION
    aspect = torch.exp((rand(b) * 2 - 1) * 0.15)
    n_distractors = (rand(b) * (1 + MAX_DISTRACTORS * d)).floor().clamp_(max=MAX_DISTRACTORS).long()
    m = MAX_DISTRACTORS
    dist_shift = torch.randint(1, max(num_classes, 2), (b, m), generator=gen)
    dist_pos, dist_scale, dist_theta, dist_colour = rand(b, m, 2), rand(b, m), rand(b, m), rand(b, m, 3)
    occ_draw, occ_size, occ_offset, occ_colour = rand(b), rand(b, 2), rand(b, 2), rand(b, 3)
    noise = torch.randn((b, 3, s, s), generator=gen)

    # Background: a colour plus a linear gradient along a random direction.
    pos = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5
    ramp = pos.view(1, 1, s) * bg_angle.cos().view(-1, 1, 1) + pos.view(1, s, 1) * bg_angle.sin().view(-1, 1, 1)
    img = (bg_colour.view(b, 3, 1, 1) + bg_slope.view(b, 3, 1, 1) * ramp.unsqueeze(1)).clamp_(0, 1)

    # Distractors first (behind the main shape): other classes, 30-50% of its size, anywhere.
    for j in range(m):
        idx = (n_distractors > j).nonzero().flatten()
        if idx.numel() == 0:
            continue
        cls = (labels[idx] + dist_shift[idx, j]) % num_classes
        r = radius[idx] * (0.3 + 0.2 * dist_scale[idx, j])
        alpha = _shape_alpha(
            cls,
            dist_pos[idx, j, 0] * s,
            dist_pos[idx, j, 1] * s,
            r,
            (dist_theta[idx, j] * 2 - 1) * _MAX_ROTATION,
            torch.ones_like(r),
            s,
        )
        img[idx] = _composite(img[idx], alpha, dist_colour[idx, j])

    # Main shape, kept mostly inside the frame, in a colour `contrast` away from the background.
    margin = radius * 0.9
    cx = margin + cx * (s - 2 * margin).clamp_min(0)
    cy = margin + cy * (s - 2 * margin).clamp_min(0)
    contrast = _lerp(0.75, 0.45, d) * (0.9 + 0.2 * contrast_jitter)
    fg_colour = _colour_at_distance(bg_colour, fg_candidate, contrast)
    alpha = _shape_alpha(labels, cx, cy, radius, theta, aspect, s)
    img = _composite(img, alpha, fg_colour)

    # Occlusion: a rectangle over part of the shape, more likely and larger when harder.
    occluded = occ_draw < 0.8 * d
    idx = occluded.nonzero().flatten()
    if idx.numel():
        r = radius[idx]
        half = r.unsqueeze(1) * (0.25 + 0.5 * d[idx]).unsqueeze(1) * (0.6 + 0.4 * occ_size[idx])  # [k, 2]
        centre = torch.stack([cx[idx], cy[idx]], 1) + (occ_offset[idx] * 2 - 1) * 0.7 * r.unsqueeze(1)
        px = torch.arange(s, dtype=torch.float32) + 0.5
        in_x = (px.view(1, s) - centre[:, :1]).abs() <= half[:, :1]  # [k, S] columns
        in_y = (px.view(1, s) - centre[:, 1:]).abs() <= half[:, 1:]  # [k, S] rows
        rect = (in_y.unsqueeze(2) & in_x.unsqueeze(1)).float()
        img[idx] = _composite(img[idx], rect, occ_colour[idx])

    noise_std = 0.02 + 0.18 * d
    img = img + noise * noise_std.view(b, 1, 1, 1)
    images = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return SyntheticBatch(
        images=images,
        labels=labels,
        difficulty=d.to(torch.float32),
        noise_std=noise_std,
        radius=radius,
        contrast=(fg_colour - bg_colour).norm(dim=1),
        distractors=n_distractors,
        occluded=occluded,
    )


def _difficulty_spec(
    difficulty: float | tuple[float, float] | torch.Tensor | None, n: int
) -> tuple[float, float, torch.Tensor | None]:
    if difficulty is None:
        return 0.0, 1.0, None
    if isinstance(difficulty, torch.Tensor):
        if difficulty.shape != (n,) or not difficulty.is_floating_point():
            raise DataError(
                f"synthetic: a difficulty tensor must be float of shape ({n},), got {difficulty.dtype} "
                f"{tuple(difficulty.shape)}"
            )
        if n and (float(difficulty.min()) < 0 or float(difficulty.max()) > 1):
            raise DataError("synthetic: difficulty values must lie in [0, 1]")
        return 0.0, 1.0, difficulty.to(torch.float32).cpu()
    if isinstance(difficulty, (int, float)) and not isinstance(difficulty, bool):
        lo = hi = float(difficulty)
    elif isinstance(difficulty, (tuple, list)) and len(difficulty) == 2:
        lo, hi = float(difficulty[0]), float(difficulty[1])
    else:
        raise DataError(
            f"synthetic: difficulty must be None, a number, a (low, high) pair or a tensor, got {difficulty!r}"
        )
    if not 0.0 <= lo <= hi <= 1.0:
        raise DataError(f"synthetic: difficulty range must satisfy 0 <= low <= high <= 1, got ({lo}, {hi})")
    return lo, hi, None


def generate_synthetic(
    n: int,
    split: str = "train",
    seed: int = 0,
    image_size: int = 32,
    num_classes: int = 10,
    difficulty: float | tuple[float, float] | torch.Tensor | None = None,
) -> SyntheticBatch:
    """Generate `n` images and the factors behind each one's difficulty (see the module docstring).

    `difficulty`: None draws it uniformly from [0, 1]; a number fixes it; `(low, high)` draws it
    uniformly from that range; a float tensor `[n]` gives it per image.
    """
    if split not in _SPLITS:
        raise DataError(f"synthetic: split must be one of {sorted(_SPLITS)}, got {split!r}")
    n = integer("synthetic: n", n, DataError, low=0)
    seed = integer("synthetic: seed", seed, DataError, low=0)
    size = integer("synthetic: image_size", image_size, DataError, low=8)
    k = integer("synthetic: num_classes", num_classes, DataError, low=2, high=len(SYNTHETIC_CLASSES))
    lo, hi, explicit = _difficulty_spec(difficulty, n)
    chunks = []
    for c in range(math.ceil(n / CHUNK)):
        override = None
        if explicit is not None:
            part = explicit[c * CHUNK : (c + 1) * CHUNK]
            override = torch.cat([part, part.new_zeros(CHUNK - part.shape[0])])
        chunks.append(_render_chunk(_chunk_generator(seed, split, c), size, k, lo, hi, override))
    if not chunks:
        return SyntheticBatch(
            images=torch.zeros((0, 3, size, size), dtype=torch.uint8),
            labels=torch.zeros(0, dtype=torch.int64),
            difficulty=torch.zeros(0),
            noise_std=torch.zeros(0),
            radius=torch.zeros(0),
            contrast=torch.zeros(0),
            distractors=torch.zeros(0, dtype=torch.int64),
            occluded=torch.zeros(0, dtype=torch.bool),
        )
    fields = SyntheticBatch.__dataclass_fields__
    return SyntheticBatch(**{f: torch.cat([getattr(ch, f) for ch in chunks])[:n].clone() for f in fields})


def synthetic(
    n: int | None = None,
    split: str = "train",
    seed: int = 0,
    image_size: int = 32,
    num_classes: int = 10,
    difficulty: float | tuple[float, float] | torch.Tensor | None = None,
) -> TensorImageDataset:
    """A synthetic split as a `TensorImageDataset` with per-sample `difficulty`.

    `n` defaults to 10,000 for train and 2,000 for test. Classes are the first `num_classes` of
    `SYNTHETIC_CLASSES`; `mean`/`std` are the fixed `SYNTHETIC_MEAN`/`SYNTHETIC_STD`.
    """
    if n is None:
        n = 10_000 if split == "train" else 2_000
    batch = generate_synthetic(n, split, seed, image_size, num_classes, difficulty)
    return TensorImageDataset(
        batch.images,
        batch.labels,
        list(SYNTHETIC_CLASSES[:num_classes]),
        batch.difficulty,
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
        name=f"synthetic/{split}",
    )
