"""Elastic operators (SubNetAct) and the `ElasticModel` base class (see README.md here)."""

from tailor.ops.attention import ElasticMultiheadAttention, ElasticQKVLinear, ElasticSelfAttention
from tailor.ops.base import ElasticOp
from tailor.ops.conv import ElasticConv2d, ElasticLinear, expand_channels
from tailor.ops.layout import ChannelLayout
from tailor.ops.network import ElasticModel
from tailor.ops.norm import ElasticBatchNorm2d, ElasticGroupNorm
from tailor.ops.select import DEPTH_RULES, ElasticStage, kept_blocks
from tailor.ops.sort import ChannelSort, sort_channels
from tailor.ops.transformer import ElasticLayerNorm, ElasticMlp

__all__ = [
    "DEPTH_RULES",
    "ChannelLayout",
    "ChannelSort",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticGroupNorm",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticMlp",
    "ElasticModel",
    "ElasticMultiheadAttention",
    "ElasticOp",
    "ElasticQKVLinear",
    "ElasticSelfAttention",
    "ElasticStage",
    "expand_channels",
    "kept_blocks",
    "sort_channels",
]
