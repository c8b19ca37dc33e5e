"""The GPU-resident Segmenter path (relidar.model.torch_backend.DevicePipeline), run on the CPU with the same
code as on CUDA: voxel integers against the numpy path, kernel maps against the numpy feed, labels against
the torch backend's host path, and every host<->device transfer of a scan counted. CUDA variants run where
a GPU is visible and are skipped here.

The ``meta`` device does not help: voxelization's sizes depend on the data (which voxels exist), which a
meta tensor does not have. The transfers are counted instead by wrapping every torch call that moves data
between host and device when the device is a GPU (on a CPU they run and are counted all the same).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.bundle_support import shared_bundle

from relidar.core.graph import input_names
from relidar.core.preprocess import Preprocessor
from relidar.core.scan_io import read_scan
from relidar.core.segmenter import Segmenter, SegmenterError
from relidar.core.voxelize import INPUT_FEATURES, VoxelGrid, voxelize
from relidar.model.voxelize_torch import voxelize_torch

KITTI_GRID = VoxelGrid(0.1, (-51.2, -51.2, -4.0), (51.2, 51.2, 2.4))
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
# float64 sums of float32 values are exact in practice; on CUDA their order changes (atomic adds), so the float32
# features are compared to float32 rounding at the coordinates' size (|x| <= 51.2 m: ulp 3.8e-6)
FEATURE_TOLERANCE = {"rtol": 1e-6, "atol": 4e-6}


def _cloud(n: int = 20_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-9.0, 9.0, (300, 3))
    xyz = centres[rng.integers(0, 300, n)] + rng.normal(0.0, 0.3, (n, 3))  # many points a voxel
    pts = np.c_[xyz, rng.uniform(0.0, 1.0, (n, 1))].astype(np.float32)
    pts[rng.choice(n, 40, replace=False), rng.integers(0, 3)] = np.nan  # left outside, like the numpy path
    pts[rng.choice(n, 40, replace=False), 0] = np.inf
    return pts


def _assert_same_voxels(points: np.ndarray, grid: VoxelGrid, device: str, names=INPUT_FEATURES) -> None:
    want = voxelize(points, grid, names)
    got = voxelize_torch(torch.as_tensor(points, device=device), grid, names)
    np.testing.assert_array_equal(got.coords.cpu().numpy(), want.coords)  # voxel order and coords
    np.testing.assert_array_equal(got.point_to_voxel.cpu().numpy(), want.point_to_voxel)
    assert got.features.dtype == torch.float32 and got.grid_shape == want.grid_shape
    np.testing.assert_allclose(got.features.cpu().numpy(), want.features, **FEATURE_TOLERANCE)


@pytest.mark.parametrize("device", DEVICES)
def test_device_voxels_are_the_numpy_voxels_on_kitti(kitti_scan_path, device: str) -> None:
    pts = read_scan(kitti_scan_path)
    _assert_same_voxels(pts, KITTI_GRID, device)
    _assert_same_voxels(pts.astype(np.float64), KITTI_GRID, device, ("x", "y", "z", "intensity"))
    _assert_same_voxels(np.ascontiguousarray(pts[::3, :3]), VoxelGrid(0.05, (-20.0, -30.0, -3.0), (40.0, 30.0, 1.0)),
                        device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1])
def test_device_voxels_are_the_numpy_voxels_on_random_clouds(device: str, seed: int) -> None:
    pts = _cloud(seed=seed)
    grid = VoxelGrid(0.3, (-8.0, -8.0, -2.0), (8.1, 8.0, 3.0))
    _assert_same_voxels(pts, grid, device)
    _assert_same_voxels(np.ascontiguousarray(pts[:, :3]), grid, device)  # no intensity column: zeros
    _assert_same_voxels(np.zeros((0, 4), np.float32), grid, device)
    _assert_same_voxels(np.full((5, 4), 70.0, np.float32), grid, device)  # all outside


@pytest.fixture(scope="module")
def host_and_device(tmp_path_factory):
    """The torch backend as it was (numpy preprocessing) and its device-resident path, per formulation."""
    root = shared_bundle(tmp_path_factory)
    return {f: (Segmenter(root, backend="torch", formulation=f),
                Segmenter(root, backend="torch", formulation=f, device_pipeline=True)) for f in ("pairs", "table")}


@pytest.mark.parametrize("formulation", ["pairs", "table"])
def test_device_maps_are_the_numpy_feeds_maps(host_and_device, kitti_scan_path, formulation: str) -> None:
    host, device = host_and_device[formulation]
    assert not host.device_pipeline and device.device_pipeline
    pts = read_scan(kitti_scan_path)
    feed = host.preprocess(pts).feed(host.vocabulary.embeddings, formulation)
    scan = device.preprocess(pts)
    names = input_names(host.bundle.manifest.student.num_levels, formulation)[3:]  # the kernel maps
    assert len(scan.maps) == len(names)
    for name, tensor in zip(names, scan.maps):
        np.testing.assert_array_equal(tensor.numpy(), feed[name], err_msg=name)
    np.testing.assert_array_equal(scan.point_to_voxel.numpy(), feed["point_to_voxel"])
    assert scan.num_points == len(pts) and scan.num_voxels == len(feed["features"])


@pytest.mark.parametrize("formulation", ["pairs", "table"])
def test_device_labels_are_the_host_paths(host_and_device, kitti_scan_path, formulation: str) -> None:
    host, device = host_and_device[formulation]
    for pts in (read_scan(kitti_scan_path), _cloud(8000, seed=2)):
        a, b = host(pts, return_features=True), device(pts, return_features=True)
        np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
        np.testing.assert_allclose(b.features, a.features, atol=1e-5)
        assert set(b.timings_ms) == {"preprocess", "network", "postprocess", "total"}
        assert b.timings_ms["preprocess"] > 0 and b.timings_ms["network"] > 0


def test_device_path_edge_inputs_and_repairs(host_and_device) -> None:
    host, device = host_and_device["pairs"]
    empty = device(np.zeros((0, 4), np.float32), return_features=True)
    assert empty.labels.shape == (0,) and empty.features.shape == (0, 32)
    outside = device(np.full((5, 3), 500.0, np.float32))
    assert np.all(outside.labels == -1) and np.all(outside.scores == 0)
    np.testing.assert_array_equal(device(_cloud(500)[:, :3]).labels, host(_cloud(500)[:, :3]).labels)
    bad = _cloud(6000, seed=4)
    bad[::97, 3] = np.nan  # bad intensities: the repair (on the host) as on the host path
    a, b = host(bad), device(bad)
    np.testing.assert_array_equal(b.labels, a.labels)
    assert (b.non_finite_xyz, b.non_finite_intensity) == (a.non_finite_xyz, a.non_finite_intensity) and b.repaired


class _Transfers:
    """Every torch call that copies between host and device on a GPU, with the number of elements it moves."""

    TO_HOST = ("cpu", "numpy", "tolist", "item", "__bool__", "__int__", "__float__")

    def __init__(self, monkeypatch) -> None:
        self.to_device: list[tuple[str, int]] = []
        self.to_host: list[tuple[str, int]] = []
        for name in self.TO_HOST:
            self._wrap_method(monkeypatch, name, self.to_host)
        self._wrap_method(monkeypatch, "cuda", self.to_device)
        real_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            if any(isinstance(a, (torch.device, str, torch.Tensor)) for a in (*args, *kwargs.values())):
                self.to_device.append(("to", tensor.numel()))  # or back: a device move either way is a transfer
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        for name in ("as_tensor", "from_numpy", "tensor"):
            self._wrap_factory(monkeypatch, name)

    @staticmethod
    def _wrap_method(monkeypatch, name: str, log: list) -> None:
        real = getattr(torch.Tensor, name)

        def wrapper(tensor, *args, **kwargs):
            log.append((name, tensor.numel()))
            return real(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    def _wrap_factory(self, monkeypatch, name: str) -> None:
        real = getattr(torch, name)

        def wrapper(data, *args, **kwargs):
            out = real(data, *args, **kwargs)
            if not isinstance(data, torch.Tensor):  # host data (numpy, lists) made into a tensor
                self.to_device.append((name, out.numel()))
            return out

        monkeypatch.setattr(torch, name, wrapper)


def test_one_copy_in_and_one_copy_out_per_scan(host_and_device, kitti_scan_path, monkeypatch) -> None:
    """Points in (one transfer), labels and scores out (one transfer); the host also reads the 8 group bounds
    of each level's downsampling pairs, and nothing else (the class embeddings only when they change)."""
    _, device = host_and_device["table"]  # the CUDA default
    pts = read_scan(kitti_scan_path)
    levels = device.bundle.manifest.student.num_levels
    classes, dim = device.vocabulary.embeddings.shape
    with monkeypatch.context() as patch:
        transfers = _Transfers(patch)
        device.set_classes(["car", "road", "building"])  # new embeddings: copied with the next scan
        transfers.to_device.clear()
        transfers.to_host.clear()
        first = device(pts)
        in_first, out_first = list(transfers.to_device), list(transfers.to_host)
        transfers.to_device.clear()
        transfers.to_host.clear()
        second = device(pts)
    n = len(pts)
    group_bounds = [("tolist", 8)] * (levels - 1)
    assert in_first == [("as_tensor", n * 4), ("as_tensor", 3 * dim)]
    assert out_first == group_bounds + [("numpy", 2 * n)]
    assert transfers.to_device == [("as_tensor", n * 4)]  # the embeddings stayed on the device
    assert transfers.to_host == group_bounds + [("numpy", 2 * n)]
    np.testing.assert_array_equal(first.labels, second.labels)
    assert classes >= 3 and set(np.unique(second.labels)) <= {-1, 0, 1, 2}


