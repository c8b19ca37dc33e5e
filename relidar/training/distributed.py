"""Data-parallel training under ``torchrun``: process group set-up and BatchNorm over the global batch.

Each rank takes every world_size-th scan of the global batch (``relidar.training.data.rank_share``),
DDP averages the gradients, and BatchNorm statistics are reduced over all ranks, so a run on W ranks
optimises the same objective as one process on the whole global batch. ``torch.nn.SyncBatchNorm``
refuses CPU tensors; :class:`GlobalBatchNorm1d` does the same reduction with differentiable
all-reduces that gloo (CPU) and NCCL (GPU) both run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistContext:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); a plain
    ``python`` launch (no WORLD_SIZE) is a single process and starts no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: DistContext, value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(ctx: DistContext, value: Tensor) -> Tensor:
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / ctx.world_size


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics cover the rows of every rank (same state_dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # Two reductions (sum, then the sum of squared deviations) rather than E[x²] - E[x]²: activations
        # with a large mean would lose the variance to cancellation in float32.
        stats = all_reduce(torch.cat([x.new_full((1,), float(x.shape[0])), x.sum(dim=0)]))
        count = stats[0]
        mean = stats[1:] / count
        var = all_reduce(((x - mean) ** 2).sum(dim=0)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / torch.clamp(count - 1, min=1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


def globalise_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d in ``module`` (in place) by a GlobalBatchNorm1d with the same state."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, GlobalBatchNorm1d):
            repl = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            repl.load_state_dict(child.state_dict())
            repl.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, repl)
        else:
            globalise_batchnorm(child)
    return module
