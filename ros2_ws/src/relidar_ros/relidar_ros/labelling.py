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
Per-point labels as the node publishes them: range gate, score threshold, unknown.

Pure numpy (no rclpy), so it is tested without ROS. Label values: ``0..C-1`` index the
vocabulary's classes; ``C`` (the number of classes) is ``unknown``: points with a NaN/inf
coordinate, outside ``[min_range, max_range]``, outside the bundle's crop, or whose score is below
``score_threshold``. The cloud they go out in (colours, unknown grey) is
:func:`relidar.core.pointcloud2.labelled_cloud`, the layout the CLI's labelled bags share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelPolicy:
    """Which classified points keep their label."""

    score_threshold: float
    min_range: float
    max_range: float


def range_mask(points: np.ndarray, policy: LabelPolicy) -> np.ndarray:
    """
    Return the points whose 3D distance from the sensor is in ``[min_range, max_range]``.

    Never a point with a NaN/inf coordinate: its distance is NaN or inf, and max_range is finite.
    """
    xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    with np.errstate(over='ignore', invalid='ignore'):
        # float32 is plenty for metres; huge values overflow to inf
        r2 = np.einsum('ij,ij->i', xyz, xyz)
    return (r2 >= np.float32(policy.min_range) ** 2) & (r2 <= np.float32(policy.max_range) ** 2)


def final_labels(
    num_points: int,
    selected: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    num_classes: int,
    policy: LabelPolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Return uint16 labels and float32 scores for all ``num_points``.

    They come from the segmenter's output on the ``selected`` subset (bool mask). Raw scores are
    kept, also where the label became unknown.
    """
    out_labels = np.full(num_points, num_classes, dtype=np.uint16)
    out_scores = np.zeros(num_points, dtype=np.float32)
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float32)
    confident = (labels >= 0) & (labels < num_classes) & (scores >= policy.score_threshold)
    idx = np.flatnonzero(selected)
    out_labels[idx[confident]] = labels[confident].astype(np.uint16)
    out_scores[idx] = scores
    return out_labels, out_scores
