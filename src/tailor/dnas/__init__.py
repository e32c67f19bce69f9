"""Differentiable NAS over pools of alternative layers, with PLiNIO's SuperNet API (see README.md).

Route/search layer: builds on `tailor.cost` (cost models) and plain `torch.nn`.
"""

from tailor.dnas.costs import CostModel, CostSpec, FunctionCost, LatencyCost, MacsCost, ParamsCost, resolve_costs
from tailor.dnas.module import SuperNetError, SuperNetModule
from tailor.dnas.supernet import SuperNet

__all__ = [
    "CostModel",
    "CostSpec",
    "FunctionCost",
    "LatencyCost",
    "MacsCost",
    "ParamsCost",
    "SuperNet",
    "SuperNetError",
    "SuperNetModule",
    "resolve_costs",
]
