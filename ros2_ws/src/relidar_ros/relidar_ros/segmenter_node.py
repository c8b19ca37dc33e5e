"""The ``segmenter`` node: lidar PointCloud2 in, every finite point labelled by a relidar bundle out.

Topics (all relative to the node, remap them on the command line / in launch files):
  ``~/input/points``  sensor_msgs/PointCloud2, best effort, keep last 1 (remap to the driver's topic)
  ``~/output/points`` the finite input points with ``label`` (uint16), ``score`` (float32), ``rgb``
                      (packed float32 for RViz's RGB8 transformer); same header (stamp, frame)
  ``~/output/legend`` visualization_msgs/MarkerArray, one text marker per class in its colour (latched)
  ``~/debug/*_ms``    std_msgs/Float64 stage timings of every labelled scan
  ``/diagnostics``    diagnostic_msgs/DiagnosticArray at 1 Hz: rates, latency, dropped, rejected counts

Label ``C`` (the number of classes) means *unknown*: out of ``[min_range, max_range]``, outside the
bundle's crop, or scored below ``score_threshold``; it is drawn grey.

Only the newest scan is processed: the subscription callback stores it in a one-slot mailbox and a
worker thread takes it from there; a scan replaced before the worker got to it is counted as dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64
from visualization_msgs.msg import Marker, MarkerArray

from relidar.core.pointcloud2 import PointCloudError, cloud_to_xyzi
from relidar_ros import qos
from relidar_ros.conversions import cloud_to_msg, num_points
from relidar_ros.environment import use_default_fastdds_profile
from relidar_ros.labelling import LabelPolicy, final_labels, labelled_cloud, range_mask

NODE_NAME = "segmenter"
DEBUG_TOPICS = ("preprocess_ms", "network_ms", "postprocess_ms", "total_ms", "convert_ms", "node_latency_ms",
                "pipeline_latency_ms")
WARN_THROTTLE_S = 5.0


class StartupError(RuntimeError):
    """The node cannot start (no bundle, corrupt bundle, bad initial parameters); the message says why."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    type: int
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=self.type, description=self.description,
                                read_only=self.read_only)
        if self.float_range is not None:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1], step=0.0)]
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        return d


# ``classes`` is declared separately: its default comes from the bundle's vocabulary.
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("bundle", "", ParameterType.PARAMETER_STRING,
              "Model bundle folder written by `relidar export bundle` (required).", read_only=True),
    ParamSpec("backend", "auto", ParameterType.PARAMETER_STRING,
              "Inference backend: auto, or one the bundle holds (e.g. onnxruntime, tensorrt).", read_only=True),
    ParamSpec("device", "cpu", ParameterType.PARAMETER_STRING,
              "Device for inference: cpu, cuda or cuda:N.", read_only=True),
    ParamSpec("score_threshold", 0.0, ParameterType.PARAMETER_DOUBLE,
              "Points whose class probability is below this get label C (= number of classes, unknown, grey).",
              float_range=(0.0, 1.0)),
    ParamSpec("min_range", 0.0, ParameterType.PARAMETER_DOUBLE,
              "Points closer than this (m, 3D distance from the sensor) are not classified: label unknown.",
              float_range=(0.0, 1000.0)),
    ParamSpec("max_range", 200.0, ParameterType.PARAMETER_DOUBLE,
              "Points farther than this (m) are not classified: label unknown.", float_range=(0.0, 1000.0)),
    ParamSpec("intensity_scale", 1.0, ParameterType.PARAMETER_DOUBLE,
              "Factor bringing the cloud's intensity to the 0..1 the student was trained on (relidar readers "
              "scale to 0..1): 1.0 for KITTI-style reflectance, 1/255 = 0.00392 for drivers publishing 0..255. "
              "The published cloud keeps the original intensity.", float_range=(0.0, 1.0e6)),
    ParamSpec("max_points", 2_000_000, ParameterType.PARAMETER_INTEGER,
              "Clouds with more points (width*height) are rejected.", int_range=(1, 100_000_000)),
)
CLASSES_DESCRIPTION = ("Class names (prompts) to label with; changing it re-encodes the vocabulary with the "
                       "bundle's text encoder and applies to the next scan. Default: the bundle's vocabulary.")


