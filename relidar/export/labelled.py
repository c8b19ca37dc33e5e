"""Labelled scans in files people open in their own tools (what ``relidar segment`` writes).

- PLY per scan: x, y, z, intensity, red, green, blue, ``label`` (int32, -1 = unknown) and ``score``
  (CloudCompare, MeshLab, Open3D, ``relidar view``).
- SemanticKITTI ``.label`` per scan (``relidar.core.scan_io``: the benchmark's raw ids where a class
  is one of its own), and ``labels.yaml`` beside them (ids, names, BGR colour map as semantic-kitti.yaml).
- A rosbag2 (MCAP storage, ROS 2 Jazzy message definitions, as the node's rclpy):
  ``/segmenter/output/points`` sensor_msgs/PointCloud2 exactly as the segmenter node publishes it
  (x, y, z, intensity, ``label`` uint16 with C = unknown, ``score``, packed ``rgb``) and
  ``/segmenter/output/legend`` visualization_msgs/MarkerArray (one text marker per class in its
  colour, recorded transient-local so ``ros2 bag play`` latches it), so ``ros2 bag play`` with the
  shipped RViz config, Foxglove and the ``mcap`` tools open it.

rosbags writes the bag; it is an export-side library (the runtime core stays free of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Sequence

import numpy as np
import yaml

from relidar.core.errors import RelidarError
from relidar.core.pointcloud2 import labelled_cloud
from relidar.core.scan_io import labels_to_raw_ids, semantic_kitti_label_config, write_label_file, write_ply
from relidar.core.viz.palette import UNKNOWN_COLOUR, UNKNOWN_NAME, label_colours

POINTS_TOPIC = "/segmenter/output/points"
LEGEND_TOPIC = "/segmenter/output/legend"
LABELS_YAML = "labels.yaml"


class LabelledOutputError(RelidarError):
    """A labelled output that cannot be written (a bag folder in the way, inconsistent arrays)."""


@dataclass(frozen=True)
class LabelledScan:
    """One labelled scan: points [N,4] (x, y, z, intensity), labels [N] int (-1 or >= C: unknown), scores [N]."""

    name: str
    points: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    stamp_ns: int = 0
    frame_id: str = "lidar"

    def __post_init__(self) -> None:
        n = len(self.points)
        if np.asarray(self.points).shape[1:] != (4,) or len(self.labels) != n or len(self.scores) != n:
            raise LabelledOutputError(f"scan {self.name!r}: points {np.shape(self.points)}, labels "
                                      f"{np.shape(self.labels)} and scores {np.shape(self.scores)} do not match")


def write_labelled_ply(path: str | Path, scan: LabelledScan, palette: np.ndarray) -> Path:
    """The scan as a binary PLY with intensity, class colours, label (int32, -1 unknown) and score."""
    labels = np.asarray(scan.labels).astype(np.int32)
    labels = np.where((labels >= 0) & (labels < len(palette)), labels, -1).astype(np.int32)
    return write_ply(path, scan.points[:, :3], label_colours(labels, palette), intensity=scan.points[:, 3],
                     label=labels, score=np.asarray(scan.scores, dtype=np.float32))


def write_labels_yaml(path: str | Path, class_names: Sequence[str], palette: np.ndarray) -> Path:
    """``labels`` (raw id -> name) and ``color_map`` (raw id -> BGR) of the ``.label`` files beside it."""
    from relidar.core.atomic import atomic_write_bytes

    config = semantic_kitti_label_config(class_names, palette)
    atomic_write_bytes(path, yaml.safe_dump(config, sort_keys=True, default_flow_style=None).encode())
    return Path(path)


def read_labels_yaml(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(class names in index order, [C,3] uint8 RGB colours) of a ``labels.yaml`` written by :func:`write_labels_yaml`."""
    from relidar.core.scan_io import semantic_kitti_ids

    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
        names = tuple(str(n) for n in config["classes"])
        bgr = [config["color_map"][int(i)] for i in semantic_kitti_ids(names)]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise LabelledOutputError(f"not a labels.yaml written by `relidar segment` ({type(exc).__name__}: {exc})",
                                  path=p) from exc
    return names, np.array([c[::-1] for c in bgr], dtype=np.uint8).reshape(-1, 3)


def read_labelled_ply(path: str | Path) -> LabelledScan:
    """A labelled PLY (:func:`write_labelled_ply`, or any PLY with x, y, z and optional intensity, label, score)."""
    import plyfile

    from relidar.core.scan_io import read_scan

    p = Path(path)
    points = read_scan(p)  # the strict reader: errors name the file
    rows = plyfile.PlyData.read(str(p))["vertex"].data
    names = rows.dtype.names or ()
    labels = np.asarray(rows["label"], dtype=np.int64) if "label" in names else np.full(len(points), -1)
    scores = np.asarray(rows["score"], dtype=np.float32) if "score" in names else np.zeros(len(points), np.float32)
    return LabelledScan(p.stem, points, labels, scores)


