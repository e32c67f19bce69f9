"""Subnets and search spaces: the data every other layer speaks (see README.md here)."""

from tailor.space.search_space import DepthDim, SearchSpace, WidthDim, active_channels
from tailor.space.subnet import Subnet

__all__ = ["DepthDim", "SearchSpace", "Subnet", "WidthDim", "active_channels"]