class LatestScan:
    """A one-slot mailbox: ``put`` replaces what the worker has not taken yet (never queues)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[PointCloud2, int] | None = None
        self._closed = False

    def put(self, msg: PointCloud2, received_ns: int) -> bool:
        """Store the scan; True when it replaced one that was never processed."""
        with self._cond:
            replaced = self._item is not None
            self._item = (msg, received_ns)
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float) -> tuple[PointCloud2, int] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Counters:
    received: int = 0
    labelled: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    last_reject_reason: str = ""
    last_node_latency_ms: float = float("nan")
    last_pipeline_latency_ms: float = float("nan")
    last_points: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_segmenter(bundle: str, backend: str, device: str) -> Any:
    """The bundle's Segmenter, or StartupError with one clear message."""
    if not bundle:
        raise StartupError("parameter 'bundle' is empty: pass the folder written by `relidar export bundle`, "
                           "e.g. --ros-args -p bundle:=/path/to/bundle")
    if not Path(bundle).is_dir():
        raise StartupError(f"bundle folder {bundle!r} does not exist (parameter 'bundle')")
    try:
        from relidar.core.bundle import BundleError
        from relidar.core.segmenter import Segmenter
    except ImportError as exc:
        raise StartupError(f"the relidar runtime is not installed in this Python ({exc}); "
                           "pip install relidar into the environment the node runs in") from None
    try:
        return Segmenter(bundle, backend=backend, device=device)
    except (BundleError, ValueError, KeyError, OSError) as exc:  # ValueError covers VocabularyError
        raise StartupError(f"cannot load bundle {bundle!r}: {exc}") from None


class SegmenterNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMS}
        self._segmenter = load_segmenter(p["bundle"], p["backend"], p["device"])
        self._segmenter_lock = threading.Lock()
        self._policy = LabelPolicy(p["score_threshold"], p["min_range"], p["max_range"])
        if self._policy.min_range >= self._policy.max_range:
            raise StartupError(f"min_range {self._policy.min_range} must be below max_range {self._policy.max_range}")
        self._max_points = int(p["max_points"])
        self._intensity_scale = float(p["intensity_scale"])

        bundle_classes = [str(c) for c in self._segmenter.vocabulary.class_names]
        self.declare_parameter(
            "classes", bundle_classes,
            ParameterDescriptor(name="classes", type=ParameterType.PARAMETER_STRING_ARRAY,
                                description=CLASSES_DESCRIPTION),
        )
        classes = list(self.get_parameter("classes").value)
        if classes != bundle_classes:
            reason = self._apply_classes(classes)
            if reason:
                raise StartupError(f"parameter 'classes': {reason}")
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._counters = Counters()
        self._mailbox = LatestScan()
        self._legend_frame: str | None = None
        self._legend_dirty = True

        self._pub_points = self.create_publisher(PointCloud2, "~/output/points", qos.labelled_output())
        self._pub_legend = self.create_publisher(MarkerArray, "~/output/legend", qos.latched())
        self._pub_debug = {name: self.create_publisher(Float64, f"~/debug/{name}", qos.debug())
                           for name in DEBUG_TOPICS}
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.debug())
        self._sub = self.create_subscription(PointCloud2, "~/input/points", self._on_cloud, qos.sensor_input())
        self._diag_last = (time.monotonic(), 0, 0, 0)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="relidar-segmenter", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"bundle {p['bundle']} on {self._segmenter.backend}/{p['device']}; classes: {', '.join(self._class_names())}; "
            f"listening on {self._sub.topic_name}"
        )

    # -- vocabulary -----------------------------------------------------------------------------------
    def _class_names(self) -> list[str]:
        return [str(c) for c in self._segmenter.vocabulary.class_names]

    def _apply_classes(self, classes: Sequence[str]) -> str:
        """Switch the vocabulary; '' on success, else the reason it was refused (vocabulary unchanged)."""
        names = [str(c).strip() for c in classes]
        if not names:
            return "the class list is empty: give at least one class name"
        if any(not n for n in names):
            return "class names must be non-empty strings"
        if len(set(names)) != len(names):
            return f"class names repeat: {names}"
        with self._segmenter_lock:
            try:
                self._segmenter.set_classes(names)
            except (ValueError, KeyError, RuntimeError) as exc:
                return f"the bundle refused the vocabulary {names}: {exc}"
        self._legend_dirty = True
        return ""

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        by_name = {prm.name: prm.value for prm in params}
        lo = float(by_name.get("min_range", self._policy.min_range))
        hi = float(by_name.get("max_range", self._policy.max_range))
        if lo >= hi:
            return SetParametersResult(successful=False, reason=f"min_range {lo} must be below max_range {hi}")
        if "classes" in by_name:
            reason = self._apply_classes(list(by_name["classes"] or []))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            self.get_logger().info(f"vocabulary now: {', '.join(self._class_names())}")
        self._policy = LabelPolicy(float(by_name.get("score_threshold", self._policy.score_threshold)), lo, hi)
        self._max_points = int(by_name.get("max_points", self._max_points))
        self._intensity_scale = float(by_name.get("intensity_scale", self._intensity_scale))
        return SetParametersResult(successful=True)

    # -- input ----------------------------------------------------------------------------------------
    def _on_cloud(self, msg: PointCloud2) -> None:
        replaced = self._mailbox.put(msg, time.time_ns())
        with self._counters.lock:
            self._counters.received += 1
            self._counters.dropped += int(replaced)

    def _reject(self, reason: str) -> None:
        with self._counters.lock:
            self._counters.rejected += 1
            self._counters.last_reject_reason = reason
        self.get_logger().warning(f"rejected a cloud: {reason}", throttle_duration_sec=WARN_THROTTLE_S)

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._mailbox.take(timeout_s=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the worker of a node on a car
                with self._counters.lock:
                    self._counters.failed += 1
                self.get_logger().error(f"processing a scan failed: {exc!r}", throttle_duration_sec=WARN_THROTTLE_S)

    def _process(self, msg: PointCloud2, received_ns: int) -> None:
        t0 = time.perf_counter()
        n = num_points(msg)
        if n > self._max_points:
            self._reject(f"{n} points is more than max_points={self._max_points}")
            return
        if n == 0:
            self._reject("the cloud has no points")
            return
        try:
            cloud = cloud_to_xyzi(msg)
        except PointCloudError as exc:
            self._reject(str(exc))
            return
        points = cloud.points
        if points.shape[0] == 0:
            self._reject("no point of the cloud has finite x, y, z")
            return
        policy = self._policy
        selected = range_mask(points, policy)
        t_parsed = time.perf_counter()
        timings: dict[str, float] = {}
        with self._segmenter_lock:
            vocabulary = self._segmenter.vocabulary
            num_classes = len(vocabulary.class_names)
            palette = np.asarray(vocabulary.colors, dtype=np.uint8)
            if selected.any():
                net_points = points[selected]  # a copy (boolean index): the published intensity stays as received
                if self._intensity_scale != 1.0:
                    net_points[:, 3] *= np.float32(self._intensity_scale)
                result = self._segmenter(net_points)
                seg_labels, seg_scores = result.labels, result.scores
                timings = dict(result.timings_ms)
            else:
                seg_labels = np.zeros(0, np.int32)
                seg_scores = np.zeros(0, np.float32)
        t_inferred = time.perf_counter()
        labels, scores = final_labels(points.shape[0], selected, seg_labels, seg_scores, num_classes, policy)
        out = cloud_to_msg(labelled_cloud(points, labels, scores, palette), msg.header)
        self._maybe_publish_legend(msg.header.frame_id, palette)
        self._pub_points.publish(out)
        now_ns = time.time_ns()
        t_done = time.perf_counter()

        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        node_latency = (now_ns - received_ns) / 1e6
        pipeline_latency = (now_ns - stamp_ns) / 1e6 if stamp_ns > 0 else float("nan")
        timings["convert_ms"] = 1e3 * ((t_parsed - t0) + (t_done - t_inferred))
        timings["node_latency_ms"] = node_latency
        timings["pipeline_latency_ms"] = pipeline_latency
        for name in ("preprocess", "network", "postprocess", "total"):
            if name in timings:
                timings[f"{name}_ms"] = timings.pop(name)
        for name, pub in self._pub_debug.items():
            if name in timings and np.isfinite(timings[name]):
                pub.publish(Float64(data=float(timings[name])))
        with self._counters.lock:
            self._counters.labelled += 1
            self._counters.last_points = int(points.shape[0])
            self._counters.last_node_latency_ms = node_latency
            self._counters.last_pipeline_latency_ms = pipeline_latency

    # -- legend and diagnostics -----------------------------------------------------------------------
    def _maybe_publish_legend(self, frame: str, palette: np.ndarray) -> None:
        if not self._legend_dirty and frame == self._legend_frame:
            return
        self._legend_dirty = False
        self._legend_frame = frame
        names = self._class_names() + ["unknown"]
        colours = np.concatenate([palette.reshape(-1, 3), [[128, 128, 128]]]).astype(np.float64) / 255.0
        markers = [Marker(action=Marker.DELETEALL, ns="relidar_legend")]
        markers[0].header.frame_id = frame
        for i, (name, rgb) in enumerate(zip(names, colours)):
            m = Marker(ns="relidar_legend", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, text=name)
            m.header.frame_id = frame
            m.pose.position.z = 2.0 + 0.6 * (len(names) - i)
            m.pose.orientation.w = 1.0
            m.scale.z = 0.5
            m.color.r, m.color.g, m.color.b, m.color.a = float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0
            markers.append(m)
        self._pub_legend.publish(MarkerArray(markers=markers))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        c = self._counters
        with c.lock:
            snap = (c.received, c.labelled, c.dropped, c.rejected, c.failed, c.last_reject_reason,
                    c.last_node_latency_ms, c.last_pipeline_latency_ms, c.last_points)
        received, labelled, dropped, rejected, failed, reason, latency, pipeline, points = snap
        t_prev, rec_prev, lab_prev, rej_prev = self._diag_last
        dt = max(now - t_prev, 1e-6)
        self._diag_last = (now, received, labelled, rejected)
        level, message = DiagnosticStatus.OK, "labelling"
        if received == rec_prev:
            level, message = DiagnosticStatus.WARN, "no input cloud in the last period"
        elif rejected > rej_prev:
            level, message = DiagnosticStatus.WARN, f"rejected clouds: {reason}"
        values = {
            "input_rate_hz": f"{(received - rec_prev) / dt:.2f}",
            "output_rate_hz": f"{(labelled - lab_prev) / dt:.2f}",
            "node_latency_ms": f"{latency:.1f}",
            "pipeline_latency_ms": f"{pipeline:.1f}",
            "received": str(received),
            "labelled": str(labelled),
            "dropped": str(dropped),
            "rejected": str(rejected),
            "failed": str(failed),
            "last_reject_reason": reason,
            "points": str(points),
            "backend": str(self._segmenter.backend),
            "vocabulary": ", ".join(self._class_names()),
        }
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: lidar segmentation", message=message,
                                  hardware_id=str(self._segmenter.backend),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(diag)

    def close(self) -> None:
        self._stop.set()
        self._mailbox.close()
        self._worker.join(timeout=5.0)


def usage() -> str:
    lines = [
        "segmenter: label every point of a lidar PointCloud2 with a relidar model bundle.",
        "",
        "usage: segmenter --ros-args -p bundle:=DIR [-p NAME:=VALUE ...] [--params-file FILE]",
        "                 [-r ~/input/points:=/your/lidar/topic]",
        "",
        "parameters:",
    ]
    for spec in PARAMS:
        lines.append(f"  {spec.name:<16} (default {spec.default!r}) {spec.description}")
    lines.append(f"  {'classes':<16} {CLASSES_DESCRIPTION}")
    lines += ["", "Set FASTDDS_DEFAULT_PROFILES_FILE to the shipped config/fastdds_shm.xml for large clouds "
              "(done automatically when unset)."]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    user_args = argv[1: argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in user_args or "--help" in user_args:
        print(usage())
        return 0
    # Large clouds need the enlarged shared-memory segment on both ends; must be set before rclpy.init.
    use_default_fastdds_profile()
    rclpy.init(args=argv)
    try:
        node = SegmenterNode()
    except StartupError as exc:
        get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
