"""`SuperNet`: wrap a model that contains `SuperNetModule`s for differentiable NAS (PLiNIO's API).

At construction one forward pass (eval mode, no gradients; every module's train/eval flag is restored
afterwards, so the model is not left in eval mode) records what each `SuperNetModule` receives. Every branch
is then priced by each cost model at that input, so a branch costs what it costs where it sits. `net.cost`
is Σ over modules of Σᵢ θᵢ · costᵢ, differentiable in α; with `full_cost=True` the cost of the rest of the
network (priced with the searchable modules as free stand-ins) is added as a constant.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from tailor.checks import boolean
from tailor.dnas.costs import CostModel, CostSpec, resolve_costs
from tailor.dnas.module import SuperNetError, SuperNetModule, check_temperature
from tailor.errors import InvalidSubnetError, TailorError, UnsupportedModelError

__all__ = ["SuperNet"]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every module's own train/eval flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _stand_in(shapes: dict[tuple, tuple], name: str):
    """A forward for a searchable module that returns zeros of its recorded output shape, computing nothing."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key not in shapes:
            raise InvalidSubnetError(f"SuperNetModule {name!r}: no recorded output for input {tuple(x.shape)}")
        shape, dtype = shapes[key]
        return torch.zeros(shape, dtype=dtype, device=x.device)

    return forward


@contextlib.contextmanager
def _stand_ins(modules: Sequence[tuple[str, SuperNetModule]], outputs: dict[int, dict[tuple, tuple]]) -> Iterator[None]:
    for name, module in modules:
        module.forward = _stand_in(outputs[id(module)], name)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for _, module in modules:
            del module.forward


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _resolve_example(
    model: nn.Module, input_example: Any, input_shape: Sequence[int] | None
) -> tuple[torch.Tensor, ...]:
    """The propagation input as a tuple of tensors holding one sample each (batch axis 1)."""
    if input_shape is not None:
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape):
            raise SuperNetError(
                f"input_shape must be positive integers (per sample, no batch axis), got {input_shape!r}"
            )
    if input_example is None:
        if input_shape is None:
            raise SuperNetError("SuperNet needs input_shape=(C, H, W) or input_example=tensor for shape propagation")
        device, dtype = _model_device_dtype(model)
        gen = torch.Generator().manual_seed(0)  # a private generator: building a SuperNet leaves torch's RNG alone
        return (torch.rand((1, *shape), generator=gen, dtype=dtype).to(device),)
    example = tuple(input_example) if isinstance(input_example, (tuple, list)) else (input_example,)
    if not example or not all(isinstance(t, torch.Tensor) for t in example):
        raise SuperNetError(f"input_example must be a tensor or a tuple of tensors, got {type(input_example).__name__}")
    if any(t.dim() == 0 or t.shape[0] == 0 for t in example):
        raise SuperNetError("input_example tensors need a non-empty batch axis (axis 0)")
    if input_shape is not None and (len(example) != 1 or tuple(example[0].shape[1:]) != shape):
        raise SuperNetError(
            f"input_shape {shape} does not match input_example of shape "
            f"{[tuple(t.shape) for t in example]}; give one of them"
        )
    return tuple(t.detach()[:1].clone() for t in example)


