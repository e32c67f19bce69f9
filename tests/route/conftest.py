"""Fixtures of the routing tests: a calibrated resnet20 supernet, the same with early exits, and images."""

from __future__ import annotations

import pytest
import torch
from route_helpers import calibrated_resnet

import tailor
from tailor.route import EarlyExitModel, add_early_exits


@pytest.fixture(scope="module")
def resnet() -> tailor.ElasticModel:
    return calibrated_resnet()


@pytest.fixture(scope="module")
def resnet_exits() -> EarlyExitModel:
    torch.manual_seed(1)
    return add_early_exits(calibrated_resnet(), ["stage1", "stage2"]).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(7))
