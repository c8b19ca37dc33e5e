"""Writing synthetic sequences as real logs: rosbag2 (MCAP or sqlite3) and the SemanticKITTI layout.

The bag follows ROS conventions so the project's bag reader treats it as a car's log: REP 103 axes,
REP 105 frames (odom -> base_link on /tf, base_link -> lidar and base_link -> camera_<name>_optical on
/tf_static, offered transient-local), header stamps at 10 Hz with cameras a few milliseconds off the
lidar, as unsynchronised sensors are. Bags carry no labels (real ones have none); SemanticKITTI does.

Beside the images both write the renderer's masks (``relidar.synthetic.truth``): the
version-2 simulated teacher reads them when ``relidar prepare`` runs on the log. They are no part of the
log's format: a reader for real data never looks at them.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np

from relidar.core.atomic import atomic_path
from relidar.core.errors import RelidarError
from relidar.core.pointcloud2 import build_cloud
from relidar.synthetic.classes import to_kitti_ids
from relidar.synthetic.truth import TRUTH_DIR_KITTI, TRUTH_SUFFIX_BAG, write_truth
from relidar.synthetic.world import SyntheticSample

LIDAR_TOPIC = "/lidar/points"
LIDAR_FRAME = "lidar"
BASE_FRAME = "base_link"
ODOM_FRAME = "odom"
BAG_START_NS = 1_700_000_000 * 10**9  # bags carry wall-clock stamps; start somewhere plausible
CAMERA_DELAY_NS = 3_000_000  # camera k is exposed (k+1) * 3 ms after the lidar's stamp


class WriterError(RelidarError, RuntimeError):
    """A log could not be written; the message names the path."""


def camera_frame(name: str) -> str:
    return f"camera_{name}_optical"


def image_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


def info_topic(name: str) -> str:
    return f"/camera/{name}/camera_info"


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method: stable for every angle)."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in (q if q[3] >= 0 else -q))  # type: ignore[return-value]


class BagWriter:
    """Context manager writing one rosbag2 folder at ``path`` (which must not exist yet)."""

    def __init__(self, path: str | Path, storage: Literal["mcap", "sqlite3"] = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise WriterError(f"{self.path}: already exists; rosbag2 writes a new folder, pick another --out")
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise WriterError(f"storage {storage!r} is not one of mcap, sqlite3")
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, object] = {}
        self._static_written = False
        self._truth_dir = self.path.parent / (self.path.name + TRUTH_SUFFIX_BAG)
        self._frames = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._writer.close()

    def _conn(self, topic: str, msgtype: str, latched: bool = False) -> object:
        if topic not in self._connections:
            from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

            qos = ()
            if latched:
                forever = QosTime(2147483647, 4294967295)
                qos = (Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                           forever, forever, QosLiveliness.AUTOMATIC, forever, False),)
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos
            )
        return self._connections[topic]

    def _put(self, topic: str, msgtype: str, msg: object, stamp_ns: int, latched: bool = False) -> None:
        conn = self._conn(topic, msgtype, latched)
        self._writer.write(conn, stamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def _header(self, stamp_ns: int, frame_id: str) -> object:
        T = self.typestore.types
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id
        )

    def _transform(self, stamp_ns: int, parent: str, child: str, M: np.ndarray) -> object:
        T = self.typestore.types
        x, y, z, w = rotation_to_quaternion(M[:3, :3])
        return T["geometry_msgs/msg/TransformStamped"](
            header=self._header(stamp_ns, parent),
            child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=float(M[0, 3]), y=float(M[1, 3]), z=float(M[2, 3])),
                rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )

    def write(self, sample: SyntheticSample) -> None:
        T = self.typestore.types
        stamp = BAG_START_NS + sample.stamp_ns
        if not self._static_written:
            statics = [self._transform(stamp, BASE_FRAME, LIDAR_FRAME, sample.T_base_lidar)]
            statics += [self._transform(stamp, BASE_FRAME, camera_frame(n), M) for n, M in sample.T_base_optical.items()]
            self._put("/tf_static", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](transforms=statics), stamp, latched=True)
            self._static_written = True
        odom = self._transform(stamp, ODOM_FRAME, BASE_FRAME, sample.T_world_base)
        self._put("/tf", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](transforms=[odom]), stamp)

        pts = sample.frame.points
        cloud = build_cloud({"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3], "ring": sample.ring.astype(np.uint16)})
        msg = T["sensor_msgs/msg/PointCloud2"](
            header=self._header(stamp, LIDAR_FRAME),
            height=cloud.height,
            width=cloud.width,
            fields=[T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                    for f in cloud.fields],
            is_bigendian=cloud.is_bigendian,
            point_step=cloud.point_step,
            row_step=cloud.row_step,
            data=np.frombuffer(cloud.data, dtype=np.uint8),
            is_dense=cloud.is_dense,
        )
        self._put(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", msg, stamp)

        for k, cam in enumerate(sample.frame.cameras):
            cam_stamp = stamp + (k + 1) * CAMERA_DELAY_NS
            header = self._header(cam_stamp, camera_frame(cam.name))
            image = T["sensor_msgs/msg/Image"](
                header=header, height=cam.height, width=cam.width, encoding="rgb8", is_bigendian=0,
                step=cam.width * 3, data=np.ascontiguousarray(cam.image).reshape(-1),
            )
            self._put(image_topic(cam.name), "sensor_msgs/msg/Image", image, cam_stamp)
            P = np.zeros((3, 4))
            P[:, :3] = cam.K
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header, height=cam.height, width=cam.width, distortion_model="plumb_bob",
                d=np.zeros(5), k=np.asarray(cam.K, dtype=np.float64).reshape(-1), r=np.eye(3).reshape(-1),
                p=P.reshape(-1), binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            self._put(info_topic(cam.name), "sensor_msgs/msg/CameraInfo", info, cam_stamp)
        self._truth_dir.mkdir(exist_ok=True)
        for cam, truth in zip(sample.frame.cameras, sample.camera_truth):
            write_truth(self._truth_dir / f"{self._frames:06d}_{cam.name}.npz", cam.image, truth)
        self._frames += 1


def _kitti_row(M: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(M, dtype=np.float64).reshape(-1))


class SemanticKittiWriter:
    """``root/sequences/<seq>/{velodyne,labels,image_2}/NNNNNN.*``, ``calib.txt``, ``poses.txt``, ``times.txt``.

    Only the camera named ``front`` goes in (SemanticKITTI has one colour camera, image_2); it serves
    as camera 0 too: P0..P3 are its K with zero translation and Tr maps lidar to it."""

    def __init__(self, root: str | Path, sequence: int = 0, camera: str = "front") -> None:
        self.dir = Path(root) / "sequences" / f"{sequence:02d}"
        self.camera = camera
        for sub in ("velodyne", "labels", "image_2", TRUTH_DIR_KITTI):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._index = 0
        self._poses: list[np.ndarray] = []
        self._times: list[float] = []
        self._T_cam0_world0: np.ndarray | None = None
        self._calib_written = False

    def __enter__(self) -> "SemanticKittiWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def write(self, sample: SyntheticSample) -> None:
        from PIL import Image

        frame = sample.frame
        cams = {c.name: c for c in frame.cameras}
        if self.camera not in cams:
            raise WriterError(f"{self.dir}: sample has no camera {self.camera!r} (has {sorted(cams)}); add it to --cameras")
        cam = cams[self.camera]
        if frame.labels is None:
            raise WriterError(f"{self.dir}: frame {frame.frame_id} has no labels to write")
        name = f"{self._index:06d}"
        with atomic_path(self.dir / "velodyne" / f"{name}.bin") as tmp:
            frame.points.astype("<f4").tofile(tmp)
        with atomic_path(self.dir / "labels" / f"{name}.label") as tmp:
            to_kitti_ids(frame.labels).astype("<u4").tofile(tmp)
        with atomic_path(self.dir / "image_2" / f"{name}.png") as tmp:
            Image.fromarray(cam.image).save(tmp, format="PNG")
        write_truth(self.dir / TRUTH_DIR_KITTI / f"{name}.npz", cam.image,
                    sample.camera_truth[[c.name for c in frame.cameras].index(self.camera)])
        if not self._calib_written:
            P = np.zeros((3, 4))
            P[:, :3] = cam.K
            lines = [f"P{i}: {_kitti_row(P)}" for i in range(4)] + [f"Tr: {_kitti_row(cam.T_cam_from_lidar[:3])}"]
            with atomic_path(self.dir / "calib.txt") as tmp:
                tmp.write_text("\n".join(lines) + "\n")
            self._calib_written = True
        T_world_cam = sample.T_world_base @ sample.T_base_optical[self.camera]
        if self._T_cam0_world0 is None:
            self._T_cam0_world0 = np.linalg.inv(T_world_cam)
        self._poses.append(self._T_cam0_world0 @ T_world_cam)
        self._times.append(sample.stamp_ns * 1e-9)
        self._index += 1

    def close(self) -> None:
        with atomic_path(self.dir / "poses.txt") as tmp:
            tmp.write_text("".join(_kitti_row(P[:3]) + "\n" for P in self._poses))
        with atomic_path(self.dir / "times.txt") as tmp:
            tmp.write_text("".join(f"{t:.6e}\n" for t in self._times))
