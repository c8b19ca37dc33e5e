"""Lidar -> pixel projection: hand-computed pixels, masks, and the real KITTI frame's pedestrian."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.frame import Camera
from relidar.core.geometry import make_transform
from relidar.training.readers import open_dataset
from relidar.training.readers.calibration import read_kitti_calib, split_projection

# lidar (x forward, y left, z up) -> camera optical (x right, y down, z forward)
R_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
K = np.array([[100.0, 0.0, 50.0], [0.0, 120.0, 40.0], [0.0, 0.0, 1.0]])
T = make_transform(R_CAM_FROM_LIDAR, [0.1, -0.2, 0.3])


def _camera(width: int = 100, height: int = 80) -> Camera:
    return Camera("test", np.zeros((height, width, 3), np.uint8), K, T)


def test_hand_computed_pixels() -> None:
    pts = np.array([[10.0, 0.0, 0.0], [5.0, 1.0, -0.5]])
    proj = _camera().project(pts)
    # (10,0,0) -> camera (0.1, -0.2, 10.3); (5,1,-0.5) -> camera (-0.9, 0.3, 5.3)
    expected_uv = np.array([[50 + 100 * 0.1 / 10.3, 40 + 120 * -0.2 / 10.3], [50 + 100 * -0.9 / 5.3, 40 + 120 * 0.3 / 5.3]])
    np.testing.assert_allclose(proj.uv, expected_uv, rtol=1e-6)
    np.testing.assert_allclose(proj.depth, [10.3, 5.3], rtol=1e-6)
    assert proj.mask.tolist() == [True, True]


def test_behind_too_close_and_outside_are_masked() -> None:
    pts = np.array(
        [
            [-5.0, 0.0, 0.0],  # behind: camera z = -4.7
            [-0.25, 0.0, 0.0],  # in front but closer than min_depth: z = 0.05
            [2.0, -5.0, 0.0],  # right of the image: u = 50 + 100 * 5.1 / 2.3
            [2.0, 0.0, 3.0],  # above the image: v = 40 - 120 * 3.2 / 2.3
            [3.0, 0.0, 0.0],  # inside
        ]
    )
    proj = _camera().project(pts)
    assert proj.mask.tolist() == [False, False, False, False, True]
    assert proj.uv[2, 0] == pytest.approx(50 + 100 * 5.1 / 2.3, rel=1e-6)


def test_image_border_is_half_open() -> None:
    cam = _camera(width=100, height=80)
    # camera-frame points at depth 1 landing exactly on u=0 and u=100 (the first column and one past the last)
    T_id = np.eye(4)
    edge = Camera("edge", cam.image, K, T_id)
    pts = np.array([[-0.5, 0.0, 1.0], [0.5, 0.0, 1.0]])
    proj = edge.project(pts)
    np.testing.assert_allclose(proj.uv[:, 0], [0.0, 100.0])
    assert proj.mask.tolist() == [True, False]


def test_split_projection_recovers_kitti_p2() -> None:
    P = np.array([[700.0, 0.0, 600.0, 45.0], [0.0, 700.0, 180.0, -0.3], [0.0, 0.0, 1.0, 0.005]])
    Kp, T_cam_from_rect = split_projection(P)
    np.testing.assert_allclose(Kp @ T_cam_from_rect[:3], P, atol=1e-12)
    np.testing.assert_allclose(T_cam_from_rect[:3, :3], np.eye(3))


def test_kitti_pedestrian_points_project_inside_its_box(kitti_frame_dir) -> None:
    reader = open_dataset(kitti_frame_dir)
    frame = reader[0]
    cam = frame.cameras[0]
    peds = [o for o in reader.objects(0) if o.type == "Pedestrian"]
    assert len(peds) == 1
    ped = peds[0]
    inside = reader.points_in_object(0, frame.points, ped)
    assert inside.sum() >= 100, "the pedestrian at 8 m should hold a few hundred lidar returns"
    proj = cam.project(frame.points[inside, :3])
    assert proj.mask.all()
    left, top, right, bottom = ped.bbox
    uv = proj.uv
    in_2d = (uv[:, 0] >= left) & (uv[:, 0] <= right) & (uv[:, 1] >= top) & (uv[:, 1] <= bottom)
    assert in_2d.mean() >= 0.95


def test_kitti_camera_matches_the_classic_p2_r0_tr_formula(kitti_frame_dir) -> None:
    frame = open_dataset(kitti_frame_dir)[0]
    cam = frame.cameras[0]
    c = read_kitti_calib(kitti_frame_dir / "calib.txt")
    R0 = np.eye(4)
    R0[:3, :3] = c["R0_rect"].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3] = c["Tr_velo_to_cam"].reshape(3, 4)
    X = np.c_[frame.points[:, :3].astype(np.float64), np.ones(frame.num_points)]
    p = (c["P2"].reshape(3, 4) @ R0 @ Tr @ X.T).T
    proj = cam.project(frame.points[:, :3])
    ref_uv = p[:, :2] / p[:, 2:3]
    m = proj.mask
    assert m.sum() > 15000
    np.testing.assert_allclose(proj.uv[m], ref_uv[m], atol=1e-3)
    np.testing.assert_allclose(proj.depth[m], p[m, 2], rtol=1e-5, atol=1e-4)
