"""Points -> sparse voxels: integer coordinates, the point->voxel index and mean per-voxel input features.

No PyTorch (the ROS node runs it): the per-point loop is compiled with numba (relidar.core.voxel_loops,
the why and the measurements there); the per-voxel feature columns are numpy. Voxels come out sorted
lexicographically by (batch, ix, iy, iz) -- the order of a packed integer key -- so the numpy and torch
kernel-map builders agree exactly on every index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Sequence, TypeVar

import numpy as np

from relidar.core.errors import RelidarError

# Per-voxel input features the student may be given; each is the mean over the voxel's points.
#   x, y, z:     point coordinates in metres (lidar frame)
#   intensity:   the point's 4th column (0 where the scan has none)
#   dx, dy, dz:  offset of the mean point from the voxel centre, in voxel units (-0.5 .. 0.5)
#   range:       distance of the mean point from the sensor, in metres
InputFeature = Literal["x", "y", "z", "intensity", "dx", "dy", "dz", "range"]
INPUT_FEATURES: tuple[str, ...] = ("x", "y", "z", "intensity", "dx", "dy", "dz", "range")


class VoxelizeError(RelidarError, ValueError):
    """Points or a voxel grid that cannot be voxelized; the message says which argument and why."""


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid: voxel edge ``voxel_size`` (metres) over the box ``[crop_min, crop_max)``."""

    voxel_size: float
    crop_min: tuple[float, float, float]
    crop_max: tuple[float, float, float]

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise VoxelizeError(f"voxel_size must be > 0, got {self.voxel_size}")
        if any(hi <= lo for lo, hi in zip(self.crop_min, self.crop_max)):
            raise VoxelizeError(f"crop_max {self.crop_max} must exceed crop_min {self.crop_min} on every axis")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels along x, y, z."""
        lo = np.asarray(self.crop_min, dtype=np.float64)
        hi = np.asarray(self.crop_max, dtype=np.float64)
        dims = np.ceil((hi - lo) / self.voxel_size - 1e-9).astype(np.int64)
        return int(dims[0]), int(dims[1]), int(dims[2])


A = TypeVar("A")  # np.ndarray, or torch.Tensor for voxels made on a torch device (relidar.model.voxelize_torch)


@dataclass(frozen=True)
class Voxels(Generic[A]):
    """Sparse voxels of one batch of scans; the arrays are all numpy or all torch.

    coords:          [V, 4] int64 (batch, ix, iy, iz), unique, sorted lexicographically
    features:        [V, C] float32, C = len(feature_names)
    point_to_voxel:  [N] int64, the voxel of each input point, -1 for points outside the crop
    """

    coords: A
    features: A
    point_to_voxel: A
    batch_size: int
    grid_shape: tuple[int, int, int]
    feature_names: tuple[str, ...]

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def pack_coords(coords, grid_shape: Sequence[int]):
    """The key arithmetic of :func:`pack_keys` on int64 numpy arrays or torch tensors alike."""
    sx, sy, sz = (int(s) + 2 for s in grid_shape)
    c = coords
    return ((c[:, 0] * sx + (c[:, 1] + 1)) * sy + (c[:, 2] + 1)) * sz + (c[:, 3] + 1)


def key_digits(keys, grid_shape: Sequence[int]) -> tuple:
    """(batch, ix, iy, iz) of packed keys, on numpy arrays or torch tensors alike."""
    sx, sy, sz = (int(s) + 2 for s in grid_shape)
    iz = keys % sz - 1
    rest = keys // sz
    iy = rest % sy - 1
    rest = rest // sy
    ix = rest % sx - 1
    return rest // sx, ix, iy, iz


def pack_keys(coords: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """(batch, ix, iy, iz) -> one int64 per voxel whose order is the lexicographic order of the coords.

    Each spatial axis gets one spare slot on both sides so that neighbours just outside the grid
    (-1 and the size) still pack to distinct keys; see ``relidar.core.kernel_maps``.
    """
    return pack_coords(coords.astype(np.int64, copy=False), grid_shape)


def unpack_keys(keys: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_keys`: [V] int64 -> [V, 4] int64."""
    return np.stack(key_digits(keys, grid_shape), axis=1)


