"""Data-parallel placement and the all-reduce BatchNorm: which device and backend each rank gets, and two
gloo ranks running the student under mixed precision (CPU autocast stands in for CUDA's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from relidar.core.errors import RelidarError
from relidar.core.kernel_maps import KernelMaps, build_kernel_maps_numpy
from relidar.core.voxelize import voxelize
from relidar.model.network import Student, StudentConfig
from relidar.training.distributed import GlobalBatchNorm1d, Placement, globalise_batchnorm, place_rank

ROWS_PER_RANK = 40_000  # two ranks: 80,000 rows, beyond float16's largest finite value (65,504)


@pytest.mark.parametrize("want,local_rank,local_world,gpus,expected", [
    ("auto", 0, 1, 0, Placement("cpu", "gloo")),
    ("auto", 1, 2, 0, Placement("cpu", "gloo")),
    ("cpu", 1, 2, 4, Placement("cpu", "gloo")),
    ("auto", 0, 1, 1, Placement("cuda:0", "nccl")),
    ("auto", 1, 2, 2, Placement("cuda:1", "nccl")),
    ("cuda", 3, 4, 8, Placement("cuda:3", "nccl")),
    # more ranks than GPUs: NCCL refuses two ranks on one GPU, so they share it over gloo
    ("auto", 1, 2, 1, Placement("cuda:0", "gloo")),
    ("cuda", 2, 3, 2, Placement("cuda:0", "gloo")),
])
def test_place_rank(want: str, local_rank: int, local_world: int, gpus: int, expected: Placement) -> None:
    assert place_rank(want, local_rank, local_world, gpus) == expected


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("local_world", [1, 2, 3, 4, 8])
def test_no_two_nccl_ranks_share_a_gpu(gpus: int, local_world: int) -> None:
    placements = [place_rank("auto", r, local_world, gpus) for r in range(local_world)]
    nccl = [p.device for p in placements if p.backend == "nccl"]
    assert len(nccl) == len(set(nccl))
    assert len({p.backend for p in placements}) == 1, "one group, one backend"
    assert all(int(p.device.split(":")[1]) < gpus for p in placements)


def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(RelidarError) as info:
        place_rank("cuda", 0, 1, 0)
    assert info.value.field == "train.device"
    with pytest.raises(RelidarError):
        place_rank("gpu", 0, 1, 1)


def _cloud_maps(config: StudentConfig, seed: int):
    rng = np.random.default_rng(seed)
    n = 3000
    pts = np.c_[rng.uniform(-12, 12, (n, 2)), rng.uniform(-1.5, 1.0, (n, 1)), rng.uniform(0, 1, (n, 1))]
    vx = voxelize(pts.astype(np.float32), config.grid(), config.input_features)
    maps = build_kernel_maps_numpy(vx.coords, vx.grid_shape, config.num_levels)
    return torch.from_numpy(vx.features), KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()],
                                                                  config.num_levels)


def _rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # 1. the student with all-reduce BatchNorm, forward + backward under autocast (bf16)
        config = StudentConfig(profile="fast", voxel_size=0.4, out_dim=8)
        torch.manual_seed(0)
        model = globalise_batchnorm(Student(config)).train()
        features, maps = _cloud_maps(config, seed=rank)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(features, maps)
        loss = out.float().square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        # 2. a half-precision input with more rows over the group than float16 can count
        g = torch.Generator().manual_seed(10 + rank)
        x = (torch.randn(ROWS_PER_RANK, 3, generator=g) * 2 + 3).half()
        bn = GlobalBatchNorm1d(3, momentum=None).train()
        y = bn(x)
        torch.save({"loss": loss.detach(), "out_dtype": str(out.dtype), "grads_finite": all(
                    gr is not None and bool(torch.isfinite(gr).all()) for gr in grads),
                    "x": x, "y": y.detach(), "mean": bn.running_mean, "var": bn.running_var},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_mixed_precision_and_large_half_batches(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path / "group"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        assert torch.isfinite(r["loss"]) and r["grads_finite"], "mixed-precision forward/backward through global BN"
    # the global statistics are those of both ranks' rows together (a float32 BatchNorm on the concatenation)
    x = torch.cat([r["x"] for r in ranks]).float()
    ref = torch.nn.BatchNorm1d(3, momentum=None).train()
    y_ref = ref(x)
    y = torch.cat([r["y"] for r in ranks])
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), y_ref.detach(), rtol=0, atol=4e-3)
    for r in ranks:
        torch.testing.assert_close(r["mean"], ref.running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r["var"], ref.running_var, rtol=1e-4, atol=1e-5)
