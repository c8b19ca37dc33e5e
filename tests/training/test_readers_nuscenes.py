"""nuScenes reader on a miniature tree written in the real on-disk format (the devkit loads it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nuscenes", reason="nuscenes-devkit is not installed")

from relidar.training.readers import DatasetError, open_dataset
from relidar.training.readers.nuscenes import CLASS_NAMES, derived_splits

VERSION = "v1.0-mini"
# nuScenes-lidarseg's 32 general classes, in index order.
GENERAL = [
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
]  # fmt: skip

W, H = 160, 90
CAM_K = [[100.0, 0.0, 80.0], [0.0, 100.0, 45.0], [0.0, 0.0, 1.0]]
YAW90 = [float(np.cos(np.pi / 4)), 0.0, 0.0, float(np.sin(np.pi / 4))]  # w, x, y, z
# Camera axes in the ego frame: x right = -y_ego, y down = -z_ego, z forward = x_ego.
CAM_ROT = [0.5, -0.5, 0.5, -0.5]

# Sample 0: the ego faces global +y (yaw 90 deg) at (100, 200, 0) when the lidar fires, and has slid
# 1 m to its left (global -x) when the front camera fires. A point at global (97, 211.5, 1.5) is
#   at the lidar stamp:  ego (11.5, 3, 1.5) -> lidar (minus (1, 0, 2)) = (10.5, 3, -0.5)
#   at the camera stamp: ego (11.5, 2, 1.5) -> camera offset (minus (1.5, 0, 1.5)) = (10, 2, 0)
#                        -> optical (x=-2, y=0, z=10) -> pixel (80 - 100*2/10, 45) = (60, 45).
# Without the ego-motion correction it would land at u = 80 - 100*3/10 = 50.
# A second global point 1 m lower, (97, 211.5, 0.5), lands at (60, 45 + 100*1/10) = (60, 55).
LIDAR_POINTS = np.array([[10.5, 3.0, -0.5, 7.0, 1.0], [10.5, 3.0, -1.5, 8.0, 2.0], [-10.0, 0.0, 0.0, 9.0, 3.0]], np.float32)
EXPECTED_UV = np.array([[60.0, 45.0], [60.0, 55.0]])
RAW_LABELS = np.array([17, 24, 0], np.uint8)  # car, driveable_surface, noise


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows))


def write_mini_nuscenes(root: Path) -> Path:
    tables = root / VERSION
    tables.mkdir(parents=True)
    channels = {"LIDAR_TOP": "lidar", "CAM_FRONT": "camera", "CAM_BACK": "camera"}
    sensors = [{"token": f"sensor_{c}", "channel": c, "modality": m} for c, m in channels.items()]
    calib = [
        {"token": "cs_LIDAR_TOP", "sensor_token": "sensor_LIDAR_TOP", "translation": [1.0, 0.0, 2.0], "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []},
        {"token": "cs_CAM_FRONT", "sensor_token": "sensor_CAM_FRONT", "translation": [1.5, 0.0, 1.5], "rotation": CAM_ROT, "camera_intrinsic": CAM_K},
        # the back camera looks along -x_ego: optical x = +y_ego, y = -z_ego, z = -x_ego
        {"token": "cs_CAM_BACK", "sensor_token": "sensor_CAM_BACK", "translation": [-1.0, 0.0, 1.5], "rotation": [0.5, -0.5, -0.5, 0.5], "camera_intrinsic": CAM_K},
    ]
    ego_poses, sample_data, samples, lidarseg = [], [], [], []
    ts0 = 1_532_402_927_647_951
    for s in range(2):
        ts = ts0 + s * 500_000
        samples.append({"token": f"sample_{s}", "timestamp": ts, "prev": f"sample_{s - 1}" if s else "", "next": "sample_1" if s == 0 else "", "scene_token": "scene_0"})
        for c in channels:
            sd = f"sd_{c}_{s}"
            stamp = ts if c == "LIDAR_TOP" else ts + 20_000
            shift = 1.0 if (c == "CAM_FRONT" and s == 0) else 0.0
            ego_poses.append({"token": f"ep_{sd}", "timestamp": stamp, "rotation": YAW90, "translation": [100.0 - shift, 200.0 + 10 * s, 0.0]})
            if c == "LIDAR_TOP":
                filename = f"samples/LIDAR_TOP/n015-test__LIDAR_TOP__{ts}.pcd.bin"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                LIDAR_POINTS.tofile(root / filename)
                label_file = f"lidarseg/{VERSION}/{sd}_lidarseg.bin"
                (root / label_file).parent.mkdir(parents=True, exist_ok=True)
                RAW_LABELS.tofile(root / label_file)
                lidarseg.append({"token": sd, "sample_data_token": sd, "filename": label_file})
                fmt, w, h = "pcd", 0, 0
            else:
                filename = f"samples/{c}/n015-test__{c}__{stamp}.jpg"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((H, W, 3), (40 * s, 100, 200), np.uint8)).save(root / filename)
                fmt, w, h = "jpg", W, H
            sample_data.append(
                {"token": sd, "sample_token": f"sample_{s}", "ego_pose_token": f"ep_{sd}", "calibrated_sensor_token": f"cs_{c}",
                 "timestamp": stamp, "fileformat": fmt, "is_key_frame": True, "height": h, "width": w, "filename": filename,
                 "prev": f"sd_{c}_{s - 1}" if s else "", "next": f"sd_{c}_{s + 1}" if s == 0 else ""}
            )  # fmt: skip
    _write(tables / "category.json", [{"token": f"cat_{i}", "name": n, "description": n, "index": i} for i, n in enumerate(GENERAL)])
    _write(tables / "attribute.json", [])
    _write(tables / "visibility.json", [{"token": "1", "level": "v0-40", "description": "visibility"}])
    _write(tables / "instance.json", [])
    _write(tables / "sensor.json", sensors)
    _write(tables / "calibrated_sensor.json", calib)
    _write(tables / "ego_pose.json", ego_poses)
    _write(tables / "log.json", [{"token": "log_0", "logfile": "n015-test", "vehicle": "n015", "date_captured": "2018-07-24", "location": "singapore-onenorth"}])
    _write(tables / "scene.json", [{"token": "scene_0", "log_token": "log_0", "nbr_samples": 2, "first_sample_token": "sample_0", "last_sample_token": "sample_1", "name": "scene-0001", "description": "test"}])
    _write(tables / "sample.json", samples)
    _write(tables / "sample_data.json", sample_data)
    _write(tables / "sample_annotation.json", [])
    (root / "maps").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "maps" / "map_0.png")
    _write(tables / "map.json", [{"token": "map_0", "log_tokens": ["log_0"], "category": "semantic_prior", "filename": "maps/map_0.png"}])
    _write(tables / "lidarseg.json", lidarseg)
    return root


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mini_nuscenes(tmp_path_factory.mktemp("nuscenes"))


def test_keyframes_points_labels(mini_root: Path) -> None:
    reader = open_dataset(mini_root, cameras=["CAM_FRONT", "CAM_BACK"])
    assert reader.name == "nuscenes"
    assert reader.frame_ids == ["sample_0", "sample_1"]
    assert reader.class_names == CLASS_NAMES and len(CLASS_NAMES) == 16
    frame = reader[0]
    np.testing.assert_array_equal(frame.points[:, :3], LIDAR_POINTS[:, :3])
    # nuScenes intensity 0..255 arrives scaled to relidar's 0..1.
    np.testing.assert_allclose(frame.points[:, 3], LIDAR_POINTS[:, 3] / 255.0, rtol=1e-6)
    assert frame.labels.tolist() == [CLASS_NAMES.index("car"), CLASS_NAMES.index("driveable_surface"), reader.ignore_index]
    assert [c.name for c in frame.cameras] == ["CAM_FRONT", "CAM_BACK"]
    assert frame.cameras[0].image.shape == (H, W, 3)
    assert frame.timestamp == pytest.approx(1_532_402_927.647951)


def test_ego_motion_corrected_transform_hits_hand_computed_pixels(mini_root: Path) -> None:
    frame = open_dataset(mini_root, cameras=["CAM_FRONT", "CAM_BACK"])[0]
    front, back = frame.cameras
    proj = front.project(frame.points[:, :3])
    np.testing.assert_allclose(proj.uv[:2], EXPECTED_UV, atol=1e-4)
    np.testing.assert_allclose(proj.depth[:2], [10.0, 10.0], atol=1e-5)
    assert proj.mask.tolist() == [True, True, False]  # the third point is behind the front camera
    # The point 10 m behind the lidar: lidar (-10, 0, 0) -> ego (-9, 0, 2) -> 8 m behind the back camera
    # (which sits at x=-1), 0.5 m above it; no ego motion for the back camera.
    back_proj = back.project(frame.points[2:, :3])
    np.testing.assert_allclose(back_proj.uv, [[80.0, 45.0 - 100 * 0.5 / 8.0]], atol=1e-4)
    assert back_proj.mask.tolist() == [True]


def test_all_six_cameras_by_default_name_the_missing_one(mini_root: Path) -> None:
    reader = open_dataset(mini_root)
    with pytest.raises(DatasetError, match="no CAM_FRONT_RIGHT image"):
        reader[0]


def test_incomplete_tree_is_named(tmp_path: Path) -> None:
    (tmp_path / VERSION).mkdir()
    with pytest.raises(DatasetError, match=r"no sample\.json in .*v1\.0-mini"):
        open_dataset(tmp_path)


def test_selection_scenes_are_kept_out_of_training() -> None:
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    derived = derived_splits(splits)
    fit, select = set(derived["train_fit"]), set(derived["train_select"])
    assert len(select) == 50 and len(fit) == 650 and not fit & select and fit | select == set(splits["train"])
    assert not select & set(splits["val"])  # the scenes settings are chosen on are not the scored ones
    assert derived["train_select"][:2] == [splits["train"][0], splits["train"][14]]
