"""`SuperNetModule`: a drop-in layer that mixes a pool of alternative operations with learned weights.

θ = softmax(α / T) weighs the alternatives' outputs. With `gumbel_softmax=True` Gumbel noise is added to α
while the module is in training mode (eval mode stays deterministic). With `hard_softmax=True` the forward
pass uses the one-hot of argmax θ, and the backward pass the gradient of the soft θ (straight-through), so α
keeps learning; PLiNIO's hard mode took a plain one-hot and gave α no gradient at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import InvalidSubnetError, TailorError

__all__ = ["SuperNetError", "SuperNetModule", "check_temperature"]


class SuperNetError(TailorError, ValueError):
    """A DNAS option is invalid: a softmax option, a cost model, or a cost name that is not there."""


def check_temperature(value: object) -> float:
    """`value` as a float if it is a positive finite number, else a `SuperNetError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SuperNetError(f"softmax temperature must be a positive finite number, got {value!r}")
    return float(value)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SuperNetError(f"{name} must be True or False, got {value!r}")
    return value


def straight_through_one_hot(soft: torch.Tensor) -> torch.Tensor:
    """Exactly the one-hot of argmax `soft` in the forward pass; the gradient of `soft` in the backward pass."""
    hard = F.one_hot(soft.argmax(), soft.numel()).to(soft.dtype)
    return hard + (soft - soft.detach())  # soft - soft.detach() is exactly 0 in value


class SuperNetModule(nn.Module):
    """A pool of alternative layers sharing one output shape; the output is Σ θᵢ · branchᵢ(x).

    `branches` are ordinary modules (an `nn.Identity()` lets the search skip the layer). α starts uniform
    (1/n each, as in PLiNIO), so θ starts uniform; `alpha` is an ordinary trainable `nn.Parameter`.
    """

    def __init__(
        self,
        branches: Iterable[nn.Module],
        gumbel_softmax: bool = False,
        hard_softmax: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(branches, nn.Module) and not isinstance(branches, nn.ModuleList):
            raise InvalidSubnetError(
                f"SuperNetModule takes a list of alternative modules, got a single {type(branches).__name__}"
            )
        branch_list = list(branches)
        if not branch_list:
            raise InvalidSubnetError("SuperNetModule needs at least one alternative module, got none")
        for i, branch in enumerate(branch_list):
            if not isinstance(branch, nn.Module):
                raise InvalidSubnetError(
                    f"SuperNetModule alternative {i} is a {type(branch).__name__}, not an nn.Module"
                )
            if isinstance(branch, SuperNetModule) or any(isinstance(m, SuperNetModule) for m in branch.modules()):
                raise InvalidSubnetError(
                    f"SuperNetModule alternative {i} contains a SuperNetModule; nesting is not supported"
                )
        self.sn_branches = nn.ModuleList(branch_list)
        n = len(branch_list)
        self.alpha = nn.Parameter(torch.full((n,), 1.0 / n))
        self.gumbel_softmax = _check_flag("gumbel_softmax", gumbel_softmax)
        self.hard_softmax = _check_flag("hard_softmax", hard_softmax)
        self._softmax_temperature = 1.0
        self.qualified_name = ""  # set by SuperNet so that errors name the layer in the user's model

    # -- options ------------------------------------------------------------------------------------------

    @property
    def softmax_temperature(self) -> float:
        """T in θ = softmax(α / T); lower is more decisive."""
        return self._softmax_temperature

    @softmax_temperature.setter
    def softmax_temperature(self, value: float) -> None:
        self._softmax_temperature = check_temperature(value)

    def update_softmax_options(
        self, temperature: float | None = None, hard: bool | None = None, gumbel: bool | None = None
    ) -> None:
        """Change the temperature, hard (straight-through one-hot) and Gumbel options; `None` keeps one as is."""
        if temperature is not None:
            self.softmax_temperature = temperature
        if hard is not None:
            self.hard_softmax = _check_flag("hard", hard)
        if gumbel is not None:
            self.gumbel_softmax = _check_flag("gumbel", gumbel)

    # -- θ ------------------------------------------------------------------------------------------------

    @property
    def theta(self) -> torch.Tensor:
        """The deterministic soft weights softmax(α / T) (no Gumbel noise, not one-hot); differentiable."""
        return F.softmax(self.alpha / self._softmax_temperature, dim=0)

    def mixing_weights(self) -> torch.Tensor:
        """θ as the forward pass uses it: Gumbel-perturbed while training if asked, straight-through one-hot if hard."""
        if self.gumbel_softmax and self.training:
            soft = F.gumbel_softmax(self.alpha, tau=self._softmax_temperature, hard=False, dim=0)
        else:
            soft = self.theta
        return straight_through_one_hot(soft) if self.hard_softmax else soft

    def cost_weights(self) -> torch.Tensor:
        """θ for the expected cost: softmax(α / T), straight-through one-hot when hard; never Gumbel-perturbed."""
        return straight_through_one_hot(self.theta) if self.hard_softmax else self.theta

    def best_layer_index(self) -> int:
        """Index of the alternative with the largest α: the one `SuperNet.export()` keeps."""
        return int(torch.argmax(self.alpha.detach()).item())

    # -- forward ------------------------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"SuperNetModule {self.qualified_name!r}" if self.qualified_name else "SuperNetModule"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Σ θᵢ · branchᵢ(x), after checking that every alternative returned a tensor of one shape."""
        outputs = [branch(x) for branch in self.sn_branches]
        first = outputs[0]
        for i, y in enumerate(outputs):
            if not isinstance(y, torch.Tensor):
                raise InvalidSubnetError(
                    f"{self._describe()}: alternative {i} ({type(self.sn_branches[i]).__name__}) returned a "
                    f"{type(y).__name__}, not a tensor"
                )
            if y.shape != first.shape:
                shapes = ", ".join(
                    f"{i}: {type(b).__name__} -> {tuple(o.shape)}"
                    for i, (b, o) in enumerate(zip(self.sn_branches, outputs))
                )
                raise InvalidSubnetError(
                    f"{self._describe()}: alternatives must return the same output shape for input "
                    f"{tuple(x.shape)}, got {shapes}"
                )
        weights = self.mixing_weights()
        out = weights[0] * first
        for i in range(1, len(outputs)):
            out = out + weights[i] * outputs[i]
        return out

    def __getitem__(self, pos: int) -> nn.Module:
        """Alternative number `pos` (PLiNIO's indexing)."""
        return self.sn_branches[pos]

    def __len__(self) -> int:
        return len(self.sn_branches)

    def extra_repr(self) -> str:
        return (
            f"n_branches={len(self.sn_branches)}, temperature={self._softmax_temperature}, "
            f"gumbel_softmax={self.gumbel_softmax}, hard_softmax={self.hard_softmax}"
        )
