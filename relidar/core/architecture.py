"""The student's architecture tables, torch-free: what each profile is made of, and how BatchNorm folds.

The model layer builds the PyTorch network from these (relidar.model.network.MinkUNet); the runtime
core's fused CPU backend (relidar.core.backends.fused) walks the same tables over the same weights
without PyTorch. One definition for both, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

# nn.BatchNorm1d's default, written down so that folding without PyTorch uses the value training used
BATCHNORM_EPS = 1e-5

T = TypeVar("T")  # numpy arrays, or torch tensors in the model layer


@dataclass(frozen=True)
class Architecture:
    """Widths and depths: ``encoder[s]`` is stage s's width after downsampling to level s+1, ``decoder[s]``
    the width after upsampling from level L-s to L-s-1; ``blocks`` residual blocks per stage, except the
    last ``final_stages`` decoder stages (the last is back at level 0), which have ``final_blocks``
    (default ``blocks``): with 0 a stage is upsample + concat with the encoder's features at its level,
    and at level 0 the linear head acts as its 1x1 conv.
    ``stem_convs`` 3x3x3 convs at level 0 before the first downsampling."""

    stem: int
    encoder: tuple[int, ...]
    decoder: tuple[int, ...]
    blocks: int
    stem_convs: int = 2
    final_blocks: int | None = None
    final_stages: int = 1

    def stage_blocks(self, decoder_stage: int) -> int:
        if decoder_stage >= len(self.decoder) - self.final_stages and self.final_blocks is not None:
            return self.final_blocks
        return self.blocks

    @property
    def num_levels(self) -> int:
        return len(self.encoder) + 1


PROFILES: dict[str, Architecture] = {
    # MinkUNet18-like, the scale used in the distillation literature (SLidR, ScaLR, the seed paper).
    "base": Architecture(stem=32, encoder=(32, 64, 128, 256), decoder=(256, 128, 96, 96), blocks=2),
    # Narrow, one block per stage and almost no work at full resolution (level 0 holds ~2x the voxels
    # of all other levels together): one stem conv, and the last decoder stage is upsample + concat,
    # the head being its 1x1 conv. Real time on a CPU.
    # Decoder widths no wider than the encoder's at the same level: 1.5 GMAC on a 47k-voxel KITTI scan.
    "fast": Architecture(stem=16, encoder=(16, 32, 48, 64), decoder=(48, 32, 24, 24), blocks=1,
                         stem_convs=1, final_blocks=0),
    # fast without the residual block of the level-1 decoder stage (upsample + concat there too): level 1
    # holds ~half the voxels of level 0 and ~8 neighbours each, so that block was ~1/4 of fast's sparse-conv
    # rows and multiply-adds. Its speed and quality cost against fast: README "A 10 Hz lidar on a CPU".
    "realtime": Architecture(stem=16, encoder=(16, 32, 48, 64), decoder=(48, 32, 24, 24), blocks=1,
                             stem_convs=1, final_blocks=0, final_stages=2),
}

ProfileName = Literal["base", "fast", "realtime"]


def fold_batchnorm_into(weight: T, bias: T | None, gamma: T, beta: T, mean: T, var: T,
                        eps: float = BATCHNORM_EPS) -> tuple[T, T]:
    """(weight, bias) of a conv [K, Cin, Cout] followed by an eval-mode BatchNorm over Cout, as one conv.

    Plain arithmetic, so numpy arrays and torch tensors fold alike (``** 0.5`` is each library's sqrt; torch's
    float32 sqrt can differ from numpy's correctly rounded one in the last bit)."""
    scale = gamma / (var + eps) ** 0.5
    shift = beta - mean * scale
    return weight * scale.reshape(1, 1, -1), (shift if bias is None else bias * scale + shift)
