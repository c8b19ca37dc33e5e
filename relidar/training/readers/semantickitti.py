"""SemanticKITTI: ``sequences/XX/{velodyne,labels,image_2,calib.txt}`` (+ optional ``poses.txt``).

Labels are the lower 16 bits of each ``.label`` uint32 (the upper 16 are the instance id), mapped by
the benchmark's standard learning map to its 19 evaluation classes; everything else is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relidar.core.frame import Camera, Frame
from relidar.core.geometry import invert_transform
from relidar.core.scan_io import read_scan
from relidar.core.vocabulary import SEMANTIC_KITTI_CLASSES
from relidar.training.readers.base import DatasetError, Reader
from relidar.training.readers.calibration import kitti_camera, kitti_rect_from_velo, read_kitti_calib
from relidar.training.readers.kitti_object import read_rgb

# The benchmark's 19 evaluation classes, in its order: the one list in relidar.core.vocabulary.
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SEMANTIC_KITTI_CLASSES)

# Raw SemanticKITTI label id -> evaluation class name (moving-* ids fold into their static class).
RAW_TO_CLASS: dict[int, str] = {
    10: "car", 11: "bicycle", 13: "other-vehicle", 15: "motorcycle", 16: "other-vehicle",
    18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist",
    40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence",
    60: "road", 70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign",
    252: "car", 253: "bicyclist", 254: "person", 255: "motorcyclist", 256: "other-vehicle",
    257: "other-vehicle", 258: "truck", 259: "other-vehicle",
}  # fmt: skip

LAYOUT = "a SemanticKITTI root with sequences/XX/{velodyne/, calib.txt, image_2/, labels/}"


def learning_map(ignore_index: int) -> np.ndarray:
    """Lookup table over all 2**16 raw ids -> class index or ``ignore_index``."""
    lut = np.full(1 << 16, ignore_index, dtype=np.int64)
    for raw, name in RAW_TO_CLASS.items():
        lut[raw] = CLASS_NAMES.index(name)
    return lut


@dataclass(frozen=True)
class _Scan:
    sequence: str
    stem: str
    index_in_sequence: int


class SemanticKittiReader(Reader):
    """Scans of the selected sequences, in order, with camera ``image_2`` and 19-class labels."""

    name = "semantickitti"

    def __init__(self, path: Path, *, sequences: list[str] | str | None = None, with_images: bool = True) -> None:
        """``sequences``: names such as ``["08"]`` (ints are zero-padded); default: every sequence with
        scans. ``with_images=False`` yields frames without cameras (e.g. the test split has no labels
        and some copies lack images)."""
        super().__init__(path)
        if (self.root / "sequences").is_dir():
            seq_root = self.root / "sequences"
            available = sorted(d.name for d in seq_root.iterdir() if (d / "velodyne").is_dir())
        elif (self.root / "velodyne").is_dir():  # one sequence folder given directly
            seq_root = self.root.parent
            available = [self.root.name]
        else:
            raise DatasetError(f"no sequences/ folder in {self.root}; expected {LAYOUT}")
        if sequences is None:
            chosen = available
        else:
            wanted = [sequences] if isinstance(sequences, (str, int)) else list(sequences)
            chosen = [f"{int(s):02d}" if str(s).isdigit() else str(s) for s in wanted]
            missing = [s for s in chosen if s not in available]
            if missing:
                raise DatasetError(
                    f"sequence(s) {', '.join(missing)} not found in {seq_root} (available: {', '.join(available) or 'none'})"
                )
        if not chosen:
            raise DatasetError(f"no sequence with a velodyne/ folder in {seq_root}; expected {LAYOUT}")
        self._seq_root = seq_root
        self._with_images = with_images
        self._scans: list[_Scan] = []
        self._calib: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._labelled: dict[str, bool] = {}
        for seq in chosen:
            d = seq_root / seq
            calib_path = d / "calib.txt"
            if not calib_path.is_file():
                raise DatasetError(f"no calib.txt in {d}; expected {LAYOUT}")
            self._calib[seq] = kitti_camera(read_kitti_calib(calib_path), 2, str(calib_path))
            if with_images and not (d / "image_2").is_dir():
                raise DatasetError(f"no image_2/ folder in {d}; expected {LAYOUT} (or pass with_images=False)")
            self._labelled[seq] = (d / "labels").is_dir()
            stems = sorted(p.stem for p in (d / "velodyne").glob("*.bin"))
            for k, stem in enumerate(stems):
                self._scans.append(_Scan(seq, stem, k))
                self._frame_ids.append(f"{seq}/{stem}")
        if not self._scans:
            raise DatasetError(f"no .bin scans under {seq_root}/{{{','.join(chosen)}}}/velodyne; expected {LAYOUT}")
        self._lut = learning_map(self.ignore_index)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES if any(self._labelled.values()) else ()

    def lidar_pose(self, index: int) -> np.ndarray | None:
        """4x4 pose of scan ``index``'s lidar in its sequence's first lidar frame, from poses.txt
        (camera-0 poses, conjugated by ``Tr``); None where the sequence has no poses.txt."""
        scan = self._scans[index]
        poses_path = self._seq_root / scan.sequence / "poses.txt"
        if not poses_path.is_file():
            return None
        rows = np.loadtxt(poses_path, dtype=np.float64, ndmin=2)
        if rows.shape[1] != 12 or scan.index_in_sequence >= len(rows):
            raise DatasetError(
                f"{poses_path}: expected one row of 12 numbers per scan, got shape {rows.shape} for scan {scan.index_in_sequence}"
            )
        pose = np.eye(4)
        pose[:3, :] = rows[scan.index_in_sequence].reshape(3, 4)
        calib_path = self._seq_root / scan.sequence / "calib.txt"
        Tr = kitti_rect_from_velo(read_kitti_calib(calib_path), str(calib_path))
        return invert_transform(Tr) @ pose @ Tr

    def _load(self, index: int) -> Frame:
        scan = self._scans[index]
        d = self._seq_root / scan.sequence
        points = read_scan(d / "velodyne" / f"{scan.stem}.bin")
        labels = None
        if self._labelled[scan.sequence]:
            label_path = d / "labels" / f"{scan.stem}.label"
            if not label_path.is_file():
                raise DatasetError(f"{label_path} missing for scan {scan.stem} of sequence {scan.sequence}")
            raw = np.fromfile(label_path, dtype=np.uint32)
            if raw.shape[0] != points.shape[0]:
                raise DatasetError(f"{raw.shape[0]} labels for {points.shape[0]} points", path=label_path)
            labels = self._lut[raw & 0xFFFF]
        cameras = []
        if self._with_images:
            K, T = self._calib[scan.sequence]
            image = read_rgb(d / "image_2" / f"{scan.stem}.png")
            cameras.append(Camera(name="image_2", image=image, K=K, T_cam_from_lidar=T))
        return Frame(
            frame_id=self._frame_ids[index],
            points=points,
            cameras=cameras,
            labels=labels,
            class_names=CLASS_NAMES if labels is not None else (),
            ignore_index=self.ignore_index,
        )
