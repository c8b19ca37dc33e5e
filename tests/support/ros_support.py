"""Helpers of the ROS tests: bags written with rosbags, a domain id per test session, an in-process
subscriber running in its own rclpy context. Imported by tests/ros/test_ros_*.py (rclpy inside functions)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from relidar.core.pointcloud2 import CloudData, build_cloud

_domain_counter = itertools.count()


def fresh_domain_id() -> int:
    """A ROS domain id no other test run on this machine is likely to use (pid-based; 1..200)."""
    return 1 + (os.getpid() * 7 + next(_domain_counter)) % 200


def xyzi_cloud(points: np.ndarray) -> CloudData:
    p = np.asarray(points, dtype=np.float32)
    return build_cloud({"x": p[:, 0], "y": p[:, 1], "z": p[:, 2], "intensity": p[:, 3]})


def write_cloud_bag(
    path: Path,
    clouds: Sequence[CloudData],
    topic: str = "/points_raw",
    frame_id: str = "velodyne",
    period_s: float = 0.1,
    storage: str = "sqlite3",
    tf_static: bool = False,
) -> Path:
    """A rosbag2 with one PointCloud2 per ``cloud`` (stamped 1e9 ns apart by ``period_s``), and a
    /tf_static message first when asked."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    T = ts.types
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    t0 = 1_700_000_000_000_000_000
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        if tf_static:
            conn_tf = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
            tf = T["geometry_msgs/msg/TransformStamped"](
                header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t0 // 10**9, nanosec=0),
                                                frame_id="base_link"),
                child_frame_id=frame_id,
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=1.7),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            )
            msg = T["tf2_msgs/msg/TFMessage"](transforms=[tf])
            writer.write(conn_tf, t0, ts.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))
        conn = writer.add_connection(topic, "sensor_msgs/msg/PointCloud2", typestore=ts)
        for i, c in enumerate(clouds):
            stamp = t0 + int(i * period_s * 1e9) + 1000
            header = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
            msg = T["sensor_msgs/msg/PointCloud2"](
                header=header, height=c.height, width=c.width,
                fields=[T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                        for f in c.fields],
                is_bigendian=c.is_bigendian, point_step=c.point_step, row_step=c.row_step,
                data=np.frombuffer(c.data, dtype=np.uint8), is_dense=c.is_dense)
            writer.write(conn, stamp, ts.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
    return path


@dataclass
class RosPeer:
    """An rclpy node in its own context and executor thread, on one domain."""

    domain_id: int
    name: str = "relidar_test_peer"
    context: Any = None
    node: Any = None
    _executor: Any = None
    _thread: threading.Thread | None = None
    received: dict[str, list[Any]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __enter__(self) -> "RosPeer":
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(self.name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def subscribe(self, msg_type: type, topic: str, qos: Any, keep: Callable[[Any], Any] = lambda m: m) -> None:
        self.received[topic] = []

        def cb(msg: Any) -> None:
            with self._cond:
                self.received[topic].append(keep(msg))
                self._cond.notify_all()

        self.node.create_subscription(msg_type, topic, cb, qos)

    def wait_for(self, topic: str, count: int, timeout_s: float) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.received[topic]) >= count, timeout=timeout_s)
            return list(self.received[topic])

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def __exit__(self, *exc: object) -> None:
        import rclpy

        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
