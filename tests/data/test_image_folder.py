"""Tests of `tailor.data.image_folder` on small PNG/JPEG/BMP/GIF/WebP trees written with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tailor.data import IMAGE_EXTENSIONS, ImageFolderDataset, TensorImageDataset, image_folder, load_image
from tailor.data.folder import IMAGENET_MEAN, IMAGENET_STD

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (32, 32), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    solid(root / "cat" / "a.png", RED)
    solid(root / "cat" / "b.JPG", BLUE)
    solid(root / "cat" / "nested" / "c.jpeg", GREEN, size=(40, 20))
    solid(root / "dog" / "x.bmp", GREEN, size=(16, 16))
    solid(root / "dog" / "y.GIF", BLUE)
    solid(root / "dog" / "z.webp", RED, size=(48, 48))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"")
    return root


def test_classes_samples_and_labels(tree):
    ds = image_folder(tree, image_size=8)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    names = [(p.relative_to(tree).as_posix(), lab) for p, lab in ds.samples]
    assert names == [
        ("cat/a.png", 0),
        ("cat/b.JPG", 0),
        ("cat/nested/c.jpeg", 0),
        ("dog/x.bmp", 1),
        ("dog/y.GIF", 1),
        ("dog/z.webp", 1),
    ]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.labels.dtype == torch.int64
    assert len(ds) == 6 and ds.input_size == (3, 8, 8) and ds.difficulty is None
    assert (ds.mean, ds.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert set(IMAGE_EXTENSIONS) >= {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def test_lossless_images_load_exactly_after_resizing(tree):
    ds = image_folder(tree, image_size=8)
    assert torch.equal(ds.load(0), torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8))
    assert torch.equal(ds.load(3), torch.tensor(GREEN, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8))  # upsampled
    assert torch.equal(ds.load(4), torch.tensor(BLUE, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8))  # GIF
    jpeg = ds.load(1).int()
    assert (jpeg - torch.tensor(BLUE).view(3, 1, 1)).abs().max() <= 8  # JPEG is lossy


def test_getitem_normalises_with_the_dataset_statistics(tree):
    ds = image_folder(tree, image_size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    x, y = ds[0]
    expected = torch.tensor([1.0, -2.0, -1.0]).view(3, 1, 1).expand(3, 4, 4)
    assert y == 0 and x.dtype == torch.float32
    torch.testing.assert_close(x, expected)


def test_shorter_side_is_resized_then_centre_cropped(tmp_path):
    img = np.zeros((16, 32, 3), dtype=np.uint8)  # 32 wide, 16 high: left half red, right half blue
    img[:, :16] = RED
    img[:, 16:] = BLUE
    path = tmp_path / "c" / "wide.png"
    path.parent.mkdir()
    Image.fromarray(img).save(path)
    out = load_image(path, 16)  # shorter side already 16: no resize, crop columns 8..24
    assert out.shape == (3, 16, 16)
    assert torch.equal(out[:, :, :8], torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 8))
    assert torch.equal(out[:, :, 8:], torch.tensor(BLUE, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 8))
    small = load_image(path, 8)  # resized to 16 x 8, then columns 4..12
    assert small.shape == (3, 8, 8)
    assert torch.equal(small[:, :, :3], torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 3))
    assert torch.equal(small[:, :, 5:], torch.tensor(BLUE, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 3))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    solid(tmp_path / "k" / "img.png", (200, 200, 200), mode=mode)
    out = image_folder(tmp_path, image_size=4).load(0)
    assert out.shape == (3, 4, 4)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_unreadable_image_names_the_file(tree):
    bad = tree / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = image_folder(tree, image_size=8)
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ds[index]
    with pytest.raises(ValueError, match=r"broken\.png"):
        ds.to_tensor_dataset()


def test_structure_errors(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    solid(tmp_path / "flat" / "loose.png", RED)
    with pytest.raises(ValueError, match="no class directories"):
        image_folder(tmp_path / "flat")
    (tree / "empty").mkdir()
    (tree / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class directory .*empty has no image files"):
        image_folder(tree)
    with pytest.raises(FileNotFoundError, match="cow"):
        image_folder(tree, classes=["cat", "cow"])
    with pytest.raises(ValueError, match="image_size"):
        image_folder(tree, image_size=0)


def test_explicit_classes_choose_and_order(tree):
    ds = image_folder(tree, image_size=4, classes=["dog", "cat"])
    assert ds.classes == ["dog", "cat"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.samples[0][0].name == "x.bmp"
    only = image_folder(tree, image_size=4, classes=["cat"])
    assert len(only) == 3 and only.num_classes == 1


def test_to_tensor_dataset_subset_and_transform(tree):
    ds = image_folder(tree, image_size=8)
    mem = ds.to_tensor_dataset()
    assert isinstance(mem, TensorImageDataset) and mem.images.shape == (6, 3, 8, 8)
    for i in range(6):
        assert torch.equal(mem.images[i], ds.load(i))
        torch.testing.assert_close(mem[i][0], ds[i][0])
    assert torch.equal(mem.labels, ds.labels) and mem.classes == ds.classes and mem.mean == ds.mean
    sub = ds.subset([5, 0])
    assert isinstance(sub, ImageFolderDataset) and sub.labels.tolist() == [1, 0]
    assert torch.equal(sub.load(0), ds.load(5))
    flipped = ds.with_transform(lambda x: x.flip(-1))
    torch.testing.assert_close(flipped[2][0], ds[2][0].flip(-1))
