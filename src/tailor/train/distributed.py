"""Data-parallel training across processes launched by `torchrun` (gloo on CPU, NCCL on GPU).

The supernet trainer runs several subnets per step and accumulates their gradients before one
optimizer step; with sliced weights some gradients bypass autograd's parameter hooks (see
`ElasticModel.set_in_place_grad`). So instead of wrapping the model in `DistributedDataParallel`,
whose hooks fire per backward, the trainer averages `.grad` once per step with one all-reduce over
a flat buffer, which is what DDP would compute, with a single communication per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: `rank` of `world_size` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, ...), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank)


def broadcast_model(model: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's parameters and buffers (same start, whatever each rank initialised)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Average `.grad` over ranks with one all-reduce; parameters no rank touched stay without gradient."""
    if not ctx.enabled:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(present)  # a parameter used on any rank needs a gradient (zero) on every rank
    for p, count in zip(params, present.tolist()):
        if count and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def average_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (shared BatchNorm running statistics) so ranks hold one model."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= ctx.world_size
            else:
                dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if this module joined one."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
