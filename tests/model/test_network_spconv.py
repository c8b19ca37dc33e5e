"""The student, in both kernel-map formulations (pair lists, neighbour tables), equals the same network
built in spconv with the same weights (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.student_support import randomise_batchnorm

from relidar.bench.spconv_reference import SpconvStudent, coords_tensor, spconv_available, torch_threads
from relidar.core.kernel_maps import KernelMaps, NeighbourTables, build_kernel_maps_numpy, build_neighbour_tables_numpy
from relidar.core.scan_io import read_scan
from relidar.core.voxelize import voxelize
from relidar.model.network import Student, StudentConfig

pytestmark = pytest.mark.skipif(not spconv_available(), reason="spconv (the reference) is not installed")


def _torch_maps(maps: KernelMaps, formulation: str) -> KernelMaps | NeighbourTables:
    chosen = maps if formulation == "pairs" else build_neighbour_tables_numpy(maps)
    return type(chosen).from_tensors([torch.from_numpy(t) for t in chosen.to_tensors()], maps.num_levels)


def _compare(points: np.ndarray, config: StudentConfig, seed: int = 0, formulation: str = "pairs") -> float:
    torch.manual_seed(seed)
    model = Student(config)
    randomise_batchnorm(model, seed)
    model.eval()
    reference = SpconvStudent(model).eval()
    vx = voxelize(points, config.grid(), config.input_features)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, config.num_levels)
    tmaps = _torch_maps(maps, formulation)
    feats = torch.from_numpy(vx.features)
    # spconv's CPU kernels race with >1 thread (see torch_threads); ours is run the same way for symmetry
    with torch.inference_mode(), torch_threads(1):
        ours = model(feats, tmaps)
        ref = reference(feats, coords_tensor(vx.coords), vx.grid_shape, vx.batch_size)
    assert ours.shape == ref.shape == (vx.num_voxels, config.out_dim)
    assert float(ref.abs().max()) > 1e-2  # a non-trivial output
    return float((ours - ref).abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("profile,formulation", [("fast", "pairs"), ("realtime", "pairs"), ("base", "pairs"), ("fast", "table"),
                                                 ("base", "table")])
def test_equal_to_spconv_on_real_kitti_scan(kitti_scan_path, profile: str, formulation: str) -> None:
    points = read_scan(kitti_scan_path)
    config = StudentConfig(profile=profile, voxel_size=0.1, out_dim=64)
    assert _compare(points, config, formulation=formulation) <= 1e-4


@pytest.mark.parametrize("formulation", ["pairs", "table"])
def test_equal_to_spconv_on_a_random_batch_of_two_scans(formulation: str) -> None:
    rng = np.random.default_rng(5)
    n = 3000
    pts = np.c_[rng.uniform(-20, 20, (2 * n, 2)), rng.uniform(-3, 1, (2 * n, 1)), rng.uniform(0, 1, (2 * n, 1))]
    config = StudentConfig(profile="fast", voxel_size=0.3, out_dim=32, input_features=("x", "y", "z", "dx", "dy", "dz"))
    torch.manual_seed(1)
    model = Student(config)
    randomise_batchnorm(model, 1)
    model.eval()
    reference = SpconvStudent(model).eval()
    from relidar.core.voxelize import voxelize_scans

    vx = voxelize_scans([pts[:n].astype(np.float32), pts[n:].astype(np.float32)], config.grid(), config.input_features)
    assert vx.batch_size == 2 and set(np.unique(vx.coords[:, 0])) == {0, 1}
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, config.num_levels)
    tmaps = _torch_maps(maps, formulation)
    feats = torch.from_numpy(vx.features)
    with torch.inference_mode(), torch_threads(1):
        ours = model(feats, tmaps)
        ref = reference(feats, coords_tensor(vx.coords), vx.grid_shape, 2)
    assert float((ours - ref).abs().max()) <= 1e-4


def test_batchnorm_folded_network_equals_spconv_twin_of_it() -> None:
    from relidar.model.network import fold_batchnorm

    rng = np.random.default_rng(7)
    pts = np.c_[rng.uniform(-20, 20, (4000, 2)), rng.uniform(-3, 1, (4000, 1)), rng.uniform(0, 1, (4000, 1))]
    config = StudentConfig(profile="fast", voxel_size=0.3, out_dim=8)
    torch.manual_seed(2)
    model = Student(config)
    randomise_batchnorm(model, 2)
    folded = fold_batchnorm(model.eval())
    reference = SpconvStudent(folded).eval()
    vx = voxelize(pts.astype(np.float32), config.grid(), config.input_features)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, config.num_levels)
    tmaps = KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], config.num_levels)
    feats = torch.from_numpy(vx.features)
    with torch.inference_mode(), torch_threads(1):
        diff = (folded(feats, tmaps) - reference(feats, coords_tensor(vx.coords), vx.grid_shape, 1)).abs().max()
    assert float(diff) <= 1e-4
