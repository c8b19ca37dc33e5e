"""Writers: the rosbag2 read back with rosbags, the SemanticKITTI layout read back with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.geometry import make_transform, quaternion_to_rotation
from relidar.core.pointcloud2 import cloud_to_xyzi, read_cloud
from relidar.synthetic.classes import from_kitti_ids
from relidar.synthetic.truth import TruthStore, image_digest, read_truth
from relidar.synthetic.world import SynthConfig, SyntheticWorld
from relidar.synthetic.writers import BagWriter, SemanticKittiWriter, WriterError, rotation_to_quaternion


@pytest.fixture(scope="module")
def samples():
    cfg = SynthConfig(seed=5, lidar={"horizontal_resolution_deg": 1.0},
                      cameras={"names": ["front", "front_left", "front_right"], "width": 64, "height": 48})
    world = SyntheticWorld(cfg)
    return [world.sample(i) for i in range(3)]


def _tf(t) -> np.ndarray:
    r, p = t.transform.rotation, t.transform.translation
    return make_transform(quaternion_to_rotation(r.w, r.x, r.y, r.z), (p.x, p.y, p.z))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path, samples, storage):
    from rosbags.highlevel import AnyReader

    path = tmp_path / "bag"
    with BagWriter(path, storage) as w:
        for s in samples:
            w.write(s)
    with AnyReader([path]) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert {"/lidar/points", "/tf_static", "/tf", "/camera/front/image_raw", "/camera/front/camera_info"} <= set(topics)
        assert topics["/lidar/points"].msgcount == 3
        qos = topics["/tf_static"].ext.offered_qos_profiles
        assert qos and qos[0].durability.name == "TRANSIENT_LOCAL"
        clouds, images, statics = [], {}, {}
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype != "tf2_msgs/msg/TFMessage":
                assert stamp == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            if conn.topic == "/lidar/points":
                assert msg.header.frame_id == "lidar"
                clouds.append((stamp, msg))
            elif conn.topic == "/camera/front_left/image_raw":
                assert msg.encoding == "rgb8" and msg.header.frame_id == "camera_front_left_optical"
                images.setdefault("front_left", []).append((stamp, msg))
            elif conn.topic == "/camera/front/camera_info":
                assert np.allclose(np.asarray(msg.k).reshape(3, 3), samples[0].frame.cameras[0].K)
            elif conn.topic == "/tf_static":
                statics = {t.child_frame_id: (t.header.frame_id, _tf(t)) for t in msg.transforms}
    for (_stamp, msg), s in zip(clouds, samples):
        np.testing.assert_array_equal(cloud_to_xyzi(msg), s.frame.points)
        assert np.array_equal(read_cloud(msg)["ring"], s.ring)
    # Cameras a few ms after the lidar, never more than half a period.
    offsets = [img[0] - cl[0] for img, cl in zip(images["front_left"], clouds)]
    assert all(0 < d < 50_000_000 for d in offsets)
    # Extrinsics from tf reproduce the Frame's T_cam_from_lidar.
    parent, T_base_lidar = statics["lidar"]
    assert parent == "base_link"
    for cam in samples[0].frame.cameras:
        parent, T_base_cam = statics[f"camera_{cam.name}_optical"]
        np.testing.assert_allclose(np.linalg.inv(T_base_cam) @ T_base_lidar, cam.T_cam_from_lidar, atol=1e-9)
    img = images["front_left"][0][1]
    np.testing.assert_array_equal(np.asarray(img.data).reshape(img.height, img.width, 3), samples[0].frame.cameras[1].image)
    # The renderer's masks go beside the bag (not into it), one file per camera image, found by image.
    store = TruthStore()
    assert store.scan(path) == 3 * 3
    truth = store.lookup(samples[2].frame.cameras[1].image)
    np.testing.assert_array_equal(truth.instances, samples[2].camera_truth[1].instances)


def test_bag_refuses_existing_folder(tmp_path):
    with pytest.raises(WriterError, match="already exists"):
        BagWriter(tmp_path)


def test_semantickitti_layout(tmp_path, samples):
    with SemanticKittiWriter(tmp_path) as w:
        for s in samples:
            w.write(s)
    seq = tmp_path / "sequences" / "00"
    for i, s in enumerate(samples):
        pts = np.fromfile(seq / "velodyne" / f"{i:06d}.bin", dtype="<f4").reshape(-1, 4)
        raw = np.fromfile(seq / "labels" / f"{i:06d}.label", dtype="<u4")
        np.testing.assert_array_equal(pts, s.frame.points)
        assert raw.shape == (len(pts),)
        assert set(np.unique(raw)) <= {10, 11, 18, 30, 31, 40, 48, 50, 70, 72, 80, 81}
        np.testing.assert_array_equal(from_kitti_ids(raw), s.frame.labels)
        assert (seq / "image_2" / f"{i:06d}.png").is_file()
        digest, truth = read_truth(seq / "truth_2" / f"{i:06d}.npz")
        assert digest == image_digest(s.frame.cameras[0].image)
        np.testing.assert_array_equal(truth.classes, s.camera_truth[0].classes)
        np.testing.assert_array_equal(truth.depth, s.camera_truth[0].depth)
    calib = {line.split(":")[0]: np.array(line.split(":")[1].split(), float) for line in (seq / "calib.txt").read_text().splitlines()}
    front = samples[0].frame.cameras[0]
    np.testing.assert_allclose(calib["P2"].reshape(3, 4)[:, :3], front.K)
    np.testing.assert_allclose(calib["P2"].reshape(3, 4)[:, 3], 0.0)
    np.testing.assert_allclose(calib["Tr"].reshape(3, 4), front.T_cam_from_lidar[:3], atol=1e-9)
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    assert poses.shape[0] == 3
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-9)
    # The camera moves forward (optical +z) at 8 m/s: 0.8 m per sweep.
    assert poses[1][2, 3] == pytest.approx(0.8, abs=0.05)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.standard_normal(4)
        R = quaternion_to_rotation(*q)
        x, y, z, w = rotation_to_quaternion(R)
        np.testing.assert_allclose(quaternion_to_rotation(w, x, y, z), R, atol=1e-9)