def test_device_pipeline_is_refused_where_the_backend_has_none(tmp_path_factory, host_and_device) -> None:
    pytest.importorskip("onnxruntime")
    root = shared_bundle(tmp_path_factory)
    with pytest.raises(SegmenterError) as err:
        Segmenter(root, backend="onnxruntime", device_pipeline=True)
    assert err.value.field == "device_pipeline"
    assert not Segmenter(root, backend="onnxruntime").device_pipeline
    host, device = host_and_device["pairs"]
    with pytest.raises(SegmenterError) as err:
        host.label(device.preprocess(_cloud(500)))
    assert err.value.field == "inputs"
    # the device path still labels host-made inputs (the feed path every backend has)
    pts = _cloud(3000, seed=5)
    np.testing.assert_array_equal(device.label(Preprocessor.of(device.bundle.manifest.student)(pts)).labels,
                                  host(pts).labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_torch_on_cuda_takes_the_device_path_by_default(tmp_path_factory, host_and_device, kitti_scan_path) -> None:
    seg = Segmenter(shared_bundle(tmp_path_factory), backend="torch", device="cuda")
    assert seg.device_pipeline and seg.formulation == "table"
    pts = read_scan(kitti_scan_path)
    reference = host_and_device["table"][0](pts)
    assert (seg(pts).labels == reference.labels).mean() >= 0.999  # CUDA's own float rounding
