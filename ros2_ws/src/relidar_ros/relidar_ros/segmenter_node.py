# Copyright 2026 relidar maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
The ``segmenter`` node: lidar PointCloud2 in, every point labelled by a relidar bundle out.

Topics (relative to the node; remap them on the command line or in a launch file):
  ``~/input/points``  sensor_msgs/PointCloud2, best effort, keep last 1 (remap to the driver)
  ``~/output/points`` every input point, in input order, with ``label`` (uint16), ``score``
                      (float32) and ``rgb`` (packed float32 for RViz's RGB8 transformer); the
                      input's header
  ``~/output/legend`` visualization_msgs/MarkerArray, one text marker per class (latched)
  ``~/debug/*_ms``    std_msgs/Float64 stage timings of every labelled scan; the two latencies:
                      ``node_latency_ms`` receipt -> publish on the steady clock,
                      ``pipeline_latency_ms`` header stamp -> publish on the node's ROS clock
                      (system time, or the /clock time with use_sim_time); never negative:
                      a stamp ahead of the clock is counted as ``clock_behind_stamp``
  ``/diagnostics``    diagnostic_msgs/DiagnosticArray at 1 Hz of the steady clock (it goes on
                      while a replay's /clock is paused): rates, latency, counts

Label ``C`` (the number of classes) means *unknown*: a NaN/inf coordinate, out of
``[min_range, max_range]``, outside the bundle's crop, or scored below ``score_threshold``; it is
drawn grey.

The jobs live apart: parameters (``parameters``, from the schema file), the newest-scan mailbox
(``latest_scan``), labelling (``processing``, over the core's Segmenter), counters, diagnostics and
the legend (``diagnostics``). This module wires them to ROS: publishers, the subscription, the
worker threads, parameter changes, and the entry point that turns start-up errors into one
[FATAL] line and exit code 1.

``lanes`` worker threads (``relidar-lane-N``) label scans side by side with one Segmenter: a free
lane takes the newest scan from the mailbox, parses, voxelizes and labels it and publishes the
result; everything heavy releases the GIL. On a CPU the lanes' network calls (fused, ONNX Runtime)
run at once with ``network_threads`` each (auto: the CPUs divided by the lanes), because one call
does not use two cores well (measured on 2 cores with ONNX Runtime: 2 lanes of 1 thread labelled
~30 % more scans a second than 1 lane of 2 threads; README). Lanes of a backend that runs one call
at a time (TensorRT, torch) take turns in the network and overlap the rest. The output stays in
order: a lane whose scan is older than one another lane has published already drops it and counts
it (``superseded``).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from relidar.core.errors import RelidarError
from relidar.core.segmenter import lane_threads
from relidar_ros import qos
from relidar_ros.conversions import cloud_to_msg
from relidar_ros.diagnostics import Counters, DiagnosticsReporter, legend_markers
from relidar_ros.environment import use_default_fastdds_profile
from relidar_ros.latest_scan import LatestScan, PublishOrder
from relidar_ros.parameters import (
    check_overrides,
    check_ranges,
    load_specs,
    ParameterError,
    unknown_parameters,
    usage,
)
from relidar_ros.processing import (
    LabelledCloud,
    load_segmenter,
    ScanProcessor,
    ScanRejected,
    Settings,
)
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64
from visualization_msgs.msg import MarkerArray

NODE_NAME = 'segmenter'
DEBUG_TOPICS = ('preprocess_ms', 'network_ms', 'postprocess_ms', 'total_ms', 'convert_ms',
                'node_latency_ms', 'pipeline_latency_ms')
WARN_THROTTLE_S = 5.0


class SegmenterNode(Node):
    """Labels the newest scans of ``~/input/points`` on worker threads, its lanes (module doc)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._specs = load_specs()
        # rclpy has no public accessor for the overrides it parsed (-p, --params-file); this
        # attribute has held them since Dashing. Checking them before declaring turns a bad
        # value into one line instead of rclpy's exception, and names unknown parameters.
        overrides = {name: p.value for name, p in self._parameter_overrides.items()}
        for warning in unknown_parameters(overrides, self._specs):
            self.get_logger().warning(warning)
        check_overrides(overrides, self._specs)
        values = {}
        for spec in self._specs.values():
            if spec.has_default:
                values[spec.name] = self.declare_parameter(
                    spec.name, spec.default, spec.descriptor()).value
        check_ranges(values)
        self._settings = Settings.from_parameters(values)
        lanes = int(values['lanes'])
        threads = lane_threads(lanes, int(values['network_threads']))
        self._processor = ScanProcessor(
            load_segmenter(values['bundle'], values['backend'], values['device'],
                           values['formulation'], threads))
        bundle_classes = self._processor.class_names()
        classes = list(self.declare_parameter(
            'classes', bundle_classes, self._specs['classes'].descriptor()).value)
        if classes != bundle_classes:
            self._processor.set_classes(classes)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._counters = Counters()
        self._mailbox: LatestScan[PointCloud2] = LatestScan()
        self._legend_key: tuple[str, tuple[str, ...]] | None = None
        self._diagnostics = DiagnosticsReporter(f'{self.get_name()}: lidar segmentation',
                                                self._processor.backend)
        self._pub_points = self.create_publisher(PointCloud2, '~/output/points',
                                                 qos.labelled_output())
        self._pub_legend = self.create_publisher(MarkerArray, '~/output/legend', qos.latched())
        self._pub_debug = {name: self.create_publisher(Float64, f'~/debug/{name}', qos.debug())
                           for name in DEBUG_TOPICS}
        self._pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', qos.debug())
        self._sub = self.create_subscription(PointCloud2, '~/input/points', self._on_cloud,
                                             qos.sensor_input())
        # On the steady clock: with use_sim_time a timer on the ROS clock stops with /clock (a
        # paused or finished bag), and then so would the diagnostics that say no input arrives.
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._stop = threading.Event()
        self._order = PublishOrder()
        self._lanes = [
            threading.Thread(target=self._run_lane, name=f'relidar-lane-{i}', daemon=True)
            for i in range(lanes)]
        for lane in self._lanes:
            lane.start()
        self.get_logger().info(
            f"bundle {values['bundle']} on {self._processor.backend}/{values['device']}, "
            f"{lanes} lane(s) x {threads or 'auto'} network thread(s); "
            f"classes: {', '.join(self._processor.class_names())}; "
            f'listening on {self._sub.topic_name}; pipeline latency on {self._latency_clock()}')

    def _latency_clock(self) -> str:
        sim = self.get_parameter('use_sim_time').value
        return 'ROS time from /clock (use_sim_time)' if sim else 'system time'

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in self._specs}
        try:
            for name, value in changed.items():
                self._specs[name].check(value)
            current = {'min_range': self._settings.policy.min_range,
                       'max_range': self._settings.policy.max_range}
            check_ranges({**current, **changed})
            if 'classes' in changed:
                self._processor.set_classes(list(changed['classes']))
                self.get_logger().info(f"vocabulary now: {', '.join(changed['classes'])}")
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=exc.one_line())
        s = self._settings
        self._settings = Settings.from_parameters({
            'score_threshold': s.policy.score_threshold, 'min_range': s.policy.min_range,
            'max_range': s.policy.max_range, 'max_points': s.max_points,
            'intensity_scale': s.intensity_scale, **changed})
        return SetParametersResult(successful=True)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._counters.received(self._mailbox.put(msg, time.monotonic_ns()))

    def _run_lane(self) -> None:
        while not self._stop.is_set():
            item = self._mailbox.take(timeout_s=0.2)
            if item is None:
                continue
            msg, received_ns = item
            try:
                scan = self._processor.label(msg, self._settings)
                if self._stop.is_set():  # closed while this scan was in the network
                    return
                self._publish(msg, received_ns, scan)
            except Exception as exc:  # noqa: BLE001 - one bad scan must not stop a node on a car
                self._count_failure(exc)

    def _count_failure(self, exc: Exception) -> None:
        if isinstance(exc, ScanRejected):
            self._counters.rejected(exc.one_line())
            self.get_logger().warning(f'rejected a cloud: {exc.one_line()}',
                                      throttle_duration_sec=WARN_THROTTLE_S)
        else:
            # Not a user's input error but a bug or a backend failure: its traceback is what a
            # maintainer needs (throttled like the warnings, a failing backend fails every scan).
            self._counters.failed()
            trace = ''.join(traceback.format_exception(exc)).rstrip()
            self.get_logger().error(f'processing a scan failed: {exc!r}\n{trace}',
                                    throttle_duration_sec=WARN_THROTTLE_S)

    def _publish(self, msg: PointCloud2, received_ns: int, scan: LabelledCloud) -> None:
        frame = msg.header.frame_id
        labelled = cloud_to_msg(scan.cloud, msg.header)  # outside the turn: lanes convert at once
        with self._order.turn(received_ns) as admitted:
            if not admitted:
                self._counters.superseded()
                return
            if self._legend_key != (frame, scan.class_names):
                self._legend_key = (frame, scan.class_names)
                self._pub_legend.publish(legend_markers(frame, scan.class_names, scan.palette))
            self._pub_points.publish(labelled)
        node_latency = (time.monotonic_ns() - received_ns) / 1e6
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        # No latency while the clock has not started (use_sim_time before the first /clock), nor
        # for a stamp ahead of the clock: that is counted in /diagnostics instead (Snapshot).
        pipeline_latency, clock_behind = float('nan'), None
        if now_ns > 0 and stamp_ns > 0:
            if now_ns >= stamp_ns:
                pipeline_latency = (now_ns - stamp_ns) / 1e6
            else:
                clock_behind = (stamp_ns - now_ns) / 1e6
        timings = {**scan.timings_ms, 'node_latency_ms': node_latency,
                   'pipeline_latency_ms': pipeline_latency}
        for name, pub in self._pub_debug.items():
            value = timings.get(name, float('nan'))
            if value == value:  # not NaN
                pub.publish(Float64(data=float(value)))
        self._counters.labelled(scan.cloud.width * scan.cloud.height, node_latency,
                                pipeline_latency, scan.non_finite_xyz,
                                scan.non_finite_intensity, clock_behind)

    def _publish_diagnostics(self) -> None:
        status = self._diagnostics.status(time.monotonic(), self._counters.snapshot(),
                                          self._processor.class_names(), self._latency_clock(),
                                          bool(self.get_parameter('use_sim_time').value))
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(diag)

    def close(self, timeout_s: float = 30.0) -> bool:
        """
        Stop the lanes and wait for them; the caller destroys the node only after this.

        A lane inside ONNX Runtime finishes its call (it cannot be interrupted) and then publishes
        nothing. Returns False when a lane is still running after ``timeout_s`` (logged).
        """
        self._stop.set()
        self._mailbox.close()
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes:
            lane.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [lane.name for lane in self._lanes if lane.is_alive()]
        if alive:
            self.get_logger().error(
                f'lanes still running after {timeout_s:.0f} s: {", ".join(alive)}')
        return not alive


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; a start-up error is one [FATAL] line and exit code 1."""
    argv = list(sys.argv if args is None else args)
    user_args = argv[1: argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    logger = get_logger(NODE_NAME)
    if '-h' in user_args or '--help' in user_args:
        try:
            print(usage(load_specs()))
        except RelidarError as exc:
            logger.fatal(exc.one_line())
            return 1
        return 0
    # Large clouds need the enlarged shared-memory segment on both ends; read at rclpy.init.
    use_default_fastdds_profile()
    try:
        rclpy.init(args=argv)
    except rclpy_implementation.RCLError as exc:  # e.g. a params file that does not parse
        logger.fatal(f'cannot read the ROS arguments: {" ".join(str(exc).split())}')
        return 1
    try:
        node = SegmenterNode()
    except RelidarError as exc:
        logger.fatal(exc.one_line())
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


if __name__ == '__main__':
    raise SystemExit(main())
