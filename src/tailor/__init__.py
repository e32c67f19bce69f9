"""tailor: one weight-sharing supernet, trained once, cut to the latency budget of every request."""

from tailor.convert import elasticize, upgrade_dynamic_layers
from tailor.errors import (
    CheckpointError,
    DataError,
    InvalidSubnetError,
    ProfileError,
    SubnetNormFallbackWarning,
    TailorError,
    UnsupportedModelError,
)
from tailor.models import create_model, list_models
from tailor.ops import ElasticModel, sort_channels
from tailor.space import DepthDim, SearchSpace, Subnet, WidthDim
from tailor.train import calibrate, load, save

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DataError",
    "DepthDim",
    "ElasticModel",
    "InvalidSubnetError",
    "ProfileError",
    "SearchSpace",
    "Subnet",
    "SubnetNormFallbackWarning",
    "TailorError",
    "UnsupportedModelError",
    "WidthDim",
    "__version__",
    "calibrate",
    "create_model",
    "elasticize",
    "list_models",
    "load",
    "save",
    "sort_channels",
    "upgrade_dynamic_layers",
]
