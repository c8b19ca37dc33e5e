"""rosbag2 driving logs (sqlite3 ``.db3`` or MCAP; a bag folder or one storage file) through ``rosbags``.

One frame per ``sensor_msgs/PointCloud2`` message of the lidar topic. Each camera is an
``Image``/``CompressedImage`` topic with a ``CameraInfo`` beside it (``<ns>/image_raw`` and
``<ns>/camera_info``; the camera's name is ``<ns>`` without a leading ``/camera/``). Extrinsics come
from ``/tf_static`` (chained from the cloud's ``frame_id`` to the camera's) or from a calibration YAML
(schema in :mod:`relidar.training.readers.calibration`). Each cloud takes, per camera, the image whose
header stamp is nearest to its own, if within ``tolerance_s``; a frame keeps the cameras that pair.

Opening indexes header stamps only (read from the first bytes of each serialised message); clouds and
images are decoded when a frame is asked for.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relidar.core.frame import Camera, Frame
from relidar.core.geometry import make_transform, quaternion_to_rotation
from relidar.core.pointcloud2 import PointCloudError, cloud_to_xyzi
from relidar.training.readers.base import DatasetError, Reader
from relidar.training.readers.calibration import FrameGraph, RigCalibration, load_rig_calibration

CLOUD = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"


@dataclass(frozen=True)
class _Msg:
    """Where one message sits: its bag (log) time, for reading it back, and its header stamp."""

    log_ns: int
    stamp_ns: int


@dataclass
class _CameraSource:
    name: str
    topic: str
    msgtype: str
    K: np.ndarray
    T_cam_from_lidar: np.ndarray
    messages: list[_Msg] = field(default_factory=list)


def header_stamp_ns(raw: bytes | memoryview, ros2: bool) -> int:
    """Header stamp of a serialised message whose first field is ``std_msgs/Header``, without decoding it.

    CDR (ROS 2): 4-byte encapsulation header (byte 1 odd = little-endian), then int32 sec, uint32 nanosec.
    ROS 1: uint32 seq, then uint32 sec, uint32 nsec, little-endian.
    """
    if ros2:
        order = "<" if raw[1] & 1 else ">"
        sec, nsec = struct.unpack_from(order + "iI", raw, 4)
    else:
        sec, nsec = struct.unpack_from("<II", raw, 4)
    return int(sec) * 1_000_000_000 + int(nsec)


def camera_name(topic: str) -> str:
    """``/camera/front/image_raw`` -> ``front``; ``/cam_left/image_raw/compressed`` -> ``cam_left``."""
    parts = [p for p in topic.split("/") if p]
    if parts and parts[-1] == "compressed":
        parts = parts[:-1]
    ns = parts[:-1] if len(parts) > 1 else parts
    if len(ns) > 1 and ns[0] == "camera":
        ns = ns[1:]
    return "_".join(ns)


def camera_info_topic(image_topic: str) -> str:
    parts = [p for p in image_topic.split("/") if p]
    if parts and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/" + "/".join(parts[:-1] + ["camera_info"])


def decode_image(msg: Any, msgtype: str, topic: str) -> np.ndarray:
    """HxWx3 uint8 RGB from a ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or
    ``CompressedImage`` (any format PIL reads: jpeg, png...)."""
    if msgtype == COMPRESSED:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(np.asarray(msg.data, dtype=np.uint8).tobytes())) as im:
            return np.asarray(im.convert("RGB"))
    enc = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "8uc3": 3, "rgba8": 4, "bgra8": 4, "8uc4": 4, "mono8": 1, "8uc1": 1, "mono16": 2, "16uc1": 2}
    if enc not in channels:
        raise DatasetError(f"{topic}: image encoding {msg.encoding!r} is not supported (use rgb8, bgr8, rgba8, bgra8, mono8 or mono16)")
    h, w, step, c = int(msg.height), int(msg.width), int(msg.step), channels[enc]
    buf = np.asarray(msg.data, dtype=np.uint8)
    if step < w * c or buf.size < h * step:
        raise DatasetError(f"{topic}: image data of {buf.size} bytes does not fit {h}x{w} {msg.encoding} with step {step}")
    rows = buf[: h * step].reshape(h, step)[:, : w * c]
    if c == 2:
        mono = rows.copy().view(">u2" if msg.is_bigendian else "<u2").reshape(h, w)
        gray = (mono >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    img = rows.reshape(h, w, c)
    if c == 1:
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr") or enc in ("8uc3", "8uc4"):  # OpenCV's default channel order
        img = img[:, :, [2, 1, 0]]
    return np.ascontiguousarray(img[:, :, :3])


def _nearest(stamps: np.ndarray, t: int) -> int:
    k = int(np.searchsorted(stamps, t))
    if k == 0:
        return 0
    if k == len(stamps):
        return k - 1
    return k if stamps[k] - t < t - stamps[k - 1] else k - 1


class RosbagReader(Reader):
    """Frames of a rosbag2 log: one per lidar cloud, with the cameras paired within ``tolerance_s``.

    After opening, ``unpaired`` counts per camera the clouds that found no image within tolerance,
    and ``notes`` lists what the reader assumed (e.g. distortion it ignores).
    """

    name = "rosbag"

    def __init__(
        self,
        path: Path,
        *,
        lidar_topic: str | None = None,
        calibration: str | Path | None = None,
        cameras: list[str] | None = None,
        tolerance_s: float = 0.05,
        intensity_scale: float = 1.0,
    ) -> None:
        """``lidar_topic``: the PointCloud2 topic (needed only if the bag has several).
        ``calibration``: a rig calibration YAML used instead of /tf_static and CameraInfo.
        ``cameras``: names of the cameras to keep (default: all). ``tolerance_s``: largest
        |cloud stamp - image stamp| that still pairs. ``intensity_scale``: brings the driver's
        intensity to relidar's 0..1 (1/255 for drivers publishing 0..255; the node's parameter of
        the same name must match)."""
        super().__init__(path)
        if not self.root.exists():
            raise DatasetError(f"{self.root} does not exist; expected a rosbag2 folder (metadata.yaml) or a .mcap/.db3 file")
        if self.root.is_dir() and not (self.root / "metadata.yaml").is_file():
            raise DatasetError(f"no metadata.yaml in {self.root}; expected a rosbag2 folder (or pass the .mcap/.db3 file itself)")
        if tolerance_s < 0:
            raise DatasetError(f"tolerance_s must be >= 0, got {tolerance_s}")
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        if not intensity_scale > 0:
            raise DatasetError(f"intensity_scale must be > 0, got {intensity_scale}")
        self.intensity_scale = float(intensity_scale)
        self._bag_reader: Any = None
        self._bag_pid = -1
        rig = load_rig_calibration(calibration) if calibration is not None else None
        bag = self._bag()
        topics = {c.topic: c.msgtype for c in bag.connections}

        self.lidar_topic = self._choose_lidar(topics, lidar_topic or (rig.lidar_topic if rig else None))
        clouds = self._index(self.lidar_topic)
        if not clouds:
            raise DatasetError(f"lidar topic {self.lidar_topic} has no messages", path=self.root)
        self._clouds = clouds
        lidar_frame = self._decode(self.lidar_topic, clouds[0]).header.frame_id
        self.lidar_frame: str = lidar_frame

        self._cameras = self._rig_cameras(rig, topics) if rig else self._discover_cameras(topics, lidar_frame)
        if cameras is not None:
            unknown = sorted(set(cameras) - {c.name for c in self._cameras})
            if unknown:
                raise DatasetError(
                    f"{self.root}: no camera {', '.join(unknown)} (cameras: {', '.join(c.name for c in self._cameras) or 'none'})"
                )
            self._cameras = [c for c in self._cameras if c.name in cameras]

        # Pairing: per cloud and camera, the index of the nearest image within tolerance, or -1.
        self.unpaired: dict[str, int] = {}
        cloud_stamps = np.array([m.stamp_ns for m in clouds], dtype=np.int64)
        self._pairs = np.full((len(clouds), len(self._cameras)), -1, dtype=np.int64)
        for j, cam in enumerate(self._cameras):
            stamps = np.array([m.stamp_ns for m in cam.messages], dtype=np.int64)
            order = np.argsort(stamps, kind="stable")
            cam.messages = [cam.messages[k] for k in order]
            stamps = stamps[order]
            for i, t in enumerate(cloud_stamps):
                if len(stamps):
                    k = _nearest(stamps, int(t))
                    if abs(int(stamps[k]) - int(t)) <= self.tolerance_ns:
                        self._pairs[i, j] = k
            self.unpaired[cam.name] = int((self._pairs[:, j] < 0).sum())

        seen: dict[str, int] = {}
        for m in clouds:
            fid = str(m.stamp_ns)
            seen[fid] = seen.get(fid, 0) + 1
            self._frame_ids.append(fid if seen[fid] == 1 else f"{fid}_{seen[fid] - 1}")

    # --- bag access (reopened per process, so forked data-loader workers get their own handle) ---

    def _bag(self) -> Any:
        if self._bag_reader is None or self._bag_pid != os.getpid():
            from rosbags.highlevel import AnyReader, AnyReaderError
            from rosbags.typesys import Stores, get_typestore

            try:
                reader = AnyReader([self.root], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
                reader.open()
            except (AnyReaderError, FileNotFoundError, ValueError) as exc:
                raise DatasetError(f"not a readable rosbag2 ({exc})", path=self.root) from exc
            self._bag_reader, self._bag_pid = reader, os.getpid()
        return self._bag_reader

    def close(self) -> None:
        if self._bag_reader is not None and self._bag_pid == os.getpid():
            self._bag_reader.close()
        self._bag_reader = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_bag_reader"] = None
        return state

    def _connections(self, topic: str) -> list[Any]:
        return [c for c in self._bag().connections if c.topic == topic]

    def _index(self, topic: str) -> list[_Msg]:
        bag = self._bag()
        return [_Msg(t, header_stamp_ns(raw, bag.is2)) for _, t, raw in bag.messages(connections=self._connections(topic))]

    def _decode(self, topic: str, m: _Msg) -> Any:
        bag = self._bag()
        for conn, _, raw in bag.messages(connections=self._connections(topic), start=m.log_ns, stop=m.log_ns + 1):
            if header_stamp_ns(raw, bag.is2) == m.stamp_ns:
                return bag.deserialize(raw, conn.msgtype)
        raise DatasetError(f"message of {topic} at {m.log_ns} ns vanished (was the bag modified?)", path=self.root)

    def _first(self, topic: str) -> Any:
        bag = self._bag()
        for conn, _, raw in bag.messages(connections=self._connections(topic)):
            return bag.deserialize(raw, conn.msgtype)
        raise DatasetError(f"topic {topic} has no messages", path=self.root)

    # --- indexing helpers ---

    def _choose_lidar(self, topics: dict[str, str], wanted: str | None) -> str:
        clouds = sorted(t for t, ty in topics.items() if ty == CLOUD)
        if wanted is not None:
            if topics.get(wanted) != CLOUD:
                raise DatasetError(
                    f"{self.root}: {wanted} is not a PointCloud2 topic of this bag (PointCloud2 topics: {', '.join(clouds) or 'none'})"
                )
            return wanted
        if len(clouds) != 1:
            raise DatasetError(
                f"{self.root}: "
                + (f"several PointCloud2 topics ({', '.join(clouds)}); pass lidar_topic=" if clouds else "no sensor_msgs/PointCloud2 topic")
            )
        return clouds[0]

    def _tf_graph(self, topics: dict[str, str]) -> FrameGraph:
        graph = FrameGraph()
        if topics.get("/tf_static") != TF:
            return graph
        bag = self._bag()
        for conn, _, raw in bag.messages(connections=self._connections("/tf_static")):
            for ts in bag.deserialize(raw, conn.msgtype).transforms:
                tr, q = ts.transform.translation, ts.transform.rotation
                T = make_transform(quaternion_to_rotation(q.w, q.x, q.y, q.z), [tr.x, tr.y, tr.z])
                graph.add(ts.header.frame_id, ts.child_frame_id, T)
        return graph

    def _camera_info(self, info_topic: str, cam: str, topics: dict[str, str]) -> Any:
        if topics.get(info_topic) != INFO:
            return None
        info = self._first(info_topic)
        if any(abs(float(x)) > 1e-9 for x in info.d):
            self.notes.append(
                f"camera {cam}: {info_topic} has non-zero distortion ({info.distortion_model}); "
                "projection uses the pinhole K only (rectified images avoid the error)"
            )
        return info

    def _discover_cameras(self, topics: dict[str, str], lidar_frame: str) -> list[_CameraSource]:
        image_topics = sorted((t for t, ty in topics.items() if ty in (IMAGE, COMPRESSED)), key=lambda t: (topics[t] != IMAGE, t))
        chosen: dict[str, str] = {}
        for t in image_topics:
            name = camera_name(t)
            if name in chosen:
                self.notes.append(f"camera {name}: using {chosen[name]}, ignoring {t}")
            else:
                chosen[name] = t
        graph = self._tf_graph(topics) if chosen else FrameGraph()
        sources = []
        for name, topic in sorted(chosen.items()):
            info_topic = camera_info_topic(topic)
            info = self._camera_info(info_topic, name, topics)
            if info is None:
                raise DatasetError(
                    f"{self.root}: camera {name} ({topic}) has no {info_topic} (sensor_msgs/CameraInfo) topic; "
                    "record it or pass a calibration YAML with K"
                )
            frame_id = info.header.frame_id or self._first(topic).header.frame_id
            T = graph.lookup(frame_id, lidar_frame)
            K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
            src = _CameraSource(name, topic, topics[topic], K, T)
            src.messages = self._index(topic)
            sources.append(src)
        return sources

    def _rig_cameras(self, rig: RigCalibration, topics: dict[str, str]) -> list[_CameraSource]:
        sources = []
        for name, cal in rig.cameras.items():
            if topics.get(cal.topic) not in (IMAGE, COMPRESSED):
                raise DatasetError(
                    f"calibration camera {name}: {cal.topic} is not an Image/CompressedImage topic of {self.root}"
                )
            if cal.K is not None:
                K = np.asarray(cal.K, dtype=np.float64)
            else:
                info_topic = cal.camera_info_topic or camera_info_topic(cal.topic)
                info = self._camera_info(info_topic, name, topics)
                if info is None:
                    raise DatasetError(
                        f"calibration camera {name}: no K in the YAML and no {info_topic} CameraInfo topic in {self.root}"
                    )
                K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
            src = _CameraSource(name, cal.topic, topics[cal.topic], K, np.asarray(cal.T_cam_from_lidar, dtype=np.float64))
            src.messages = self._index(cal.topic)
            sources.append(src)
        return sources

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self._cameras]

    def _load(self, index: int) -> Frame:
        m = self._clouds[index]
        msg = self._decode(self.lidar_topic, m)
        try:
            points = cloud_to_xyzi(msg)  # every point as sent: NaN/inf are the Segmenter's to repair
        except PointCloudError as exc:
            raise DatasetError(f"cloud {index} of {self.lidar_topic}: {exc}", path=self.root) from exc
        if self.intensity_scale != 1.0:
            points[:, 3] *= np.float32(self.intensity_scale)
        cams = []
        for j, src in enumerate(self._cameras):
            k = int(self._pairs[index, j])
            if k < 0:
                continue
            image = decode_image(self._decode(src.topic, src.messages[k]), src.msgtype, src.topic)
            cams.append(Camera(name=src.name, image=image, K=src.K, T_cam_from_lidar=src.T_cam_from_lidar))
        return Frame(frame_id=self._frame_ids[index], points=points, cameras=cams, timestamp=m.stamp_ns * 1e-9)
