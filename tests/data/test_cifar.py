"""Tests of `tailor.data.cifar` on small files written in the official python-pickle format."""

from __future__ import annotations

import codecs
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from tailor.data import CIFAR_STATS, SafeUnpickler, cifar, safe_load_pickle
from tailor.data.cifar import _latin1_encode


def test_cifar10_train_and_test_hold_exactly_what_was_written(cifar10_files):
    parent = cifar10_files["folder"].parent
    train = cifar(parent, "train")
    assert train.images.shape == (17, 3, 32, 32) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.reshape(17, -1).numpy(), cifar10_files["train_data"])
    assert train.labels.tolist() == cifar10_files["train_labels"]
    assert train.classes[0] == "airplane" and train.classes[9] == "truck" and train.num_classes == 10
    test = cifar(parent, "test")
    assert np.array_equal(test.images.reshape(4, -1).numpy(), cifar10_files["test_data"])
    assert test.labels.tolist() == cifar10_files["test_labels"]
    assert (train.mean, train.std) == CIFAR_STATS[10] == (test.mean, test.std)


def test_pixel_layout_is_channel_row_column(cifar10_files):
    data = cifar10_files["test_data"]
    images = cifar(cifar10_files["folder"], "test").images
    # Row n of `data` is 1024 red, then 1024 green, then 1024 blue values, each row-major 32 x 32.
    for n, c, y, x in [(0, 0, 0, 0), (1, 1, 5, 7), (3, 2, 31, 30), (2, 0, 17, 3)]:
        assert int(images[n, c, y, x]) == int(data[n, c * 1024 + y * 32 + x])


def test_root_may_be_the_extracted_folder_or_its_parent(cifar10_files):
    a = cifar(cifar10_files["folder"], "test")
    b = cifar(cifar10_files["folder"].parent, "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_cifar100_reads_fine_labels(cifar100_files):
    parent = cifar100_files["folder"].parent
    train = cifar(parent, "train", num_classes=100)
    assert train.labels.tolist() == cifar100_files["train"][b"fine_labels"]
    assert 99 in train.labels.tolist()  # the writer puts the top class in
    assert np.array_equal(train.images.reshape(6, -1).numpy(), cifar100_files["train"][b"data"])
    assert train.classes == cifar100_files["names"] and train.num_classes == 100
    test = cifar(cifar100_files["folder"], "test", num_classes=100)
    assert test.labels.tolist() == cifar100_files["test"][b"fine_labels"]
    assert (test.mean, test.std) == CIFAR_STATS[100]


def test_python3_pickles_with_str_keys_also_load(tmp_path, batch_factory):
    batch = {k.decode(): v for k, v in batch_factory(3, 10, seed=7).items()}
    for protocol in (2, 4):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps(batch, protocol=protocol))  # protocol 2 writes bytes via _codecs.encode
        loaded = safe_load_pickle(path)
        assert np.array_equal(loaded["data"], batch["data"]) and loaded["filenames"] == batch["filenames"]


def test_missing_files_are_named(cifar10_files, tmp_path):
    folder = cifar10_files["folder"]
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar(folder, "train")
    cifar(folder, "test")  # the test split does not need it
    (folder / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        cifar(folder, "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cifar(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        cifar(tmp_path / "empty", num_classes=100)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_running(cifar10_files, tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = cifar10_files["folder"] / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Exploit(str(marker)), b"labels": []}, protocol=protocol))
    with pytest.raises(ValueError, match=r"forbidden global (posix|nt|os)\.system") as info:
        cifar(cifar10_files["folder"], "test")
    assert "test_batch" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        _Eval(),
        np.load,  # numpy, but not an array constructor
        shutil.rmtree,
        SafeUnpickler,  # any class at all
    ],
)
def test_every_other_global_is_refused(tmp_path, payload):
    path = tmp_path / "bad"
    path.write_bytes(pickle.dumps([payload], protocol=2))
    with pytest.raises(ValueError, match="forbidden global"):
        safe_load_pickle(path)


def test_codecs_encode_is_only_allowed_as_latin1(tmp_path):
    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    path = tmp_path / "rot13"
    path.write_bytes(pickle.dumps(Rot13(), protocol=2))
    with pytest.raises(ValueError, match="latin1"):
        safe_load_pickle(path)
    assert _latin1_encode("\xff\x00a", "latin1") == b"\xff\x00a"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b.update({b"data": b[b"data"][:, :3071]}), r"uint8 array \[N, 3072\]"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), "uint8"),
        (lambda b: b.update({b"data": b[b"data"].tolist()}), "missing 'data' array"),
        (lambda b: b.pop(b"data"), "missing 'data' array"),
        (lambda b: b.pop(b"labels"), "missing 'labels'"),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "3 labels for 4 images"),
        (lambda b: b.update({b"labels": [0, 1, 2, 10]}), r"in \[0, 10\)"),
        (lambda b: b.update({b"labels": [0, 1, 2, -1]}), r"in \[0, 10\)"),
        (lambda b: b.update({b"labels": [0, 1, 2, 1.5]}), "list of integers"),
    ],
)
def test_malformed_batches_are_rejected_naming_the_file(cifar10_files, batch_factory, dump_py2, change, match):
    batch = batch_factory(4, 10, seed=5)
    change(batch)
    dump_py2(batch, cifar10_files["folder"] / "test_batch")
    with pytest.raises(ValueError, match=match) as info:
        cifar(cifar10_files["folder"], "test")
    assert "test_batch" in str(info.value)


def test_malformed_meta_and_truncated_files(cifar10_files, dump_py2):
    folder = cifar10_files["folder"]
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="test_batch.*not a valid pickle"):
        cifar(folder, "test")
    dump_py2({b"label_names": [b"a"] * 9}, folder / "batches.meta")
    with pytest.raises(ValueError, match="batches.meta.*9 names, expected 10"):
        cifar(folder, "test")
    dump_py2([1, 2, 3], folder / "batches.meta")
    with pytest.raises(ValueError, match="batches.meta: expected a dict"):
        cifar(folder, "test")


def test_bad_arguments(cifar10_files):
    with pytest.raises(ValueError, match="num_classes"):
        cifar(cifar10_files["folder"], num_classes=20)
    with pytest.raises(ValueError, match="split"):
        cifar(cifar10_files["folder"], split="val")
