"""What elasticize cannot follow: it raises naming the node, or freezes exactly those channels and says so."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from user_models import make_user_model

import tailor
from tailor.convert import FrozenChannelsWarning, elasticize
from tailor.errors import InvalidSubnetError, UnsupportedModelError

TOLERANCE = 1e-5


def x32(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def check_widths(model: tailor.ElasticModel, x: torch.Tensor) -> None:
    """activated == extracted at every uniform width, in eval mode."""
    model.eval()
    for width in (0.25, 0.5, 0.75, 1.0):
        sub = model.space.uniform(width)
        with torch.no_grad(), model.activated(sub):
            assert torch.allclose(model(x), model.extract(sub)(x), atol=TOLERANCE, rtol=0)


class Head(nn.Module):
    """conv -> ... -> global pool -> linear; subclasses put something in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 4)

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.middle(F.relu(self.c1(x)))
        x = F.relu(self.c3(F.relu(self.c2(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DataDependent(Head):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return -x
        return x


class ChannelShuffle(Head):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class CustomFunction(Head):
    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return Clamp.apply(x)


class UnknownLayer(Head):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(8, affine=True)

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class LayerScale(Head):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.5))

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class LeNet(nn.Module):
    """Flattens with a hard-coded feature count, as old code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 12)
        self.fc2 = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 16 * 5 * 5)
        return self.fc2(F.relu(self.fc1(x)))


def frozen_names(model: tailor.ElasticModel) -> set[str]:
    return {g.name for g in model.frozen_groups}  # type: ignore[attr-defined]


def test_untraceable_control_flow_names_the_node() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        elasticize(DataDependent(), x32())
    message = str(info.value)
    assert "DataDependent.forward cannot be traced" in message
    assert "node 'gt' (operator.gt)" in message and "`if x.sum() > 0:`" in message
    assert "test_unsupported.py" in message and "control flow" in message


def test_channel_shuffle_freezes_exactly_its_channels() -> None:
    with pytest.warns(FrozenChannelsWarning) as record:
        model = elasticize(ChannelShuffle(), x32())
    message = str(record[0].message)
    assert "node 'floordiv' (operator.floordiv)" in message and "channel count" in message
    assert "reshapes the channel axis" in message
    assert {"c1", "output of 'view_1'"} <= frozen_names(model)
    assert {d.name for d in model.space.widths} == {"c2", "c3"}
    check_widths(model, x32())
    with pytest.raises(UnsupportedModelError, match="node 'floordiv'"):
        elasticize(ChannelShuffle(), x32(), strict=True)


def test_custom_autograd_function_is_named_and_kept() -> None:
    torch.manual_seed(0)
    user = CustomFunction().eval()
    with pytest.warns(FrozenChannelsWarning, match="custom autograd function Clamp"):
        model = elasticize(user, x32())
    assert "c1" in frozen_names(model) and "c2" in {d.name for d in model.space.widths}
    check_widths(model, x32())
    with torch.no_grad():
        assert torch.allclose(model.extract()(x32()), user(x32()), atol=TOLERANCE, rtol=0)
    with pytest.raises(UnsupportedModelError, match="custom autograd function Clamp"):
        elasticize(user, x32(), strict=True)


def test_unknown_layer_freezes_what_it_touches() -> None:
    with pytest.warns(FrozenChannelsWarning, match=r"layer 'norm' \(InstanceNorm2d\)"):
        model = elasticize(UnknownLayer(), x32())
    assert "c1" in frozen_names(model)
    check_widths(model, x32())


def test_fixed_size_parameter_freezes_the_channels_it_scales() -> None:
    with pytest.warns(FrozenChannelsWarning, match="fixed-size tensor"):
        model = elasticize(LayerScale(), x32())
    assert "c1" in frozen_names(model)
    check_widths(model, x32())


def test_hard_coded_view_freezes_the_flattened_channels() -> None:
    torch.manual_seed(0)
    user = LeNet().eval()
    with pytest.warns(FrozenChannelsWarning, match=r"x.view\(-1, 16 \* 5 \* 5\)` hard-codes the channel count"):
        model = elasticize(user, x32())
    assert "conv2" in frozen_names(model)
    assert {d.name for d in model.space.widths} == {"conv1", "fc1"}
    with torch.no_grad():
        assert torch.allclose(model(x32()), user(x32()), atol=TOLERANCE, rtol=0)
    check_widths(model, x32())


def test_forward_hooks_keep_their_layer() -> None:
    user = make_user_model("vgg")
    user.features[0].register_forward_hook(lambda module, args, out: out * 2)
    with pytest.warns(FrozenChannelsWarning, match="forward hooks"):
        model = elasticize(user, x32())
    assert isinstance(model.net.features[0], nn.Conv2d) and not isinstance(model.net.features[0], tailor.ElasticModel)
    with torch.no_grad():
        assert torch.allclose(model(x32()), user(x32()), atol=TOLERANCE, rtol=0)
    check_widths(model, x32())


def test_nothing_elastic_is_an_error() -> None:
    class OnlyLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with pytest.raises(UnsupportedModelError, match="no channels of OnlyLinear can shrink"):
        elasticize(OnlyLinear(), torch.randn(2, 12))


def test_default_conversion_is_silent_on_supported_models() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elasticize(make_user_model("resnet18"), x32())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "layers"}, UnsupportedModelError, "mode must be one of"),
        ({"norm": "layer"}, UnsupportedModelError, "norm must be one of"),
        ({"groups": 0}, UnsupportedModelError, "groups must be a positive int"),
        ({"widths": ()}, InvalidSubnetError, "widths is empty"),
        ({"widths": (0.5, 1.5)}, InvalidSubnetError, "width 1.5 is not in"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        elasticize(make_user_model("vgg"), x32(), **kwargs)


def test_wrong_inputs_and_elastic_models_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match=r"example inputs failed at node 'features_0'"):
        elasticize(make_user_model("vgg"), torch.randn(2, 4, 32, 32))
    with pytest.raises(UnsupportedModelError, match="already contains elastic layers"):
        elasticize(tailor.create_model("small_cnn"), x32())
    with pytest.raises(UnsupportedModelError, match="expected an nn.Module"):
        elasticize(lambda x: x, x32())  # type: ignore[arg-type]
