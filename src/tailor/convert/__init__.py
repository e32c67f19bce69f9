"""Make any traceable CNN elastic in one call, keeping its weights (see README.md here).

`elasticize(model, example_inputs, widths=..., norm=..., groups=..., mode=...)` returns an
`ElasticizedModel` (`space`, `activate`, `activated`, `extract`, `channel_groups`);
`upgrade_dynamic_layers(model, groups, sr_list)` is Model Slicing's call with the same meaning.
"""

from tailor.convert.elasticize import DEFAULT_WIDTHS, FrozenChannelsWarning, elasticize, upgrade_dynamic_layers
from tailor.convert.indexed import IndexedBatchNorm2d, IndexedConv2d, IndexedGroupNorm, IndexedLinear
from tailor.convert.model import ChannelGroup, ElasticizedModel
from tailor.ops import ChannelLayout  # its home is tailor.ops; kept here, where it was

__all__ = [
    "DEFAULT_WIDTHS",
    "ChannelGroup",
    "ChannelLayout",
    "ElasticizedModel",
    "FrozenChannelsWarning",
    "IndexedBatchNorm2d",
    "IndexedConv2d",
    "IndexedGroupNorm",
    "IndexedLinear",
    "elasticize",
    "upgrade_dynamic_layers",
]
