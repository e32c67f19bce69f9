"""`cifar`: CIFAR-10 / CIFAR-100 from a local copy in the official python-pickle format.

The files are pickles, and unpickling runs whatever the file asks for, so they are read with
`SafeUnpickler`, which resolves only the globals a numpy array needs (`_reconstruct`, `ndarray`,
`dtype`) and `_codecs.encode` restricted to latin-1 (how Python 3 writes `bytes` at protocol 2);
any other global is refused before anything runs. Contents are then checked: `data` must be a
uint8 array `[N, 3072]`, labels `N` integers within the class count.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.data.base import TensorImageDataset
from tailor.errors import DataError

__all__ = ["CIFAR_STATS", "SafeUnpickler", "cifar", "safe_load_pickle"]

# Per-channel mean/std of the CIFAR training sets (the values commonly published), used for both splits.
CIFAR_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_LAYOUT = {
    10: {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
    },
    100: {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
    },
}


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The only use pickle makes of `_codecs.encode`: `bytes` written at protocol < 3 as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin-1")


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays (see module docstring).

    Anything else (`os.system`, `builtins.eval`, any class) raises `pickle.UnpicklingError` naming it,
    before it is called. Byte strings written by Python 2 are kept as `bytes` (`encoding="bytes"`).
    """

    def __init__(self, file: io.BufferedIOBase, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to unpickle forbidden global {module}.{name} "
                "(only numpy arrays are allowed in CIFAR files)"
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self.source}: persistent ids are not allowed, got {pid!r}")


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a pickle with `SafeUnpickler`; any failure raises `ValueError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    with open(path, "rb") as f:
        try:
            obj = SafeUnpickler(f, str(path)).load()
        except pickle.UnpicklingError as e:
            raise DataError(str(e) if str(path) in str(e) else f"{path}: not a valid pickle ({e})") from e
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
            raise DataError(f"{path}: not a valid pickle ({type(e).__name__}: {e})") from e
    return obj


def _as_str_dict(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str):
            raise DataError(f"{path}: dict keys must be strings, got {key!r}")
        out[key] = value
    return out


def _find_folder(root: str | os.PathLike[str], num_classes: int) -> Path:
    layout = _LAYOUT[num_classes]
    root = Path(root)
    inner = root / layout["folder"]
    if inner.is_dir():
        return inner
    if (root / layout["meta"]).is_file() or any((root / f).is_file() for f in layout["train"] + layout["test"]):
        return root
    if not root.exists():
        raise FileNotFoundError(f"CIFAR-{num_classes} root does not exist: {root}")
    raise FileNotFoundError(
        f"no CIFAR-{num_classes} files under {root}: expected {inner} or {root / layout['meta']} "
        f"(the extracted python version of the data set)"
    )


def _class_names(folder: Path, num_classes: int) -> list[str]:
    layout = _LAYOUT[num_classes]
    path = folder / layout["meta"]
    meta = _as_str_dict(safe_load_pickle(path), path)
    names = meta.get(layout["names_key"])
    if not isinstance(names, list):
        raise DataError(f"{path}: missing or malformed {layout['names_key']!r} (a list of class names)")
    if len(names) != num_classes:
        raise DataError(f"{path}: {layout['names_key']!r} has {len(names)} names, expected {num_classes}")
    out = []
    for name in names:
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        if not isinstance(name, str):
            raise DataError(f"{path}: class names must be strings, got {name!r}")
        out.append(name)
    return out


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _as_str_dict(safe_load_pickle(path), path)
    data = batch.get("data")
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: missing 'data' array (got {type(data).__name__})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array [N, 3072], got {data.dtype} {list(data.shape)}")
    if label_key not in batch:
        raise DataError(f"{path}: missing {label_key!r}")
    raw = batch[label_key]
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise DataError(f"{path}: {label_key!r} must be a list of integers")
    labels = np.asarray(raw, dtype=np.int64)
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images in 'data'")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: {label_key!r} must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]"
        )
    return data, labels


def cifar(root: str | os.PathLike[str], split: str = "train", num_classes: int = 10) -> TensorImageDataset:
    """CIFAR-10 (`num_classes=10`) or CIFAR-100 (fine labels, `num_classes=100`) from local files.

    `root` is the extracted folder (`cifar-10-batches-py`, `cifar-100-python`) or its parent. Returns
    uint8 images `[N, 3, 32, 32]` with the published training-set `mean`/`std` (`CIFAR_STATS`).
    A missing file raises `FileNotFoundError` naming it; a malformed or unsafe one `ValueError`.
    """
    if num_classes not in _LAYOUT:
        raise DataError(f"cifar: num_classes must be 10 or 100, got {num_classes!r}")
    if split not in ("train", "test"):
        raise DataError(f"cifar: split must be 'train' or 'test', got {split!r}")
    layout = _LAYOUT[num_classes]
    folder = _find_folder(root, num_classes)
    paths = [folder / name for name in layout[split]]
    for path in [folder / layout["meta"], *paths]:
        if not path.is_file():
            raise FileNotFoundError(f"missing CIFAR-{num_classes} file: {path}")
    classes = _class_names(folder, num_classes)
    parts = [_read_batch(p, layout["label_key"], num_classes) for p in paths]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32))
    mean, std = CIFAR_STATS[num_classes]
    return TensorImageDataset(
        images, torch.from_numpy(labels), classes, mean=mean, std=std, name=f"cifar{num_classes}/{split}"
    )
