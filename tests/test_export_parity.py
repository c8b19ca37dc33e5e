"""Export parity on the real KITTI scan: ONNX Runtime (CPU) vs PyTorch, fast profile at 0.1 m."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from bundle_support import shared_bundle

from relidar.core.scan_io import read_scan
from relidar.export.parity import compare_backends


def test_onnxruntime_matches_pytorch_on_kitti(tmp_path_factory, kitti_scan_path) -> None:
    points = read_scan(kitti_scan_path)
    report = compare_backends(shared_bundle(tmp_path_factory), points, "torch", "onnxruntime")
    assert report.points == 115384
    assert report.max_abs_feature <= 1e-4, report
    assert report.label_agreement >= 0.999, report
    assert report.ok()
