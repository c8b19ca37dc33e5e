"""Kernel maps: which voxel feeds which, for every resolution level of the student.

Computed outside the network from voxel coordinates, then fed to it as plain integer tensors (and,
after export, as ONNX graph inputs). Per level l (level 0 = the input voxels, level l+1 = level l
downsampled by 2):

* ``subm[l]``: submanifold 3x3x3 pairs, for the 13 offsets d that come before (0,0,0) in
  lexicographic order, each a [2, P] array of (out, in) voxel indices with coord(in) = coord(out) + d.
  The mirrored offset -d uses the same pairs swapped, and the centre offset is the identity, so 13
  arrays describe all 27 offsets. Missing neighbours simply have no pair: no padding, no
  value-dependent branches in the network.
* ``down[l]`` (l < levels-1): kernel-2 stride-2 pairs, for the 8 child offsets
  o = (ix&1)*4 + (iy&1)*2 + (iz&1), each a [2, P] array of (parent at level l+1, child at level l).
  The transposed (upsampling) convolution reuses them in the other direction.

One algorithm (:func:`build_with`) over a small table of array operations: :class:`NumpyOps` here,
relidar.model.kernel_maps_torch with torch (CPU or CUDA); both give identical integers. What the node
and the ONNX Runtime path call, :func:`build_kernel_maps_numpy`, replays the same algorithm as compiled
loops (relidar.core.voxel_loops: the same integers, several times faster); the numpy ops are its reference.

The same maps also come as dense tables (:class:`NeighbourTables`, :func:`build_tables_with`), the
formulation for GPUs (one gather and one GEMM per convolution instead of a gather, a GEMM and a
scatter per kernel offset; see relidar.model.sparse.functional). They are derived from the pair lists,
so both formulations describe the same neighbours by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.voxelize import pack_keys, unpack_keys

A = TypeVar("A")  # np.ndarray, or torch.Tensor for maps built or moved by the model layer

NUM_HALF_OFFSETS = 13
CENTRE_OFFSET = 13  # index of (0, 0, 0) in the 27 offsets k = (dx+1)*9 + (dy+1)*3 + (dz+1)


def subm_offsets() -> np.ndarray:
    """[27, 3] int64 (dx, dy, dz) in kernel order k = (dx+1)*9 + (dy+1)*3 + (dz+1)."""
    r = np.arange(-1, 2)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(27, 3)


def down_offsets() -> np.ndarray:
    """[8, 3] int64 child offsets (ox, oy, oz) in kernel order o = ox*4 + oy*2 + oz."""
    r = np.arange(2)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(8, 3)


class KernelMapError(RelidarError, ValueError):
    """Voxel coordinates or flat map tensors that cannot describe kernel maps."""


@dataclass(frozen=True)
class KernelMaps(Generic[A]):
    """Kernel maps of one batch for ``num_levels`` resolutions; arrays are all numpy or all torch."""

    coords: tuple[A, ...]              # per level: [V_l, 4] int64 (batch, ix, iy, iz)
    subm: tuple[tuple[A, ...], ...]    # per level: 13 x [2, P] int64 (out, in)
    down: tuple[tuple[A, ...], ...]    # per level l < L-1: 8 x [2, P] int64 (parent, child)

    @property
    def num_levels(self) -> int:
        return len(self.coords)

    def num_voxels(self, level: int) -> int:
        return int(self.coords[level].shape[0])

    def to_tensors(self) -> list[A]:
        """Flat list in a stable order: coords per level, then 13 subm pair arrays per level, then 8 down
        pair arrays per level transition. :meth:`from_tensors` inverts it."""
        flat: list[A] = list(self.coords)
        for level in self.subm:
            flat.extend(level)
        for level in self.down:
            flat.extend(level)
        return flat

    @staticmethod
    def tensor_names(num_levels: int) -> list[str]:
        """Names matching :meth:`to_tensors`, e.g. for ONNX graph inputs."""
        names = [f"coords_{l}" for l in range(num_levels)]
        names += [f"subm_{l}_{k}" for l in range(num_levels) for k in range(NUM_HALF_OFFSETS)]
        names += [f"down_{l}_{o}" for l in range(num_levels - 1) for o in range(8)]
        return names

    @classmethod
    def from_tensors(cls, tensors: Sequence[Any], num_levels: int) -> "KernelMaps":
        expected = num_levels + num_levels * NUM_HALF_OFFSETS + (num_levels - 1) * 8
        if len(tensors) != expected:
            raise KernelMapError(f"{num_levels} levels need {expected} tensors, got {len(tensors)}")
        coords = tuple(tensors[:num_levels])
        pos = num_levels
        subm = []
        for _ in range(num_levels):
            subm.append(tuple(tensors[pos:pos + NUM_HALF_OFFSETS]))
            pos += NUM_HALF_OFFSETS
        down = []
        for _ in range(num_levels - 1):
            down.append(tuple(tensors[pos:pos + 8]))
            pos += 8
        return cls(coords=coords, subm=tuple(subm), down=tuple(down))

    def to(self, device: Any) -> "KernelMaps":
        """Torch maps on another device."""
        return KernelMaps.from_tensors([t.to(device) for t in self.to_tensors()], self.num_levels)


@dataclass(frozen=True)
class NeighbourTables(Generic[A]):
    """The kernel maps of one batch as dense int64 tables (missing entries point at a zero row).

    * ``subm[l]`` [V_l, 27]: entry (v, k) is the voxel at offset k of voxel v (k as in :func:`subm_offsets`),
      ``V_l`` where there is none; column 13 is v itself.
    * ``down[l]`` [V_l+1, 8] (l < levels-1): entry (p, o) is parent p's child at offset o, ``V_l`` where none.
    * ``up[l]`` [V_l] (l < levels-1): ``parent * 8 + o`` of each level-l voxel, the row of its parent's
      [V_l+1 * 8, C] product that the transposed convolution reads.
    """

    subm: tuple[A, ...]
    down: tuple[A, ...]
    up: tuple[A, ...]

    @property
    def num_levels(self) -> int:
        return len(self.subm)

    def num_voxels(self, level: int) -> int:
        return int(self.subm[level].shape[0])

    def to_tensors(self) -> list[A]:
        """Flat list: the subm table per level, then the down table and the up index per level transition."""
        return list(self.subm) + list(self.down) + list(self.up)

    @staticmethod
    def tensor_names(num_levels: int) -> list[str]:
        """Names matching :meth:`to_tensors`, e.g. for ONNX graph inputs."""
        return ([f"subm_table_{l}" for l in range(num_levels)] + [f"down_table_{l}" for l in range(num_levels - 1)]
                + [f"up_index_{l}" for l in range(num_levels - 1)])

    @classmethod
    def from_tensors(cls, tensors: Sequence[Any], num_levels: int) -> "NeighbourTables":
        expected = 3 * num_levels - 2
        if len(tensors) != expected:
            raise KernelMapError(f"{num_levels} levels need {expected} table tensors, got {len(tensors)}")
        n = num_levels
        return cls(subm=tuple(tensors[:n]), down=tuple(tensors[n:2 * n - 1]), up=tuple(tensors[2 * n - 1:]))

    def to(self, device: Any) -> "NeighbourTables":
        """Torch tables on another device."""
        return NeighbourTables.from_tensors([t.to(device) for t in self.to_tensors()], self.num_levels)


def build_tables_with(ops: Any, maps: KernelMaps) -> NeighbourTables:
    """The neighbour tables of ``maps`` (see :class:`NeighbourTables`), with ``ops`` (numpy or torch)."""
    subm = []
    for level in range(maps.num_levels):
        v = maps.num_voxels(level)
        table = ops.full((v, 27), v)
        table[:, CENTRE_OFFSET] = ops.arange(v)
        for k, pair in enumerate(maps.subm[level]):
            table[pair[0], k] = pair[1]
            table[pair[1], 26 - k] = pair[0]
        subm.append(table)
    down, up = [], []
    for level in range(maps.num_levels - 1):
        children = maps.num_voxels(level)
        table = ops.full((maps.num_voxels(level + 1), 8), children)
        slot = ops.full((children,), 0)
        for o, pair in enumerate(maps.down[level]):
            table[pair[0], o] = pair[1]
            slot[pair[1]] = pair[0] * 8 + o  # every child has exactly one parent: each slot written once
        down.append(table)
        up.append(slot)
    return NeighbourTables(subm=tuple(subm), down=tuple(down), up=tuple(up))


class NumpyOps:
    """:func:`build_with`'s array operations in numpy: the reference for :func:`build_kernel_maps_numpy`."""

    @staticmethod
    def asarray(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.int64)

    @staticmethod
    def full(shape: tuple[int, ...], value: int) -> np.ndarray:
        return np.full(shape, value, dtype=np.int64)

    @staticmethod
    def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, inverse.reshape(-1)

    searchsorted = staticmethod(np.searchsorted)
    flatnonzero = staticmethod(np.flatnonzero)

    @staticmethod
    def stable_argsort_small(a: np.ndarray) -> np.ndarray:
        # uint8 keys: numpy's stable sort is a radix sort there
        return np.argsort(a.astype(np.uint8), kind="stable")

    @staticmethod
    def bincount(a: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(a, minlength=n)

    @staticmethod
    def cumsum(a: np.ndarray) -> np.ndarray:
        return np.cumsum(a)

    @staticmethod
    def clamp_max(a: np.ndarray, hi: int) -> np.ndarray:
        return np.minimum(a, hi)

    @staticmethod
    def clamp_min(a: np.ndarray, lo: int) -> np.ndarray:
        return np.maximum(a, lo)

    @staticmethod
    def arange(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)

    @staticmethod
    def stack2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.stack([a, b]).astype(np.int64, copy=False)

    @staticmethod
    def pack(coords: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        return pack_keys(coords, shape)

    @staticmethod
    def unpack(keys: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        return unpack_keys(keys, shape)


def _level_shapes(grid_shape: Sequence[int], num_levels: int) -> list[tuple[int, int, int]]:
    shapes = [tuple(int(s) for s in grid_shape)]
    for _ in range(num_levels - 1):
        shapes.append(tuple((s + 1) // 2 for s in shapes[-1]))
    return shapes  # type: ignore[return-value]


def _subm_pairs(ops: Any, keys: Any, shape: Sequence[int]) -> tuple[Any, ...]:
    """(out, in) pairs of the 13 half offsets, from sorted unique packed keys.

    Voxels of one (batch, ix, iy) column are consecutive in key order, so one binary search per
    (dx, dy) column finds the dz = -1 slot and the dz = 0, +1 neighbours follow by counting matches:
    4 searches per level instead of 13; (0, 0, -1) is simply the previous voxel.
    """
    v = int(keys.shape[0])
    if v == 0:
        return tuple(ops.stack2(keys[:0], keys[:0]) for _ in range(NUM_HALF_OFFSETS))
    sy, sz = shape[1] + 2, shape[2] + 2  # the packed key's strides, see relidar.core.voxelize.pack_keys
    pairs = []
    for dx, dy in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        query = keys + int((dx * sy + dy) * sz - 1)
        pos = ops.searchsorted(keys, query)
        for dz in range(3):
            cand = ops.clamp_max(pos, v - 1)
            found = keys[cand] == query + dz
            out = ops.flatnonzero(found)
            pairs.append(ops.stack2(out, cand[out]))
            pos = pos + found
    below = ops.clamp_min(ops.arange(v) - 1, 0)
    out = ops.flatnonzero(keys[below] == keys - 1)
    pairs.append(ops.stack2(out, below[out]))
    return tuple(pairs)


def _check(coords0: Any, num_levels: int) -> None:
    if num_levels < 1:
        raise KernelMapError(f"num_levels must be >= 1, got {num_levels}")
    if coords0.ndim != 2 or coords0.shape[1] != 4:
        raise KernelMapError(f"voxel coords must be [V, 4] (batch, ix, iy, iz), got shape {tuple(coords0.shape)}")


def build_with(ops: Any, coords0: Any, grid_shape: Sequence[int], num_levels: int) -> KernelMaps:
    _check(coords0, num_levels)
    shapes = _level_shapes(grid_shape, num_levels)
    coords = [coords0]
    subm = []
    down = []
    for level in range(num_levels):
        c = coords[level]
        shape = shapes[level]
        keys = ops.pack(c, shape)
        subm.append(_subm_pairs(ops, keys, shape))
        if level == num_levels - 1:
            break
        # coords are >= 0, so shifts and masks are the floor-divisions and remainders by 2
        parent = c >> 1
        parent[:, 0] = c[:, 0]
        next_shape = shapes[level + 1]
        uniq, inv = ops.unique_inverse(ops.pack(parent, next_shape))
        coords.append(ops.unpack(uniq, next_shape))
        child_offset = ((c[:, 1] & 1) << 2) | ((c[:, 2] & 1) << 1) | (c[:, 3] & 1)
        # children grouped by offset, ascending within each group: one stable sort of small ints
        # instead of 8 compare + nonzero passes
        order = ops.stable_argsort_small(child_offset)
        ends = ops.cumsum(ops.bincount(child_offset, 8))
        start = 0
        dpairs = []
        for o in range(8):
            end = int(ends[o])
            child = order[start:end]
            dpairs.append(ops.stack2(inv[child], child))
            start = end
        down.append(tuple(dpairs))
    return KernelMaps(coords=tuple(coords), subm=tuple(subm), down=tuple(down))


def build_kernel_maps_numpy(coords: np.ndarray, grid_shape: Sequence[int], num_levels: int) -> KernelMaps:
    """Kernel maps from sorted unique voxel coords [V, 4] (as from :func:`relidar.core.voxelize.voxelize`).

    :func:`build_with`'s algorithm as compiled loops: the same arrays as ``build_with(NumpyOps(), ...)``.
    Every pair array is a contiguous view into one buffer per level.
    """
    from relidar.core import voxel_loops  # numba: loaded on first use, not when the module is imported

    coords0 = np.asarray(coords, dtype=np.int64)
    _check(coords0, num_levels)
    shapes = [np.asarray(s, dtype=np.int64) for s in _level_shapes(grid_shape, num_levels)]
    level_coords = [coords0]
    subm = []
    down = []
    c = np.ascontiguousarray(coords0)
    for level in range(num_levels):
        shape = shapes[level]
        flat, start = voxel_loops.subm_pairs(voxel_loops.pack(c, shape), int(shape[1]) + 2, int(shape[2]) + 2)
        subm.append(_split_pairs(flat, start))
        if level == num_levels - 1:
            break
        c, flat, start = voxel_loops.down_pairs(c, shapes[level + 1])
        level_coords.append(c)
        down.append(_split_pairs(flat, start))
    return KernelMaps(coords=tuple(level_coords), subm=tuple(subm), down=tuple(down))


def _split_pairs(flat: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, ...]:
    """[2, P_k] views of a flat buffer holding each offset's (out..., in...) one after the other."""
    return tuple(flat[2 * start[k]:2 * start[k + 1]].reshape(2, -1) for k in range(len(start) - 1))


def build_neighbour_tables_numpy(maps: KernelMaps) -> NeighbourTables:
    """Neighbour tables from numpy kernel maps (as :func:`build_kernel_maps_numpy` makes them)."""
    return build_tables_with(NumpyOps(), maps)
