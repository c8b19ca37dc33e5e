"""TensorRT engines from a bundle's student ONNX (TensorRT 10 Python API), cached in the bundle.

Which graph: the bundle's neighbour-table graph where it has one (one gather and one GEMM per
convolution, every input at least one row long), else the pair-list graph.

Shape ranges: TensorRT needs, for every dynamic input, a (min, opt, max) optimisation profile. The
voxel counts are bounded by the grid (crop range / voxel size, halved per level) and by the points
a scan can have; pair counts by the voxel counts (each (out, in) pair list of one offset has at most
one pair per voxel). ``opt`` is taken from a measured scan when one is given (its occupancy scaled to
``opt_points``), else from half of ``max_points``. Pair lists can be empty (a sparse scan has offsets
with no pairs), so their profile minimum is 0: TensorRT accepts zero-length tensors, but whether its
Gather/ScatterND layers run them has only been seen on a GPU by ``scripts/gpu_check.sh`` (tiny scan);
the table graph has no empty inputs.

The engine goes to ``engines/<gpu>_<tensorrt version>_<precision>_<formulation>_<max>-<opt points>.plan``,
is listed (sha256, formulation, profile sizes) in the manifest, and the Segmenter's ``auto`` backend
picks it on that GPU; an engine is reused only for the same GPU, TensorRT, precision, formulation and
profile sizes.

fp16: built with ``BuilderFlag.FP16`` (a weakly typed network), which TensorRT 10 has (deprecated
since 10.12) and TensorRT 11 removed (strongly typed networks only, precision taken from the ONNX);
the vehicle image pins TensorRT 10 (docker/vehicle.Dockerfile), and an fp16 build under TensorRT 11
is refused with that explanation. This module has not run on the development machine (no GPU, no
tensorrt there); the code follows TensorRT 10's documented API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from relidar.core.bundle import ENGINES_DIR, Bundle, EngineSpec, file_entry, load_bundle, write_manifest
from relidar.core.errors import RelidarError
from relidar.core.graph import Formulation, input_names, resolve_formulation
from relidar.core.kernel_maps import NUM_HALF_OFFSETS

Shape = tuple[int, ...]


class TensorRTError(RelidarError, RuntimeError):
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
                   num_classes: tuple[int, int, int] = (1, 32, 256), formulation: Formulation = "pairs") -> ProfileShapes:
    """(min, opt, max) for every input of the ``formulation`` graph; see the module docstring. ``sample_feed``
    is a pair-list feed (its voxel and pair counts set ``opt``)."""
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
    if formulation == "table":
        for l in range(levels):
            shapes[f"subm_table_{l}"] = ((1, 27), (vopt[l], 27), (vmax[l], 27))
        for l in range(levels - 1):
            shapes[f"down_table_{l}"] = ((1, 8), (vopt[l + 1], 8), (vmax[l + 1], 8))
            shapes[f"up_index_{l}"] = ((1,), (vopt[l],), (vmax[l],))
    else:
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
    missing = set(input_names(levels, formulation)) - set(shapes)
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
        if tensorrt_major(trt.__version__) >= 11:
            raise TensorRTError(f"TensorRT {trt.__version__} builds strongly typed networks only (BuilderFlag.FP16 was "
                                "removed in 11.0)", field="fp16",
                                hint="build fp32, or use TensorRT 10 for fp16: pip install 'tensorrt-cu12>=10.12,<11' "
                                     "(docker/vehicle.Dockerfile pins it)")
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


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def engine_name(gpu: str, trt_version: str, precision: str, formulation: str, max_points: int, opt_points: int) -> str:
    return f"{ENGINES_DIR}/{gpu}_{trt_version}_{precision}_{formulation}_{max_points}-{opt_points}.plan"


def export_tensorrt(bundle_dir: str | Path, fp16: bool = False, max_points: int = 300_000, opt_points: int = 120_000,
                    sample_points: np.ndarray | None = None, device: int = 0, rebuild: bool = False) -> tuple[Path, bool]:
    """Build (or reuse) the engine for this GPU + TensorRT + precision + profile sizes, from the bundle's
    neighbour-table graph where it has one, and record it in the manifest. Returns (engine path, built now)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError("the tensorrt package is not installed (pip install tensorrt-cu12; needs an NVIDIA GPU)") from exc
    from relidar.core.backends.trt import gpu_name

    bundle = load_bundle(bundle_dir)
    precision = "fp16" if fp16 else "fp32"
    gpu = gpu_name(device)
    formulation = resolve_formulation(None, "cuda", bundle.formulations)  # an engine always runs on CUDA
    existing = bundle.engine_for(gpu, trt.__version__, precision, formulation=formulation, max_points=max_points,
                                 opt_points=opt_points)
    if existing is not None and not rebuild:
        return bundle.path(existing.file), False
    feed = None
    if sample_points is not None:
        from relidar.core.preprocess import Preprocessor

        feed = Preprocessor.of(bundle.manifest.student)(sample_points).feed(bundle.vocabulary().embeddings)
    shapes = profile_shapes(bundle, max_points, opt_points, feed, formulation=formulation)
    plan = build_engine(bundle.student_onnx_for(formulation), shapes, fp16)
    name = engine_name(gpu, trt.__version__, precision, formulation, max_points, opt_points)
    path = bundle.root / name
    path.parent.mkdir(exist_ok=True)
    from relidar.core.atomic import atomic_write_bytes

    atomic_write_bytes(path, plan)
    manifest = bundle.manifest.model_copy(deep=True)
    manifest.engines = [e for e in manifest.engines if e.file != name] + [
        EngineSpec(file=name, gpu=gpu, tensorrt=trt.__version__, precision=precision, formulation=formulation,
                   max_points=max_points, opt_points=opt_points)]
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
