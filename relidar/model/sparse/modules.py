"""nn.Modules over relidar.model.sparse.functional: each owns a weight [K, Cin, Cout] (+ optional bias)
and knows the resolution level whose kernel maps it reads. The maps' type picks the formulation:
pair lists (KernelMaps) or neighbour tables (NeighbourTables); the weights are the same for both."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from relidar.core.kernel_maps import KernelMaps, NeighbourTables
from relidar.model.sparse import functional as F


class SparseConv(nn.Module):
    """Base of the sparse convolutions: a [K, Cin, Cout] weight, an optional bias, a level."""

    kernel_volume: int = 27

    def __init__(self, in_channels: int, out_channels: int, level: int, bias: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.level = level
        self.weight = nn.Parameter(torch.empty(self.kernel_volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Same scale as nn.Conv3d's default (kaiming uniform, a=sqrt(5)) with fan_in = K * Cin.
        bound = 1.0 / math.sqrt(self.kernel_volume * in_channels)
        nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, level={self.level}, bias={self.bias is not None}"


class SubMConv3d(SparseConv):
    """Submanifold 3x3x3 convolution at one level."""

    kernel_volume = 27

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        if isinstance(maps, NeighbourTables):
            return F.subm_conv3d_table(x, self.weight, maps.subm[self.level], self.bias)
        return F.subm_conv3d(x, self.weight, maps.subm[self.level], self.bias)


class DownConv3d(SparseConv):
    """Kernel-2 stride-2 convolution from ``level`` to ``level + 1``."""

    kernel_volume = 8

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        if isinstance(maps, NeighbourTables):
            return F.down_conv3d_table(x, self.weight, maps.down[self.level], maps.up[self.level], self.bias)
        return F.down_conv3d(x, self.weight, maps.down[self.level], maps.coords[self.level + 1].shape[0], self.bias)


class UpConv3d(SparseConv):
    """Transposed kernel-2 stride-2 convolution from ``level + 1`` back to ``level``."""

    kernel_volume = 8

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        if isinstance(maps, NeighbourTables):
            return F.up_conv3d_table(x, self.weight, maps.up[self.level], maps.down[self.level], self.bias)
        return F.up_conv3d(x, self.weight, maps.down[self.level], maps.coords[self.level].shape[0], self.bias)


class PointConv(SparseConv):
    """1x1x1 convolution (the residual shortcut when widths change)."""

    kernel_volume = 1

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        return F.point_conv(x, self.weight, self.bias)
