"""Data-parallel training under ``torchrun``: which device each rank uses, process group set-up, and
BatchNorm over the global batch.

Each rank takes every world_size-th scan of the global batch (``relidar.training.data.rank_share``),
DDP averages the gradients, and BatchNorm statistics are reduced over all ranks, so a run on W ranks
optimises the same objective as one process on the whole global batch. ``torch.nn.SyncBatchNorm``
refuses CPU tensors; :class:`GlobalBatchNorm1d` does the same reduction with differentiable
all-reduces that gloo (CPU) and NCCL (GPU) both run.

Placement (:func:`place_rank`): rank ``LOCAL_RANK`` of a node trains on ``cuda:LOCAL_RANK`` and the
group talks NCCL, bound to that GPU (``torch.cuda.set_device`` + ``device_id``) before the first
collective -- without both, NCCL puts every rank's communicator on ``cuda:0``. NCCL refuses two ranks
on one GPU, so a node with more ranks than visible GPUs shares the GPUs round-robin over gloo instead
(slower collectives, but a run that starts; ``summary.json`` records the backend). Only a machine
with NVIDIA GPUs can show the NCCL half of this (``scripts/gpu_check.sh`` runs two ranks there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from relidar.core.errors import RelidarError

DeviceChoice = Literal["auto", "cpu", "cuda"]


class PlacementError(RelidarError, RuntimeError):
    """A device request this machine cannot meet (CUDA asked for, none visible)."""


@dataclass(frozen=True)
class Placement:
    """Where one rank trains (``device``: ``cpu`` or ``cuda:N``) and the collective backend of its group."""

    device: str
    backend: Literal["gloo", "nccl"]

    @property
    def shares_gpu(self) -> bool:
        """A GPU shared by several ranks of this node (gloo instead of NCCL)."""
        return self.device.startswith("cuda") and self.backend == "gloo"


def place_rank(want: DeviceChoice | str, local_rank: int, local_world_size: int, cuda_devices: int) -> Placement:
    """The device and group backend of rank ``local_rank`` of the ``local_world_size`` ranks on this node,
    with ``cuda_devices`` GPUs visible; ``want`` is ``train.device`` (``auto``: CUDA when there is any)."""
    if want not in ("auto", "cpu", "cuda"):
        raise PlacementError(f"device {want!r}: choose auto, cpu or cuda", field="train.device")
    if want == "cpu" or (want == "auto" and cuda_devices == 0):
        return Placement("cpu", "gloo")
    if cuda_devices == 0:
        raise PlacementError("train.device is 'cuda' but no CUDA device is visible", field="train.device",
                             hint="set train.device=cpu, or check CUDA_VISIBLE_DEVICES and the driver")
    if not 0 <= local_rank < max(local_world_size, 1):
        raise PlacementError(f"LOCAL_RANK {local_rank} is outside 0..{local_world_size - 1} (LOCAL_WORLD_SIZE)")
    if local_world_size <= cuda_devices:
        return Placement(f"cuda:{local_rank}", "nccl")
    return Placement(f"cuda:{local_rank % cuda_devices}", "gloo")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # this rank's device, as placed by init_from_env (cpu when no group was started)
    backend: str = ""    # the process group's backend; "" when there is no group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(want: DeviceChoice | str) -> DistContext:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR/PORT) on the device :func:`place_rank` picks for ``want`` (``train.device``); a plain
    ``python`` launch (no WORLD_SIZE) is a single process and starts no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # torchrun sets LOCAL_WORLD_SIZE; a hand launch without it is taken as one node
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    placement = place_rank(want, local_rank, local_world, torch.cuda.device_count())
    device = torch.device(placement.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=placement.backend, rank=rank, world_size=world,
                                device_id=device if placement.backend == "nccl" else None)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=placement.device,
                       backend=placement.backend)


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


def update_ratios(got: dict[str, Tensor], ref: dict[str, Tensor], init: dict[str, Tensor]) -> dict[str, float]:
    """Per floating-point tensor of a state dict: how far ``got`` (e.g. W ranks' weights) is from ``ref`` (one
    process's on the same global batches), as a fraction of how far ``ref`` moved from ``init``. Integer
    tensors (BatchNorm's step counters) must be equal: :class:`ValueError` otherwise.

    Bit equality is not the criterion: BatchNorm statistics reduced over ranks are sums in another order
    than one process's kernel, which a small network's gradients amplify (measured: 0.14 % of the update,
    median, after one step); a data-parallel defect (statistics per rank, gradients summed, another scan
    on a rank) is of the order of the update itself.
    """
    out: dict[str, float] = {}
    for key, value in ref.items():
        if not value.is_floating_point():
            if not torch.equal(got[key], value):
                raise ValueError(f"{key}: {got[key].tolist()} != {value.tolist()}")
            continue
        moved = float((value.double() - init[key].double().to(value.device)).abs().max())
        out[key] = float((got[key].double() - value.double()).abs().max()) / max(moved, 1e-12)
    return out


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics cover the rows of every rank (same state_dict keys).

    Statistics are computed in float32 whatever the input's dtype (under autocast the convolutions hand
    it bf16/fp16), the row count is reduced in float64 (a half-precision count is inf above 65,504 rows),
    and the output has the input's dtype, as ``nn.BatchNorm1d`` under autocast: the next layer's buffers
    then match what it accumulates.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        x32 = x.float()
        # Two reductions (sum, then the sum of squared deviations) rather than E[x²] - E[x]²: activations
        # with a large mean would lose the variance to cancellation in float32.
        rows = torch.full((1,), float(x.shape[0]), dtype=torch.float64, device=x.device)
        stats = all_reduce(torch.cat([rows, x32.sum(dim=0).double()]))
        count = stats[0]
        mean = (stats[1:] / count).float()
        var = (all_reduce(((x32 - mean) ** 2).sum(dim=0).double()) / count).float()
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = (var.detach().double() * count / torch.clamp(count - 1, min=1.0)).float()
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = (x32 - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.float() + self.bias.float()
        return y.to(x.dtype)


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
