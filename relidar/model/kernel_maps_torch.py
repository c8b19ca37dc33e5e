"""The kernel maps of relidar.core.kernel_maps computed with torch, on the voxel coords' device.

Same algorithm (:func:`relidar.core.kernel_maps.build_with`), same integers as the numpy builder
(tested); for building maps where the batch already lives on a GPU. ``relidar bench student`` times
it next to the numpy builder (``kernel_maps_torch_ms``).

Training builds its maps with numpy (``relidar.core.preprocess``): on CPU this builder is slower.
Measured on the 2-core dev box (1 torch thread, heavily loaded, medians of 12 batches of two rotated
copies of the KITTI scan, base profile, 5 levels): the maps alone took 98 ms (numpy) vs 172 ms (torch)
at 0.1 m voxels (95k voxels), 191 ms vs 356 ms at 0.05 m (159k voxels). Whether a GPU run gains from
building maps on the device is not measured yet (no GPU here); the GPU-resident Segmenter
(relidar.model.torch_backend) builds its maps here, and ``relidar bench gpu`` times it end to end.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from relidar.core.kernel_maps import KernelMaps, NeighbourTables, build_tables_with, build_with
from relidar.core.voxelize import key_digits, pack_coords


class _TorchOps:
    def __init__(self, device: Any) -> None:
        self.torch = torch
        self.device = device

    def asarray(self, a: Any) -> Any:
        return self.torch.as_tensor(a, dtype=self.torch.int64, device=self.device)

    def full(self, shape: tuple[int, ...], value: int) -> Any:
        return self.torch.full(shape, value, dtype=self.torch.int64, device=self.device)

    def unique_inverse(self, keys: Any) -> tuple[Any, Any]:
        return self.torch.unique(keys, sorted=True, return_inverse=True)

    def searchsorted(self, sorted_keys: Any, query: Any) -> Any:
        return self.torch.searchsorted(sorted_keys, query)

    def flatnonzero(self, mask: Any) -> Any:
        return self.torch.nonzero(mask).reshape(-1)

    def stable_argsort_small(self, a: Any) -> Any:
        return self.torch.sort(a, stable=True).indices

    def bincount(self, a: Any, n: int) -> Any:
        return self.torch.bincount(a, minlength=n)

    def cumsum(self, a: Any) -> Any:
        # The 8 group bounds are read by the host (it slices with them): the one value a level's maps copy
        # back from the device, apart from the sizes torch.unique and torch.nonzero synchronise on.
        return self.torch.cumsum(a, 0).tolist()

    def clamp_max(self, a: Any, hi: int) -> Any:
        return a.clamp(max=hi)

    def clamp_min(self, a: Any, lo: int) -> Any:
        return a.clamp(min=lo)

    def arange(self, n: int) -> Any:
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def stack2(self, a: Any, b: Any) -> Any:
        return self.torch.stack([a, b])

    pack = staticmethod(pack_coords)

    def unpack(self, keys: Any, shape: Sequence[int]) -> Any:
        return self.torch.stack(key_digits(keys, shape), dim=1)


def build_kernel_maps_torch(coords: Any, grid_shape: Sequence[int], num_levels: int) -> KernelMaps:
    """Same maps as :func:`relidar.core.kernel_maps.build_kernel_maps_numpy`, computed with torch on the coords' device."""
    c = torch.as_tensor(coords, dtype=torch.int64)
    return build_with(_TorchOps(c.device), c, grid_shape, num_levels)


def build_neighbour_tables_torch(maps: KernelMaps) -> NeighbourTables:
    """The neighbour tables of torch kernel maps, on the maps' device (same integers as the numpy builder)."""
    return build_tables_with(_TorchOps(maps.coords[0].device), maps)
