"""Helpers shared by the model tests: the registry, seeded models, input sizes, MAC counting."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

import tailor
from tailor.ops import ElasticModel

MODELS = tailor.list_models()


def make(name: str) -> ElasticModel:
    torch.manual_seed(0)
    model = tailor.create_model(name, num_classes=7).eval()
    with torch.no_grad():  # random (not identity) BN statistics, so mistakes in their slicing show
        for _, module in model.elastic_layers():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def sample_input(name: str, batch: int = 2) -> torch.Tensor:
    """CIFAR-sized models get 32x32; ImageNet-sized ones 64x64 (small, but past their 32x downsampling)."""
    size = 32 if tailor.create_model(name).default_input_size[1] <= 32 else 64
    return torch.randn(batch, 3, size, size)


def macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward (FlopCounterMode counts 2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2
