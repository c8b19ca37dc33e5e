"""Stateless sparse-conv operations on per-voxel features [V, C] and kernel-map pair arrays.

Weights are [K, Cin, Cout] (K = 27 for 3x3x3, 8 for 2x2x2); offset k of a 3x3x3 kernel is
(dx+1)*9 + (dy+1)*3 + (dz+1) and out[p] = sum_k x[p + d_k] @ W[k] (cross-correlation, as
torch.nn.functional.conv3d and spconv). Every loop below runs over a fixed number of kernel
offsets, never over tensor values, so tracing for ONNX gives a graph with dynamic voxel counts.

Why gather-GEMM-scatter over valid pairs (what spconv does) rather than a padded [V, 27] table and
one big GEMM: lidar voxels have ~7.5 of 27 neighbours occupied (KITTI at 0.1 m), so the table
more than triples the multiply-adds and the [V, 27*Cin] gather is memory-bound; on the 2-core dev
box a 32->32 conv over the KITTI scan took ~250 ms as a padded table and ~80 ms as pairs.
Preallocated gather/GEMM buffers (spconv's way) measured no faster than fresh tensors here.
Tables measured no better in ONNX Runtime either, even where they look cheap (KITTI scan, 1 thread):
the Cin=4 stem conv as a [V*27] neighbour-table gather + one GEMM took 38 ms vs 21 ms as pairs (ORT's
Gather and ScatterND cost ~10-25 ns per row, so 1.3 M narrow rows lose), and the kernel-2 down/up
convs as child tables + one GEMM each took the same 23 ms in total as pairs.

Precision: under autocast (bf16/fp16 training) the products run in the autocast dtype (tensor cores)
but are summed in float32: the 27 per-offset terms of a 3x3x3 conv added into a bf16 buffer (8-bit
mantissa) lose every term smaller than half a unit in the last place of the running sum. The
operands are cast once per call, not once per offset. Outside autocast nothing is cast, so the
exported graph has no Cast nodes.
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
