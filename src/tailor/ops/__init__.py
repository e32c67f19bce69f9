"""Elastic operators (SubNetAct) and the `ElasticModel` base class (see README.md here)."""

from tailor.ops.base import ElasticOp
from tailor.ops.conv import ElasticConv2d, ElasticLinear, expand_channels
from tailor.ops.network import ElasticModel
from tailor.ops.norm import ElasticBatchNorm2d, ElasticGroupNorm
from tailor.ops.select import ElasticStage
from tailor.ops.sort import ChannelSort, sort_channels

__all__ = [
    "ChannelSort",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticGroupNorm",
    "ElasticLinear",
    "ElasticModel",
    "ElasticOp",
    "ElasticStage",
    "expand_channels",
    "sort_channels",
]
