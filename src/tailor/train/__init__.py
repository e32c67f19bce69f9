"""Supernet training (sandwich rule, in-place distillation), SubnetNorm calibration, checkpoints."""

from tailor.train.calibrate import calibrate
from tailor.train.checkpoint import Checkpoint, load, load_checkpoint, read_config, save
from tailor.train.fit import check_data_fits
from tailor.train.samplers import (
    FixedSampler,
    RandomMinMaxSampler,
    SandwichSampler,
    SubnetSampler,
    UniformSampler,
    make_sampler,
)
from tailor.train.state import EpochRecord
from tailor.train.trainer import (
    BatchSource,
    TrainConfig,
    Trainer,
    calibration_inputs,
    distillation_loss,
    evaluate,
    project_conflicting,
)

__all__ = [
    "BatchSource",
    "Checkpoint",
    "EpochRecord",
    "FixedSampler",
    "RandomMinMaxSampler",
    "SandwichSampler",
    "SubnetSampler",
    "TrainConfig",
    "Trainer",
    "UniformSampler",
    "calibrate",
    "calibration_inputs",
    "check_data_fits",
    "distillation_loss",
    "evaluate",
    "load",
    "load_checkpoint",
    "make_sampler",
    "project_conflicting",
    "read_config",
    "save",
]
