"""One NaN rule for every input path (issue 20 item 2): the same scan, with NaN/inf coordinates and
NaN/inf intensities, as a ``.npy`` labelled by the Segmenter, as a live PointCloud2 through the node's
``ScanProcessor``, and inside a rosbag2 (MCAP) through ``relidar segment``, gets the same labels and
the same counts, and each output holds every input point, in input order, with the points that have
a non-finite coordinate unlabelled.

The reference is the Segmenter on the scan file (its own repair is checked against the clean scan in
tests/core/test_segmenter.py); here the other two paths must agree with it point for point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("rosbags")

from support.bundle_support import shared_bundle
from support.ros_support import write_cloud_bag, xyzi_cloud

from relidar.cli.app import build_app
from relidar.core.pointcloud2 import read_cloud
from relidar.core.scan_io import read_label_file, read_scan
from relidar.core.segmenter import Segmentation, Segmenter, repair_text
from relidar.export.labelled import read_labelled_bag

NAN_XYZ = np.array([0, 7, 19, 300, 301])             # rows with a NaN/inf coordinate
NAN_INTENSITY_SHARED = np.array([11, 12, 500])       # NaN/inf intensity, a clean point in the same voxel
NAN_INTENSITY_ALONE = 2999                           # NaN intensity in a voxel of its own
OUTSIDE_CROP = np.array([40, 41])                    # finite, beyond the bundle's crop box


def _dirty_scan() -> np.ndarray:
    rng = np.random.default_rng(20)
    n = 3000
    xyz = rng.uniform(-20, 20, (n, 3))
    xyz[:, 2] = rng.uniform(-2, 1, n)
    pts = np.c_[xyz, rng.random(n)].astype(np.float32)
    pts[NAN_XYZ, [0, 1, 2, 0, 1]] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    pts[NAN_XYZ[3], 3] = np.nan  # both kinds on one point: counted as a coordinate only
    # a NaN/inf intensity on a point where a clean one is (the same voxel)
    pts[NAN_INTENSITY_SHARED, :3] = pts[NAN_INTENSITY_SHARED + 1000, :3]
    pts[NAN_INTENSITY_SHARED, 3] = [np.nan, np.inf, -np.inf]
    pts[NAN_INTENSITY_ALONE] = [45.0, 45.0, 0.0, np.nan]  # no other point near: unlabelled
    pts[OUTSIDE_CROP, 2] = 30.0
    return pts


@dataclass(frozen=True)
class Reference:
    bundle: Path
    scan: np.ndarray
    npy: Path
    segmentation: Segmentation
    num_classes: int


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    bundle = shared_bundle(tmp_path_factory)
    scan = _dirty_scan()
    npy = tmp_path_factory.mktemp("nan_rule") / "scan.npy"
    np.save(npy, scan)
    segmenter = Segmenter(bundle, backend="onnxruntime")
    result = segmenter(read_scan(npy))
    n = len(scan)
    # the rule itself, on the reference path
    assert result.labels.shape == (n,) and result.scores.shape == (n,)
    assert (result.non_finite_xyz, result.non_finite_intensity) == (5, 4)
    assert (result.labels[NAN_XYZ] == -1).all() and (result.scores[NAN_XYZ] == 0).all()
    assert result.labels[NAN_INTENSITY_ALONE] == -1 and (result.labels[OUTSIDE_CROP] == -1).all()
    np.testing.assert_array_equal(result.labels[NAN_INTENSITY_SHARED], result.labels[NAN_INTENSITY_SHARED + 1000])
    assert (result.labels >= 0).sum() == n - 5 - 1 - 2
    return Reference(bundle, scan, npy, result, len(segmenter.vocabulary.class_names))


def test_bag_through_relidar_segment_is_the_scan_file(reference: Reference, tmp_path: Path) -> None:
    bag = write_cloud_bag(tmp_path / "in_bag", [xyzi_cloud(reference.scan)], storage="mcap")
    runs = {}
    for name, source in (("bag", bag), ("npy", reference.npy)):
        out = tmp_path / f"out_{name}"
        result = CliRunner().invoke(build_app(), ["segment", str(source), "--bundle", str(reference.bundle), "--out",
                                                  str(out), "--write", "label,bag", "--backend", "onnxruntime"])
        assert result.exit_code == 0, result.output
        runs[name] = (out, " ".join(result.output.split()))
    expected = reference.segmentation
    counts = f"repaired: {repair_text(expected.non_finite_xyz, expected.non_finite_intensity)}"
    assert "5 point(s) with a NaN/inf coordinate" in counts and "4 point(s) with NaN/inf intensity" in counts
    for name, (out, text) in runs.items():
        assert counts in text, (name, text)
        names, _, scans = read_labelled_bag(out / "bag")
        assert len(scans) == 1 and len(names) == reference.num_classes
        written = scans[0]
        # every input point, in input order, NaN/inf as given; the bag's unknown (C) read back as -1
        np.testing.assert_array_equal(written.points, reference.scan)
        np.testing.assert_array_equal(written.labels, expected.labels, err_msg=name)
        np.testing.assert_array_equal(written.scores, expected.scores, err_msg=name)
        assert (written.labels[NAN_XYZ] == -1).all()
    stem = {"bag": "000000", "npy": "scan"}
    bag_ids, npy_ids = (read_label_file(runs[k][0] / f"{stem[k]}.label") for k in ("bag", "npy"))
    assert len(bag_ids) == len(reference.scan)
    np.testing.assert_array_equal(bag_ids, npy_ids)


def test_pointcloud2_through_the_node_is_the_scan_file(reference: Reference) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
    from relidar_ros.labelling import LabelPolicy
    from relidar_ros.processing import ScanProcessor, Settings, load_segmenter

    processor = ScanProcessor(load_segmenter(str(reference.bundle), "onnxruntime", "cpu"))
    # a range gate wider than the crop box and no score threshold: the node leaves nothing else unknown
    settings = Settings(LabelPolicy(0.0, 0.0, 200.0), max_points=10_000, intensity_scale=1.0)
    out = processor.label(xyzi_cloud(reference.scan), settings)
    expected = reference.segmentation
    assert (out.non_finite_xyz, out.non_finite_intensity) == (expected.non_finite_xyz, expected.non_finite_intensity)
    published = read_cloud(out.cloud)
    assert len(published) == len(reference.scan) and not out.cloud.is_dense
    np.testing.assert_array_equal(
        np.c_[published["x"], published["y"], published["z"], published["intensity"]], reference.scan)
    c = reference.num_classes
    np.testing.assert_array_equal(published["label"], np.where(expected.labels < 0, c, expected.labels))
    np.testing.assert_array_equal(published["score"], expected.scores)
    assert (published["label"][NAN_XYZ] == c).all()


def test_node_counts_the_whole_scan_with_its_intensity_scale(reference: Reference) -> None:
    """The range gate keeps points from the network, not from the counts; the intensity scale applies
    before the rule, as the bag reader's --intensity-scale does for ``relidar segment``."""
    pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
    from relidar_ros.labelling import LabelPolicy
    from relidar_ros.processing import ScanProcessor, Settings, load_segmenter

    segmenter = load_segmenter(str(reference.bundle), "onnxruntime", "cpu")
    processor = ScanProcessor(segmenter)
    gated = Settings(LabelPolicy(0.0, 0.0, 8.0), max_points=10_000, intensity_scale=0.5)
    far = reference.scan.copy()
    far[NAN_INTENSITY_SHARED, :2] = 30.0  # their NaN/inf intensities now outside the gate: still counted
    out = processor.label(xyzi_cloud(far), gated)
    scaled = far.copy()
    scaled[:, 3] *= np.float32(0.5)
    whole = segmenter(scaled)
    assert (out.non_finite_xyz, out.non_finite_intensity) == (whole.non_finite_xyz, whole.non_finite_intensity)
    assert out.non_finite_intensity == 4
    published = read_cloud(out.cloud)
    assert len(published) == len(far)
    np.testing.assert_array_equal(published["intensity"], far[:, 3])  # as received, not scaled
    inside = np.sqrt((far[:, :3].astype(np.float64) ** 2).sum(axis=1)) <= 8.0
    assert inside.sum() > 100 and (published["label"][~inside] == reference.num_classes).all()
