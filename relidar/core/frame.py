"""The unit of data every reader yields and every consumer takes: one lidar sweep with its cameras."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from relidar.core.geometry import CameraProjection, project_points


@dataclass(frozen=True)
class Camera:
    """One calibrated camera image paired with a sweep.

    ``K`` is the 3x3 pinhole intrinsic matrix of ``image`` (pixels, u right, v down) and
    ``T_cam_from_lidar`` the 4x4 rigid transform taking lidar-frame points into the camera's
    optical frame (z forward), already corrected for ego motion between the two timestamps.
    """

    name: str
    image: np.ndarray
    K: np.ndarray
    T_cam_from_lidar: np.ndarray

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"camera {self.name!r}: image must be HxWx3 uint8 RGB, got "
                f"shape {self.image.shape} dtype {self.image.dtype}"
            )
        if np.shape(self.K) != (3, 3):
            raise ValueError(f"camera {self.name!r}: K must be 3x3, got {np.shape(self.K)}")
        if np.shape(self.T_cam_from_lidar) != (4, 4):
            raise ValueError(
                f"camera {self.name!r}: T_cam_from_lidar must be 4x4, got {np.shape(self.T_cam_from_lidar)}"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def project(self, xyz: np.ndarray, min_depth: float = 0.1) -> CameraProjection:
        """Pixels of lidar-frame points ``xyz`` [N,3] in this camera."""
        return project_points(xyz, self.K, self.T_cam_from_lidar, self.width, self.height, min_depth)


@dataclass
class Frame:
    """One lidar sweep.

    ``points`` is [N,4] float32 (x, y, z, intensity) in the lidar frame, intensity scaled to 0..1
    (readers convert from their format's range: nuScenes 0..255, KITTI already 0..1). ``labels`` is [N] int64 in
    ``class_names`` order with ``ignore_index`` for unlabelled points, or None for unlabelled data.
    """

    frame_id: str
    points: np.ndarray
    cameras: list[Camera] = field(default_factory=list)
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    ignore_index: int = -1
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        pts = np.asarray(self.points)
        if pts.ndim != 2 or pts.shape[1] != 4:
            raise ValueError(f"frame {self.frame_id!r}: points must be [N,4] (x,y,z,intensity), got {pts.shape}")
        self.points = np.ascontiguousarray(pts, dtype=np.float32)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (len(self.points),):
                raise ValueError(
                    f"frame {self.frame_id!r}: labels must be [N]={len(self.points)}, got {labels.shape}"
                )
            self.labels = labels.astype(np.int64, copy=False)
            if not self.class_names:
                raise ValueError(f"frame {self.frame_id!r}: labels given without class_names")

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def finite(self) -> tuple["Frame", int]:
        """(this frame without the points that have a NaN/inf coordinate or intensity, how many went).

        What a training cache stores: a point without a finite position has no voxel and no pixel, and
        a NaN intensity would turn its whole voxel's mean feature into NaN. Labelling (the Segmenter)
        keeps such points and marks them instead, since its output must have one row per input point;
        the cache's pairs index the points that remain, so dropping them before pairing is exact."""
        keep = np.isfinite(self.points).all(axis=1)
        dropped = int(len(keep) - keep.sum())
        if not dropped:
            return self, 0
        labels = None if self.labels is None else self.labels[keep]
        return replace(self, points=self.points[keep], labels=labels), dropped
