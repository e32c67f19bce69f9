"""Subnets and search spaces: the data every other layer speaks (see README.md here)."""

from tailor.space.notation import SUBNET_NOTATION, NamedSubnet, parse_subnets, read_subnets, uniform_width
from tailor.space.search_space import DepthDim, SearchSpace, WidthDim, active_channels
from tailor.space.subnet import Subnet

__all__ = [
    "SUBNET_NOTATION",
    "DepthDim",
    "NamedSubnet",
    "SearchSpace",
    "Subnet",
    "WidthDim",
    "active_channels",
    "parse_subnets",
    "read_subnets",
    "uniform_width",
]
