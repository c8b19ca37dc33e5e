"""Camera calibration sources: KITTI ``calib.txt`` files, a rig calibration YAML, and a tf tree.

Every source ends in the same pair the :class:`~relidar.core.frame.Camera` takes: a 3x3 ``K`` and a 4x4
``T_cam_from_lidar``.

KITTI's projection matrices are ``P = K [I | t]``: the rectified camera ``i`` shares the rotation of
rectified camera 0 and sits ``t`` away from it (``t = K^-1 P[:, 3]``; about 6 cm for camera 2). So the
lidar-to-camera-2 transform is ``[I | t] @ R0_rect @ Tr_velo_to_cam``, and ``K`` is ``P[:, :3]``.

Rig calibration YAML (for bags without ``/tf_static``, or to override it)::

    lidar_topic: /lidar/points          # optional; the bag's only PointCloud2 topic otherwise
    cameras:
      front:                             # the camera's name in frames
        topic: /camera/front/image_raw   # sensor_msgs/Image or CompressedImage
        camera_info_topic: /camera/front/camera_info   # optional; default: beside the image topic
        T_cam_from_lidar:                # 4x4, lidar frame -> camera optical frame (z forward)
          - [0, -1, 0, 0]
          - [0, 0, -1, 0]
          - [1, 0, 0, 0]
          - [0, 0, 0, 1]
        K: [[500, 0, 320], [0, 500, 240], [0, 0, 1]]   # optional; CameraInfo's K otherwise
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from pydantic import field_validator

from relidar.core.config import ConfigError, StrictModel, load_config
from relidar.core.geometry import invert_transform, make_transform
from relidar.training.readers.base import DatasetError


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """All ``KEY: numbers`` rows of a KITTI calibration file, as flat float64 arrays."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError("KITTI calibration file not found", path=p)
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DatasetError(f"{p}:{lineno}: expected 'KEY: numbers', got {line[:60]!r}")
        key, values = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as exc:
            raise DatasetError(f"{p}:{lineno}: {key.strip()} holds a non-number ({exc})") from exc
    return out


def _matrix(calib: dict[str, np.ndarray], keys: tuple[str, ...], shape: tuple[int, int], source: str) -> np.ndarray:
    for k in keys:
        if k in calib:
            v = calib[k]
            if v.size != shape[0] * shape[1]:
                raise DatasetError(f"{source}: {k} has {v.size} numbers, expected {shape[0] * shape[1]}")
            return v.reshape(shape)
    raise DatasetError(f"{source}: no {' or '.join(keys)} row (rows present: {', '.join(calib) or 'none'})")


def split_projection(P: np.ndarray, source: str = "projection") -> tuple[np.ndarray, np.ndarray]:
    """``P = K [I | t]`` (3x4) -> (K 3x3, 4x4 ``[I | t]``, the camera from the rectified reference frame)."""
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    K = P[:, :3].copy()
    if not (np.allclose(K[2], [0.0, 0.0, 1.0]) and abs(K[1, 0]) < 1e-9 and K[0, 0] > 0 and K[1, 1] > 0):
        raise DatasetError(f"{source}: the left 3x3 of the projection matrix is not a pinhole K: {K.tolist()}")
    t = np.linalg.solve(K, P[:, 3])
    return K, make_transform(np.eye(3), t)


def kitti_camera(calib: dict[str, np.ndarray], camera: int = 2, source: str = "calib.txt") -> tuple[np.ndarray, np.ndarray]:
    """(K, T_cam_from_velo) of KITTI camera ``camera`` from an object (``R0_rect``, ``Tr_velo_to_cam``)
    or odometry (``Tr``, already rectified) calibration."""
    K, T_cam_from_rect = split_projection(_matrix(calib, (f"P{camera}",), (3, 4), source), f"{source}: P{camera}")
    return K, T_cam_from_rect @ kitti_rect_from_velo(calib, source)


def kitti_rect_from_velo(calib: dict[str, np.ndarray], source: str = "calib.txt") -> np.ndarray:
    """4x4 lidar -> rectified camera-0 frame (the frame of KITTI's label_2 boxes)."""
    Tr = np.eye(4)
    Tr[:3, :] = _matrix(calib, ("Tr_velo_to_cam", "Tr_velo_cam", "Tr"), (3, 4), source)
    R0 = np.eye(4)
    if "R0_rect" in calib or "R_rect" in calib:
        R0[:3, :3] = _matrix(calib, ("R0_rect", "R_rect"), (3, 3), source)
    return R0 @ Tr


# --- rig calibration YAML ---------------------------------------------------------------------


class CameraCalibration(StrictModel):
    """One camera of a rig calibration file (see the module docstring for the schema)."""

    topic: str
    camera_info_topic: str | None = None
    T_cam_from_lidar: list[list[float]]
    K: list[list[float]] | None = None

    @field_validator("T_cam_from_lidar")
    @classmethod
    def _is_rigid_4x4(cls, v: list[list[float]]) -> list[list[float]]:
        T = np.asarray(v, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"must be a 4x4 matrix (4 rows of 4 numbers), got shape {T.shape}")
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise ValueError("must be a rigid transform: orthonormal rotation and last row [0, 0, 0, 1]")
        return v

    @field_validator("K")
    @classmethod
    def _is_3x3(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        if v is not None and np.asarray(v).shape != (3, 3):
            raise ValueError(f"must be a 3x3 matrix, got shape {np.asarray(v).shape}")
        return v


class RigCalibration(StrictModel):
    lidar_topic: str | None = None
    cameras: dict[str, CameraCalibration]


def load_rig_calibration(path: str | Path) -> RigCalibration:
    try:
        return load_config(path, RigCalibration)
    except ConfigError as exc:
        raise DatasetError(f"calibration YAML: {exc}") from exc


# --- tf tree ----------------------------------------------------------------------------------


class FrameGraph:
    """Static transforms between named frames (``/tf_static``); any two connected frames can be chained."""

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = {}

    def add(self, parent: str, child: str, T_parent_from_child: np.ndarray) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        self._edges.setdefault(parent, {})[child] = T_parent_from_child
        self._edges.setdefault(child, {})[parent] = invert_transform(T_parent_from_child)

    @property
    def frames(self) -> list[str]:
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """4x4 ``T_target_from_source`` through the tree (breadth-first: the shortest chain)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        for f in (target, source):
            if f not in self._edges:
                raise DatasetError(
                    f"frame {f!r} is not in the tf tree (frames: {', '.join(self.frames) or 'none'}); "
                    "publish it on /tf_static or pass a calibration YAML"
                )
        # T_node_from_source for every node reached from source.
        reached = {source: np.eye(4)}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for nxt, T_node_from_nxt in self._edges[node].items():
                if nxt not in reached:
                    reached[nxt] = invert_transform(T_node_from_nxt) @ reached[node]
                    queue.append(nxt)
        if target not in reached:
            raise DatasetError(
                f"no chain of /tf_static transforms links {source!r} to {target!r} (frames: {', '.join(self.frames)}); "
                "publish the missing link or pass a calibration YAML"
            )
        return reached[target]
