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

"""Labels as the node publishes them, its legend and its diagnostics (no DDS needed)."""

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
from relidar.core.pointcloud2 import labelled_cloud, read_cloud, unpack_rgb
from relidar.core.viz.palette import label_colours
from relidar_ros.diagnostics import Counters, DiagnosticsReporter, legend_markers
from relidar_ros.labelling import final_labels, LabelPolicy, range_mask
from visualization_msgs.msg import Marker

OUTPUT_FIELDS = ('x', 'y', 'z', 'intensity', 'label', 'score', 'rgb')
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def test_labels_unknown_for_range_crop_and_threshold():
    pts = np.array([[0.5, 0, 0, 1], [3, 4, 0, 2], [10, 0, 0, 3], [0, 0, 90, 4], [6, 8, 0, 5]],
                   np.float32)
    policy = LabelPolicy(score_threshold=0.5, min_range=1.0, max_range=50.0)
    sel = range_mask(pts, policy)
    np.testing.assert_array_equal(sel, [False, True, True, False, True])
    # segmenter output on the 3 selected points: one outside its crop (-1), one unsure (0.3)
    labels, scores = final_labels(5, sel, np.array([2, -1, 1]),
                                  np.array([0.9, 0.0, 0.3], np.float32), 3, policy)
    np.testing.assert_array_equal(labels, [3, 2, 3, 3, 3])
    np.testing.assert_allclose(scores, [0, 0.9, 0, 0, 0.3])
    np.testing.assert_array_equal(label_colours(labels, PALETTE)[:2],
                                  [[128, 128, 128], [0, 0, 255]])
    arr = read_cloud(labelled_cloud(pts, labels, scores, PALETTE))
    assert arr.dtype.names == OUTPUT_FIELDS
    assert arr['label'].dtype == np.uint16 and arr['score'].dtype == np.float32
    np.testing.assert_array_equal(unpack_rgb(arr['rgb'])[1], [0, 0, 255])
    np.testing.assert_array_equal(arr['intensity'], pts[:, 3])


def test_legend_has_one_marker_per_class_and_unknown_in_their_colours():
    legend = legend_markers('lidar', ['car', 'road', 'tree'], PALETTE)
    clear, *texts = legend.markers
    assert clear.action == Marker.DELETEALL
    assert [m.text for m in texts] == ['car', 'road', 'tree', 'unknown']
    assert all(m.header.frame_id == 'lidar' and m.type == Marker.TEXT_VIEW_FACING for m in texts)
    assert (texts[0].color.r, texts[0].color.g, texts[0].color.b) == (1.0, 0.0, 0.0)
    assert abs(texts[3].color.r - 128 / 255) < 1e-9
    assert len({m.id for m in texts}) == 4


def test_diagnostics_rates_counts_and_levels():
    counters = Counters()
    reporter = DiagnosticsReporter('segmenter: lidar segmentation', 'onnxruntime')
    first = reporter.status(10.0, counters.snapshot(), ['car'], 'system time')
    assert first.level == DiagnosticStatus.WARN  # nothing received yet
    for replaced in (False, True, False):
        counters.received(replaced)
    counters.labelled(1000, 12.5, 40.0)
    counters.rejected('the cloud has no points')
    counters.superseded()
    status = reporter.status(12.0, counters.snapshot(), ['car', 'road'], 'system time')
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN and 'no points' in status.message
    assert values['input_rate_hz'] == '1.50' and values['output_rate_hz'] == '0.50'
    assert (values['received'], values['dropped'], values['rejected'], values['labelled'],
            values['superseded']) == ('3', '1', '1', '1', '1')
    assert values['pipeline_latency_clock'] == 'system time'
    assert values['vocabulary'] == 'car, road' and status.hardware_id == 'onnxruntime'
    counters.received(False)
    counters.labelled(1000, 10.0, 30.0)
    assert reporter.status(13.0, counters.snapshot(), ['car'], 'x').level == DiagnosticStatus.OK
