"""Helpers of the routing tests: a calibrated resnet20 supernet and the subnets its cascades use."""

from __future__ import annotations

import torch

import tailor
from tailor.space import Subnet


def stage_subnets(model: tailor.ElasticModel) -> list[Subnet]:
    space = model.space
    return [space.smallest(), space.uniform(0.5), space.largest()]


def calibrated_resnet(seed: int = 0) -> tailor.ElasticModel:
    """An untrained resnet20 whose stage subnets all have SubnetNorm statistics (eval mode)."""
    torch.manual_seed(seed)
    model = tailor.create_model("resnet20", num_classes=10)
    batches = [torch.randn(32, 3, 32, 32) for _ in range(2)]
    tailor.calibrate(model, stage_subnets(model), batches, batches=2)
    return model.eval()
