"""TensorRT engines from a bundle's student ONNX (TensorRT 10 Python API), cached in the bundle.

Shape ranges: TensorRT needs, for every dynamic input, a (min, opt, max) optimisation profile. The
voxel counts are bounded by the grid (crop range / voxel size, halved per level) and by the points
a scan can have; pair counts by the voxel counts (each (out, in) pair list of one offset has at most
one pair per voxel). ``opt`` is taken from a measured scan when one is given (its occupancy scaled to
``opt_points``), else from half of ``max_points``.

The engine goes to ``engines/<gpu>_<tensorrt version>_<precision>.plan``, is listed (sha256) in the
manifest, and the Segmenter's ``auto`` backend picks it on that GPU. This module has not run on the
development machine (no GPU, no tensorrt there); the code follows TensorRT 10's documented API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from relidar.core.bundle import ENGINES_DIR, Bundle, EngineSpec, file_entry, load_bundle, write_manifest
from relidar.core.graph import input_names
from relidar.core.kernel_maps import NUM_HALF_OFFSETS

Shape = tuple[int, ...]


class TensorRTError(RuntimeError):
    """TensorRT is missing, or could not parse/build; the message carries the parser/builder errors."""


@dataclass(frozen=True)
class ProfileShapes:
    shapes: dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


def _level_cells(bundle: Bundle) -> list[int]:
    s = bundle.manifest.student
    dims = [int(math.ceil((hi - lo) / s.voxel_size - 1e-9)) for lo, hi in zip(s.crop_min, s.crop_max)]
    cells = []
    for _ in range(s.num_levels):
        cells.append(int(np.prod(dims)))
        dims = [(d + 1) // 2 for d in dims]
    return cells


def profile_shapes(bundle: Bundle, max_points: int, opt_points: int, sample_feed: Mapping[str, np.ndarray] | None = None,
                   num_classes: tuple[int, int, int] = (1, 32, 256)) -> ProfileShapes:
    """(min, opt, max) for every graph input; see the module docstring."""
    s = bundle.manifest.student
    levels = s.num_levels
    cells = _level_cells(bundle)
    vmax = [min(max_points, c) for c in cells]
    if sample_feed is not None:
        n = max(int(sample_feed["point_to_voxel"].shape[0]), 1)
        scale = opt_points / n
        vopt = [max(1, min(vmax[l], int(sample_feed[f"coords_{l}"].shape[0] * scale))) for l in range(levels)]

        def pair_opt(name: str, level: int) -> int:
            return max(1, min(vmax[level], int(sample_feed[name].shape[1] * scale)))
    else:
        vopt = [max(1, min(vmax[l], opt_points // (2 ** l))) for l in range(levels)]

        def pair_opt(name: str, level: int) -> int:
            return max(1, vopt[level] // 3)
    c_min, c_opt, c_max = num_classes
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {
        "features": ((1, len(s.input_features)), (vopt[0], len(s.input_features)), (vmax[0], len(s.input_features))),
        "point_to_voxel": ((1,), (opt_points,), (max_points,)),
        "text_embeddings": ((c_min, s.out_dim), (c_opt, s.out_dim), (c_max, s.out_dim)),
    }
    for l in range(levels):
        shapes[f"coords_{l}"] = ((1, 4), (vopt[l], 4), (vmax[l], 4))
        for k in range(NUM_HALF_OFFSETS):
            name = f"subm_{l}_{k}"
            shapes[name] = ((2, 0), (2, pair_opt(name, l)), (2, vmax[l]))
    for l in range(levels - 1):
        for o in range(8):
            name = f"down_{l}_{o}"
            # every child has one parent: a down list has at most one pair per level-l voxel
            shapes[name] = ((2, 0), (2, pair_opt(name, l)), (2, vmax[l]))
    missing = set(input_names(levels)) - set(shapes)
    if missing:
        raise TensorRTError(f"no profile for inputs {sorted(missing)}")
    return ProfileShapes(shapes)


def build_engine(onnx_path: Path, shapes: ProfileShapes, fp16: bool, workspace_bytes: int = 4 << 30) -> bytes:
    """Parse the ONNX with TensorRT's parser and build a serialized engine with one optimisation profile."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError("the tensorrt package is not installed (pip install tensorrt-cu12; needs an NVIDIA GPU)") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    import onnx

    from relidar.export.onnx_student import tensorrt_compatible

    if not parser.parse(tensorrt_compatible(onnx.load(str(onnx_path))).SerializeToString(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser rejected the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        lo, opt, hi = shapes.shapes[name]
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    return bytes(serialized)


def engine_name(gpu: str, trt_version: str, precision: str) -> str:
    return f"{ENGINES_DIR}/{gpu}_{trt_version}_{precision}.plan"


def export_tensorrt(bundle_dir: str | Path, fp16: bool = False, max_points: int = 300_000, opt_points: int = 120_000,
                    sample_points: np.ndarray | None = None, device: int = 0, rebuild: bool = False) -> tuple[Path, bool]:
    """Build (or reuse) the engine for this GPU + TensorRT + precision and record it in the manifest.
    Returns (engine path, built now)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError("the tensorrt package is not installed (pip install tensorrt-cu12; needs an NVIDIA GPU)") from exc
    from relidar.core.backends.trt import gpu_name

    bundle = load_bundle(bundle_dir)
    precision = "fp16" if fp16 else "fp32"
    gpu = gpu_name(device)
    existing = bundle.engine_for(gpu, trt.__version__, precision)
    if existing is not None and not rebuild:
        return existing, False
    feed = None
    if sample_points is not None:
        from relidar.core.segmenter import Segmenter

        feed = Segmenter(bundle.root, backend="onnxruntime").preprocess(sample_points)
    shapes = profile_shapes(bundle, max_points, opt_points, feed)
    plan = build_engine(bundle.student_onnx, shapes, fp16)
    name = engine_name(gpu, trt.__version__, precision)
    path = bundle.root / name
    path.parent.mkdir(exist_ok=True)
    from relidar.core.atomic import atomic_write_bytes

    atomic_write_bytes(path, plan)
    manifest = bundle.manifest.model_copy(deep=True)
    manifest.engines = [e for e in manifest.engines if e.file != name] + [
        EngineSpec(file=name, gpu=gpu, tensorrt=trt.__version__, precision=precision)]
    manifest.files[name] = file_entry(path)
    write_manifest(bundle.root, manifest)
    return path, True


def tensorrt_parity(bundle_dir: str | Path, points: np.ndarray, fp16: bool):
    """TensorRT (the engine of this precision) vs ONNX Runtime (CPU) on ``points``."""
    from relidar.core.segmenter import Segmenter
    from relidar.export.parity import ParityReport

    ref = Segmenter(bundle_dir, backend="onnxruntime")(points, return_features=True)
    cand = Segmenter(bundle_dir, backend="tensorrt", device="cuda:0",
                     precision="fp16" if fp16 else "fp32")(points, return_features=True)
    return ParityReport(reference="onnxruntime", candidate=f"tensorrt-{'fp16' if fp16 else 'fp32'}",
                        points=int(len(points)), max_abs_feature=float(np.abs(ref.features - cand.features).max()),
                        max_abs_score=float(np.abs(ref.scores - cand.scores).max()),
                        label_agreement=float((ref.labels == cand.labels).mean()))
