"""Point-pixel pairing: camera choice, bilinear sampling against hand-computed values, superpixels."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.frame import Camera, Frame
from relidar.core.geometry import make_transform, rotation_z
from relidar.training.pairs import assign_cameras, build_pairs, sample_bilinear, superpixel_ids

# lidar (x forward, y left, z up) -> camera optical (x right, y down, z forward)
R_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])


def camera(name: str, yaw_deg: float, image: np.ndarray | None = None) -> Camera:
    """A 100x100 camera at the lidar origin looking along lidar yaw ``yaw_deg``."""
    T_lidar_from_cam_axes = make_transform(rotation_z(np.deg2rad(yaw_deg)), np.zeros(3))
    T = make_transform(R_CAM_FROM_LIDAR, np.zeros(3)) @ np.linalg.inv(T_lidar_from_cam_axes)
    img = image if image is not None else np.zeros((100, 100, 3), np.uint8)
    return Camera(name, img, K, T)


def test_bilinear_matches_hand_values():
    grid = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])[..., None]  # h=2, w=3 over a 20x30 image
    uv = np.array(
        [
            [5.0, 5.0],    # centre of cell (0,0)
            [25.0, 15.0],  # centre of cell (1,2)
            [10.0, 5.0],   # halfway between (0,0) and (0,1)
            [12.5, 10.0],  # x = 12.5*3/30-0.5 = 0.75, y = 10*2/20-0.5 = 0.5
            [1.0, 1.0],    # outside the centres: clamped to cell (0,0)
            [29.9, 19.9],  # clamped to cell (1,2)
        ]
    )
    got = sample_bilinear(grid, uv, image_height=20, image_width=30)[:, 0]
    top = 0.25 * 0 + 0.75 * 1
    bottom = 0.25 * 3 + 0.75 * 4
    expected = [0.0, 5.0, 0.5, 0.5 * top + 0.5 * bottom, 0.0, 5.0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bilinear_on_single_cell_grid_is_constant():
    grid = np.full((1, 1, 4), 0.5)
    got = sample_bilinear(grid, np.array([[0.0, 0.0], [9.0, 3.0]]), 4, 10)
    np.testing.assert_allclose(got, 0.5)


def test_each_point_gets_its_most_central_camera():
    points = np.array(
        [
            [10.0, 0.0, 0.0, 0.0],                                  # dead ahead of camera "front"
            [10.0 * np.cos(0.6), 10.0 * np.sin(0.6), 0.0, 0.0],     # ~34 deg left: centre of "left"
            [10.0 * np.cos(0.25), 10.0 * np.sin(0.25), 0.0, 0.0],   # ~14 deg: nearer front's centre (0.25 < 0.35)
            [-10.0, 0.0, 0.0, 0.0],                                 # behind both
        ],
        dtype=np.float32,
    )
    frame = Frame("f", points, cameras=[camera("front", 0.0), camera("left", np.rad2deg(0.6))])
    pix = assign_cameras(frame)
    assert pix.point_index.tolist() == [0, 1, 2]
    assert pix.camera_index.tolist() == [0, 1, 0]
    for p, c, uv in zip(pix.point_index, pix.camera_index, pix.uv):
        np.testing.assert_allclose(uv, frame.cameras[c].project(points[p : p + 1, :3]).uv[0], atol=1e-5)
    np.testing.assert_allclose(pix.uv[0], [50.0, 50.0], atol=1e-4)


def test_build_pairs_samples_each_camera_grid_and_normalises():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform([5, -4, -1, 0], [20, 4, 1, 1], size=(200, 4)),
                             rng.uniform([-20, -4, -1, 0], [-5, 4, 1, 1], size=(50, 4))]).astype(np.float32)
    frame = Frame("f", points, cameras=[camera("front", 0.0), camera("left", 60.0)])
    grids = [rng.normal(size=(4, 5, 8)).astype(np.float32), rng.normal(size=(3, 3, 8)).astype(np.float32)]
    pairs = build_pairs(frame, grids)
    assert len(pairs) > 100 and pairs.features.shape == (len(pairs), 8)
    assert set(pairs.point_index.tolist()) <= set(range(200))  # points behind the cameras are not paired
    for i in range(0, len(pairs), 17):
        c = pairs.camera_index[i]
        raw = sample_bilinear(grids[c], pairs.uv[i : i + 1], 100, 100)[0]
        np.testing.assert_allclose(pairs.features[i], raw / np.linalg.norm(raw), atol=1e-5)


def test_build_pairs_rejects_wrong_grid_count():
    frame = Frame("f", np.zeros((3, 4), np.float32), cameras=[camera("front", 0.0)])
    with pytest.raises(ValueError, match="1 cameras"):
        build_pairs(frame, [])


def test_superpixels_follow_image_regions_and_are_unique_per_frame():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = (255, 0, 0)
    img[:, 50:] = (0, 0, 255)
    # Points at pixel u = 25 and u = 75 of both cameras (y offsets of -2.5 m / +2.5 m at 10 m depth).
    front = np.array([[10.0, 2.5, 0.0, 0.0], [10.0, -2.5, 0.0, 0.0]])
    yaw = np.deg2rad(90.0)
    left = np.array([[10 * np.cos(yaw) - y * np.sin(yaw), 10 * np.sin(yaw) + y * np.cos(yaw), 0.0, 0.0] for y in (2.5, -2.5)])
    behind = np.array([[-10.0, -3.0, 0.0, 0.0]])
    frame = Frame("f", np.concatenate([front, left, behind]).astype(np.float32),
                  cameras=[camera("front", 0.0, img), camera("left", 90.0, img.copy())])
    pix = assign_cameras(frame)
    assert pix.camera_index.tolist() == [0, 0, 1, 1]
    ids = superpixel_ids(frame, pix, n_segments=16, compactness=1.0)
    assert ids[4] == -1
    assert ids[0] != ids[1] and ids[2] != ids[3]        # red vs blue half of one image
    assert not {ids[0], ids[1]} & {ids[2], ids[3]}      # other camera: other ids
    assert ids.dtype == np.int32 and ids.min() >= -1
    from skimage.segmentation import slic

    labels = slic(img, n_segments=16, compactness=1.0, start_label=0, channel_axis=-1)
    offset = int(labels.max()) + 1
    uv = np.floor(pix.uv).astype(int)
    assert ids[0] == labels[uv[0, 1], uv[0, 0]] and ids[1] == labels[uv[1, 1], uv[1, 0]]
    assert ids[2] == labels[uv[2, 1], uv[2, 0]] + offset and ids[3] == labels[uv[3, 1], uv[3, 0]] + offset
