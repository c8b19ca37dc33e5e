"""Voxelization on a torch device: the voxels of :func:`relidar.core.voxelize.voxelize`, computed where the
points already are (the GPU-resident Segmenter path, relidar.model.torch_backend).

The same integers as the numpy path, by construction rather than by tolerance: the cell of a point is the
same float64 arithmetic (``floor((float64(p) - crop_min) / voxel_size)``, IEEE-exact on CPU and CUDA alike),
the keys are :func:`relidar.core.voxelize.pack_coords` and ``torch.unique(sorted=True)`` orders them as the
numpy path does, so voxel order, coords and the point->voxel index are identical. The feature means come
from float64 sums: on a CPU they are added in input order, as the compiled loop adds them; on CUDA the
atomic adds of ``index_add_`` take any order, which changes a float64 sum of float32 values only past its
53rd bit, so the float32 features agree to float rounding (tests/model/test_device_pipeline.py states the
tolerance). The per-voxel feature columns are the core's own arithmetic
(:func:`relidar.core.voxelize.fill_voxel_features`).

No value is read back by the host: the grid's constants enter as Python floats, and the data-dependent
sizes (points inside the crop, voxels) are what ``torch.nonzero`` and ``torch.unique`` synchronise on.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from relidar.core.voxelize import VoxelGrid, VoxelizeError, Voxels, fill_voxel_features, key_digits, pack_coords


def voxelize_torch(points: Tensor, grid: VoxelGrid,
                   feature_names: Sequence[str] = ("x", "y", "z", "intensity")) -> Voxels[Tensor]:
    """Voxels of one scan ``points`` [N, >=3] (x, y, z[, intensity, ...]), on the points' device."""
    if points.ndim != 2 or points.shape[1] < 3:
        raise VoxelizeError(f"points must be [N, >=3], got shape {tuple(points.shape)}")
    device = points.device
    n = int(points.shape[0])
    shape = grid.shape
    pts = points.to(torch.float64)  # exact for every float32 / float16 / integer value: the numpy path's upcast
    # per axis with Python floats: the grid's constants are never copied to the device
    cells = [torch.floor((pts[:, axis] - grid.crop_min[axis]) / grid.voxel_size) for axis in range(3)]
    inside = torch.ones(n, dtype=torch.bool, device=device)
    for axis, cell in enumerate(cells):
        inside &= (cell >= 0) & (cell < shape[axis])  # NaN and +-inf fail the tests: outside
    selected = torch.nonzero(inside).reshape(-1)
    batch = torch.zeros(int(selected.shape[0]), dtype=torch.int64, device=device)
    point_coords = torch.stack([batch] + [cell[selected].to(torch.int64) for cell in cells], dim=1)
    keys, inverse = torch.unique(pack_coords(point_coords, shape), sorted=True, return_inverse=True)
    coords = torch.stack(key_digits(keys, shape), dim=1)
    v = int(keys.shape[0])
    width = min(int(points.shape[1]), 4)
    sums = torch.zeros((v, 4), dtype=torch.float64, device=device)  # intensity sums stay 0 without a 4th column
    sums[:, :width].index_add_(0, inverse, pts[selected, :width])
    counts = torch.bincount(inverse, minlength=v)
    point_to_voxel = torch.full((n,), -1, dtype=torch.int64, device=device)
    point_to_voxel[selected] = inverse
    features = fill_voxel_features(torch.empty((v, len(feature_names)), dtype=torch.float32, device=device),
                                   feature_names, sums, counts, coords[:, 1:].to(torch.float64), grid)
    return Voxels(coords=coords, features=features, point_to_voxel=point_to_voxel, batch_size=1,
                  grid_shape=shape, feature_names=tuple(feature_names))
