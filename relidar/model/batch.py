"""The preprocessed student input (``relidar.core.preprocess.StudentInputs``, numpy) as torch tensors.

The one numpy -> torch conversion: training batches, evaluation, the benchmarks and the torch backend
all go through :func:`to_torch`. ``torch.from_numpy`` shares memory with the numpy arrays on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from relidar.core.kernel_maps import KernelMaps
from relidar.core.preprocess import StudentInputs


@dataclass(frozen=True)
class TorchInputs:
    """What ``Student.forward`` takes (features, maps), and each point's voxel."""

    features: Tensor        # [V, Cin] float32
    maps: KernelMaps        # torch int64 arrays
    point_to_voxel: Tensor  # [N] int64, -1 outside the crop

    def to(self, device: torch.device | str) -> "TorchInputs":
        return TorchInputs(self.features.to(device, non_blocking=True), self.maps.to(device),
                           self.point_to_voxel.to(device, non_blocking=True))


def maps_to_torch(maps: KernelMaps, device: torch.device | str = "cpu") -> KernelMaps:
    """numpy kernel maps as int64 tensors on ``device``."""
    device = torch.device(device)
    return KernelMaps.from_tensors([torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in maps.to_tensors()],
                                   maps.num_levels)


def to_torch(inputs: StudentInputs, device: torch.device | str = "cpu") -> TorchInputs:
    device = torch.device(device)
    return TorchInputs(torch.from_numpy(inputs.features).to(device), maps_to_torch(inputs.maps, device),
                       torch.from_numpy(inputs.point_to_voxel).to(device))
