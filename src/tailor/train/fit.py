"""Which data a checkpoint is used with, and whether it fits: one clear error, not a traceback.

`checkpoint_data` picks the data set a command runs a checkpoint on (`--data`, else the one its recipe records,
with the recorded split arguments) and `check_data_fits` refuses one whose images or classes do not match the
model. Every command that takes `--data` (calibrate, profile, export, search, route) goes through them, so that
training on `digits` (1 channel) and then profiling with `--data synthetic` (3 channels) says so in one line
instead of failing deep inside a convolution.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tailor.data import load_dataset
from tailor.errors import DataError
from tailor.train.checkpoint import Checkpoint, recorded_data


def model_input_channels(model: nn.Module) -> int | None:
    """The channels `model` takes: its `default_input_size[0]`, else its first convolution's input channels."""
    size = getattr(model, "default_input_size", None)
    if isinstance(size, (tuple, list)) and size and isinstance(size[0], int):
        return int(size[0])
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def check_data_fits(model: nn.Module, data: Any, what: str, trained_on: str | None = None) -> None:
    """Raise `DataError` if `data`'s image channels or class count do not fit `model`.

    `what` names the data in the message (e.g. "--data synthetic"); `trained_on` (the data set the checkpoint
    records) is suggested as the fix.
    """
    size = getattr(data, "input_size", None)
    channels = int(size[0]) if size is not None else int(data[0][0].shape[0])
    wanted = model_input_channels(model)
    hint = f" (it was trained on {trained_on}; pass --data {trained_on})" if trained_on else ""
    if wanted is not None and channels != wanted:
        raise DataError(
            f"{what} has {channels}-channel images but the model takes {wanted} channel{'s' if wanted != 1 else ''}"
            f"{hint}"
        )
    classes = getattr(data, "num_classes", None)
    outputs = getattr(model, "num_classes", None)
    if isinstance(classes, int) and isinstance(outputs, int) and classes > outputs:
        raise DataError(f"{what} has {classes} classes but the model predicts {outputs}{hint}")


def checkpoint_data(
    loaded: Checkpoint, data: str | None = None, data_root: str | None = None, flag: str = "--data"
) -> tuple[Any, Any, str]:
    """(train split, test split, data set name) to run `loaded` on: `data`, else what its recipe records.

    The recorded loader arguments (e.g. synthetic's `n`) apply when the name is the recorded one; the test split
    is checked to fit the model (`check_data_fits`).
    """
    recorded = recorded_data(loaded.config, f"checkpoint {str(loaded.path)!r}")
    name = data or recorded.name
    if not name:
        raise DataError(f"this checkpoint does not record its data: pass {flag}")
    root = data_root or recorded.root or None
    same = name == recorded.name
    train = load_dataset(name, "train", root, **(recorded.train if same else {}))
    test = load_dataset(name, "test", root, **(recorded.test if same else {}))
    check_data_fits(loaded.model, test, f"{flag} {name}", recorded.name)
    return train, test, name
