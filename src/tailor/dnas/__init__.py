"""Differentiable NAS over pools of alternative layers, with PLiNIO's SuperNet API (see README.md).

Route/search layer: builds on `tailor.cost` (cost models) and plain `torch.nn`.
"""

from tailor.dnas.cost_specs import (
    PLINIO_COSTS,
    LayerCountCost,
    ops,
    ops_bit,
    ops_no_bias,
    params,
    params_bit,
    params_no_bias,
)
from tailor.dnas.costs import CostModel, CostSpec, FunctionCost, LatencyCost, MacsCost, ParamsCost, resolve_costs
from tailor.dnas.module import SuperNetCombiner, SuperNetError, SuperNetModule
from tailor.dnas.supernet import SuperNet

__all__ = [
    "PLINIO_COSTS",
    "CostModel",
    "CostSpec",
    "FunctionCost",
    "LatencyCost",
    "LayerCountCost",
    "MacsCost",
    "ParamsCost",
    "SuperNet",
    "SuperNetCombiner",
    "SuperNetError",
    "SuperNetModule",
    "ops",
    "ops_bit",
    "ops_no_bias",
    "params",
    "params_bit",
    "params_no_bias",
    "resolve_costs",
]
