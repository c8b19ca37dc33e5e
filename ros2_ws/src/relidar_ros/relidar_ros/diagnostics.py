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
What the node reports about itself: counters, the 1 Hz diagnostics status and the class legend.

Counters are updated by the subscription callback and the worker threads and read by the
diagnostics timer, so they sit behind one lock and are read as one snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import threading
from typing import Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np
from relidar.core.segmenter import repair_text
from relidar.core.viz.palette import label_colours
from visualization_msgs.msg import Marker, MarkerArray

LEGEND_NS = 'relidar_legend'


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment."""

    received: int = 0
    labelled: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    superseded: int = 0  # labelled, but a newer scan was published first: not published
    last_reject_reason: str = ''
    node_latency_ms: float = float('nan')
    pipeline_latency_ms: float = float('nan')
    points: int = 0
    # cumulative, the Segmenter's counts (relidar segment prints the same): points with a NaN/inf
    # coordinate, published unknown; points with finite x, y, z but NaN/inf intensity, kept out of
    # their voxel's features
    non_finite_xyz: int = 0
    non_finite_intensity: int = 0
    # cumulative: scans whose header stamp was ahead of the node's clock when published. On sim
    # time the clock is the last /clock message, which can trail a scan stamped between two ticks;
    # on system time it means the sensor's and this host's clocks disagree. Either way no latency
    # is published for such a scan: a negative latency is not one.
    clock_behind_stamp: int = 0
    clock_behind_stamp_ms: float = float('nan')  # by how much, for the last such scan


@dataclass
class Counters:
    """Thread-safe counts of what happened to the scans the node received."""

    _now: Snapshot = field(default_factory=Snapshot)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, replaced_unprocessed: bool) -> None:
        with self._lock:
            self._now = replace(self._now, received=self._now.received + 1,
                                dropped=self._now.dropped + int(replaced_unprocessed))

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._now = replace(self._now, rejected=self._now.rejected + 1,
                                last_reject_reason=reason)

    def failed(self) -> None:
        with self._lock:
            self._now = replace(self._now, failed=self._now.failed + 1)

    def superseded(self) -> None:
        with self._lock:
            self._now = replace(self._now, superseded=self._now.superseded + 1)

    def labelled(self, points: int, node_latency_ms: float, pipeline_latency_ms: float,
                 non_finite_xyz: int = 0, non_finite_intensity: int = 0,
                 clock_behind_ms: float | None = None) -> None:
        """Count a published scan; ``clock_behind_ms`` when its stamp was ahead of the clock."""
        with self._lock:
            now = self._now
            behind = {} if clock_behind_ms is None else {
                'clock_behind_stamp': now.clock_behind_stamp + 1,
                'clock_behind_stamp_ms': clock_behind_ms}
            self._now = replace(
                now, labelled=now.labelled + 1, points=points, node_latency_ms=node_latency_ms,
                pipeline_latency_ms=pipeline_latency_ms,
                non_finite_xyz=now.non_finite_xyz + non_finite_xyz,
                non_finite_intensity=now.non_finite_intensity + non_finite_intensity, **behind)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._now


class DiagnosticsReporter:
    """Turns counter snapshots into one DiagnosticStatus per period, with rates since the last."""

    def __init__(self, name: str, hardware_id: str) -> None:
        self._name = name
        self._hardware_id = hardware_id
        self._last: tuple[float, Snapshot] | None = None

    def status(self, now_s: float, snap: Snapshot, vocabulary: Sequence[str],
               latency_clock: str, sim_time: bool = False) -> DiagnosticStatus:
        """
        Return the status at ``now_s`` (a steady clock, in seconds).

        A stamp ahead of the clock is a warning on system time (the sensor's clock is not this
        host's) but only counted on sim time, where /clock ticks trail stamps by design.
        """
        t_prev, prev = self._last if self._last is not None else (now_s, Snapshot())
        self._last = (now_s, snap)
        dt = max(now_s - t_prev, 1e-6)
        level, message = DiagnosticStatus.OK, 'labelling'
        if snap.received == prev.received:
            level, message = DiagnosticStatus.WARN, 'no input cloud in the last period'
        elif snap.rejected > prev.rejected:
            level, message = DiagnosticStatus.WARN, f'rejected clouds: {snap.last_reject_reason}'
        elif (snap.non_finite_xyz > prev.non_finite_xyz
              or snap.non_finite_intensity > prev.non_finite_intensity):
            level, message = DiagnosticStatus.WARN, 'repaired input: ' + repair_text(
                snap.non_finite_xyz - prev.non_finite_xyz,
                snap.non_finite_intensity - prev.non_finite_intensity)
        elif snap.clock_behind_stamp > prev.clock_behind_stamp and not sim_time:
            level, message = DiagnosticStatus.WARN, (
                f'{snap.clock_behind_stamp - prev.clock_behind_stamp} scan(s) stamped ahead of '
                f"this node's clock (last by {snap.clock_behind_stamp_ms:.1f} ms): sync the "
                "sensor's clock to this host (PTP/NTP); no pipeline latency for them")
        values = {
            'input_rate_hz': f'{(snap.received - prev.received) / dt:.2f}',
            'output_rate_hz': f'{(snap.labelled - prev.labelled) / dt:.2f}',
            'node_latency_ms': f'{snap.node_latency_ms:.1f}',
            'pipeline_latency_ms': f'{snap.pipeline_latency_ms:.1f}',
            'pipeline_latency_clock': latency_clock,
            'clock_behind_stamp': str(snap.clock_behind_stamp),
            'clock_behind_stamp_ms': f'{snap.clock_behind_stamp_ms:.1f}',
            'received': str(snap.received),
            'labelled': str(snap.labelled),
            'dropped': str(snap.dropped),
            'rejected': str(snap.rejected),
            'failed': str(snap.failed),
            'superseded': str(snap.superseded),
            'last_reject_reason': snap.last_reject_reason,
            'points': str(snap.points),
            'non_finite_xyz': str(snap.non_finite_xyz),
            'non_finite_intensity': str(snap.non_finite_intensity),
            'backend': self._hardware_id,
            'vocabulary': ', '.join(vocabulary),
        }
        return DiagnosticStatus(level=level, name=self._name, message=message,
                                hardware_id=self._hardware_id,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])


def legend_markers(frame: str, class_names: Sequence[str], palette: np.ndarray) -> MarkerArray:
    """Return one text marker per class in its colour, ``unknown`` last in grey, in ``frame``."""
    names = list(class_names) + ['unknown']
    colours = label_colours(np.arange(len(names)), palette).astype(np.float64) / 255.0
    clear = Marker(action=Marker.DELETEALL, ns=LEGEND_NS)
    clear.header.frame_id = frame
    markers = [clear]
    for i, (name, (r, g, b)) in enumerate(zip(names, colours)):
        m = Marker(ns=LEGEND_NS, id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, text=name)
        m.header.frame_id = frame
        m.pose.position.z = 2.0 + 0.6 * (len(names) - i)
        m.pose.orientation.w = 1.0
        m.scale.z = 0.5
        m.color.r, m.color.g, m.color.b, m.color.a = float(r), float(g), float(b), 1.0
        markers.append(m)
    return MarkerArray(markers=markers)
