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
Labelling one scan: a PointCloud2 in, the labelled cloud out, as a thin layer over the core.

``relidar.core.segmenter.Segmenter`` does the work (voxelize, network, per-point label and
score). This module adds what the node decides around it: the point-count limit, the intensity
scale, the range gate and score threshold that make a point ``unknown``
(``relidar_ros.labelling``), and one lock so that a new vocabulary (the ``classes`` parameter,
set from the executor thread) never changes under a scan being labelled.

Non-finite input follows the Segmenter's one rule, counted over the whole scan exactly as
``relidar segment`` counts it (``Segmenter.prepare``): a point with a NaN/inf coordinate is
published ``unknown``, a NaN/inf intensity is kept out of its voxel's features. The output cloud
holds every input point, in input order, so the same points get the same labels whether they come
from a file, a bag or this topic.

Labelling is two halves, :meth:`ScanProcessor.prepare` (parse, gate, repair and voxelize: the
Segmenter's numpy/numba preprocessing) and :meth:`ScanProcessor.finish` (network, labels, output
cloud). Both release the GIL for their heavy parts and both may run on several threads at once:
the node's lanes label several scans at a time with one Segmenter (``network_threads``: the fused
backend's or ONNX Runtime's threads per call). A prepared scan carries its vocabulary (names,
colours and text embeddings), so a vocabulary change between the halves cannot mix two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
from relidar.core.bundle import BundleError
from relidar.core.errors import RelidarError
from relidar.core.pointcloud2 import (
    cloud_to_xyzi,
    CloudData,
    labelled_cloud,
    PointCloud2Like,
    PointCloudError,
)
from relidar.core.segmenter import non_finite_counts, PreparedPoints, Segmenter
from relidar_ros.labelling import final_labels, LabelPolicy, range_mask
from relidar_ros.parameters import ParameterError


class StartupError(RelidarError):
    """The node cannot start: no bundle, or one that does not load."""


class ScanRejected(RelidarError):
    """A cloud the node does not label (counted as rejected; the node goes on)."""


@dataclass(frozen=True)
class Settings:
    """The run-time parameters one scan is labelled with (replaced whole when one changes)."""

    policy: LabelPolicy
    max_points: int
    intensity_scale: float

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> Settings:
        return cls(LabelPolicy(float(values['score_threshold']), float(values['min_range']),
                               float(values['max_range'])),
                   int(values['max_points']), float(values['intensity_scale']))


@dataclass(frozen=True)
class LabelledCloud:
    """The labelled cloud and what the node publishes beside it."""

    cloud: CloudData
    class_names: tuple[str, ...]
    palette: np.ndarray           # [C, 3] uint8, the vocabulary's colours
    timings_ms: dict[str, float]  # preprocess_ms, network_ms, postprocess_ms, total_ms, convert_ms
    non_finite_xyz: int = 0        # points with a NaN/inf coordinate, published unknown
    non_finite_intensity: int = 0  # finite x, y, z but NaN/inf intensity: kept out of features


@dataclass(frozen=True)
class PreparedScan:
    """A scan parsed, gated and voxelized, waiting for the network (``ScanProcessor.prepare``)."""

    points: np.ndarray                  # [N, 4] float32, every point of the cloud as received
    selected: np.ndarray                # [N] bool, inside [min_range, max_range] (all finite)
    prepared: PreparedPoints | None     # Segmenter.prepare of the selected points, or None
    embeddings: np.ndarray              # [C, D] the class embeddings it is labelled with
    class_names: tuple[str, ...]
    palette: np.ndarray                 # [C, 3] uint8
    policy: LabelPolicy
    parse_ms: float
    preprocess_ms: float
    non_finite_xyz: int = 0
    non_finite_intensity: int = 0


def load_segmenter(bundle: str, backend: str, device: str, formulation: str = 'auto',
                   threads: int | None = None) -> Segmenter:
    """Return the bundle's Segmenter, or raise StartupError saying why it cannot be had."""
    if not bundle:
        raise StartupError('parameter is empty', field='bundle',
                           hint='pass the folder written by `relidar export bundle`, '
                                'e.g. --ros-args -p bundle:=/path/to/bundle')
    if not Path(bundle).is_dir():
        raise StartupError('bundle folder does not exist', path=bundle, field='bundle',
                           hint='pass the folder written by `relidar export bundle`')
    try:
        return Segmenter(bundle, backend=backend, device=device, threads=threads,
                         formulation=formulation)
    except (BundleError, RelidarError, ValueError, KeyError, OSError) as exc:
        raise StartupError(f'cannot load the bundle: {exc}', path=bundle, field='bundle') from None


