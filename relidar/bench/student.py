"""The student's network every way it runs, vs spconv, on the same network, weights and scan, interleaved in one run.

Every side runs the inference form of the network, BatchNorm folded into the convs
(:func:`relidar.model.network.fold_batchnorm`; the spconv twin is built from the folded copy). What is timed,
per repetition (warm-up excluded), each call in turn (``relidar.core.timing.time_interleaved``), at one thread
count for all (``threads``: torch's for the whole run and ONNX Runtime's intra-op threads; default one per
physical core), with the machine in the JSON (relidar.bench.machine):
* ours:   numpy kernel maps from the voxel coords (what the node runs) + the student's forward
          (spconv's forward builds its own index pairs, so both sides go from (features, coords)
          to embeddings);
* ours_forward: the PyTorch forward of the network alone, maps given (what an exported graph runs);
* spconv: the SpconvStudent twin's forward;
* ``entries``: the same network as every backend the registry has here runs it
  (``relidar.core.backends.available_backends``, each in the graph formulations it runs): the student exported to a bundle
  (relidar.bench.bundles) and each backend's ``run`` on the same numpy feed -- the exported graph against the
  model it was exported from (issue 22: the ONNX graph took 1.4x the PyTorch forward on a 2-core Xeon) --
  and the PyTorch forward in both formulations. ``max_abs_diff`` there is each one's backbone output against
  the PyTorch forward's (pair lists).
The reference output for ``max_abs_diff`` is spconv on the *unfolded* network, run single-threaded (its CPU kernels race with
more threads; ``spconv_threaded_max_abs_diff`` reports how far the threaded run, the one timed, strays).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    machine: dict[str, Any] = field(default_factory=dict)
    # the network as every backend and the PyTorch forward run it, in the same rounds (module docstring)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def build_model(config: StudentConfig, weights: Path | None, seed: int) -> Student:
    """The benchmarked student: loaded from ``weights`` or randomly initialised from ``seed``."""
    if weights is not None:
        return load_student(weights).eval()
    torch.manual_seed(seed)
    return Student(config).eval()


def _backend_calls(student: Student, vx: Any, maps: Any, threads: int, root: Path
                   ) -> tuple[dict[str, Callable[[], Any]], dict[str, np.ndarray], dict[str, str]]:
    """Every available backend x formulation running ``student`` exported to a bundle in ``root``, on the feed of
    these voxels: (calls by entry name, each one's backbone output, load errors)."""
    from relidar.bench.bundles import student_bundle
    from relidar.core.backends import available_backends, backend_formulations, make_backend
    from relidar.core.bundle import load_bundle
    from relidar.core.errors import RelidarError
    from relidar.core.graph import graph_feed
    from relidar.core.kernel_maps import build_neighbour_tables_numpy

    bundle = load_bundle(student_bundle(root, student))
    text = bundle.vocabulary().embeddings
    feeds = {"pairs": graph_feed(vx.features, vx.point_to_voxel, text, maps),
             "table": graph_feed(vx.features, vx.point_to_voxel, text, build_neighbour_tables_numpy(maps))}
    calls: dict[str, Callable[[], Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for name in available_backends("cpu"):
        for formulation in backend_formulations(name):
            try:
                backend = make_backend(bundle, name, "cpu", threads, formulation=formulation)
            except RelidarError as exc:
                errors[f"{name}-{formulation}"] = str(exc)
                continue
            key = f"{backend.name}-{backend.formulation}"
            feed = feeds[backend.formulation]
            calls[key] = lambda b=backend, f=feed: b.run(f)
            outputs[key] = backend.run(feed)["voxel_features"]
    return calls, outputs, errors


def run_student_bench(config: StudentConfig, points: np.ndarray, repeat: int = 10, warmup: int = 2,
                      weights: Path | None = None, seed: int = 0, threads: int | None = None,
                      on_step: Callable[[int, int], None] | None = None) -> StudentBenchResult:
    """See the module docstring; ``threads`` (default one per physical core) is every side's count."""
    from relidar.bench.machine import default_threads

    threads = int(threads or default_threads())
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="relidar-bench-student-") as work:
        return _run_student_bench(config, points, repeat, warmup, weights, seed, threads, Path(work), on_step)


def _run_student_bench(config: StudentConfig, points: np.ndarray, repeat: int, warmup: int, weights: Path | None,
                       seed: int, threads: int, work: Path,
                       on_step: Callable[[int, int], None] | None) -> StudentBenchResult:
    """:func:`run_student_bench` inside its thread count, with ``work`` for the exported bundle."""
    import spconv

    from relidar.bench.machine import machine_info
    from relidar.model.kernel_maps_torch import build_neighbour_tables_torch

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
    tables = build_neighbour_tables_torch(maps)
    feats = torch.from_numpy(vx.features)
    coords_i32 = coords_tensor(vx.coords)

    def ours_full() -> torch.Tensor:
        inputs = to_torch(pre.with_maps(vx))
        return model(inputs.features, inputs.maps)

    def ours_forward() -> torch.Tensor:
        return model(feats, maps)

    def theirs() -> torch.Tensor:
        return reference(feats, coords_i32, vx.grid_shape, vx.batch_size)

    backend_calls, backend_outputs, load_errors = (_backend_calls(original, vx, maps_np, threads, work / "bundle")
                                                   if vx.num_voxels else ({}, {}, {}))
    with torch.inference_mode():
        with torch_threads(1):
            ref_out = exact_reference(feats, coords_i32, vx.grid_shape, vx.batch_size)
        ours_out = ours_full()
        threaded_out = theirs()
        backbone_out = model.backbone(feats, maps).numpy()
        table_out = model(feats, tables)
        timed = time_interleaved({"ours": ours_full, "forward": ours_forward, "spconv": theirs,
                                  "pytorch-table": lambda: model(feats, tables), **backend_calls}, repeat, warmup,
                                 on_round=on_step)
    ours, spconv_timing = timed["ours"], timed["spconv"]
    ours_p50, fwd_p50, spconv_p50 = ours.p50, timed["forward"].p50, spconv_timing.p50
    errors = {"pytorch-pairs": 0.0, "pytorch-table": float((table_out - ours_out).abs().max()) if vx.num_voxels else 0.0,
              "spconv": float((threaded_out - ours_out).abs().max()) if vx.num_voxels else 0.0}
    errors.update({key: float(np.abs(out - backbone_out).max()) for key, out in backend_outputs.items()})
    timings = {"pytorch-pairs": timed["forward"], **{key: t for key, t in timed.items() if key not in ("ours", "forward")}}
    entries = {key: {"ms_p50": t.p50, "ms_min": t.min, "vs_pytorch": t.p50 / fwd_p50, "vs_spconv": t.p50 / spconv_p50,
                     "kind": "reference" if key.startswith("pytorch-") or key == "spconv" else "ours",
                     "max_abs_diff": errors[key]} for key, t in timings.items()}
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
        machine=machine_info(threads),
        entries=entries,
        load_errors=load_errors,
    )
