"""Channel analysis on less common forward code: shared layers, several inputs and outputs, mode branches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailor.convert import FrozenChannelsWarning, elasticize
from tailor.ops import ElasticConv2d

TOLERANCE = 1e-5


def check(model: nn.Module, user: nn.Module, *x: torch.Tensor) -> None:
    """Full width equals the user's model; activated == extracted at every uniform width."""
    model.eval()
    user.eval()
    with torch.no_grad():
        for got, want in zip(_flat(model(*x)), _flat(user(*x))):
            assert torch.allclose(got, want, atol=TOLERANCE, rtol=0)
    for width in (0.25, 0.5, 1.0):
        sub = model.space.uniform(width)
        with torch.no_grad(), model.activated(sub):
            for got, want in zip(_flat(model(*x)), _flat(model.extract(sub)(*x))):
                assert torch.allclose(got, want, atol=TOLERANCE, rtol=0)


def _flat(value: object) -> list[torch.Tensor]:
    return list(value) if isinstance(value, (tuple, list)) else [value]  # type: ignore[list-item]


class SharedConv(nn.Module):
    """One conv applied twice, and one module registered under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.alias = self.body
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.body(x))
        x = F.relu(self.alias(x))
        return self.fc(x.mean((2, 3)))


class TwoInputsTwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding="same")
        self.b = nn.Conv2d(1, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 12, 1)
        self.fc = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.mix(self.a(x) + self.b(mask)))
        return features, self.fc(features.amax((2, 3)))


class TrainBranch(nn.Module):
    """Forward code that runs a layer only in training."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        if self.training:
            x = x + self.aux(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SpatialAttention(nn.Module):
    """CBAM-style: channel statistics concatenated into a 2-channel map that gates every channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = nn.Conv2d(2, 1, 7, padding=3)
        self.chunked = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        stats = torch.cat([x.mean(1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)
        x = x * torch.sigmoid(self.gate(stats))
        first, _ = x.chunk(2, dim=1)
        return self.fc(self.chunked(first).mean((2, 3)))


def test_shared_layers_are_converted_once_everywhere() -> None:
    torch.manual_seed(0)
    user = SharedConv()
    model = elasticize(user, torch.randn(2, 3, 16, 16))
    assert model.net.body is model.net.alias and isinstance(model.net.body, ElasticConv2d)
    assert model.net.body.in_dim == model.net.body.out_dim  # both calls read and write one group
    check(model, user, torch.randn(2, 3, 16, 16))


def test_several_inputs_and_outputs() -> None:
    torch.manual_seed(0)
    user = TwoInputsTwoOutputs()
    x, mask = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 16, 16)
    model = elasticize(user, (x, mask))
    names = {d.name for d in model.space.widths}
    assert names == {"a"}  # the add ties a and b; mix's output is returned, so fixed
    frozen = {g.name: g.frozen for g in model.frozen_groups}
    assert frozen["mix"] == "network output" and frozen["input 'mask'"] == "network input 'mask'"
    check(model, user, x, mask)


def test_train_only_layers_are_converted_too() -> None:
    torch.manual_seed(0)
    user = TrainBranch()
    model = elasticize(user, torch.randn(2, 3, 16, 16))
    assert isinstance(model.net.aux, ElasticConv2d)
    check(model, user, torch.randn(2, 3, 16, 16))
    model.train()
    sub = model.space.uniform(0.5)
    with model.activated(sub):
        model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.net.aux.weight.grad is not None


def test_reductions_over_channels_and_channel_chunks() -> None:
    torch.manual_seed(0)
    user = SpatialAttention()
    with pytest.warns(FrozenChannelsWarning, match="Tensor.chunk"):
        model = elasticize(user, torch.randn(2, 3, 16, 16))
    groups = {g.name: g for g in model.channel_groups}
    assert not groups["conv"].elastic and groups["gate"].frozen is not None
    assert {d.name for d in model.space.widths} == {"chunked"}
    check(model, user, torch.randn(2, 3, 16, 16))