def fill_feature_columns(out, names: Sequence[str], mean_xyz, mean_i, cells, grid: VoxelGrid):
    """Write the per-voxel input feature columns into ``out`` [V, len(names)] (float32) and return it.

    ``mean_xyz`` [V, 3] and ``mean_i`` [V] are float64 means, ``cells`` [V, 3] the float64 voxel indices (ix, iy,
    iz). Operators and slicing only, so numpy arrays and torch tensors alike go through the same arithmetic
    (relidar.model.voxelize_torch); each float64 column is rounded to float32 as it is stored.
    """
    for name in names:
        if name not in INPUT_FEATURES:
            raise VoxelizeError(f"unknown input feature {name!r}; choose from {INPUT_FEATURES}")
    for j, name in enumerate(names):
        if name in ("x", "y", "z"):
            column = mean_xyz[:, "xyz".index(name)]
        elif name == "intensity":
            column = mean_i
        elif name == "range":  # np.linalg.norm(axis=1)'s own arithmetic: sqrt of the sum of squares, in order
            column = (mean_xyz * mean_xyz).sum(1) ** 0.5
        else:  # offset of the mean point from the voxel centre, in voxel units
            axis = "xyz".index(name[1])
            centre = (cells[:, axis] + 0.5) * grid.voxel_size + grid.crop_min[axis]
            column = (mean_xyz[:, axis] - centre) / grid.voxel_size
        out[:, j] = column
    return out


def fill_voxel_features(out, names: Sequence[str], sums, counts, cells, grid: VoxelGrid):
    """:func:`fill_feature_columns` from float64 point sums [V, 4] (x, y, z, intensity) and counts [V] (int64):
    the means of every point of each voxel. numpy or torch alike (float64 / int64 is float64 in both)."""
    denominator = counts.clip(1)[:, None]
    return fill_feature_columns(out, names, sums[:, :3] / denominator, sums[:, 3] / denominator[:, 0], cells, grid)


def _feature_columns(names: Sequence[str], mean_xyz: np.ndarray, mean_i: np.ndarray,
                     coords: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """:func:`fill_feature_columns` into a new float32 array, from [V, 4] coords (the reference's form)."""
    out = np.empty((mean_xyz.shape[0], len(names)), dtype=np.float32)
    return fill_feature_columns(out, names, mean_xyz, mean_i, coords[:, 1:].astype(np.float64), grid)


def voxelize(points: np.ndarray, grid: VoxelGrid, feature_names: Sequence[str] = ("x", "y", "z", "intensity"),
             batch_index: np.ndarray | None = None, batch_size: int | None = None) -> Voxels:
    """Voxelize points [N, >=3] (x, y, z[, intensity, ...]); ``batch_index`` [N] says which scan each belongs to."""
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
    if pts.dtype != np.float32 and pts.dtype != np.float64:
        pts = pts.astype(np.float64)  # what the float64 cell arithmetic would upcast them to anyway
    from relidar.core import voxel_loops  # numba: loaded on first use, not when the module is imported

    shape_arr = np.asarray(shape, dtype=np.int64)
    keys, point_to_voxel, sums, counts = voxel_loops.voxelize_points(
        np.ascontiguousarray(pts), np.asarray(grid.crop_min, dtype=np.float64), float(grid.voxel_size), shape_arr,
        np.ascontiguousarray(bidx))
    coords = voxel_loops.unpack(keys, shape_arr)
    # intensity sums are zeros where the points have no 4th column
    features = fill_voxel_features(np.empty((len(keys), len(feature_names)), dtype=np.float32), feature_names, sums,
                                   counts, coords[:, 1:].astype(np.float64), grid)
    return Voxels(coords=coords, features=features, point_to_voxel=point_to_voxel, batch_size=nb,
                  grid_shape=shape, feature_names=tuple(feature_names))


def voxelize_scans(scans: Sequence[np.ndarray], grid: VoxelGrid,
                   feature_names: Sequence[str] = ("x", "y", "z", "intensity")) -> Voxels:
    """Voxelize several scans as one batch; ``point_to_voxel`` follows the scans' concatenation order."""
    if not scans:
        raise VoxelizeError("voxelize_scans needs at least one scan")
    width = min(s.shape[1] for s in scans)
    points = np.concatenate([np.asarray(s)[:, :width] for s in scans], axis=0)
    bidx = np.concatenate([np.full(s.shape[0], b, dtype=np.int64) for b, s in enumerate(scans)])
    return voxelize(points, grid, feature_names, batch_index=bidx, batch_size=len(scans))
