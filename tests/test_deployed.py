"""The deployed student graph (what is exported and what the torch backend runs): device placement of
everything it creates, and the classifier's numerics."""

from __future__ import annotations

import numpy as np
import torch
from student_support import randomise_batchnorm

from relidar.core.graph import graph_feed, input_names
from relidar.core.kernel_maps import build_kernel_maps_numpy
from relidar.core.voxelize import voxelize
from relidar.model.deployed import StudentGraph
from relidar.model.network import Student, StudentConfig

CONFIG = StudentConfig(profile="fast", voxel_size=0.3, out_dim=16)


def _student(seed: int = 0) -> Student:
    torch.manual_seed(seed)
    student = Student(CONFIG)
    randomise_batchnorm(student, seed)
    return student.eval()


def _feed(seed: int = 0, n: int = 3000, classes: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pts = np.c_[rng.uniform(-15, 15, (n, 2)), rng.uniform(-2, 1, (n, 1)), rng.uniform(0, 1, (n, 1))].astype(np.float32)
    pts[: n // 10, 0] = 90.0  # outside the crop
    vx = voxelize(pts, CONFIG.grid(), CONFIG.input_features)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, CONFIG.num_levels)
    text = rng.standard_normal((classes, CONFIG.out_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return graph_feed(vx.features, vx.point_to_voxel, text, maps)


def test_graph_creates_nothing_off_its_inputs_device() -> None:
    """Run on the ``meta`` device: any tensor the forward makes without ``device=`` lands on the CPU and
    the first op mixing it with the inputs fails, exactly as it would on CUDA."""
    graph = StudentGraph(_student()).eval().to("meta")
    feed = _feed()
    args = [torch.from_numpy(feed[n]).to("meta") for n in input_names(CONFIG.num_levels)]
    with torch.no_grad():
        labels, scores, voxel_features = graph(*args)
    n_points, n_voxels = feed["point_to_voxel"].shape[0], feed["features"].shape[0]
    assert labels.device.type == scores.device.type == voxel_features.device.type == "meta"
    assert labels.shape == (n_points,) and labels.dtype == torch.int32
    assert scores.shape == (n_points,) and voxel_features.shape[0] == n_voxels
