"""KITTI 3D object frames: a folder with ``velodyne/``, ``image_2/``, ``calib/`` (and ``label_2/``), or one
frame laid out flat (``velodyne.bin``, ``image_2.png``, ``calib.txt``, ``label_2.txt``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from relidar.core.frame import Camera, Frame
from relidar.core.geometry import transform_points
from relidar.core.scan_io import read_scan
from relidar.training.readers.base import DatasetError, Reader, require_dir
from relidar.training.readers.calibration import kitti_camera, kitti_rect_from_velo, read_kitti_calib

FOLDER_LAYOUT = "a KITTI object folder with velodyne/, image_2/, calib/ (and optionally label_2/)"
FLAT_LAYOUT = "a KITTI single-frame folder with velodyne.bin, image_2.png, calib.txt (and optionally label_2.txt)"


@dataclass(frozen=True)
class KittiObject:
    """One row of a KITTI ``label_2`` file. Box geometry is in the rectified camera-0 frame
    (x right, y down, z forward); ``location`` is the bottom centre of the box."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]  # left, top, right, bottom (pixels in image_2)
    dimensions: tuple[float, float, float]  # height, width, length (metres)
    location: tuple[float, float, float]
    rotation_y: float

    def contains(self, xyz_rect: np.ndarray) -> np.ndarray:
        """[N] bool: which rectified-camera-frame points [N,3] lie inside the 3D box."""
        h, w, l = self.dimensions
        c, s = np.cos(self.rotation_y), np.sin(self.rotation_y)
        d = np.asarray(xyz_rect, dtype=np.float64)[:, :3] - np.asarray(self.location)
        # Object frame: x along the length, z along the width, y down; box from y=-h to y=0.
        x = c * d[:, 0] - s * d[:, 2]
        z = s * d[:, 0] + c * d[:, 2]
        y = d[:, 1]
        return (np.abs(x) <= l / 2) & (np.abs(z) <= w / 2) & (y <= 0) & (y >= -h)


def read_kitti_labels(path: Path) -> list[KittiObject]:
    objects = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) < 15:
            raise DatasetError(f"{path}:{lineno}: a label_2 row has 15 fields, got {len(f)}")
        try:
            v = [float(x) for x in f[1:15]]
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: {exc}") from exc
        objects.append(
            KittiObject(
                type=f[0],
                truncated=v[0],
                occluded=int(v[1]),
                alpha=v[2],
                bbox=(v[3], v[4], v[5], v[6]),
                dimensions=(v[7], v[8], v[9]),
                location=(v[10], v[11], v[12]),
                rotation_y=v[13],
            )
        )
    return objects


@dataclass(frozen=True)
class _FramePaths:
    scan: Path
    image: Path
    calib: Path
    label: Path | None


def read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError("image not found", path=path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated or not an image
        raise DatasetError(f"not a readable image ({exc})", path=path,
                           hint="the file is truncated or corrupt; copy it again") from exc


class KittiObjectReader(Reader):
    """Frames of the KITTI object benchmark; camera ``image_2``; boxes through :meth:`objects`.
    KITTI object frames carry no per-point labels."""

    name = "kitti_object"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        root = self.root
        if (root / "velodyne.bin").is_file():
            for n in ("image_2.png", "calib.txt"):
                if not (root / n).is_file():
                    raise DatasetError(f"no {n} in {root}; expected {FLAT_LAYOUT}")
            label = root / "label_2.txt"
            self._paths = [_FramePaths(root / "velodyne.bin", root / "image_2.png", root / "calib.txt", label if label.is_file() else None)]
            self._frame_ids = [root.name]
            return
        velodyne = require_dir(root / "velodyne", FOLDER_LAYOUT)
        image_dir = require_dir(root / "image_2", FOLDER_LAYOUT)
        calib_dir = require_dir(root / "calib", FOLDER_LAYOUT)
        label_dir = root / "label_2"
        self._paths = []
        for scan in sorted(velodyne.glob("*.bin")):
            fid = scan.stem
            image = image_dir / f"{fid}.png"
            calib = calib_dir / f"{fid}.txt"
            for needed in (image, calib):
                if not needed.is_file():
                    raise DatasetError(f"{needed} missing for scan {scan}; expected {FOLDER_LAYOUT} with one file per frame")
            label = label_dir / f"{fid}.txt"
            self._paths.append(_FramePaths(scan, image, calib, label if label.is_file() else None))
            self._frame_ids.append(fid)
        if not self._paths:
            raise DatasetError(f"no .bin scans in {velodyne}; expected {FOLDER_LAYOUT}")

    def calibration(self, index: int) -> dict[str, np.ndarray]:
        return read_kitti_calib(self._paths[index].calib)

    def objects(self, index: int) -> list[KittiObject]:
        """The frame's label_2 boxes (empty where the frame has no label file, e.g. the test split)."""
        label = self._paths[index].label
        return read_kitti_labels(label) if label is not None else []

    def rect_from_lidar(self, index: int) -> np.ndarray:
        """4x4 lidar -> rectified camera-0 frame, where :meth:`objects` boxes live."""
        p = self._paths[index]
        return kitti_rect_from_velo(read_kitti_calib(p.calib), str(p.calib))

    def points_in_object(self, index: int, points: np.ndarray, obj: KittiObject) -> np.ndarray:
        """[N] bool: which lidar points lie inside ``obj``'s 3D box."""
        return obj.contains(transform_points(self.rect_from_lidar(index), points[:, :3]))

    def _load(self, index: int) -> Frame:
        p = self._paths[index]
        K, T = kitti_camera(read_kitti_calib(p.calib), 2, str(p.calib))
        camera = Camera(name="image_2", image=read_rgb(p.image), K=K, T_cam_from_lidar=T)
        return Frame(frame_id=self._frame_ids[index], points=read_scan(p.scan), cameras=[camera])
