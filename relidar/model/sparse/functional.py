"""Stateless sparse-conv operations on per-voxel features [V, C], in two formulations.

Weights are [K, Cin, Cout] (K = 27 for 3x3x3, 8 for 2x2x2); offset k of a 3x3x3 kernel is
(dx+1)*9 + (dy+1)*3 + (dz+1) and out[p] = sum_k x[p + d_k] @ W[k] (cross-correlation, as
torch.nn.functional.conv3d and spconv). Every loop below runs over a fixed number of kernel
offsets, never over tensor values, so tracing for ONNX gives a graph with dynamic voxel counts.

**Pairs** (``subm_conv3d``, ``down_conv3d``, ``up_conv3d``; the CPU formulation): gather-GEMM-scatter
over the valid (out, in) pairs of each offset, as spconv does. Lidar voxels have ~7.5 of 27 neighbours
occupied (KITTI at 0.1 m), so this does a third of the multiply-adds of a dense table. On the 2-core dev
box a 32->32 conv over the KITTI scan took ~80 ms as pairs and ~250 ms as a padded table; in ONNX
Runtime (1 thread) the Cin=4 stem took 21 ms as pairs vs 38 ms as a table, the kernel-2 convs the same.
Preallocated gather/GEMM buffers (spconv's way) measured no faster than fresh tensors here.

**Table** (``*_table``; the GPU formulation): the neighbours of each voxel as one [V, 27] table whose
missing entries point at an appended zero row: one gather to [V, 27*Cin] and one GEMM per convolution
(the kernel-2 convs: a [V_l+1, 8] child table, and for the transposed conv one GEMM to [V_l+1, 8*Cout]
read back at ``parent*8 + offset``). ~3 kernels per conv instead of ~80 (a pair-list 3x3x3 conv is 27
gathers, 27 GEMMs and 26 scatters), and an exported graph of ~100 layers for ``fast`` instead of ~3,500
nodes: what a GPU, launch-bound at these sizes, wants. The extra multiply-adds on empty neighbours are
what a CPU pays for it (measured in the README's GPU section). Their backward passes are gathers and
GEMMs too (the adjoint of a subm conv is the subm conv with mirrored, transposed weights; down and up
are each other's adjoints), so no [V, 27*Cin] matrix is kept for backward and nothing is summed with
atomics: the gradients are deterministic on CUDA.

Precision: under autocast (bf16/fp16 training) the products run in the autocast dtype (tensor cores)
but are summed in float32: the 27 per-offset terms of a 3x3x3 conv added into a bf16 buffer (8-bit
mantissa) lose every term smaller than half a unit in the last place of the running sum (the table
formulation sums inside one GEMM, whose accumulator is float32). The operands are cast once per call,
not once per offset. Outside autocast nothing is cast, so the exported graph has no Cast nodes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from relidar.core.kernel_maps import CENTRE_OFFSET, NUM_HALF_OFFSETS


def _operands(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """(x, weight) in the dtype the products are computed in, and the dtype they are summed in."""
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    compute = torch.get_autocast_dtype(device) if autocast else x.dtype
    accumulate = torch.float32 if compute in (torch.float16, torch.bfloat16) else compute
    if x.dtype != compute:
        x = x.to(compute)
    if weight.dtype != compute:
        weight = weight.to(compute)
    return x, weight, accumulate


def _acc(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def subm_conv3d(x: Tensor, weight: Tensor, pairs: Sequence[Tensor], bias: Tensor | None = None) -> Tensor:
    """Submanifold 3x3x3 convolution: outputs at the input voxels.

    ``pairs`` are the 13 half-offset (out, in) arrays of one level (KernelMaps.subm[level]); the
    mirrored offset 26-k uses the same pairs swapped and the centre is the identity.
    """
    x, weight, acc = _operands(x, weight)
    out = _acc(torch.mm(x, weight[CENTRE_OFFSET]), acc)
    for k in range(NUM_HALF_OFFSETS):
        dst, src = pairs[k][0], pairs[k][1]
        out.index_add_(0, dst, _acc(torch.mm(x.index_select(0, src), weight[k]), acc))
        out.index_add_(0, src, _acc(torch.mm(x.index_select(0, dst), weight[26 - k]), acc))
    if bias is not None:
        out.add_(bias)  # in place: ``out`` is this op's own fresh tensor (saves a [V, C] allocation)
    return out


def down_conv3d(x: Tensor, weight: Tensor, pairs: Sequence[Tensor], num_out: Tensor | int,
                bias: Tensor | None = None) -> Tensor:
    """Kernel-2 stride-2 convolution from level l to level l+1 (``pairs`` = KernelMaps.down[l]).

    ``num_out`` is the number of level l+1 voxels; pass ``coords[l+1].shape[0]`` so a traced graph
    reads it from a tensor shape.
    """
    x, weight, acc = _operands(x, weight)
    out = x.new_zeros((num_out, weight.shape[2]), dtype=acc)
    for o in range(8):
        parent, child = pairs[o][0], pairs[o][1]
        out.index_add_(0, parent, _acc(torch.mm(x.index_select(0, child), weight[o]), acc))
    if bias is not None:
        out.add_(bias)
    return out


def up_conv3d(x: Tensor, weight: Tensor, pairs: Sequence[Tensor], num_out: Tensor | int,
              bias: Tensor | None = None) -> Tensor:
    """Transposed kernel-2 stride-2 convolution from level l+1 back onto the level l voxels.

    Reuses the down pairs; every child has exactly one parent, so each output row is written once.
    """
    x, weight, acc = _operands(x, weight)
    out = x.new_zeros((num_out, weight.shape[2]), dtype=acc)
    for o in range(8):
        parent, child = pairs[o][0], pairs[o][1]
        out.index_copy_(0, child, _acc(torch.mm(x.index_select(0, parent), weight[o]), acc))
    if bias is not None:
        out.add_(bias)
    return out


def _gather_rows(x: Tensor, table: Tensor, width: int, channels: int) -> Tensor:
    """[R, K * C]: row r holds the rows ``table[r, :]`` of ``x`` [V, C] (index V = a zero row), side by side.

    ``width`` (= K) and ``channels`` (= C) come from a weight's shape, so the exported graph's reshapes
    have constant targets instead of shape arithmetic on the activations.
    """
    padded = torch.cat([x, x.new_zeros((1, channels))])
    return torch.nn.functional.embedding(table, padded).reshape(-1, width * channels)


def _table_gemm(x: Tensor, weight: Tensor, table: Tensor) -> Tensor:
    """out[r] = sum_k [x; 0][table[r, k]] @ weight[k]: one gather, one GEMM."""
    k, cin, cout = weight.shape
    return torch.mm(_gather_rows(x, table, k, cin), weight.reshape(k * cin, cout))


def _slot_gemm(x: Tensor, weight: Tensor, slot: Tensor) -> Tensor:
    """out[c] = x[slot[c] // 8] @ weight[slot[c] % 8]: one GEMM to [V, 8 * Cout], read back row by row."""
    k, cin, cout = weight.shape
    y = torch.mm(x, weight.permute(1, 0, 2).reshape(cin, k * cout))
    return y.reshape(-1, cout).index_select(0, slot)


class _SubmTable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, table: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight, table)
        return _table_gemm(x, weight, table)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, table = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # voxel j is offset k of i exactly when i is offset 26-k of j: the mirrored table is the table
            grad_x = _table_gemm(grad, weight.flip(0).transpose(1, 2), table)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(_gather_rows(x, table, weight.shape[0], weight.shape[1]).t(), grad).reshape(weight.shape)
        return grad_x, grad_w, None


