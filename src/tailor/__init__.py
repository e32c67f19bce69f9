"""tailor: one weight-sharing supernet, trained once, cut to the latency budget of every request.

The core API is imported here; the upper sub-packages (`tailor.search`, `tailor.route`, `tailor.dnas`,
`tailor.serve`, `tailor.export`, `tailor.schemas`) load on first use as attributes (`tailor.search(...)`,
`tailor.search.ParetoFront`), so that `import tailor` stays light and no import cycle can form.
"""

import importlib
from typing import Any

from tailor.convert import elasticize, upgrade_dynamic_layers
from tailor.cost import Profile, latency, macs, params, peak_memory
from tailor.errors import (
    CheckpointError,
    DataError,
    InvalidSubnetError,
    ProfileError,
    RecipeError,
    SubnetNormFallbackWarning,
    TailorError,
    UnsupportedModelError,
    UsageError,
)
from tailor.models import create_model, list_models
from tailor.ops import ElasticModel, sort_channels
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim
from tailor.train import calibrate, load, save

__version__ = "0.1.0"

#: sub-packages loaded on first attribute access (`tailor.search` is also callable: `tailor.search(model, ...)`)
_LAZY_SUBPACKAGES = frozenset({"dnas", "export", "route", "schemas", "search", "serve"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBPACKAGES:
        module = importlib.import_module(f"tailor.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'tailor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBPACKAGES)


__all__ = [
    "CheckpointError",
    "DataError",
    "DepthDim",
    "ElasticModel",
    "InvalidSubnetError",
    "Profile",
    "ProfileError",
    "RecipeError",
    "SearchSpace",
    "Subnet",
    "SubnetNormFallbackWarning",
    "TailorError",
    "UnsupportedModelError",
    "UsageError",
    "WidthDim",
    "__version__",
    "calibrate",
    "create_model",
    "elasticize",
    "latency",
    "list_models",
    "load",
    "macs",
    "params",
    "peak_memory",
    "save",
    "search",
    "sort_channels",
    "upgrade_dynamic_layers",
]
