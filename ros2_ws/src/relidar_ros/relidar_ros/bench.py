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
End-to-end benchmark of the segmenter node, which runs as a child process.

One scan is published at a fixed rate through real DDS to the node; measured are the latency
(publish -> labelled cloud received), drops and the node's memory. rclpy is imported inside the
function, so importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import platform
import threading
import time
from typing import Callable

import numpy as np
from relidar.core.errors import RelidarError
from relidar.core.timing import percentile, percentiles
from relidar_ros.environment import (
    process_rss_mb,
    start_segmenter,
    stop_process,
    use_default_fastdds_profile,
)

INPUT_TOPIC = '/relidar_bench/points'
OUTPUT_TOPIC = '/segmenter/output/points'


class NodeBenchError(RelidarError):
    """The node could not be started or never answered; ``path`` is its log."""


WARMUP_S = 5  # seconds at the publishing rate before memory is taken as warmed up


@dataclass(frozen=True)
class NodeBenchConfig:
    """What to benchmark, how fast and how long."""

    bundle: Path
    scan: np.ndarray  # [N,4] float32
    rate_hz: float = 10.0
    seconds: float = 30.0
    backend: str = 'auto'
    device: str = 'cpu'
    formulation: str = 'auto'
    lanes: int = 2
    network_threads: int = 0
    domain_id: int = 0
    startup_timeout_s: float = 120.0
    log_path: Path | None = None


def _failure(message: str, log: Path | None) -> NodeBenchError:
    """Return the error with the node log's last line (a start-up failure is one FATAL line)."""
    lines = log.read_text(errors='replace').split('\n') if log and log.is_file() else []
    last = next((line for line in reversed(lines) if line.strip()), '')
    return NodeBenchError(message + (f'; the node said: {last}' if last else ''), path=log)


def run_node_bench(cfg: NodeBenchConfig,
                   on_tick: Callable[[float, int, int], None] | None = None) -> dict:
    """Run the benchmark; ``on_tick(elapsed_s, published, labelled)`` is called once a second."""
    from diagnostic_msgs.msg import DiagnosticArray
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from relidar.core.pointcloud2 import build_cloud
    from sensor_msgs.msg import PointCloud2

    use_default_fastdds_profile()
    pts = cfg.scan
    cloud = build_cloud({'x': pts[:, 0], 'y': pts[:, 1], 'z': pts[:, 2], 'intensity': pts[:, 3]})

    proc = start_segmenter(cfg.bundle, cfg.domain_id, f'backend:={cfg.backend}',
                           f'device:={cfg.device}', f'formulation:={cfg.formulation}',
                           f'lanes:={cfg.lanes}', f'network_threads:={cfg.network_threads}',
                           input_topic=INPUT_TOPIC, log_path=cfg.log_path)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=cfg.domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    lock = threading.Lock()
    arrivals: list[tuple[int, int, int]] = []  # (stamp ns, received ns, points)
    diagnostics: dict[str, str] = {}
    try:
        node = rclpy.create_node('relidar_bench_node', context=context)

        def on_output(msg: PointCloud2) -> None:
            now = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with lock:
                arrivals.append((stamp, now, int(msg.width) * int(msg.height)))

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith('segmenter'):
                    with lock:
                        diagnostics.update({kv.key: kv.value for kv in status.values})

        node.create_subscription(PointCloud2, OUTPUT_TOPIC, on_output,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, QoSProfile(depth=10))
        pub = node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        from relidar_ros.conversions import cloud_to_msg
        from std_msgs.msg import Header

        def publish() -> int:
            stamp = time.time_ns()
            header = Header(frame_id='lidar')
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(cloud_to_msg(cloud, header))
            return stamp

        deadline = time.monotonic() + cfg.startup_timeout_s
        while pub.get_subscription_count() == 0 or node.count_publishers(OUTPUT_TOPIC) == 0:
            if proc.poll() is not None:
                raise _failure(f'the node exited with code {proc.returncode}', cfg.log_path)
            if time.monotonic() > deadline:
                raise _failure(f'the node did not come up in {cfg.startup_timeout_s:.0f} s',
                               cfg.log_path)
            time.sleep(0.05)
        # Warm-up: the first inference allocates; wait for one labelled cloud before measuring.
        while True:
            publish()
            t_wait = time.monotonic() + 5.0
            while time.monotonic() < t_wait and not arrivals:
                time.sleep(0.02)
            if arrivals:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise _failure('no labelled cloud came back from the node', cfg.log_path)
        time.sleep(0.5)
        with lock:
            arrivals.clear()
        rss_start = process_rss_mb(proc.pid)
        rss_series = [rss_start]

        published: set[int] = set()
        period = 1.0 / cfg.rate_hz
        t0 = time.monotonic()
        next_tick = t0 + 1.0
        n = 0
        while True:
            due = t0 + n * period
            if due - t0 >= cfg.seconds:
                break
            sleep = due - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
            published.add(publish())
            n += 1
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                rss_series.append(process_rss_mb(proc.pid))
                if on_tick is not None:
                    with lock:
                        done = len(arrivals)
                    on_tick(time.monotonic() - t0, n, done)
        time.sleep(max(2.0, 3 * period))
        rss_end = process_rss_mb(proc.pid)
        alive = proc.poll() is None
        with lock:
            got = [(s, r, p) for s, r, p in arrivals if s in published]
            diag = dict(diagnostics)
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        stop_process(proc)

    latencies = [(r - s) / 1e6 for s, r, _ in sorted(got)]
    half = len(latencies) // 2
    warm = rss_series[min(WARMUP_S, len(rss_series) - 1)]  # one sample a second
    return {
        'published': len(published),
        'labelled': len(got),
        'lost': len(published) - len(got),
        'dropped': int(diag.get('dropped', -1)),
        'rejected': int(diag.get('rejected', -1)),
        'superseded': int(diag.get('superseded', -1)),
        **percentiles(latencies, (50, 90, 99), 'latency_ms'),
        'latency_ms_max': max(latencies) if latencies else float('nan'),
        'latency_ms_p50_first_half': percentile(latencies[:half], 50),
        'latency_ms_p50_second_half': percentile(latencies[half:], 50),
        'output_rate_hz': len(got) / cfg.seconds,
        'rss_mb_start': rss_start,  # after the first labelled cloud, before the load starts
        # RSS once the pipeline has run at the publishing rate for a few seconds (its buffers and
        # ONNX Runtime's arenas at their working size), and what it grew from there to the end
        'rss_mb_after_warmup': warm,
        'rss_growth_mb_after_warmup': rss_end - warm,
        'rss_mb_end': rss_end,
        'rss_mb_max': float(np.nanmax(rss_series + [rss_end])),
        'rss_mb_series': [round(v, 1) for v in rss_series],  # about once a second while publishing
        'latency_ms_series': [round(v, 1) for v in latencies],
        'node_alive_at_end': alive,
        'points_per_scan': int(pts.shape[0]),
        'points_labelled_per_scan': int(got[-1][2]) if got else 0,
        'rate_hz': cfg.rate_hz,
        'seconds': cfg.seconds,
        'backend': diag.get('backend', cfg.backend),
        'device': cfg.device,
        'lanes': cfg.lanes,
        'network_threads': cfg.network_threads,
        'bundle': str(cfg.bundle),
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                    'processor': platform.processor()},
    }
