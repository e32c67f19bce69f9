"""tailor: one weight-sharing supernet, trained once, cut to the latency budget of every request."""

from tailor.convert import elasticize, upgrade_dynamic_layers
from tailor.cost import Profile, latency, macs, params, peak_memory
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
    "Profile",
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
    "latency",
    "list_models",
    "load",
    "macs",
    "params",
    "peak_memory",
    "save",
    "sort_channels",
    "upgrade_dynamic_layers",
]
