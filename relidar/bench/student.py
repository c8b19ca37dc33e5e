"""Student forward pass vs spconv on the same network, weights and scan, timed interleaved in one run.

Both sides run the inference form of the network, BatchNorm folded into the convs
(:func:`relidar.model.network.fold_batchnorm`; the spconv twin is built from the folded copy).
What is timed, per repetition (warm-up excluded), at the caller's torch thread count:
* ours:   numpy kernel maps from the voxel coords (what the node runs) + the student's forward
          (spconv's forward builds its own index pairs, so both sides go from (features, coords)
          to embeddings);
* ours_forward: the network alone, maps given (what an exported graph runs);
* spconv: the SpconvStudent twin's forward.
The reference output for ``max_abs_diff`` is spconv on the *unfolded* network, run single-threaded (its CPU kernels race with
more threads; ``spconv_threaded_max_abs_diff`` reports how far the threaded run strays).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from relidar.bench.spconv_reference import SpconvStudent, coords_tensor, torch_threads
from relidar.core.preprocess import Preprocessor
from relidar.core.timing import time_calls, time_interleaved
from relidar.model.batch import to_torch
from relidar.model.kernel_maps_torch import build_kernel_maps_torch
from relidar.model.network import Student, StudentConfig, count_parameters, fold_batchnorm
from relidar.model.weights import load_student


@dataclass
class StudentBenchResult:
    profile: str
    voxel_size: float
    points: int
    voxels: int
    voxels_per_level: list[int]
    params: int
    threads: int
    repeat: int
    ours_ms_p50: float
    ours_forward_ms_p50: float
    spconv_ms_p50: float
    ratio: float
    forward_ratio: float
    ours_ms_min: float
    spconv_ms_min: float
    max_abs_diff: float
    spconv_threaded_max_abs_diff: float
    voxelize_ms: float
    kernel_maps_numpy_ms: float
    kernel_maps_torch_ms: float
    torch_version: str
    spconv_version: str
    scan: str = ""
    ours_ms: list[float] = field(default_factory=list)
    spconv_ms: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def build_model(config: StudentConfig, weights: Path | None, seed: int) -> Student:
    """The benchmarked student: loaded from ``weights`` or randomly initialised from ``seed``."""
    if weights is not None:
        return load_student(weights).eval()
    torch.manual_seed(seed)
    return Student(config).eval()


def run_student_bench(config: StudentConfig, points: np.ndarray, repeat: int = 10, warmup: int = 2,
                      weights: Path | None = None, seed: int = 0,
                      on_step: Callable[[int, int], None] | None = None) -> StudentBenchResult:
    import spconv

    original = build_model(config, weights, seed)
    config = original.config
    exact_reference = SpconvStudent(original).eval()
    model = fold_batchnorm(original)
    reference = SpconvStudent(model).eval()
    pre = Preprocessor.of(config)
    vx = pre.voxelize(points)
    voxelize_ms = time_calls(lambda: pre.voxelize(points), 3, warmup=1).p50
    levels = config.num_levels
    maps_np = pre.with_maps(vx).maps
    maps_numpy_ms = time_calls(lambda: pre.with_maps(vx), 3, warmup=1).p50
    coords_t = torch.from_numpy(vx.coords)
    maps_torch_ms = time_calls(lambda: build_kernel_maps_torch(coords_t, vx.grid_shape, levels), 3, warmup=1).p50
    maps = build_kernel_maps_torch(coords_t, vx.grid_shape, levels)
    feats = torch.from_numpy(vx.features)
    coords_i32 = coords_tensor(vx.coords)

    def ours_full() -> torch.Tensor:
        inputs = to_torch(pre.with_maps(vx))
        return model(inputs.features, inputs.maps)

    def ours_forward() -> torch.Tensor:
        return model(feats, maps)

    def theirs() -> torch.Tensor:
        return reference(feats, coords_i32, vx.grid_shape, vx.batch_size)

    with torch.inference_mode():
        with torch_threads(1):
            ref_out = exact_reference(feats, coords_i32, vx.grid_shape, vx.batch_size)
        ours_out = ours_full()
        threaded_out = theirs()
        timed = time_interleaved({"ours": ours_full, "forward": ours_forward, "spconv": theirs}, repeat, warmup,
                                 on_round=on_step)
    ours, spconv_timing = timed["ours"], timed["spconv"]
    ours_p50, fwd_p50, spconv_p50 = ours.p50, timed["forward"].p50, spconv_timing.p50
    return StudentBenchResult(
        profile=config.profile,
        voxel_size=config.voxel_size,
        points=int(points.shape[0]),
        voxels=vx.num_voxels,
        voxels_per_level=[maps_np.num_voxels(level) for level in range(levels)],
        params=count_parameters(original),
        threads=torch.get_num_threads(),
        repeat=repeat,
        ours_ms_p50=ours_p50,
        ours_forward_ms_p50=fwd_p50,
        spconv_ms_p50=spconv_p50,
        ratio=ours_p50 / spconv_p50,
        forward_ratio=fwd_p50 / spconv_p50,
        ours_ms_min=ours.min,
        spconv_ms_min=spconv_timing.min,
        max_abs_diff=float((ours_out - ref_out).abs().max()) if vx.num_voxels else 0.0,
        spconv_threaded_max_abs_diff=float((threaded_out - ref_out).abs().max()) if vx.num_voxels else 0.0,
        voxelize_ms=voxelize_ms,
        kernel_maps_numpy_ms=maps_numpy_ms,
        kernel_maps_torch_ms=maps_torch_ms,
        torch_version=torch.__version__,
        spconv_version=spconv.__version__,
        ours_ms=[round(t, 3) for t in ours.samples_ms],
        spconv_ms=[round(t, 3) for t in spconv_timing.samples_ms],
    )