class SuperNet(nn.Module):
    """A model with `SuperNetModule`s, ready for DNAS: `cost`, `export()`, parameter groups and softmax options.

    `cost` is a cost model (`"params"`, `"macs"`, `"latency"`, `tailor.cost.params` / `macs` / `latency`, a
    `CostModel`, a callable `fn(module, x)`) or a dict / list of them; default params, as PLiNIO. The wrapped
    model is used in place (training the SuperNet trains it); `export()` returns a copy.
    """

    def __init__(
        self,
        model: nn.Module,
        cost: CostSpec | dict[str, CostSpec] | Sequence[CostSpec] = "params",
        input_example: Any = None,
        input_shape: Sequence[int] | None = None,
        full_cost: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(f"SuperNet wraps an nn.Module, got {type(model).__name__}")
        if isinstance(model, SuperNet):
            raise UnsupportedModelError("model is already a SuperNet")
        self.seed = model
        self.full_cost = boolean("full_cost", full_cost, SuperNetError)
        self._searchable: list[tuple[str, SuperNetModule]] = []
        for name, module in model.named_modules():  # unique modules, each under its first name
            if isinstance(module, SuperNetModule):
                module.qualified_name = name or "<model>"
                self._searchable.append((module.qualified_name, module))
        if not self._searchable:
            raise UnsupportedModelError(
                f"{type(model).__name__} contains no SuperNetModule: nothing to search; "
                "wrap the alternative layers in tailor.dnas.SuperNetModule([...])"
            )
        alphas = {id(m.alpha) for _, m in self._searchable}
        # parameters the user froze before the search stay frozen through train_net_only / train_net_and_nas
        self._frozen = {id(p) for p in model.parameters() if id(p) not in alphas and not p.requires_grad}
        self._example = _resolve_example(model, input_example, input_shape)
        self._calls, self._outputs = self._propagate()
        self._cost_models: dict[str, CostModel] = {}
        self._several_costs = False
        self._branch_costs: dict[str, list[list[float]]] = {}
        self._fixed_costs: dict[str, float] = {}
        self.cost_specification = cost
        self.train_net_and_nas()

    # -- shape propagation and costs ----------------------------------------------------------------------

    def _propagate(self) -> tuple[dict[int, list[torch.Tensor]], dict[int, dict[tuple, tuple]]]:
        """Run the example once; per searchable module its inputs (one sample) and output shape per input shape."""
        calls: dict[int, list[torch.Tensor]] = {id(m): [] for _, m in self._searchable}
        outputs: dict[int, dict[tuple, tuple]] = {id(m): {} for _, m in self._searchable}

        def record(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(x, torch.Tensor) or len(args) + len(kwargs) != 1:
                name = getattr(module, "qualified_name", "")
                raise UnsupportedModelError(f"SuperNetModule {name!r} must be called with exactly one tensor")
            calls[id(module)].append(x.detach().clone())
            outputs[id(module)][(tuple(x.shape), x.dtype)] = (tuple(out.shape), out.dtype)

        hooks = [m.register_forward_hook(record, with_kwargs=True) for _, m in self._searchable]
        try:
            with _eval_mode(self.seed), torch.no_grad():
                self.seed(*self._example)
        except TailorError:
            raise
        except Exception as error:
            raise UnsupportedModelError(
                f"shape propagation through {type(self.seed).__name__} failed on input "
                f"{[tuple(t.shape) for t in self._example]}: {type(error).__name__}: {error}"
            ) from error
        finally:
            for hook in hooks:
                hook.remove()
        for name, module in self._searchable:
            if not calls[id(module)]:
                raise InvalidSubnetError(
                    f"SuperNetModule {name!r} was not called by the model's forward on the example input; "
                    "its cost cannot be measured"
                )
        return calls, outputs

    def _compute_costs(self, models: dict[str, CostModel]) -> None:
        branch_costs: dict[str, list[list[float]]] = {}
        fixed_costs: dict[str, float] = {}
        device = self._searchable[0][1].alpha.device  # where the model is now (it may have moved since __init__)
        self._example = tuple(t.to(device) for t in self._example)
        self._calls = {key: [x.to(device) for x in xs] for key, xs in self._calls.items()}
        with _eval_mode(self.seed):
            for cost_name, cost_model in models.items():
                per_module = []
                for _, module in self._searchable:
                    inputs = self._calls[id(module)] if cost_model.per_call else self._calls[id(module)][:1]
                    per_branch = []
                    for branch in module.sn_branches:
                        cache: dict[tuple, float] = {}
                        total = 0.0
                        for x in inputs:
                            key = (tuple(x.shape), x.dtype)
                            if key not in cache:
                                cache[key] = float(cost_model.measure(branch, x))
                            total += cache[key]
                        per_branch.append(total)
                    per_module.append(per_branch)
                branch_costs[cost_name] = per_module
                if self.full_cost:
                    with _stand_ins(self._searchable, self._outputs), torch.no_grad():
                        fixed_costs[cost_name] = float(
                            cost_model.fixed(self.seed, self._example, [m for _, m in self._searchable])
                        )
        self._branch_costs, self._fixed_costs = branch_costs, fixed_costs
        for name in [n for n, _ in self.named_buffers(recurse=False)]:
            delattr(self, name)
        _, dtype = _model_device_dtype(self.seed)
        for k, cost_name in enumerate(models):
            for m, costs in enumerate(branch_costs[cost_name]):
                t = torch.tensor(costs, dtype=dtype, device=device)
                self.register_buffer(f"_branch_cost_{k}_{m}", t, persistent=False)
            fixed = torch.tensor(fixed_costs.get(cost_name, 0.0), dtype=dtype, device=device)
            self.register_buffer(f"_fixed_cost_{k}", fixed, persistent=False)

    @property
    def cost_specification(self) -> dict[str, CostModel]:
        """The named cost models in use; assigning a new specification re-prices every branch."""
        return dict(self._cost_models)

    @cost_specification.setter
    def cost_specification(self, cost: CostSpec | dict[str, CostSpec] | Sequence[CostSpec]) -> None:
        models, several = resolve_costs(cost)
        self._compute_costs(models)
        self._cost_models, self._several_costs = models, several

    def _cost_index(self, name: str | None) -> int:
        names = list(self._cost_models)
        if name is None:
            if len(names) != 1:
                raise SuperNetError(f"several cost models ({', '.join(names)}): use get_cost(name)")
            return 0
        if name not in self._cost_models:
            raise SuperNetError(f"no cost model named {name!r}; this SuperNet has {names}")
        return names.index(name)

    def get_cost(self, name: str | None = None) -> torch.Tensor:
        """Differentiable expected cost Σθᵢ·costᵢ of cost model `name` (may be omitted when there is only one)."""
        k = self._cost_index(name)
        total = getattr(self, f"_fixed_cost_{k}") if self.full_cost else None
        for m, (_, module) in enumerate(self._searchable):
            term = (module.cost_weights() * getattr(self, f"_branch_cost_{k}_{m}")).sum()
            total = term if total is None else total + term
        return total

    @property
    def cost(self) -> torch.Tensor:
        """`get_cost()` of the only cost model (PLiNIO's `net.cost`)."""
        return self.get_cost(None)

    def branch_costs(self, name: str | None = None) -> dict[str, list[float]]:
        """Per searchable module (qualified name), the cost of each of its alternatives under cost model `name`."""
        k = self._cost_index(name)
        costs = self._branch_costs[list(self._cost_models)[k]]
        return {qname: list(c) for (qname, _), c in zip(self._searchable, costs)}

    def chosen_cost(self, name: str | None = None) -> float:
        """Cost of the architecture `export()` returns: each module's argmax branch, plus the rest if full_cost."""
        k = self._cost_index(name)
        cost_name = list(self._cost_models)[k]
        total = self._fixed_costs.get(cost_name, 0.0) if self.full_cost else 0.0
        for (_, module), costs in zip(self._searchable, self._branch_costs[cost_name]):
            total += costs[module.best_layer_index()]
        return total

    # -- forward, parameters, training phases --------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward."""
        return self.seed(*args, **kwargs)

    @property
    def model(self) -> nn.Module:
        """The wrapped model (PLiNIO calls it `seed`)."""
        return self.seed

    def supernet_modules(self) -> list[tuple[str, SuperNetModule]]:
        """The searchable modules with their qualified names in the wrapped model, in forward-definition order."""
        return list(self._searchable)

    def named_nas_parameters(self, prefix: str = "", recurse: bool = False) -> Iterator[tuple[str, nn.Parameter]]:
        """The architectural parameters (each module's α) with their names as in `named_parameters()`."""
        alphas = {id(m.alpha) for _, m in self._searchable}
        for name, p in self.named_parameters(prefix=prefix):
            if id(p) in alphas:
                yield name, p

    def nas_parameters(self, recurse: bool = False) -> Iterator[nn.Parameter]:
        """The architectural parameters (α of every SuperNetModule)."""
        for _, p in self.named_nas_parameters(recurse=recurse):
            yield p

    def named_net_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter of the network except the architectural ones, with its name."""
        alphas = {id(m.alpha) for _, m in self._searchable}
        for name, p in self.named_parameters(prefix=prefix, recurse=recurse):
            if id(p) not in alphas:
                yield name, p

    def net_parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Every parameter of the network except the architectural ones (for the weights' optimizer)."""
        for _, p in self.named_net_parameters(recurse=recurse):
            yield p

    def _set_trainable(self, net: bool, nas: bool) -> None:
        for p in self.net_parameters():
            p.requires_grad_(net and id(p) not in self._frozen)
        for p in self.nas_parameters():
            p.requires_grad_(nas)

    def train_net_only(self) -> None:
        """Train the weights with the architecture fixed (warm-up before the search, fine-tuning after)."""
        self._set_trainable(net=True, nas=False)

    def train_nas_only(self) -> None:
        """Train only the architectural parameters α (weights frozen)."""
        self._set_trainable(net=False, nas=True)

    def train_net_and_nas(self) -> None:
        """Train weights and α together (the state after construction)."""
        self._set_trainable(net=True, nas=True)

    @property
    def train_selection(self) -> bool:
        """Whether α is being trained (PLiNIO's flag); assigning it freezes or unfreezes α alone."""
        return all(p.requires_grad for p in self.nas_parameters())

    @train_selection.setter
    def train_selection(self, value: bool) -> None:
        value = boolean("train_selection", value, SuperNetError)
        for p in self.nas_parameters():
            p.requires_grad_(value)

    def update_softmax_options(
        self, temperature: float | None = None, hard: bool | None = None, gumbel: bool | None = None
    ) -> None:
        """Set the temperature, hard (straight-through) and Gumbel options of every SuperNetModule."""
        if temperature is not None:
            check_temperature(temperature)
        for flag_name, flag in (("hard", hard), ("gumbel", gumbel)):
            if flag is not None:
                boolean(flag_name, flag, SuperNetError)
        for _, module in self._searchable:
            module.update_softmax_options(temperature=temperature, hard=hard, gumbel=gumbel)

    # -- inspection and export -----------------------------------------------------------------------------

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per searchable module: θ of each alternative, the chosen (argmax) one and the alternatives' costs.

        Branch entries keep PLiNIO's key `"alpha"` for θᵢ (the softmax weight); `"raw_alpha"` is the parameter.
        """
        names = list(self._cost_models)
        out: dict[str, dict[str, Any]] = {}
        for m, (qname, module) in enumerate(self._searchable):
            with torch.no_grad():
                theta = module.theta.tolist()
            raw = module.alpha.detach().tolist()
            branches = {}
            for i, branch in enumerate(module.sn_branches):
                branches[f"branch_{i}"] = {
                    "alpha": theta[i],
                    "raw_alpha": raw[i],
                    "module": type(branch).__name__,
                    "cost": {n: self._branch_costs[n][m][i] for n in names},
                }
            chosen = module.best_layer_index()
            out[qname] = {
                "type": type(module).__name__,
                "theta": theta,
                "chosen": chosen,
                "chosen_module": type(module.sn_branches[chosen]).__name__,
                "temperature": module.softmax_temperature,
                "supernet_branches": branches,
            }
        return out

    def get_total_icv(self, eps: float = 1e-3) -> torch.Tensor:
        """Σ over modules of the inverse coefficient of variation of θ, mean(θ)² / (var(θ) + eps) (PLiNIO's).

        Large when θ is near uniform (undecided), small when one alternative dominates; differentiable in α, so
        it can be logged to watch convergence or added to the loss to push θ towards a decision. θ is the
        deterministic softmax(α / T); modules with a single alternative have nothing to decide and add 0.
        """
        total = torch.zeros((), dtype=self._searchable[0][1].alpha.dtype, device=self._searchable[0][1].alpha.device)
        for _, module in self._searchable:
            if len(module) < 2:
                continue
            theta = module.theta
            total = total + theta.mean() ** 2 / (theta.var() + eps)
        return total

    def export(self) -> nn.Module:
        """A deep copy of the wrapped model with every SuperNetModule replaced by its argmax (largest α) branch."""
        exported = copy.deepcopy(self.seed)
        if isinstance(exported, SuperNetModule):
            return exported.sn_branches[exported.best_layer_index()]
        for parent in list(exported.modules()):
            for child_name, child in list(parent._modules.items()):  # every name, also a module held twice
                if isinstance(child, SuperNetModule):
                    setattr(parent, child_name, child.sn_branches[child.best_layer_index()])
        leftover = [name for name, m in exported.named_modules() if isinstance(m, SuperNetModule)]
        if leftover:
            raise UnsupportedModelError(f"export could not replace SuperNetModules at {leftover}")
        return exported
