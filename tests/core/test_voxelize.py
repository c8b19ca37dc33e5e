"""Voxelization: coordinates, crop, means and order checked against hand-computed values, and the compiled
loops equal, bit for bit, to the numpy voxelize they replaced (tests/support/voxelize_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from support.voxelize_reference import voxelize_reference

from relidar.core.scan_io import read_scan
from relidar.core.voxelize import VoxelGrid, VoxelizeError, pack_keys, unpack_keys, voxelize, voxelize_scans

ALL_FEATURES = ("x", "y", "z", "intensity", "dx", "dy", "dz", "range")
KITTI_GRID = VoxelGrid(0.1, (-51.2, -51.2, -4.0), (51.2, 51.2, 2.4))

GRID = VoxelGrid(voxel_size=1.0, crop_min=(0.0, 0.0, 0.0), crop_max=(4.0, 4.0, 2.0))


def test_hand_computed_voxels_means_and_crop() -> None:
    pts = np.array([
        [0.2, 0.2, 0.2, 1.0],   # voxel (0,0,0)
        [0.8, 0.6, 0.4, 3.0],   # voxel (0,0,0)
        [3.5, 0.1, 1.9, 5.0],   # voxel (3,0,1)
        [1.1, 2.2, 0.5, 0.0],   # voxel (1,2,0)
        [4.0, 1.0, 1.0, 9.0],   # x == crop_max: outside
        [-0.1, 1.0, 1.0, 9.0],  # outside
    ], dtype=np.float32)
    vx = voxelize(pts, GRID, ("x", "y", "z", "intensity", "dx", "dy", "dz"))
    np.testing.assert_array_equal(vx.coords, [[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 0, 1]])
    np.testing.assert_array_equal(vx.point_to_voxel, [0, 0, 2, 1, -1, -1])
    np.testing.assert_allclose(vx.features[0], [0.5, 0.4, 0.3, 2.0, 0.0, -0.1, -0.2], atol=1e-6)
    np.testing.assert_allclose(vx.features[2], [3.5, 0.1, 1.9, 5.0, 0.0, -0.4, 0.4], atol=1e-6)
    assert vx.grid_shape == (4, 4, 2)
    assert vx.features.dtype == np.float32


def test_batches_keep_scans_apart_and_order_is_lexicographic() -> None:
    rng = np.random.default_rng(1)
    scans = [rng.uniform(0, 4, size=(200, 4)).astype(np.float32) for _ in range(3)]
    scans[1][:, 2] = rng.uniform(0, 2, size=200)
    vx = voxelize_scans(scans, GRID)
    assert vx.batch_size == 3
    c = vx.coords
    order = np.lexsort((c[:, 3], c[:, 2], c[:, 1], c[:, 0]))
    np.testing.assert_array_equal(order, np.arange(len(c)))
    assert len(np.unique(c, axis=0)) == len(c)
    # every point's voxel holds it and belongs to its scan
    pts = np.concatenate(scans)
    bidx = np.repeat(np.arange(3), 200)
    ok = vx.point_to_voxel >= 0
    cell = np.floor(pts[ok, :3]).astype(np.int64)
    np.testing.assert_array_equal(vx.coords[vx.point_to_voxel[ok]], np.c_[bidx[ok], cell])


def test_pack_unpack_roundtrip_includes_out_of_grid_neighbours() -> None:
    coords = np.array([[0, -1, 0, 3], [2, 4, -1, 0], [1, 0, 4, -1]], dtype=np.int64)
    np.testing.assert_array_equal(unpack_keys(pack_keys(coords, (4, 4, 3)), (4, 4, 3)), coords)


def test_bad_inputs_raise() -> None:
    with pytest.raises(VoxelizeError, match="points must be"):
        voxelize(np.zeros((5, 2), np.float32), GRID)
    with pytest.raises(VoxelizeError, match="unknown input feature"):
        voxelize(np.zeros((5, 3), np.float32), GRID, ("x", "colour"))
    with pytest.raises(VoxelizeError, match="voxel_size"):
        VoxelGrid(0.0, (0, 0, 0), (1, 1, 1))


def test_real_kitti_scan(kitti_scan_path) -> None:
    pts = read_scan(kitti_scan_path)
    grid = VoxelGrid(0.1, (-51.2, -51.2, -4.0), (51.2, 51.2, 2.4))
    vx = voxelize(pts, grid)
    assert 30_000 < vx.num_voxels < 80_000
    inside = vx.point_to_voxel >= 0
    assert inside.mean() > 0.99
    # each voxel's mean xyz lies inside its own voxel
    lo = vx.coords[:, 1:] * 0.1 + np.array(grid.crop_min)
    assert np.all(vx.features[:, :3] >= lo - 1e-4) and np.all(vx.features[:, :3] <= lo + 0.1 + 1e-4)


def _assert_same_as_reference(points: np.ndarray, grid: VoxelGrid, batch_index: np.ndarray | None = None,
                              features: tuple[str, ...] = ALL_FEATURES) -> None:
    got = voxelize(points, grid, features, batch_index=batch_index)
    ref = voxelize_reference(points, grid, features, batch_index=batch_index)
    for field in ("coords", "features", "point_to_voxel"):
        a, b = getattr(got, field), getattr(ref, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)  # exact: the same float64 sums, in the same order
    assert (got.batch_size, got.grid_shape, got.feature_names) == (ref.batch_size, ref.grid_shape, ref.feature_names)


def test_compiled_equals_numpy_reference_on_kitti(kitti_scan_path) -> None:
    pts = read_scan(kitti_scan_path)
    _assert_same_as_reference(pts, KITTI_GRID)
    _assert_same_as_reference(pts.astype(np.float64), KITTI_GRID, features=("x", "y", "z", "intensity"))
    _assert_same_as_reference(np.ascontiguousarray(pts[::3, :3]), VoxelGrid(0.05, (-20.0, -30.0, -3.0), (40.0, 30.0, 1.0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_equals_numpy_reference_on_random_clouds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    # clustered points (many per voxel, so the order of the float sums matters), outliers, NaN and inf
    centres = rng.uniform(-9.0, 9.0, (300, 3))
    xyz = centres[rng.integers(0, 300, n)] + rng.normal(0.0, 0.3, (n, 3))
    pts = np.c_[xyz, rng.uniform(0.0, 1.0, (n, 2))].astype(np.float32)  # 5 columns: the 5th is ignored
    pts[rng.choice(n, 50, replace=False), rng.integers(0, 3)] = np.nan
    pts[rng.choice(n, 50, replace=False), 0] = np.inf
    grid = VoxelGrid(0.3, (-8.0, -8.0, -2.0), (8.1, 8.0, 3.0))
    _assert_same_as_reference(pts, grid)
    _assert_same_as_reference(pts[:, :3], grid)
    batch = np.sort(rng.integers(0, 4, n))
    _assert_same_as_reference(pts, grid, batch_index=batch)
    rng.shuffle(batch)  # scans interleaved
    _assert_same_as_reference(pts, grid, batch_index=batch)


def test_compiled_equals_numpy_reference_on_edge_cases() -> None:
    _assert_same_as_reference(np.zeros((0, 4), np.float32), GRID)
    _assert_same_as_reference(np.full((5, 4), 7.0, np.float32), GRID)  # all outside
    pts = np.random.default_rng(5).uniform(0, 4, (500, 4)).astype(np.float32)
    # packed keys past 2**32 (a batch index of 10**6): the compiled sort's merge-sort branch
    _assert_same_as_reference(pts, GRID, batch_index=np.repeat([0, 1_000_000], 250))
    _assert_same_as_reference(pts.astype(np.float16), GRID)
    # a tiny grid: keys below 2**16, one counting pass
    _assert_same_as_reference(pts, VoxelGrid(1.0, (0.0, 0.0, 0.0), (2.0, 2.0, 2.0)))
