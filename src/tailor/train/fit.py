"""`check_data_fits`: a data set whose images or classes do not match a model is one clear error, not a traceback.

Every command that takes `--data` (calibrate, profile, export, search, route) calls it before it runs the model,
so that training on `digits` (1 channel) and then profiling with `--data synthetic` (3 channels) says so in
one line instead of failing deep inside a convolution.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tailor.errors import DataError


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
