"""PLiNIO's layer-count cost models: `params`, `ops` and their `_no_bias` and `_bit` variants.

They count what PLiNIO's `plinio.cost` specs count, so that a search ported from PLiNIO prices branches the
same way (`SuperNet(model, cost=ops)`, `cost={"params": params, "ops": ops}`):

| name | counts, per convolution (1-, 2-, 3-d) and linear layer | once per |
|---|---|---|
| `params` | weights + one bias per output channel | module |
| `params_no_bias` | weights | module |
| `params_bit` | weights × weight precision (bits) | module |
| `ops` | (MACs + one bias add per output value): `cout · (cin/groups · k + 1)` per output position | call |
| `ops_no_bias` | MACs: `cout · cin/groups · k` per output position | call |
| `ops_bit` | MACs × weight precision × input precision (bits) | call |

Every other layer (norms, activations, pooling, identity) costs 0, as in PLiNIO. A bias is counted whether or
not the layer has one (a following BatchNorm folds into it), as PLiNIO does. Precisions are the layer's
`w_precision` / `in_precision` attributes where a quantized layer sets them, else the bit width of the
weight's and the input's dtype (32 for float32). Written here, not taken from a library: these are PLiNIO's
definitions, re-stated from its documentation, for tailor's `CostModel` interface.

Differences to PLiNIO, by design: grouped convolutions count `cin/groups` inputs per output channel (PLiNIO's
generic pattern counts all `cin`, and only exactly-depthwise ones by groups, where both agree); a linear
layer applied to more than one row per sample (e.g. tokens) counts every row; `ops_bit` is paid per call
like `ops`. The names given by a dict (`cost={"ops": ops}`) or these objects' `name` label the costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from tailor.dnas.costs import CostModel
from tailor.dnas.module import SuperNetModule

__all__ = ["PLINIO_COSTS", "LayerCountCost", "ops", "ops_bit", "ops_no_bias", "params", "params_bit", "params_no_bias"]

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _bits(dtype: torch.dtype) -> int:
    return (
        (torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits) if dtype != torch.bool else 1
    )


class LayerCountCost(CostModel):
    """A PLiNIO-style count over the convolutions and linear layers of a module (see the module docstring).

    `kind` is "params" (per module) or "ops" (per call, at the output size each call produces); `bias` adds
    one bias per output channel; `bits` multiplies by the weight (and, for ops, the input) precision.
    """

    def __init__(self, name: str, kind: str, bias: bool, bits: bool) -> None:
        if kind not in ("params", "ops"):
            raise ValueError(f"LayerCountCost kind must be 'params' or 'ops', got {kind!r}")
        self.name, self.kind, self.bias, self.bits = name, kind, bias, bits
        self.per_call = kind == "ops"

    def _weights_per_output(self, layer: nn.Module) -> int:
        """Weights feeding one output channel (value) of `layer`, plus its bias when counted."""
        if isinstance(layer, nn.Linear):
            fan_in = layer.in_features
        else:
            fan_in = layer.in_channels // layer.groups * math.prod(layer.kernel_size)  # type: ignore[union-attr]
        return fan_in + (1 if self.bias else 0)

    def _outputs(self, layer: nn.Module) -> int:
        return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels  # type: ignore[return-value]

    def _weight_bits(self, layer: nn.Module) -> int:
        return int(getattr(layer, "w_precision", None) or _bits(layer.weight.dtype))  # type: ignore[union-attr]

    def layer_params(self, layer: nn.Module) -> float:
        """The params-kind count of one convolution or linear layer."""
        count = self._outputs(layer) * self._weights_per_output(layer)
        return float(count * (self._weight_bits(layer) if self.bits else 1))

    def layer_ops(self, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """The ops-kind count of one call of a convolution or linear layer on one sample `x` giving `y`."""
        if isinstance(layer, nn.Linear):
            positions = max(1, y.numel() // max(1, y.shape[0]) // layer.out_features)
        else:
            positions = math.prod(y.shape[2:])  # spatial size of the output (batch, channels, *spatial)
        count = self._outputs(layer) * self._weights_per_output(layer) * positions
        if self.bits:
            in_bits = int(getattr(layer, "in_precision", None) or _bits(x.dtype))
            count *= self._weight_bits(layer) * in_bits
        return float(count)

    def _count(self, modules: Sequence[nn.Module], run: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
        layers = [m for m in modules if isinstance(m, _COUNTED)]
        if self.kind == "params":
            return sum(self.layer_params(m) for m in {id(m): m for m in layers}.values())
        total = 0.0

        def hook(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
            nonlocal total
            total += self.layer_ops(layer, args[0], out)

        handles = [m.register_forward_hook(hook) for m in {id(m): m for m in layers}.values()]
        try:
            with torch.no_grad():
                run(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        return total

    def measure(self, module: nn.Module, *inputs: torch.Tensor) -> float:
        return self._count(list(module.modules()), module, inputs)

    def fixed(self, model: nn.Module, inputs: Sequence[torch.Tensor], searchable: Sequence[SuperNetModule]) -> float:
        inside = {id(m) for s in searchable for m in s.modules()}
        outside = [m for m in model.modules() if id(m) not in inside]
        return self._count(outside, model, inputs)  # the searchable modules are zero-cost stand-ins here

    def __repr__(self) -> str:
        return f"LayerCountCost(name={self.name!r})"


params = LayerCountCost("params", "params", bias=True, bits=False)
params_no_bias = LayerCountCost("params_no_bias", "params", bias=False, bits=False)
params_bit = LayerCountCost("params_bit", "params", bias=False, bits=True)
ops = LayerCountCost("ops", "ops", bias=True, bits=False)
ops_no_bias = LayerCountCost("ops_no_bias", "ops", bias=False, bits=False)
ops_bit = LayerCountCost("ops_bit", "ops", bias=False, bits=True)

#: PLiNIO's cost names -> their cost models (`SuperNet(cost="ops_no_bias")` resolves through this)
PLINIO_COSTS: dict[str, LayerCountCost] = {
    c.name: c for c in (params, params_no_bias, params_bit, ops, ops_no_bias, ops_bit)
}