class _DownTable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, table: Tensor, slot: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight, table, slot)
        return _table_gemm(x, weight, table)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, table, slot = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _slot_gemm(grad, weight.transpose(1, 2), slot)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(_gather_rows(x, table, weight.shape[0], weight.shape[1]).t(), grad).reshape(weight.shape)
        return grad_x, grad_w, None, None


class _UpTable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, slot: Tensor, table: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight, slot, table)
        return _slot_gemm(x, weight, slot)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, slot, table = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _table_gemm(grad, weight.transpose(1, 2), table)
        if ctx.needs_input_grad[1]:
            k, cin, cout = weight.shape
            per_offset = torch.mm(x.t(), _gather_rows(grad, table, k, cout))  # [Cin, 8 * Cout]
            grad_w = per_offset.reshape(cin, k, cout).permute(1, 0, 2)
        return grad_x, grad_w, None, None


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _finish(out: Tensor, acc: torch.dtype, bias: Tensor | None) -> Tensor:
    out = _acc(out, acc)
    return out + bias if bias is not None else out


def subm_conv3d_table(x: Tensor, weight: Tensor, table: Tensor, bias: Tensor | None = None) -> Tensor:
    """Submanifold 3x3x3 convolution from a [V, 27] neighbour table (NeighbourTables.subm[level])."""
    x, weight, acc = _operands(x, weight)
    out = _SubmTable.apply(x, weight, table) if _needs_grad(x, weight) else _table_gemm(x, weight, table)
    return _finish(out, acc, bias)


def down_conv3d_table(x: Tensor, weight: Tensor, table: Tensor, slot: Tensor, bias: Tensor | None = None) -> Tensor:
    """Kernel-2 stride-2 convolution from level l to l+1: ``table`` = NeighbourTables.down[l] (children of each
    parent), ``slot`` = NeighbourTables.up[l] (for the backward pass)."""
    x, weight, acc = _operands(x, weight)
    out = _DownTable.apply(x, weight, table, slot) if _needs_grad(x, weight) else _table_gemm(x, weight, table)
    return _finish(out, acc, bias)


def up_conv3d_table(x: Tensor, weight: Tensor, slot: Tensor, table: Tensor, bias: Tensor | None = None) -> Tensor:
    """Transposed kernel-2 stride-2 convolution from level l+1 back to l: ``slot`` = NeighbourTables.up[l],
    ``table`` = NeighbourTables.down[l] (for the backward pass)."""
    x, weight, acc = _operands(x, weight)
    out = _UpTable.apply(x, weight, slot, table) if _needs_grad(x, weight) else _slot_gemm(x, weight, slot)
    return _finish(out, acc, bias)


def point_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """1x1x1 convolution (a per-voxel linear map); ``weight`` is [1, Cin, Cout] like the others."""
    x, weight, acc = _operands(x, weight)
    out = _acc(torch.mm(x, weight[0]), acc)
    if bias is not None:
        out.add_(bias)
    return out


def devoxelize(voxel_features: Tensor, point_to_voxel: Tensor) -> Tensor:
    """Per-point features [N, C] by gathering each point's voxel; points with index -1 get zeros."""
    padded = torch.cat([voxel_features, voxel_features.new_zeros((1, voxel_features.shape[1]))], dim=0)
    index = torch.where(point_to_voxel < 0, torch.full_like(point_to_voxel, voxel_features.shape[0]), point_to_voxel)
    return padded.index_select(0, index)
