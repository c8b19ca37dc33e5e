"""The deployed student graph (what is exported and what the torch backend runs): device placement of
everything it creates, and the classifier's numerics."""

from __future__ import annotations

import numpy as np
import torch
from support.student_support import randomise_batchnorm

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


def test_classifier_scores_survive_half_precision() -> None:
    """Backbone features large enough that |y|² overflows float16 (as in an fp16 TensorRT engine): the
    classifier's scores still match a float64 evaluation of the same head, instead of all being 1/C."""
    from relidar.model.deployed import ClassifierHead

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(40, 512)
    with torch.no_grad():
        head.weight.normal_(0, 0.1, generator=g)
        head.bias.normal_(0, 0.5, generator=g)
    x = torch.rand(300, 40, generator=g) * 60
    text = torch.nn.functional.normalize(torch.randn(6, 512, generator=g), dim=1)
    y = x.double() @ head.weight.double().t() + head.bias.double()
    assert float((y ** 2).sum(dim=1).max()) > 65504, "the case must overflow float16 without the guard"
    cos = torch.nn.functional.normalize(y, dim=1) @ text.double().t()
    ref_score, ref_label = torch.softmax(100.0 * cos, dim=1).max(dim=1)
    label, score = ClassifierHead(head, 100.0).half()(x.half(), text.half())
    assert bool(torch.isfinite(score).all())
    assert (label == ref_label).double().mean() >= 0.95
    torch.testing.assert_close(score.double(), ref_score, rtol=0, atol=0.05)
    label32, score32 = ClassifierHead(head, 100.0)(x, text)
    assert bool((label32 == ref_label).all())
    torch.testing.assert_close(score32.double(), ref_score, rtol=0, atol=1e-4)