def read_labelled_bag(path: str | Path, topic: str = POINTS_TOPIC) -> tuple[tuple[str, ...], np.ndarray, list[LabelledScan]]:
    """(class names, [C,3] colours, scans) of a labelled bag: the clouds of ``topic`` (label ``C`` = unknown
    becomes -1) and the legend's class names and colours."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    from relidar.core.pointcloud2 import PointCloudError, read_cloud

    p = Path(path)
    try:
        with AnyReader([p]) as reader:
            conns = {c.topic: c for c in reader.connections}
            if topic not in conns:
                raise LabelledOutputError(f"has no {topic} topic (topics: {', '.join(sorted(conns)) or 'none'})", path=p,
                                          hint="give a bag written by `relidar segment` or recorded from the node")
            names: tuple[str, ...] = ()
            colours = np.zeros((0, 3), np.uint8)
            if LEGEND_TOPIC in conns:
                for c, _, raw in reader.messages([conns[LEGEND_TOPIC]]):
                    markers = [m for m in reader.deserialize(raw, c.msgtype).markers if m.text]
                    names = tuple(m.text for m in markers if m.text != UNKNOWN_NAME)
                    colours = np.array([[m.color.r, m.color.g, m.color.b] for m in markers[: len(names)]]).reshape(-1, 3)
                    colours = np.rint(colours * 255).astype(np.uint8)
            scans = []
            for k, (c, stamp, raw) in enumerate(reader.messages([conns[topic]])):
                msg = reader.deserialize(raw, c.msgtype)
                cloud = read_cloud(msg)
                cols = cloud.dtype.names or ()
                pts = np.zeros((len(cloud), 4), np.float32)
                for j, axis in enumerate(("x", "y", "z", "intensity")):
                    if axis in cols:
                        pts[:, j] = cloud[axis]
                labels = np.asarray(cloud["label"], np.int64) if "label" in cols else np.full(len(cloud), -1)
                if names:  # the node's unknown label is C, the number of classes
                    labels[(labels < 0) | (labels >= len(names))] = -1
                scores = np.asarray(cloud["score"], np.float32) if "score" in cols else np.zeros(len(cloud), np.float32)
                scans.append(LabelledScan(f"{k:06d}", pts, labels, scores, int(stamp), msg.header.frame_id))
    except (AnyReaderError, PointCloudError) as exc:
        raise LabelledOutputError(f"cannot be read as a rosbag2 ({exc})", path=p) from exc
    return names, colours, scans


def write_scan_labels(path: str | Path, scan: LabelledScan, class_names: Sequence[str]) -> Path:
    return write_label_file(path, labels_to_raw_ids(scan.labels, class_names))


class LabelledBagWriter:
    """A rosbag2 folder (MCAP) of labelled clouds and the class legend; see the module docstring."""

    def __init__(self, path: str | Path, class_names: Sequence[str], palette: np.ndarray) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise LabelledOutputError("already exists; a rosbag2 is written as a new folder", path=self.path,
                                      hint="remove it or choose another output folder")
        self.class_names = tuple(class_names)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._points = None
        self._legend = None
        self.messages = 0

    def __enter__(self) -> "LabelledBagWriter":
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

        self._writer.open()
        forever = QosTime(2147483647, 4294967295)
        latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                      forever, forever, QosLiveliness.AUTOMATIC, forever, False)
        self._points = self._writer.add_connection(POINTS_TOPIC, "sensor_msgs/msg/PointCloud2", typestore=self.typestore)
        self._legend = self._writer.add_connection(LEGEND_TOPIC, "visualization_msgs/msg/MarkerArray",
                                                   typestore=self.typestore, offered_qos_profiles=(latched,))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._writer.close()

    def _header(self, stamp_ns: int, frame_id: str):
        T = self.typestore.types
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)),
            frame_id=frame_id)

    def legend(self, stamp_ns: int, frame_id: str):
        """The node's legend: DELETEALL, then one TEXT_VIEW_FACING marker per class and one for unknown."""
        T = self.typestore.types
        Marker = T["visualization_msgs/msg/Marker"]
        names = [*self.class_names, UNKNOWN_NAME]
        colours = np.concatenate([self.palette, [UNKNOWN_COLOUR]]).astype(np.float64) / 255.0
        header = self._header(stamp_ns, frame_id)

        def marker(i: int, action: int, kind: int, text: str, z: float, rgb: np.ndarray):
            return Marker(
                header=header, ns="relidar_legend", id=i, type=kind, action=action,
                pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=z),
                                                 orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                scale=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.5),
                color=T["std_msgs/msg/ColorRGBA"](r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=1.0),
                lifetime=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False, points=[],
                colors=[], texture_resource="", texture=T["sensor_msgs/msg/CompressedImage"](
                    header=header, format="", data=np.zeros(0, np.uint8)),
                uv_coordinates=[], text=text, mesh_resource="",
                mesh_file=T["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
                mesh_use_embedded_materials=False)

        markers = [marker(0, Marker.DELETEALL, Marker.TEXT_VIEW_FACING, "", 0.0, np.zeros(3))]
        markers += [marker(i, Marker.ADD, Marker.TEXT_VIEW_FACING, name, 2.0 + 0.6 * (len(names) - i), rgb)
                    for i, (name, rgb) in enumerate(zip(names, colours))]
        return T["visualization_msgs/msg/MarkerArray"](markers=markers)

    def write(self, scan: LabelledScan) -> None:
        if self._points is None:
            raise LabelledOutputError("LabelledBagWriter.write outside its `with` block")
        T = self.typestore.types
        if self.messages == 0:
            msg = self.legend(scan.stamp_ns, scan.frame_id)
            self._writer.write(self._legend, scan.stamp_ns,
                               self.typestore.serialize_cdr(msg, "visualization_msgs/msg/MarkerArray"))
        cloud = labelled_cloud(scan.points, scan.labels, scan.scores, self.palette)
        msg = T["sensor_msgs/msg/PointCloud2"](
            header=self._header(scan.stamp_ns, scan.frame_id), height=cloud.height, width=cloud.width,
            fields=[T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                    for f in cloud.fields],
            is_bigendian=cloud.is_bigendian, point_step=cloud.point_step, row_step=cloud.row_step,
            data=np.frombuffer(cloud.data, dtype=np.uint8), is_dense=cloud.is_dense)
        self._writer.write(self._points, scan.stamp_ns, self.typestore.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
        self.messages += 1
