"""nuScenes keyframes through ``nuscenes-devkit``: LIDAR_TOP sweeps, lidarseg labels on the 16
evaluation classes, and the six cameras with ego-motion-corrected lidar -> camera transforms.

Lidar and camera stamps of one keyframe differ by up to ~50 ms while the car moves ~1 m, so the
transform goes through the global frame with each sensor's own ego pose:
lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relidar.core.frame import Camera, Frame
from relidar.core.geometry import invert_transform, make_transform, quaternion_to_rotation
from relidar.core.vocabulary import NUSCENES_CLASSES
from relidar.training.readers.base import DatasetError, Reader
from relidar.training.readers.kitti_object import read_rgb

# The lidarseg benchmark's 16 evaluation classes, in its order: the one list in relidar.core.vocabulary.
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in NUSCENES_CLASSES)

# nuScenes-lidarseg general class name -> evaluation class; names not listed are ignored
# (noise, animal, personal mobility, stroller, wheelchair, debris, pushable_pullable, bicycle_rack,
# emergency vehicles, static.other, vehicle.ego).
GENERAL_TO_CLASS: dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.vegetation": "vegetation",
}

CAMERAS: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
LIDAR = "LIDAR_TOP"
LAYOUT = "a nuScenes root with v1.0-*/ tables (sample.json, sample_data.json, ...), samples/ and, for labels, lidarseg/"


# Every 14th scene of the devkit's train split (50 of 700) is held out of training for choosing settings.
SELECT_EVERY = 14


def derived_splits(splits: dict[str, list[str]]) -> dict[str, list[str]]:
    """relidar's two splits of the devkit's ``train`` scenes: ``train_select``, every ``SELECT_EVERY``-th in
    the devkit's order (the scenes ``relidar compare`` chooses each loss's setting on), and ``train_fit``,
    the others (what it trains on); so the official ``val`` scenes score only settings chosen without them."""
    train = list(splits["train"])
    return {"train_select": train[::SELECT_EVERY], "train_fit": [s for i, s in enumerate(train) if i % SELECT_EVERY]}


def _pose(record: dict[str, Any]) -> np.ndarray:
    """4x4 from a calibrated_sensor or ego_pose record (translation xyz, rotation quaternion wxyz)."""
    return make_transform(quaternion_to_rotation(*record["rotation"]), record["translation"])


class NuScenesReader(Reader):
    """Keyframes (samples) of the selected scenes in scene and time order; frame ids are sample tokens."""

    name = "nuscenes"

    def __init__(
        self,
        path: Path,
        *,
        version: str | None = None,
        cameras: list[str] | None = None,
        scenes: list[str] | None = None,
        split: str | None = None,
        with_labels: bool | None = None,
    ) -> None:
        """``version``: table folder (default: the only ``v1.0-*`` one present). ``cameras``: channels
        (default: all six). ``scenes``: scene names to keep; ``split``: a devkit split name
        (``train``, ``val``, ``mini_train``...; relidar's ``train_fit`` / ``train_select``, see
        :func:`derived_splits`). ``with_labels``: default when lidarseg is present."""
        super().__init__(path)
        versions = sorted(d.name for d in self.root.iterdir() if d.is_dir() and d.name.startswith("v1.0-")) if self.root.is_dir() else []
        if version is None:
            if len(versions) != 1:
                raise DatasetError(
                    f"{self.root}: " + (
                        f"several table folders ({', '.join(versions)}); pass version=" if versions
                        else f"no v1.0-*/ table folder; expected {LAYOUT}")
                )
            version = versions[0]
        table_dir = self.root / version
        if not table_dir.is_dir():
            raise DatasetError(f"no {version}/ folder in {self.root} (present: {', '.join(versions) or 'none'}); expected {LAYOUT}")
        for table in ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor", "scene"):
            if not (table_dir / f"{table}.json").is_file():
                raise DatasetError(f"no {table}.json in {table_dir}; expected {LAYOUT}")
        has_lidarseg = (table_dir / "lidarseg.json").is_file()
        if with_labels and not has_lidarseg:
            raise DatasetError(f"with_labels=True but no lidarseg.json in {table_dir}; install nuScenes-lidarseg into {self.root}")
        self._with_labels = has_lidarseg if with_labels is None else with_labels

        from nuscenes.nuscenes import NuScenes  # heavy import, only for this format

        try:
            self._nusc = NuScenes(version=version, dataroot=str(self.root), verbose=False)
        except (AssertionError, KeyError, IndexError, FileNotFoundError) as exc:
            raise DatasetError(f"nuscenes-devkit could not load {table_dir}: {exc!r}") from exc
        nusc = self._nusc
        self.version = version
        self._cameras = list(CAMERAS) if cameras is None else list(cameras)
        unknown = [c for c in self._cameras if c not in CAMERAS]
        if unknown:
            raise DatasetError(f"unknown camera channel(s) {', '.join(unknown)}; nuScenes has {', '.join(CAMERAS)}")

        keep: set[str] | None = set(scenes) if scenes is not None else None
        if split is not None:
            from nuscenes.utils.splits import create_splits_scenes

            splits = create_splits_scenes()
            splits = {**splits, **derived_splits(splits)}
            if split not in splits:
                raise DatasetError(f"unknown nuScenes split {split!r}; choose one of {', '.join(sorted(splits))}")
            in_split = set(splits[split])
            keep = in_split if keep is None else keep & in_split
        scene_names = [s["name"] for s in nusc.scene]
        if keep is not None and not keep & set(scene_names):
            raise DatasetError(f"none of the selected scenes are in {table_dir} (it has: {', '.join(scene_names[:10])}...)")
        for scene in nusc.scene:
            if keep is not None and scene["name"] not in keep:
                continue
            token = scene["first_sample_token"]
            while token:
                sample = nusc.get("sample", token)
                self._frame_ids.append(token)
                token = sample["next"]

        if self._with_labels:
            self._label_files = {rec["sample_data_token"]: rec["filename"] for rec in nusc.lidarseg}
            lut = np.full(256, self.ignore_index, dtype=np.int64)
            for cat in nusc.category:
                name = GENERAL_TO_CLASS.get(cat["name"])
                if name is not None:
                    lut[int(cat["index"])] = CLASS_NAMES.index(name)
            self._lut = lut

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES if self._with_labels else ()

    def T_cam_from_lidar(self, lidar_sd: dict[str, Any], cam_sd: dict[str, Any]) -> np.ndarray:
        """Lidar frame at its stamp -> camera frame at its stamp, through the global frame."""
        nusc = self._nusc
        ego_from_lidar = _pose(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]))
        global_from_ego_l = _pose(nusc.get("ego_pose", lidar_sd["ego_pose_token"]))
        global_from_ego_c = _pose(nusc.get("ego_pose", cam_sd["ego_pose_token"]))
        ego_from_cam = _pose(nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"]))
        return invert_transform(ego_from_cam) @ invert_transform(global_from_ego_c) @ global_from_ego_l @ ego_from_lidar

    def _load(self, index: int) -> Frame:
        nusc = self._nusc
        token = self._frame_ids[index]
        sample = nusc.get("sample", token)
        if LIDAR not in sample["data"]:
            raise DatasetError(f"sample {token} has no {LIDAR} keyframe")
        lidar_sd = nusc.get("sample_data", sample["data"][LIDAR])
        lidar_path = self.root / lidar_sd["filename"]
        if not lidar_path.is_file():
            raise DatasetError(f"lidar sweep of sample {token} not found", path=lidar_path)
        raw = np.fromfile(lidar_path, dtype=np.float32)
        if raw.size % 5:
            raise DatasetError(f"{raw.size} floats is not a whole number of 5-column points (x,y,z,intensity,ring)", path=lidar_path)
        points = raw.reshape(-1, 5)[:, :4].copy()
        # nuScenes stores intensity as 0..255; relidar frames carry it in 0..1 like KITTI's reflectance.
        points[:, 3] /= 255.0

        labels = None
        if self._with_labels:
            rel = self._label_files.get(lidar_sd["token"])
            if rel is None:
                raise DatasetError(f"sample {token}: no lidarseg record for lidar sample_data {lidar_sd['token']}")
            raw_labels = np.fromfile(self.root / rel, dtype=np.uint8)
            if raw_labels.shape[0] != points.shape[0]:
                raise DatasetError(f"{self.root / rel}: {raw_labels.shape[0]} labels for {points.shape[0]} points")
            labels = self._lut[raw_labels]

        cams = []
        for channel in self._cameras:
            if channel not in sample["data"]:
                raise DatasetError(f"sample {token} has no {channel} image; pass cameras= with the channels this dataset has")
            cam_sd = nusc.get("sample_data", sample["data"][channel])
            K = np.asarray(nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])["camera_intrinsic"], dtype=np.float64)
            cams.append(
                Camera(
                    name=channel,
                    image=read_rgb(self.root / cam_sd["filename"]),
                    K=K,
                    T_cam_from_lidar=self.T_cam_from_lidar(lidar_sd, cam_sd),
                )
            )
        return Frame(
            frame_id=token,
            points=points,
            cameras=cams,
            labels=labels,
            class_names=CLASS_NAMES if labels is not None else (),
            ignore_index=self.ignore_index,
            timestamp=lidar_sd["timestamp"] * 1e-6,
        )