class ScanProcessor:
    """Labels scans with one Segmenter whose vocabulary may change between scans."""

    def __init__(self, segmenter: Segmenter) -> None:
        self._segmenter = segmenter
        self._lock = threading.Lock()
        # set_classes encodes outside the lock; these order the results: the last change
        # requested wins, not the last to finish encoding.
        self._requested = 0
        self._installed = 0

    @property
    def backend(self) -> str:
        return str(self._segmenter.backend)

    def class_names(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self._segmenter.vocabulary.class_names]

    def set_classes(self, classes: Sequence[str]) -> None:
        """
        Label the next scan with these classes; raise ParameterError (vocabulary unchanged).

        The text tower encodes classes x synonyms x templates (a second or more on a CPU) outside
        the lock, so the lanes go on labelling with the old vocabulary meanwhile; the new one is
        swapped in under the lock, unless a later request was installed first.
        """
        with self._lock:
            self._requested += 1
            ticket = self._requested
        try:
            vocabulary = self._segmenter.build_vocabulary([str(c) for c in classes])
        except (RelidarError, ValueError, KeyError, RuntimeError) as exc:
            raise ParameterError(f'the bundle cannot encode {list(classes)}: {exc}',
                                 field='classes') from None
        with self._lock:
            if ticket > self._installed:
                self._segmenter.vocabulary = vocabulary
                self._installed = ticket

    def label(self, msg: PointCloud2Like, settings: Settings) -> LabelledCloud:
        """Label every point of ``msg``; raise ScanRejected for a cloud it cannot use."""
        return self.finish(self.prepare(msg, settings))

    def prepare(self, msg: PointCloud2Like, settings: Settings) -> PreparedScan:
        """Parse, gate, repair, voxelize ``msg``; raise ScanRejected for a cloud it cannot use."""
        t0 = time.perf_counter()
        n = int(msg.width) * int(msg.height)
        if n > settings.max_points:
            raise ScanRejected(f'{n} points is more than max_points={settings.max_points}')
        if n == 0:
            raise ScanRejected('the cloud has no points')
        try:
            points = cloud_to_xyzi(msg)
        except PointCloudError as exc:
            raise ScanRejected(str(exc)) from None
        net_points = points
        if settings.intensity_scale != 1.0:
            net_points = points.copy()  # the published intensity stays as received
            net_points[:, 3] *= np.float32(settings.intensity_scale)
        # counted on what the network is given, over the whole scan (the range gate aside), as the
        # Segmenter counts a scan from a file or a bag
        non_finite_xyz, non_finite_intensity = non_finite_counts(net_points)
        if non_finite_xyz == len(points):
            raise ScanRejected('no point of the cloud has finite x, y, z')
        selected = range_mask(points, settings.policy)  # False where x, y or z is NaN/inf
        t_parsed = time.perf_counter()
        prepared = None
        with self._lock:
            vocabulary = self._segmenter.vocabulary
            names = tuple(str(c) for c in vocabulary.class_names)
            palette = np.asarray(vocabulary.colors, dtype=np.uint8).reshape(-1, 3)
            embeddings = vocabulary.embeddings
        if selected.any():
            # the usual scan, all in range: no copy of its points
            gated = net_points if selected.all() else net_points[selected]
            prepared = self._segmenter.prepare(gated)
        t_prepared = time.perf_counter()
        return PreparedScan(points, selected, prepared, embeddings, names, palette,
                            policy=settings.policy, parse_ms=1e3 * (t_parsed - t0),
                            preprocess_ms=1e3 * (t_prepared - t_parsed),
                            non_finite_xyz=non_finite_xyz,
                            non_finite_intensity=non_finite_intensity)

    def finish(self, scan: PreparedScan) -> LabelledCloud:
        """Run the network on a prepared scan; return its labels and the labelled cloud."""
        timings: dict[str, float] = {'preprocess_ms': scan.preprocess_ms}
        if scan.prepared is not None:
            result = self._segmenter.finish(scan.prepared, scan.embeddings)
            seg_labels, seg_scores = result.labels, result.scores
            timings = {f'{k}_ms': float(v) for k, v in result.timings_ms.items()}
        else:
            seg_labels, seg_scores = np.zeros(0, np.int32), np.zeros(0, np.float32)
        t_inferred = time.perf_counter()
        labels, scores = final_labels(scan.points.shape[0], scan.selected, seg_labels, seg_scores,
                                      len(scan.class_names), scan.policy)
        cloud = labelled_cloud(scan.points, labels, scores, scan.palette)
        timings['convert_ms'] = scan.parse_ms + 1e3 * (time.perf_counter() - t_inferred)
        return LabelledCloud(cloud, scan.class_names, scan.palette, timings,
                             scan.non_finite_xyz, scan.non_finite_intensity)
