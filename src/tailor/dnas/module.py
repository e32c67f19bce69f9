"""`SuperNetModule`: a drop-in layer that mixes a pool of alternative operations with learned weights.

As in PLiNIO, the module holds its alternatives (`sn_branches`) and a `SuperNetCombiner` (`sn_combiner`), which
holds the architectural parameters α and the softmax options and mixes the branches' outputs; state dict keys
are PLiNIO's (`conv1.sn_combiner.alpha`), and the keys of tailor's earlier layout (`conv1.alpha`) still load.
θ = softmax(α / T) weighs the alternatives' outputs. With `gumbel_softmax=True` Gumbel noise is added to α
while the module is in training mode (eval mode stays deterministic). With `hard_softmax=True` the forward
pass uses the one-hot of argmax θ, and the backward pass the gradient of the soft θ (straight-through), so α
keeps learning; PLiNIO's hard mode took a plain one-hot and gave α no gradient at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.checks import boolean, positive_float, positive_int
from tailor.errors import InvalidSubnetError, TailorError

__all__ = ["SuperNetCombiner", "SuperNetError", "SuperNetModule", "check_temperature"]


class SuperNetError(TailorError, ValueError):
    """A DNAS option is invalid: a softmax option, a cost model, or a cost name that is not there."""


def check_temperature(value: object) -> float:
    """`value` as a float if it is a positive finite number, else a `SuperNetError` naming it."""
    return positive_float("softmax temperature", value, SuperNetError)


def straight_through_one_hot(soft: torch.Tensor) -> torch.Tensor:
    """Exactly the one-hot of argmax `soft` in the forward pass; the gradient of `soft` in the backward pass."""
    hard = F.one_hot(soft.argmax(), soft.numel()).to(soft.dtype)
    return hard + (soft - soft.detach())  # soft - soft.detach() is exactly 0 in value


class SuperNetCombiner(nn.Module):
    """The architectural part of one `SuperNetModule` (PLiNIO's combiner): α, the softmax options, the mixing.

    `alpha` (n,) starts uniform at 1/n; `theta` is softmax(α / T), `mixing_weights()` θ as the forward pass uses
    it (Gumbel-perturbed in training if asked, straight-through one-hot if hard), `theta_alpha` the θ of the
    last forward pass (PLiNIO's attribute; before any forward, `theta`). Calling it on the list of the branches'
    outputs returns Σ θᵢ · outputᵢ.
    """

    def __init__(self, n_branches: int, gumbel_softmax: bool = False, hard_softmax: bool = False) -> None:
        super().__init__()
        self.n_branches = positive_int("SuperNetCombiner: n_branches", n_branches, InvalidSubnetError)
        self.alpha = nn.Parameter(torch.full((n_branches,), 1.0 / n_branches))
        self.gumbel_softmax = boolean("gumbel_softmax", gumbel_softmax, SuperNetError)
        self.hard_softmax = boolean("hard_softmax", hard_softmax, SuperNetError)
        self._softmax_temperature = 1.0
        self._last_theta: torch.Tensor | None = None

    @property
    def softmax_temperature(self) -> float:
        """T in θ = softmax(α / T); lower is more decisive."""
        return self._softmax_temperature

    @softmax_temperature.setter
    def softmax_temperature(self, value: float) -> None:
        self._softmax_temperature = check_temperature(value)

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

    @property
    def theta_alpha(self) -> torch.Tensor:
        """θ as the last forward pass used it (PLiNIO's attribute, detached here: the cost and the ICV read α
        directly); the deterministic θ (one-hot if hard) before any forward."""
        return self._last_theta if self._last_theta is not None else self.cost_weights().detach()

    def sample_alpha(self) -> torch.Tensor:
        """Draw the mixing weights for a forward pass (PLiNIO's name) and keep them as `theta_alpha`."""
        weights = self.mixing_weights()
        self._last_theta = weights.detach()  # for reading; a graph kept here would also block deepcopy (export)
        return weights

    def forward(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Σ θᵢ · outputsᵢ with θ drawn by `sample_alpha` (the outputs are checked by the SuperNetModule)."""
        if len(outputs) != self.n_branches:
            raise InvalidSubnetError(f"SuperNetCombiner mixes {self.n_branches} outputs, got {len(outputs)}")
        weights = self.sample_alpha()
        out = weights[0] * outputs[0]
        for i in range(1, len(outputs)):
            out = out + weights[i] * outputs[i]
        return out

    def best_layer_index(self) -> int:
        """Index of the alternative with the largest α: the one `SuperNet.export()` keeps (ties: the first)."""
        return int(torch.argmax(self.alpha.detach()).item())

    @property
    def train_selection(self) -> bool:
        """Whether α is trained (its `requires_grad`)."""
        return self.alpha.requires_grad

    @train_selection.setter
    def train_selection(self, value: bool) -> None:
        self.alpha.requires_grad_(boolean("train_selection", value, SuperNetError))

    def named_nas_parameters(self, prefix: str = "", recurse: bool = False) -> Iterator[tuple[str, nn.Parameter]]:
        """α with its name (`prefix.alpha`); `recurse` is accepted for PyTorch's signature."""
        yield (f"{prefix}.alpha" if prefix else "alpha"), self.alpha

    def nas_parameters(self, recurse: bool = False) -> Iterator[nn.Parameter]:
        """α."""
        yield self.alpha

    def summary(self) -> dict[str, Any]:
        """{"supernet_branches": {"branch_i": {"alpha": θᵢ}}}, θ deterministic (PLiNIO's per-module summary)."""
        with torch.no_grad():
            theta = self.cost_weights().tolist()
        return {"supernet_branches": {f"branch_{i}": {"alpha": t} for i, t in enumerate(theta)}}

    def extra_repr(self) -> str:
        return (
            f"n_branches={self.n_branches}, temperature={self._softmax_temperature}, "
            f"gumbel_softmax={self.gumbel_softmax}, hard_softmax={self.hard_softmax}"
        )


def _legacy_alpha_key(module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """Load tailor's earlier key `<module>.alpha` into `<module>.sn_combiner.alpha` (the PLiNIO layout)."""
    old, new = f"{prefix}alpha", f"{prefix}sn_combiner.alpha"
    if old in state_dict and new not in state_dict and isinstance(state_dict, dict):
        state_dict[new] = state_dict.pop(old)


class SuperNetModule(nn.Module):
    """A pool of alternative layers sharing one output shape; the output is Σ θᵢ · branchᵢ(x).

    `supernet_branches` (PLiNIO's name; `branches=` also works) are ordinary modules (an `nn.Identity()` lets the
    search skip the layer). The `sn_combiner` holds α, uniform (1/n each) at start as in PLiNIO, so θ starts
    uniform; `module.alpha`, `theta`, `softmax_temperature`, `hard_softmax`, `gumbel_softmax` read through to it.
    """

    def __init__(
        self,
        supernet_branches: Iterable[nn.Module] | None = None,
        gumbel_softmax: bool = False,
        hard_softmax: bool = False,
        *,
        branches: Iterable[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if (supernet_branches is None) == (branches is None):
            raise InvalidSubnetError("SuperNetModule takes its alternatives as supernet_branches (or branches), once")
        pool = supernet_branches if supernet_branches is not None else branches
        if isinstance(pool, nn.Module) and not isinstance(pool, nn.ModuleList):
            raise InvalidSubnetError(
                f"SuperNetModule takes a list of alternative modules, got a single {type(pool).__name__}"
            )
        branch_list = list(pool)  # type: ignore[arg-type]
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
        self.sn_combiner = SuperNetCombiner(len(branch_list), gumbel_softmax, hard_softmax)
        self.qualified_name = ""  # set by SuperNet so that errors name the layer in the user's model
        self.register_load_state_dict_pre_hook(_legacy_alpha_key)

    # -- α and options, kept by the combiner ----------------------------------------------------------------------

    @property
    def alpha(self) -> nn.Parameter:
        """The architectural parameters (the combiner's α)."""
        return self.sn_combiner.alpha

    @property
    def gumbel_softmax(self) -> bool:
        return self.sn_combiner.gumbel_softmax

    @gumbel_softmax.setter
    def gumbel_softmax(self, value: bool) -> None:
        self.sn_combiner.gumbel_softmax = boolean("gumbel_softmax", value, SuperNetError)

    @property
    def hard_softmax(self) -> bool:
        return self.sn_combiner.hard_softmax

    @hard_softmax.setter
    def hard_softmax(self, value: bool) -> None:
        self.sn_combiner.hard_softmax = boolean("hard_softmax", value, SuperNetError)

    @property
    def softmax_temperature(self) -> float:
        """T in θ = softmax(α / T); lower is more decisive."""
        return self.sn_combiner.softmax_temperature

    @softmax_temperature.setter
    def softmax_temperature(self, value: float) -> None:
        self.sn_combiner.softmax_temperature = value

    def update_softmax_options(
        self, temperature: float | None = None, hard: bool | None = None, gumbel: bool | None = None
    ) -> None:
        """Change the temperature, hard (straight-through one-hot) and Gumbel options; `None` keeps one as is."""
        if temperature is not None:
            self.softmax_temperature = temperature
        if hard is not None:
            self.hard_softmax = boolean("hard", hard, SuperNetError)
        if gumbel is not None:
            self.gumbel_softmax = boolean("gumbel", gumbel, SuperNetError)

    @property
    def theta(self) -> torch.Tensor:
        """The deterministic soft weights softmax(α / T) (no Gumbel noise, not one-hot); differentiable."""
        return self.sn_combiner.theta

    def mixing_weights(self) -> torch.Tensor:
        """θ as the forward pass uses it: Gumbel-perturbed while training if asked, straight-through one-hot if hard."""
        return self.sn_combiner.mixing_weights()

    def cost_weights(self) -> torch.Tensor:
        """θ for the expected cost: softmax(α / T), straight-through one-hot when hard; never Gumbel-perturbed."""
        return self.sn_combiner.cost_weights()

    def best_layer_index(self) -> int:
        """Index of the alternative with the largest α: the one `SuperNet.export()` keeps."""
        return self.sn_combiner.best_layer_index()

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
        return self.sn_combiner(outputs)

    def __getitem__(self, pos: int) -> nn.Module:
        """Alternative number `pos` (PLiNIO's indexing)."""
        return self.sn_branches[pos]

    def __len__(self) -> int:
        return len(self.sn_branches)
