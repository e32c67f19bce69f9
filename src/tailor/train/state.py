"""Where training stands and what it produced: `TrainState` (resumable), `EpochRecord` (one epoch's results).

`Trainer.fit` returns its history as `EpochRecord`s; `to_dict()` is the JSON form the metrics log,
`train_state.json` and the demo report read (`{"event": "epoch", "epoch", "loss", "seconds"[, "accuracy"]}`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass
class EpochRecord:
    """One epoch of training: mean step losses by role (`largest`, `subnet1`, ... or a loss's own names), wall
    seconds, and, when the Trainer evaluates, held-out accuracy by subnet id."""

    epoch: int
    loss: dict[str, float]
    seconds: float
    accuracy: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`event` first, `accuracy` only when evaluated), as the metrics log has it."""
        out: dict[str, Any] = {"event": "epoch", "epoch": self.epoch, "loss": dict(self.loss), "seconds": self.seconds}
        if self.accuracy is not None:
            out["accuracy"] = dict(self.accuracy)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """The record of a `to_dict()` form (checked by `EpochSchema` where it comes from a file)."""
        accuracy = data.get("accuracy")
        return cls(int(data["epoch"]), dict(data["loss"]), float(data["seconds"]),
                   None if accuracy is None else dict(accuracy))  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        """Key access, as when the history was a list of dicts: deprecated, read the attribute."""
        message = f"EpochRecord[{key!r}] is deprecated; read .{key} (or .to_dict()[{key!r}])"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return self.to_dict()[key]


class EpochSchema(BaseModel):
    """An `EpochRecord` as `train_state.json` stores it (other keys are kept, unchecked)."""

    model_config = ConfigDict(extra="allow")
    epoch: Annotated[int, Field(strict=True, ge=0)]
    loss: dict[str, float]
    seconds: float
    accuracy: dict[str, float] | None = None


class TrainStateSchema(BaseModel):
    """`train_state.json` as the Trainer writes it and reads it back to resume (other keys are kept, unchecked)."""

    model_config = ConfigDict(extra="allow")
    epoch: Annotated[int, Field(strict=True, ge=0)]
    step_in_epoch: Annotated[int, Field(strict=True, ge=0)]
    global_step: Annotated[int, Field(strict=True, ge=0)]
    history: list[EpochSchema]
    config: dict[str, Any]
    epoch_loss_sums: dict[str, Annotated[float, Field(strict=True)]] = {}
    epoch_loss_steps: Annotated[int, Field(strict=True, ge=0)] = 0


@dataclass
class TrainState:
    """Where training stands: the next (epoch, step within it) to run and the global step count."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    # the running sums of this epoch's step losses and how many steps they hold, so that the epoch loss logged
    # after a mid-epoch resume averages every step of the epoch, not only those after the checkpoint
    epoch_loss_sums: dict[str, float] = field(default_factory=dict)
    epoch_loss_steps: int = 0
