"""Kernel maps and neighbour tables: the compiled builder, the numpy ops and torch agree exactly; both checked
against a brute-force dict lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relidar.core.kernel_maps import (
    KernelMapError,
    KernelMaps,
    NeighbourTables,
    NumpyOps,
    build_kernel_maps_numpy,
    build_neighbour_tables_numpy,
    build_with,
    down_offsets,
    subm_offsets,
)
from relidar.core.scan_io import read_scan
from relidar.core.voxelize import VoxelGrid, voxelize, voxelize_scans
from relidar.model.kernel_maps_torch import build_kernel_maps_torch, build_neighbour_tables_torch


def _random_voxels(seed: int, n: int = 3000, batch: int = 2):
    rng = np.random.default_rng(seed)
    grid = VoxelGrid(0.5, (0.0, 0.0, 0.0), (13.0, 9.5, 4.0))  # odd sizes: edge voxels at every level
    scans = [rng.uniform(-1.0, 14.0, size=(n, 4)).astype(np.float32) for _ in range(batch)]
    return voxelize_scans(scans, grid)


def _assert_equal(a: KernelMaps, b: KernelMaps) -> None:
    ta, tb = a.to_tensors(), b.to_tensors()
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb):
        np.testing.assert_array_equal(x, y if isinstance(y, np.ndarray) else y.cpu().numpy())


def _brute_force_check(maps: KernelMaps) -> None:
    offs = subm_offsets()
    for level in range(maps.num_levels):
        coords = np.asarray(maps.coords[level])
        index = {tuple(r): i for i, r in enumerate(coords.tolist())}
        for k in range(13):
            expected = []
            for i, (b, x, y, z) in enumerate(coords.tolist()):
                j = index.get((b, x + offs[k][0], y + offs[k][1], z + offs[k][2]))
                if j is not None:
                    expected.append((i, j))
            got = np.asarray(maps.subm[level][k]).T.tolist()
            assert sorted(map(tuple, got)) == sorted(expected)
        if level + 1 < maps.num_levels:
            parents = np.asarray(maps.coords[level + 1])
            for o, (ox, oy, oz) in enumerate(down_offsets()):
                parent, child = np.asarray(maps.down[level][o])
                c = coords[child]
                np.testing.assert_array_equal(parents[parent][:, 0], c[:, 0])
                np.testing.assert_array_equal(parents[parent][:, 1:] * 2 + [ox, oy, oz], c[:, 1:])
            all_children = np.concatenate([np.asarray(p[1]) for p in maps.down[level]])
            np.testing.assert_array_equal(np.sort(all_children), np.arange(len(coords)))
            expected_parents = np.unique(np.c_[coords[:, :1], coords[:, 1:] // 2], axis=0)
            np.testing.assert_array_equal(parents, expected_parents)


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_and_torch_agree_on_random_clouds_and_match_brute_force(seed: int) -> None:
    vx = _random_voxels(seed)
    a = build_kernel_maps_numpy(vx.coords, vx.grid_shape, 4)
    b = build_kernel_maps_torch(torch.from_numpy(vx.coords), vx.grid_shape, 4)
    _assert_equal(a, b)
    _assert_equal(a, build_with(NumpyOps(), vx.coords, vx.grid_shape, 4))
    _brute_force_check(a)


def test_numpy_and_torch_agree_on_real_kitti_scan(kitti_scan_path) -> None:
    vx = voxelize(read_scan(kitti_scan_path), VoxelGrid(0.1, (-51.2, -51.2, -4.0), (51.2, 51.2, 2.4)))
    a = build_kernel_maps_numpy(vx.coords, vx.grid_shape, 5)
    b = build_kernel_maps_torch(torch.from_numpy(vx.coords), vx.grid_shape, 5)
    _assert_equal(a, b)
    _assert_equal(a, build_with(NumpyOps(), vx.coords, vx.grid_shape, 5))
    assert [a.num_voxels(lv) for lv in range(5)] == sorted((a.num_voxels(lv) for lv in range(5)), reverse=True)


def test_flat_tensor_roundtrip_and_names() -> None:
    vx = _random_voxels(3, n=300)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, 3)
    flat = maps.to_tensors()
    assert len(flat) == len(KernelMaps.tensor_names(3)) == 3 + 3 * 13 + 2 * 8
    _assert_equal(maps, KernelMaps.from_tensors([torch.from_numpy(t) for t in flat], 3))
    with pytest.raises(KernelMapError, match="need"):
        KernelMaps.from_tensors(flat[:-1], 3)


def test_empty_cloud_gives_empty_maps() -> None:
    maps = build_kernel_maps_numpy(np.zeros((0, 4), np.int64), (8, 8, 8), 3)
    assert all(t.shape[-1] == 0 for t in maps.to_tensors() if t.ndim == 2 and t.shape[0] == 2)
    assert maps.num_voxels(2) == 0
    _assert_equal(maps, build_with(NumpyOps(), np.zeros((0, 4), np.int64), (8, 8, 8), 3))


def test_compiled_pairs_are_contiguous_int64_arrays() -> None:
    vx = _random_voxels(4, n=500)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, 3)
    for t in maps.to_tensors():
        assert t.dtype == np.int64 and t.flags.c_contiguous  # fed to ONNX Runtime with no copy
    reference = build_with(NumpyOps(), vx.coords, vx.grid_shape, 3)
    for a, b in zip(maps.to_tensors(), reference.to_tensors()):
        assert a.shape == b.shape


def test_bad_arguments_raise_in_both_builders() -> None:
    for build in (build_kernel_maps_numpy, lambda c, s, n: build_with(NumpyOps(), c, s, n)):
        with pytest.raises(KernelMapError, match="num_levels"):
            build(np.zeros((3, 4), np.int64), (8, 8, 8), 0)
        with pytest.raises(KernelMapError, match=r"\[V, 4\]"):
            build(np.zeros((3, 3), np.int64), (8, 8, 8), 2)


def _brute_force_tables(tables: NeighbourTables, maps: KernelMaps) -> None:
    """Every table entry from the levels' coordinates alone: the voxel at coord + offset, or V (the zero row)."""
    offs = subm_offsets()
    for level in range(tables.num_levels):
        coords = np.asarray(maps.coords[level])
        v = len(coords)
        index = {tuple(r): i for i, r in enumerate(coords.tolist())}
        expected = np.array([[index.get((b, x + dx, y + dy, z + dz), v) for dx, dy, dz in offs.tolist()]
                             for b, x, y, z in coords.tolist()], dtype=np.int64).reshape(v, 27)
        np.testing.assert_array_equal(tables.subm[level], expected)
        if level + 1 < tables.num_levels:
            parents = np.asarray(maps.coords[level + 1])
            expected_down = np.array([[index.get((b, 2 * x + ox, 2 * y + oy, 2 * z + oz), v)
                                       for ox, oy, oz in down_offsets().tolist()]
                                      for b, x, y, z in parents.tolist()], dtype=np.int64).reshape(-1, 8)
            np.testing.assert_array_equal(tables.down[level], expected_down)
            parent_index = {tuple(r): i for i, r in enumerate(parents.tolist())}
            expected_up = [parent_index[(b, x // 2, y // 2, z // 2)] * 8 + (x % 2) * 4 + (y % 2) * 2 + z % 2
                           for b, x, y, z in coords.tolist()]
            np.testing.assert_array_equal(tables.up[level], expected_up)


@pytest.mark.parametrize("seed", [0, 1])
def test_neighbour_tables_numpy_torch_and_brute_force(seed: int) -> None:
    vx = _random_voxels(seed, n=800)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, 3)
    tables = build_neighbour_tables_numpy(maps)
    assert [t.shape for t in tables.subm] == [(maps.num_voxels(lv), 27) for lv in range(3)]
    torch_tables = build_neighbour_tables_torch(KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], 3))
    for a, b in zip(tables.to_tensors(), torch_tables.to_tensors()):
        np.testing.assert_array_equal(a, b.numpy())
    _brute_force_tables(tables, maps)
    flat = tables.to_tensors()
    assert len(flat) == len(NeighbourTables.tensor_names(3)) == 3 + 2 + 2
    rebuilt = NeighbourTables.from_tensors(flat, 3)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt.to_tensors(), flat))
    with pytest.raises(KernelMapError, match="need"):
        NeighbourTables.from_tensors(flat[:-1], 3)
