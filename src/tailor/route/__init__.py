"""Dynamic routing over one supernet: cascades of subnets, policies, early exits, calibration (see README.md)."""

from tailor.route.calibration import (
    ReliabilityBin,
    ece,
    escalation_by_bins,
    fit_temperature,
    nll,
    per_class_escalation,
    reliability,
)
from tailor.route.cascade import Cascade, CascadeResult, Stage, dataset_labels, ensemble_outputs, simulate_cascade
from tailor.route.evaluate import (
    SweepPoint,
    accuracy_at_cost,
    cheapest_reaching,
    multi_threshold_grid,
    pareto_front,
    stage_costs,
    sweep,
    threshold_grid,
    upper_hull,
)
from tailor.route.exits import FINAL, EarlyExitModel, ExitHead, add_early_exits, load_exits, save_exits, train_exits
from tailor.route.policies import (
    POLICIES,
    Confidence,
    Entropy,
    LearnedRouter,
    Margin,
    RouterMLP,
    RoutingPolicy,
    StageOutput,
    fit_router,
    make_routing_policy,
)
from tailor.route.renamed import module_getattr

__all__ = [
    "FINAL",
    "POLICIES",
    "Cascade",
    "CascadeResult",
    "Confidence",
    "EarlyExitModel",
    "Entropy",
    "ExitHead",
    "LearnedRouter",
    "Margin",
    "ReliabilityBin",
    "RouterMLP",
    "RoutingPolicy",
    "Stage",
    "StageOutput",
    "SweepPoint",
    "accuracy_at_cost",
    "add_early_exits",
    "cheapest_reaching",
    "dataset_labels",
    "ece",
    "ensemble_outputs",
    "escalation_by_bins",
    "fit_router",
    "fit_temperature",
    "load_exits",
    "make_routing_policy",
    "multi_threshold_grid",
    "nll",
    "pareto_front",
    "per_class_escalation",
    "reliability",
    "save_exits",
    "simulate_cascade",
    "stage_costs",
    "sweep",
    "threshold_grid",
    "train_exits",
    "upper_hull",
]

__getattr__ = module_getattr(__name__)  # Policy, make_policy, simulate: the earlier names (deprecated)
