"""Rigid transforms and pinhole projection, in numpy (the node and the readers share them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraProjection:
    """Where points land in one image.

    ``uv`` [N,2] float32 are pixel coordinates (u right, v down, pixel centres at integer+0.5
    convention-free: u in [0, width) is inside), ``depth`` [N] the camera-frame z, and ``mask`` [N]
    is true for points in front of the camera (depth > min_depth) whose pixel is inside the image.
    """

    uv: np.ndarray
    depth: np.ndarray
    mask: np.ndarray


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a 3-vector translation."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform, exact for rotations (no general matrix inverse)."""
    R = T[:3, :3]
    t = T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def transform_points(T: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to [N,3] points; computed in float64, returned as float64."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ T[:3, :3].T + T[:3, 3]


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quaternion_to_rotation(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion in (w, x, y, z) order."""
    q = np.array([w, x, y, z], dtype=np.float64)
    n = np.linalg.norm(q)
    if n == 0:
        raise ValueError("quaternion of zero norm has no rotation")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def project_points(
    xyz: np.ndarray,
    K: np.ndarray,
    T_cam_from_lidar: np.ndarray,
    width: int,
    height: int,
    min_depth: float = 0.1,
) -> CameraProjection:
    """Project lidar-frame points [N,3] through a pinhole camera."""
    cam = transform_points(T_cam_from_lidar, np.asarray(xyz)[:, :3])
    depth = cam[:, 2]
    in_front = depth > min_depth
    safe = np.where(in_front, depth, 1.0)
    pix = cam @ np.asarray(K, dtype=np.float64).T
    uv = pix[:, :2] / safe[:, None]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return CameraProjection(uv=uv.astype(np.float32), depth=depth.astype(np.float32), mask=in_front & inside)
