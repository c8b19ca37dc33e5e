"""The numpy voxelization relidar shipped before the compiled loops (commit 97bf391), kept verbatim as the
reference that relidar.core.voxelize.voxelize must equal bit for bit."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from relidar.core.voxelize import VoxelGrid, VoxelizeError, Voxels, _feature_columns, unpack_keys


def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for int64 keys, the inverse flat.

    Keys in [0, 2**32) -- a scan's packed voxel keys -- are sorted by two stable 16-bit passes
    (numpy's stable sort of uint16 is a radix sort): ~2x faster than np.unique's comparison sort.
    """
    n = keys.shape[0]
    if n == 0 or int(keys.min()) < 0 or int(keys.max()) >= 1 << 32:
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, inverse.reshape(-1)
    low_first = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    order = low_first[np.argsort((keys[low_first] >> 16).astype(np.uint16), kind="stable")]
    sorted_keys = keys[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return sorted_keys[first], inverse


def voxelize_reference(points: np.ndarray, grid: VoxelGrid, feature_names: Sequence[str] = ("x", "y", "z", "intensity"),
             batch_index: np.ndarray | None = None, batch_size: int | None = None) -> Voxels:
    """The numpy voxelize of commit 97bf391, verbatim."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise VoxelizeError(f"points must be [N, >=3], got shape {pts.shape}")
    n = pts.shape[0]
    if batch_index is None:
        bidx = np.zeros(n, dtype=np.int64)
    else:
        bidx = np.asarray(batch_index, dtype=np.int64)
        if bidx.shape != (n,):
            raise VoxelizeError(f"batch_index must be [N]={n}, got shape {bidx.shape}")
        if n and bidx.min() < 0:
            raise VoxelizeError("batch_index must be >= 0")
    nb = int(batch_size) if batch_size is not None else (int(bidx.max()) + 1 if n else 1)
    shape = grid.shape
    # float64 cell arithmetic, in place; per-column bound tests (NaN and +-inf fail them, so
    # non-finite points fall outside with no separate test): ~2x faster than the [N, 3] forms
    cell = pts[:, :3] - np.asarray(grid.crop_min, dtype=np.float64)
    cell /= grid.voxel_size
    np.floor(cell, out=cell)
    inside = (cell[:, 0] >= 0) & (cell[:, 1] >= 0) & (cell[:, 2] >= 0)
    for axis in range(3):
        inside &= cell[:, axis] < shape[axis]
    sel = np.flatnonzero(inside)
    cell_in = cell[sel].astype(np.int64)
    sx, sy, sz = (int(d) + 2 for d in shape)  # pack_keys inlined: no [P, 4] coords array
    point_keys = ((bidx[sel] * sx + (cell_in[:, 0] + 1)) * sy + (cell_in[:, 1] + 1)) * sz + (cell_in[:, 2] + 1)
    keys, inverse = unique_inverse(point_keys)
    v = keys.shape[0]
    coords = unpack_keys(keys, shape)
    counts = np.bincount(inverse, minlength=v).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    # bincount accumulates in float64 whatever the weights' dtype: no float64 copy of the points
    mean_xyz = np.stack([np.bincount(inverse, weights=pts[sel, j], minlength=v) for j in range(3)], axis=1) / counts[:, None]
    mean_i = (np.bincount(inverse, weights=pts[sel, 3], minlength=v) if pts.shape[1] > 3 else np.zeros(v)) / counts
    point_to_voxel = np.full(n, -1, dtype=np.int64)
    point_to_voxel[sel] = inverse
    features = _feature_columns(feature_names, mean_xyz, mean_i, coords, grid)
    return Voxels(coords=coords, features=features, point_to_voxel=point_to_voxel, batch_size=nb,
                  grid_shape=shape, feature_names=tuple(feature_names))
