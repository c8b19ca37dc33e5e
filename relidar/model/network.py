"""The student: a MinkUNet-style sparse U-Net built from a block table, plus a linear projection head.

The network is a function of (per-voxel features, kernel maps) made only of gathers, matmuls,
index-adds and elementwise ops, so one definition trains on CPU/GPU and traces to ONNX.
"""

from __future__ import annotations

import copy

import torch
from pydantic import field_validator, model_validator
from torch import Tensor, nn

from relidar.core.architecture import BATCHNORM_EPS, PROFILES, Architecture, ProfileName, fold_batchnorm_into
from relidar.core.config import StrictModel
from relidar.core.kernel_maps import KernelMaps, NeighbourTables
from relidar.core.voxelize import INPUT_FEATURES, InputFeature, VoxelGrid
from relidar.model.sparse import functional as SF
from relidar.model.sparse.modules import DownConv3d, PointConv, SparseConv, SubMConv3d, UpConv3d


class StudentConfig(StrictModel):
    """What the student is and what it is fed; saved with its weights and in every model bundle."""

    profile: ProfileName = "base"
    voxel_size: float = 0.1
    crop_min: tuple[float, float, float] = (-51.2, -51.2, -4.0)
    crop_max: tuple[float, float, float] = (51.2, 51.2, 2.4)
    # Mean over each voxel's points; see relidar.core.voxelize for their meaning.
    input_features: tuple[InputFeature, ...] = ("x", "y", "z", "intensity")
    out_dim: int = 512

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("voxel_size must be > 0 (metres)")
        return v

    @field_validator("out_dim")
    @classmethod
    def _dim(cls, v: int) -> int:
        if v < 1:
            raise ValueError("out_dim must be >= 1 (the teacher's embedding size, e.g. 512)")
        return v

    @model_validator(mode="after")
    def _check(self) -> "StudentConfig":
        if any(hi <= lo for lo, hi in zip(self.crop_min, self.crop_max)):
            raise ValueError(f"crop_max {self.crop_max} must exceed crop_min {self.crop_min} on every axis")
        if not self.input_features or len(set(self.input_features)) != len(self.input_features):
            raise ValueError(f"input_features must be non-empty and distinct, from {INPUT_FEATURES}")
        return self

    @property
    def architecture(self) -> Architecture:
        return PROFILES[self.profile]

    @property
    def in_channels(self) -> int:
        return len(self.input_features)

    @property
    def num_levels(self) -> int:
        return self.architecture.num_levels

    def grid(self) -> VoxelGrid:
        return VoxelGrid(self.voxel_size, self.crop_min, self.crop_max)


class ConvNorm(nn.Module):
    """Sparse conv + BatchNorm (+ ReLU). The unit BatchNorm folding works on."""

    def __init__(self, conv: SparseConv, relu: bool) -> None:
        super().__init__()
        self.conv = conv
        self.norm: nn.Module = nn.BatchNorm1d(conv.out_channels, eps=BATCHNORM_EPS)
        self.relu = relu

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        y = self.norm(self.conv(x, maps))
        # in place: y is this unit's own fresh output, and neither conv, BatchNorm nor the bias add
        # needs it for backward
        return torch.relu_(y) if self.relu else y


class ResidualBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN + shortcut (1x1 conv + BN when the width changes), then ReLU."""

    def __init__(self, cin: int, cout: int, level: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(SubMConv3d(cin, cout, level), relu=True)
        self.conv2 = ConvNorm(SubMConv3d(cout, cout, level), relu=False)
        self.shortcut = ConvNorm(PointConv(cin, cout, level), relu=False) if cin != cout else None

    def forward(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x, maps)
        return torch.relu_(self.conv2(self.conv1(x, maps), maps).add_(skip))


class Stage(nn.Module):
    """A resampling conv (down or up) followed by residual blocks."""

    def __init__(self, resample: ConvNorm, blocks: list[ResidualBlock]) -> None:
        super().__init__()
        self.resample = resample
        self.blocks = nn.ModuleList(blocks)

    def run_blocks(self, x: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        for block in self.blocks:
            x = block(x, maps)
        return x


class MinkUNet(nn.Module):
    """Sparse U-Net over ``arch.num_levels`` resolutions; per-voxel features at level 0 out."""

    def __init__(self, arch: Architecture, in_channels: int) -> None:
        super().__init__()
        if len(arch.decoder) != len(arch.encoder):
            raise ValueError("an Architecture needs as many decoder stages as encoder stages")
        self.arch = arch
        if arch.stem_convs < 1:
            raise ValueError("an Architecture needs at least one stem conv")
        self.stem = nn.ModuleList([ConvNorm(SubMConv3d(in_channels if i == 0 else arch.stem, arch.stem, 0), relu=True)
                                   for i in range(arch.stem_convs)])
        self.encoder = nn.ModuleList()
        cin = arch.stem
        skips = [arch.stem]
        for s, width in enumerate(arch.encoder):
            down = ConvNorm(DownConv3d(cin, cin, s), relu=True)
            blocks = [ResidualBlock(cin if b == 0 else width, width, s + 1) for b in range(arch.blocks)]
            self.encoder.append(Stage(down, blocks))
            cin = width
            skips.append(width)
        self.decoder = nn.ModuleList()
        levels = arch.num_levels
        for s, width in enumerate(arch.decoder):
            level = levels - 2 - s
            up = ConvNorm(UpConv3d(cin, width, level), relu=True)
            skip = skips[level]
            n_blocks = arch.stage_blocks(s)
            blocks = [ResidualBlock(width + skip if b == 0 else width, width, level) for b in range(n_blocks)]
            self.decoder.append(Stage(up, blocks))
            cin = width if n_blocks else width + skip
        self.out_channels = cin

    def forward(self, features: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        x = features
        for unit in self.stem:
            x = unit(x, maps)
        skips = [x]
        for stage in self.encoder:
            x = stage.run_blocks(stage.resample(x, maps), maps)
            skips.append(x)
        for s, stage in enumerate(self.decoder):
            x = stage.resample(x, maps)
            x = stage.run_blocks(torch.cat([x, skips[len(skips) - 2 - s]], dim=1), maps)
        return x


class Student(nn.Module):
    """Backbone + linear projection head into the teacher's embedding space (``out_dim``)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MinkUNet(config.architecture, config.in_channels)
        self.head = nn.Linear(self.backbone.out_channels, config.out_dim)

    def forward(self, features: Tensor, maps: KernelMaps | NeighbourTables) -> Tensor:
        """Per-voxel embeddings [V, out_dim] for level-0 voxel features [V, in_channels]."""
        return self.head(self.backbone(features, maps))

    def forward_points(self, features: Tensor, maps: KernelMaps | NeighbourTables, point_to_voxel: Tensor) -> Tensor:
        """Per-point embeddings [N, out_dim]; points outside the crop (index -1) get zeros."""
        return SF.devoxelize(self(features, maps), point_to_voxel)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded into its conv's weight and bias.

    Same outputs as ``model.eval()`` (to float rounding), fewer ops: what export should trace.
    """
    folded = copy.deepcopy(model).eval()
    for unit in folded.modules():
        if not isinstance(unit, ConvNorm) or not isinstance(unit.norm, nn.BatchNorm1d):
            continue
        bn = unit.norm
        conv = unit.conv
        with torch.no_grad():
            weight, bias = fold_batchnorm_into(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                               bn.running_var, bn.eps)
            conv.weight.copy_(weight)
        conv.bias = nn.Parameter(bias.detach().clone())
        unit.norm = nn.Identity()
    return folded
