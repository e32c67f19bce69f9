"""Fixtures that write small data sets in the real on-disk formats (CIFAR python pickles)."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote the CIFAR files: protocol 2, byte strings as
    (SHORT_)BINSTRING, ASCII text as Python 2 `str`, arrays via `numpy.core.multiarray._reconstruct`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_string(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save_bytes(self, obj: bytes) -> None:
        self._save_py2_string(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        try:
            data = obj.encode("ascii")
        except UnicodeEncodeError:
            pickle._Pickler.save_str(self, obj)
            return
        self._save_py2_string(data)
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_dump(obj: Any, path: Path) -> None:
    """Pickle `obj` to `path` in the original CIFAR (Python 2, protocol 2) format."""
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def make_batch(n: int, num_classes: int, seed: int, label_key: bytes = b"labels") -> dict[bytes, Any]:
    """A CIFAR batch dict with random images and labels that cover the class range's ends."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    labels[0], labels[-1] = 0, num_classes - 1
    batch: dict[bytes, Any] = {
        b"batch_label": f"batch seed {seed}".encode(),
        label_key: labels,
        b"data": data,
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in labels]
    return batch


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(parent: Path, sizes: tuple[int, ...] = (3, 4, 2, 5, 3), test_size: int = 4) -> dict[str, Any]:
    """Write `parent/cifar-10-batches-py` and return what was written (data and labels per split)."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    py2_dump(
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000, b"num_vis": 3072},
        folder / "batches.meta",
    )
    train = [make_batch(n, 10, seed=i) for i, n in enumerate(sizes)]
    for i, batch in enumerate(train, start=1):
        py2_dump(batch, folder / f"data_batch_{i}")
    test = make_batch(test_size, 10, seed=99)
    py2_dump(test, folder / "test_batch")
    return {
        "folder": folder,
        "train_data": np.concatenate([b[b"data"] for b in train]),
        "train_labels": [label for b in train for label in b[b"labels"]],
        "test_data": test[b"data"],
        "test_labels": test[b"labels"],
    }


def write_cifar100(parent: Path, train_size: int = 6, test_size: int = 3) -> dict[str, Any]:
    """Write `parent/cifar-100-python` (train, test, meta) and return what was written."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"class_{i:02d}".encode() for i in range(100)]
    coarse = [f"super_{i:02d}".encode() for i in range(20)]
    py2_dump({b"fine_label_names": fine, b"coarse_label_names": coarse}, folder / "meta")
    train = make_batch(train_size, 100, seed=1, label_key=b"fine_labels")
    test = make_batch(test_size, 100, seed=2, label_key=b"fine_labels")
    py2_dump(train, folder / "train")
    py2_dump(test, folder / "test")
    return {"folder": folder, "train": train, "test": test, "names": [n.decode() for n in fine]}


@pytest.fixture
def cifar10_files(tmp_path: Path) -> dict[str, Any]:
    return write_cifar10(tmp_path)


@pytest.fixture
def cifar100_files(tmp_path: Path) -> dict[str, Any]:
    return write_cifar100(tmp_path)


@pytest.fixture
def dump_py2() -> Callable[[Any, Path], None]:
    return py2_dump


@pytest.fixture
def batch_factory() -> Callable[..., dict[bytes, Any]]:
    return make_batch
