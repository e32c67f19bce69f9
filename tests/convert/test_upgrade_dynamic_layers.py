"""Model Slicing's `upgrade_dynamic_layers(model, groups, sr_list)`: one call, one global slice rate."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from user_models import make_user_model

from tailor.convert import ElasticizedModel, upgrade_dynamic_layers
from tailor.errors import UnsupportedModelError
from tailor.ops import ElasticBatchNorm2d, ElasticGroupNorm

SLICE_RATES = [0.25, 0.5, 0.75, 1.0]


def test_groups_zero_keeps_batch_norm_and_the_weights() -> None:
    user = make_user_model("resnet18")
    model = upgrade_dynamic_layers(user, 0, SLICE_RATES)
    assert isinstance(model, ElasticizedModel) and model.mode == "uniform" and model.norm == "batch"
    assert [d.name for d in model.space.widths] == ["width"]
    assert model.space.widths[0].choices == tuple(SLICE_RATES)
    assert any(isinstance(m, ElasticBatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), user(x), atol=1e-5, rtol=0)


def test_groups_give_sliced_group_norm() -> None:
    model = upgrade_dynamic_layers(make_user_model("mobilenet_v2"), 4, [0.5, 1.0]).eval()
    norms = [m for m in model.modules() if isinstance(m, ElasticGroupNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.num_groups <= 4 or m.num_channels % 4 for m in norms)
    x = torch.randn(2, 3, 32, 32)
    for rate in (0.5, 1.0):
        sub = model.space.uniform(rate)
        with torch.no_grad(), model.activated(sub):
            assert torch.allclose(model(x), model.extract(sub)(x), atol=1e-5, rtol=0)


def test_example_inputs_default_from_the_first_conv() -> None:
    class Gray(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    model = upgrade_dynamic_layers(Gray(), 0, [0.5, 1.0])
    assert model.default_input_size == (1, 32, 32)


def test_bad_groups_and_models_without_layers() -> None:
    with pytest.raises(UnsupportedModelError, match="groups must be an int >= 0"):
        upgrade_dynamic_layers(make_user_model("vgg"), -1, SLICE_RATES)
    with pytest.raises(UnsupportedModelError, match="give example_inputs"):
        upgrade_dynamic_layers(nn.ReLU(), 0, SLICE_RATES)
