"""`sort_channels`: reorder each width dimension's channels by importance, best first.

A narrower subnet keeps the first k channels, so before shrinking (as Once-for-All does) the most
important channels should come first. Importance of a channel is the L1 norm of the weights that
produce it, summed over every layer writing that dimension (tied layers are permuted together).
Every layer reading the dimension is permuted the same way, so the full network computes the same
function; only which channels narrow subnets keep changes. Attention heads move whole (DynaBERT's head
rewiring): a head's importance is the L1 norm of its q, k and v rows, and its q, k, v rows and the output
projection's columns move together, which leaves every attention score unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tailor.errors import InvalidSubnetError
from tailor.ops.attention import ElasticQKVLinear
from tailor.ops.conv import ElasticConv2d, ElasticLinear
from tailor.ops.network import ElasticModel
from tailor.ops.norm import ElasticBatchNorm2d, ElasticGroupNorm
from tailor.ops.transformer import ElasticLayerNorm


@dataclass
class ChannelSort:
    """What `sort_channels` did: the permutation applied per dimension, and dimensions left alone."""

    permutations: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # dimension -> reason


def _reads_and_writes(model: ElasticModel) -> tuple[dict[str, list], dict[str, str]]:
    users: dict[str, list] = {d.name: [] for d in model.space.widths}
    blocked: dict[str, str] = {}
    for name, module in model.elastic_layers():
        skip = getattr(module, "sort_skip_reason", None)  # ops selecting channels other than by prefix
        if skip is not None:
            for dim in module.width_dims():
                blocked[dim] = f"{skip} {name!r}"
            continue
        if isinstance(module, ElasticConv2d):
            depthwise = module.groups > 1 and module.in_per_group == 1 and module.in_dim == module.out_dim
            if module.groups > 1 and not depthwise:
                for dim in (module.in_dim, module.out_dim):
                    if dim is not None:
                        blocked[dim] = f"grouped conv {name!r} must keep its groups whole"
            for dim in {module.in_dim, module.out_dim} - {None}:
                users.setdefault(dim, []).append(module)
        elif isinstance(module, (ElasticLinear, ElasticQKVLinear)):
            for dim in {module.in_dim, module.out_dim} - {None}:
                users.setdefault(dim, []).append(module)
        elif isinstance(module, ElasticLayerNorm) and module.dim is not None:
            users.setdefault(module.dim, []).append(module)
        elif isinstance(module, ElasticGroupNorm) and module.dim is not None:
            if module.channels_per_group > 1:
                blocked[module.dim] = f"group norm {name!r} normalises fixed groups of channels"
        elif isinstance(module, ElasticBatchNorm2d) and module.dim is not None:
            users.setdefault(module.dim, []).append(module)
    return users, blocked


@torch.no_grad()
def sort_channels(model: ElasticModel, drop_subnet_stats: bool = False) -> ChannelSort:
    """Permute every width dimension's channels so the most important come first (in place).

    Dimensions read by a grouped (non-depthwise) conv or a group norm with several channels per
    group are left alone (a permutation across groups would change the function) and reported in
    `skipped`, as are dimensions read by ops that name a `sort_skip_reason` (ops selecting channels
    other than by prefix, e.g. `tailor.convert`'s indexed ops). Per-subnet SubnetNorm statistics
    describe channel prefixes of the old order, so a model holding any raises `InvalidSubnetError`
    unless `drop_subnet_stats=True` discards them.
    """
    norms = [m for _, m in model.elastic_layers() if isinstance(m, ElasticBatchNorm2d)]
    if any(bn.subnet_stats_keys() for bn in norms):
        if not drop_subnet_stats:
            raise InvalidSubnetError(
                "sort_channels: the model holds per-subnet SubnetNorm statistics, which a permutation invalidates; "
                "pass drop_subnet_stats=True to discard them (and calibrate again afterwards)"
            )
        for bn in norms:
            for key in bn.subnet_stats_keys():
                bn.remove_subnet_stats(key)
    users, blocked = _reads_and_writes(model)
    result = ChannelSort(skipped=dict(blocked))
    for dim, modules in users.items():
        if dim in blocked or not modules:
            continue
        importance = None
        head_dim = 1  # channels that move as one block (a head)
        for module in modules:
            if isinstance(module, (ElasticConv2d, ElasticLinear)) and module.out_dim == dim:
                score = module.weight.detach().abs().flatten(1).sum(1).double()
            elif isinstance(module, ElasticQKVLinear) and module.out_dim == dim:
                score = module.weight.detach().abs().view(3, module.features, -1).sum((0, 2)).double()
                head_dim = module.head_dim
            else:
                continue
            importance = score if importance is None else importance + score
        if importance is None:
            result.skipped[dim] = "no layer produces it"
            continue
        heads = torch.argsort(importance.view(-1, head_dim).sum(1), descending=True, stable=True)
        perm = (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()
        for module in modules:
            _permute(module, dim, perm.to(module.weight.device if module.weight is not None else "cpu"))
        result.permutations[dim] = perm.tolist()
    return result


def _permute(module: torch.nn.Module, dim: str, perm: torch.Tensor) -> None:
    def take(tensor: torch.Tensor | None, axis: int) -> None:
        if tensor is not None:
            tensor.copy_(tensor.index_select(axis, perm))

    if isinstance(module, (ElasticBatchNorm2d, ElasticLayerNorm)):
        for tensor in (
            module.weight,
            module.bias,
            getattr(module, "running_mean", None),
            getattr(module, "running_var", None),
        ):
            take(tensor, 0)
        module.clear_cache()
        return
    if isinstance(module, ElasticQKVLinear) and module.out_dim == dim:
        rows = (torch.arange(3, device=perm.device)[:, None] * module.features + perm).flatten()
        module.weight.copy_(module.weight.index_select(0, rows))
        if module.bias is not None:
            module.bias.copy_(module.bias.index_select(0, rows))
        if module.in_dim == dim:
            take(module.weight, 1)
        module.clear_cache()
        return
    if module.out_dim == dim:  # type: ignore[union-attr]
        take(module.weight, 0)
        take(module.bias, 0)
    depthwise = isinstance(module, ElasticConv2d) and module.groups > 1
    if module.in_dim == dim and not depthwise:  # type: ignore[union-attr]
        take(module.weight, 1)
