"""The student rebuilt in spconv (``spconv.pytorch``) with the same weights: the correctness and speed reference.

Only the benchmark and the tests import this; spconv is not needed to train, export or run relidar.
spconv weights are [Cout, kx, ky, kz, Cin] when coordinates are given as (batch, ix, iy, iz), and
relidar's are [k, Cin, Cout] with k = kx*9 + ky*3 + kz (kx*4 + ky*2 + kz for 2x2x2), so the copy is
a reshape and a transpose.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from relidar.model.network import ConvNorm, MinkUNet, ResidualBlock, Student
from relidar.model.sparse.modules import DownConv3d, PointConv, SubMConv3d, UpConv3d


def _spconv_weight(ours: Tensor, kernel: int) -> Tensor:
    k, cin, cout = ours.shape
    if kernel == 1:
        # spconv 2.3 runs a 1x1x1 conv as ``features @ weight.view(Cin, Cout)`` although the
        # parameter is shaped [Cout, 1, 1, 1, Cin]; store the bytes that view expects.
        return ours.detach().reshape(cout, 1, 1, 1, cin).contiguous()
    return ours.detach().permute(2, 0, 1).reshape(cout, kernel, kernel, kernel, cin).contiguous()


def _convert_unit(unit: ConvNorm) -> nn.Module:
    import spconv.pytorch as sp

    conv = unit.conv
    bias = False  # spconv's CPU build has no fused conv bias; a folded bias is added after (_AddBias)
    if isinstance(conv, SubMConv3d):
        ref = sp.SubMConv3d(conv.in_channels, conv.out_channels, 3, bias=bias, indice_key=f"subm{conv.level}")
        kernel = 3
    elif isinstance(conv, PointConv):
        ref = sp.SubMConv3d(conv.in_channels, conv.out_channels, 1, bias=bias, indice_key=f"point{conv.level}")
        kernel = 1
    elif isinstance(conv, DownConv3d):
        ref = sp.SparseConv3d(conv.in_channels, conv.out_channels, 2, stride=2, bias=bias,
                              indice_key=f"down{conv.level}")
        kernel = 2
    elif isinstance(conv, UpConv3d):
        ref = sp.SparseInverseConv3d(conv.in_channels, conv.out_channels, 2, bias=bias,
                                     indice_key=f"down{conv.level}")
        kernel = 2
    else:
        raise TypeError(f"no spconv counterpart for {type(conv).__name__}")
    with torch.no_grad():
        ref.weight.copy_(_spconv_weight(conv.weight, kernel))
    layers: list[nn.Module] = [ref]
    if conv.bias is not None:
        layers.append(_AddBias(conv.bias))
    layers.append(copy.deepcopy(unit.norm))
    if unit.relu:
        layers.append(nn.ReLU())
    return sp.SparseSequential(*layers)


class _AddBias(nn.Module):
    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class _SpconvResidual(nn.Module):
    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = _convert_unit(block.conv1)
        self.conv2 = _convert_unit(block.conv2)
        self.shortcut = _convert_unit(block.shortcut) if block.shortcut is not None else None

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        skip = x if self.shortcut is None else self.shortcut(x)
        return out.replace_feature(torch.relu(out.features + skip.features))


class SpconvStudent(nn.Module):
    """spconv twin of a :class:`relidar.model.network.Student` (weights copied at construction)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        net: MinkUNet = student.backbone
        self.stem = nn.ModuleList([_convert_unit(u) for u in net.stem])
        self.enc_resample = nn.ModuleList([_convert_unit(s.resample) for s in net.encoder])
        self.enc_blocks = nn.ModuleList([nn.ModuleList([_SpconvResidual(b) for b in s.blocks]) for s in net.encoder])
        self.dec_resample = nn.ModuleList([_convert_unit(s.resample) for s in net.decoder])
        self.dec_blocks = nn.ModuleList([nn.ModuleList([_SpconvResidual(b) for b in s.blocks]) for s in net.decoder])
        self.head = nn.Linear(student.head.in_features, student.head.out_features)
        self.head.load_state_dict(student.head.state_dict())
        self.train(student.training)

    def forward(self, features: Tensor, coords: Tensor, grid_shape: Sequence[int], batch_size: int) -> Tensor:
        """Per-voxel embeddings in the order of ``coords`` ([V, 4] (batch, ix, iy, iz))."""
        import spconv.pytorch as sp

        # spconv floors odd sizes when striding (relidar keeps the last half cell): pad the grid to a
        # multiple of the total stride so both see the same voxels at every level
        stride = 2 ** len(self.enc_resample)
        shape = [-(-int(s) // stride) * stride for s in grid_shape]
        x = sp.SparseConvTensor(features, coords.to(torch.int32).contiguous(), shape, batch_size)
        for unit in self.stem:
            x = unit(x)
        skips = [x]
        for resample, blocks in zip(self.enc_resample, self.enc_blocks):
            x = resample(x)
            for block in blocks:
                x = block(x)
            skips.append(x)
        for s, (resample, blocks) in enumerate(zip(self.dec_resample, self.dec_blocks)):
            x = resample(x)
            x = x.replace_feature(torch.cat([x.features, skips[len(skips) - 2 - s].features], dim=1))
            for block in blocks:
                x = block(x)
        return self.head(x.features)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count after.

    Why: spconv 2.3.8's CPU kernels race when torch has more than one thread -- on the KITTI scan a
    single SubMConv3d gives different results run to run (errors ~10) -- so the reference output
    is computed single-threaded. Timing still uses the caller's thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def spconv_available() -> bool:
    """Whether spconv imports here (tests skip, the benchmark reports, where it does not)."""
    try:
        import spconv.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def coords_tensor(coords: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(coords, dtype=np.int32))
