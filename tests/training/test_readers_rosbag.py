"""rosbag2 reader on bags this test writes with ``rosbags`` (sqlite3 and MCAP)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

rosbags = pytest.importorskip("rosbags", reason="rosbags is not installed")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from relidar.core.pointcloud2 import build_cloud  # noqa: E402
from relidar.training.readers import DatasetError, open_dataset  # noqa: E402
from relidar.training.readers.rosbag import camera_name  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
T0 = 1_700_000_000_000_000_000  # ns
MS = 1_000_000
W, H = 64, 48
K = [50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]
# optical frame (x right, y down, z forward) in a body frame (x forward, y left, z up): w, x, y, z
OPTICAL = (0.5, -0.5, 0.5, -0.5)
YAW180 = (0.0, 0.0, 0.0, 1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0)

CLOUD_XYZI = np.array(
    [[10.0, 0.5, 0.1, 0.25], [-10.0, 0.0, 0.0, 0.5], [np.nan, 1.0, 1.0, 0.75], [3.0, -1.0, -0.5, 1.0]], np.float32
)


def _header(stamp_ns: int, frame_id: str):
    Time = TS.types["builtin_interfaces/msg/Time"]
    return TS.types["std_msgs/msg/Header"](stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def _cloud(stamp_ns: int, k: int):
    pts = CLOUD_XYZI.copy()
    pts[:, 0] += k  # each sweep distinct
    data = build_cloud({"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]}, is_dense=False)
    PF = TS.types["sensor_msgs/msg/PointField"]
    return TS.types["sensor_msgs/msg/PointCloud2"](
        header=_header(stamp_ns, "lidar"), height=data.height, width=data.width,
        fields=[PF(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in data.fields],
        is_bigendian=False, point_step=data.point_step, row_step=data.row_step,
        data=np.frombuffer(data.data, np.uint8), is_dense=False,
    )  # fmt: skip


def _image(stamp_ns: int, frame: str, rgb: np.ndarray, encoding: str):
    arr = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    return TS.types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame), height=H, width=W, encoding=encoding, is_bigendian=0, step=W * 3,
        data=np.ascontiguousarray(arr).reshape(-1),
    )  # fmt: skip


def _compressed(stamp_ns: int, frame: str, rgb: np.ndarray, fmt: str):
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=95)
    return TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, frame), format=fmt, data=np.frombuffer(buf.getvalue(), np.uint8)
    )


def _info(stamp_ns: int, frame: str):
    ROI = TS.types["sensor_msgs/msg/RegionOfInterest"]
    return TS.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, frame), height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array(K), r=np.eye(3).ravel(), p=np.array([50.0, 0, 32, 0, 0, 50, 24, 0, 0, 0, 1, 0]),
        binning_x=0, binning_y=0, roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )  # fmt: skip


def _tf(parent: str, child: str, xyz: tuple[float, float, float], wxyz: tuple[float, float, float, float]):
    T = TS.types
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(T0, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=T["geometry_msgs/msg/Quaternion"](w=wxyz[0], x=wxyz[1], y=wxyz[2], z=wxyz[3]),
        ),
    )  # fmt: skip


def colour(k: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 20 * k + 10, 100, 200 - 10 * k
    img[5, 7] = (255, 0, 0)  # a marker that tells rgb from bgr
    return img


def write_bag(
    path: Path, storage: StoragePlugin, compressed_format: str = "png", extra_cloud_topic: bool = False, with_tf: bool = True
) -> Path:
    """4 clouds at 0,100,200,300 ms. front: rgb8 10 ms after each cloud. rear: bgr8 at 0 ms and 280 ms,
    written to the bag 60 ms late (log time != stamp). side: CompressedImage at each cloud stamp."""
    with Writer(path, version=9, storage_plugin=storage) as w:
        def conn(topic: str, msgtype: str):
            return w.add_connection(topic, msgtype, typestore=TS)

        c_tf = conn("/tf_static", "tf2_msgs/msg/TFMessage")
        c_cloud = conn("/lidar/points", "sensor_msgs/msg/PointCloud2")
        c_extra = conn("/lidar/other", "sensor_msgs/msg/PointCloud2") if extra_cloud_topic else None
        cams = {n: (conn(f"/camera/{n}/image_raw", "sensor_msgs/msg/Image"), conn(f"/camera/{n}/camera_info", "sensor_msgs/msg/CameraInfo")) for n in ("front", "rear")}
        c_side = conn("/camera/side/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
        c_side_info = conn("/camera/side/camera_info", "sensor_msgs/msg/CameraInfo")

        def put(c, t: int, msg) -> None:
            w.write(c, t, TS.serialize_cdr(msg, c.msgtype))

        if with_tf:
            TFM = TS.types["tf2_msgs/msg/TFMessage"]
            put(c_tf, T0, TFM(transforms=[_tf("base_link", "lidar", (1.0, 0.0, 1.5), IDENTITY), _tf("base_link", "camera_front_optical", (1.2, 0.0, 1.4), OPTICAL)]))
            put(c_tf, T0, TFM(transforms=[_tf("base_link", "rear_mount", (-1.0, 0.0, 1.5), YAW180), _tf("rear_mount", "camera_rear_optical", (0.0, 0.0, 0.0), OPTICAL), _tf("base_link", "camera_side_optical", (0.0, 0.0, 1.5), OPTICAL)]))
        for k in range(4):
            t = T0 + k * 100 * MS
            put(c_cloud, t + 2 * MS, _cloud(t, k))
            if c_extra is not None:
                put(c_extra, t + 2 * MS, _cloud(t, k))
            put(cams["front"][0], t + 12 * MS, _image(t + 10 * MS, "camera_front_optical", colour(k), "rgb8"))
            put(c_side, t + 1 * MS, _compressed(t, "camera_side_optical", colour(k), compressed_format))
            for n in ("front", "rear", "side"):
                put(cams[n][1] if n != "side" else c_side_info, t + 3 * MS, _info(t, f"camera_{n}_optical"))
        for k, dt in ((0, 0), (1, 280)):
            put(cams["rear"][0], T0 + (dt + 60) * MS, _image(T0 + dt * MS, "camera_rear_optical", colour(k), "bgr8"))
    return path


@pytest.mark.parametrize(("storage", "fmt"), [(StoragePlugin.SQLITE3, "png"), (StoragePlugin.MCAP, "jpeg")])
def test_bag_pairs_images_chains_tf_and_reads_points(tmp_path: Path, storage: StoragePlugin, fmt: str) -> None:
    bag = write_bag(tmp_path / "bag", storage, fmt)
    reader = open_dataset(bag)
    assert reader.name == "rosbag" and len(reader) == 4
    assert reader.lidar_topic == "/lidar/points"
    assert reader.camera_names == ["front", "rear", "side"]
    assert reader.frame_ids == [str(T0 + k * 100 * MS) for k in range(4)]
    # rear images (header stamps 0 and 280 ms) pair with clouds 0 and 3 only, despite their late log times
    assert reader.unpaired == {"front": 0, "rear": 2, "side": 0}

    for k, frame in enumerate(reader):
        expected = CLOUD_XYZI.copy()
        expected[:, 0] += k
        # every point as sent, the NaN one too: non-finite values are the Segmenter's to repair, the one
        # rule for a scan from a bag or a file (tests/core/test_nan_rule.py)
        np.testing.assert_array_equal(frame.points, expected)
        assert frame.timestamp == pytest.approx((T0 + k * 100 * MS) * 1e-9)
        names = [c.name for c in frame.cameras]
        assert names == (["front", "rear", "side"] if k in (0, 3) else ["front", "side"])
        cams = {c.name: c for c in frame.cameras}
        np.testing.assert_array_equal(cams["front"].image, colour(k))
        if fmt == "png":
            np.testing.assert_array_equal(cams["side"].image, colour(k))
        else:
            assert np.abs(cams["side"].image[20:30, 20:30].astype(int) - colour(k)[20:30, 20:30]).max() <= 4
        if "rear" in cams:
            np.testing.assert_array_equal(cams["rear"].image, colour(0 if k == 0 else 1))  # bgr8 decoded to RGB
        np.testing.assert_allclose(cams["front"].K, np.reshape(K, (3, 3)))

    frame = reader[0]
    cams = {c.name: c for c in frame.cameras}
    # front: lidar (10, .5, .1) -> base (11, .5, 1.6) -> from the camera (9.8, .5, .2) -> optical (-.5, -.2, 9.8)
    proj = cams["front"].project(frame.points[:1, :3])
    np.testing.assert_allclose(proj.uv[0], [32 - 50 * 0.5 / 9.8, 24 - 50 * 0.2 / 9.8], atol=1e-4)
    np.testing.assert_allclose(proj.depth, [9.8], atol=1e-5)
    # rear, chained base_link -> rear_mount (yawed 180 deg) -> optical: lidar (-10, 0, 0) -> base (-9, 0, 1.5)
    # -> 8 m straight ahead of the rear camera.
    np.testing.assert_allclose(cams["rear"].T_cam_from_lidar @ [-10.0, 0.0, 0.0, 1.0], [0.0, 0.0, 8.0, 1.0], atol=1e-9)


def test_single_storage_file_and_tolerance(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    mcap = next(bag.glob("*.mcap"))
    strict = open_dataset(mcap, tolerance_s=0.005)
    assert strict.unpaired == {"front": 4, "rear": 3, "side": 0}  # only the rear image at 0 ms is within 5 ms
    assert [c.name for c in strict[1].cameras] == ["side"]
    loose = open_dataset(mcap, tolerance_s=0.2, cameras=["rear"])
    assert loose.unpaired == {"rear": 0}
    # A copy in another process (data-loader worker) reopens the bag itself.
    clone = pickle.loads(pickle.dumps(loose))
    np.testing.assert_array_equal(clone[-1].points, loose[3].points)
    loose.close()
    clone.close()


def test_intensity_scale_option(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    raw = open_dataset(bag)
    scaled = open_dataset(bag, intensity_scale=1 / 255)
    a, b = raw[0].points, scaled[0].points
    assert (a[:, 3] != 0).any()
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    np.testing.assert_allclose(b[:, 3], a[:, 3] / 255, rtol=1e-6)
    with pytest.raises(DatasetError, match="intensity_scale"):
        open_dataset(bag, intensity_scale=0)
    raw.close()
    scaled.close()


def test_lidar_topic_choice_and_missing_tf(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "two", StoragePlugin.SQLITE3, extra_cloud_topic=True)
    with pytest.raises(DatasetError, match="several PointCloud2 topics .*/lidar/other, /lidar/points.*lidar_topic="):
        open_dataset(bag)
    assert open_dataset(bag, lidar_topic="/lidar/other").lidar_topic == "/lidar/other"
    no_tf = write_bag(tmp_path / "notf", StoragePlugin.SQLITE3, with_tf=False)
    with pytest.raises(DatasetError, match="not in the tf tree.*calibration YAML"):
        open_dataset(no_tf)


def test_calibration_yaml_replaces_tf(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, with_tf=False)
    T = [[0, -1, 0, 0.0], [0, 0, -1, 0.1], [1, 0, 0, -0.2], [0, 0, 0, 1]]
    calib = tmp_path / "rig.yaml"
    calib.write_text(
        "cameras:\n  front:\n    topic: /camera/front/image_raw\n"
        f"    T_cam_from_lidar: {T}\n    K: [[40, 0, 30], [0, 40, 20], [0, 0, 1]]\n"
        f"  side:\n    topic: /camera/side/image_raw/compressed\n    T_cam_from_lidar: {T}\n"
    )
    reader = open_dataset(bag, calibration=calib)
    assert reader.camera_names == ["front", "side"]
    front, side = reader[0].cameras
    np.testing.assert_allclose(front.T_cam_from_lidar, T)
    np.testing.assert_allclose(front.K, [[40, 0, 30], [0, 40, 20], [0, 0, 1]])
    np.testing.assert_allclose(side.K, np.reshape(K, (3, 3)))  # from its CameraInfo
    calib.write_text("cameras:\n  front:\n    topic: /camera/front/image_raw\n    T_cam_from_lidar: [[1, 0, 0], [0, 1, 0]]\n")
    with pytest.raises(DatasetError, match="cameras.front.T_cam_from_lidar"):
        open_dataset(bag, calibration=calib)


def test_camera_names_from_topics() -> None:
    assert camera_name("/camera/front/image_raw") == "front"
    assert camera_name("/cam_left/image_raw/compressed") == "cam_left"
    assert camera_name("/sensors/camera/left/image_rect_color") == "sensors_camera_left"
