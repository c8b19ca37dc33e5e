"""One run that shows relidar's GPU path works on this machine: ``scripts/gpu_check.sh`` (``relidar bench gpu``).

Writes ``gpu_check.json`` (everything measured) and ``summary.md`` (the same, readable) to ``--out``:

* ``versions``: Python, torch and its CUDA/cuDNN, driver and GPUs (nvidia-smi), TensorRT, cuda-python,
  ONNX Runtime and the providers a real session activates;
* ``student``: forward, backward and an optimizer step on CUDA for ``fast`` and ``base``, amp off / bf16 /
  fp16, in both sparse-conv formulations (pair lists, neighbour tables): finite outputs and gradients, the
  fp32 forward against the CPU's, step time, scans/s and peak memory;
* ``kernel_maps``: numpy vs torch-on-CUDA kernel maps and neighbour tables, integer for integer;
* ``ddp``: two ranks through ``relidar distill`` under torchrun with bf16 (NCCL with two GPUs or more,
  otherwise two gloo ranks sharing one GPU), against one process on the same global batch;
* ``resume``: a run interrupted after a checkpoint and resumed, against an uninterrupted one;
* ``backends``: ONNX Runtime CPU (the reference) and CUDA, torch on CUDA and TensorRT fp32/fp16 on the
  KITTI scan, a tiny scan with empty pair lists, a max-size scan, and 1 / 256 classes: label agreement,
  max feature error, build time, median latency;
* ``segmenter``: the GPU-resident Segmenter (the torch backend's device pipeline) on the KITTI scan, points in
  and labels out, copies included: end-to-end p50 against the 10 ms target, with the card's name, next to the
  same backend with host preprocessing; labels against ONNX Runtime on the CPU, voxels against numpy's;
* ``maskclip``: MaskCLIP ViT-B/16 (random weights) time and peak memory at KITTI and nuScenes image sizes;
* ``train``: ``relidar bench train`` on the real KITTI frame, CPU and CUDA side by side: data loading in
  DataLoader workers with pinned memory, forward+backward, the online teacher, the loop's wait, the bottleneck.

Each section is recorded even when another fails (its error in the JSON). Without an NVIDIA GPU the run
is refused before anything starts (:func:`require_gpu`). Nothing of this has run on a GPU where it was
written (no GPU there); the README's GPU section says what has.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.timing import time_calls, time_interleaved

KITTI_IMAGE = (375, 1242)      # height, width of a KITTI camera image
NUSCENES_IMAGE = (900, 1600)   # of a nuScenes camera image
PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "cuda-python", "cuda-bindings",
            "spconv", "open_clip_torch", "numpy")


class GpuCheckError(RelidarError, RuntimeError):
    """The check cannot run here (no NVIDIA GPU visible)."""


def require_gpu() -> list[str]:
    """The visible GPUs' names; raises :class:`GpuCheckError` (one line) where PyTorch sees none."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    smi = "nvidia-smi not found" if shutil.which("nvidia-smi") is None else "nvidia-smi is installed"
    raise GpuCheckError(f"no NVIDIA GPU visible to PyTorch (torch.cuda.is_available() is False, {smi}, torch "
                        f"{torch.__version__} built for CUDA {torch.version.cuda})",
                        hint="run scripts/gpu_check.sh on a machine with an NVIDIA GPU and its driver")


@dataclass
class GpuCheckOptions:
    out: Path
    scan: Path | None = None          # a KITTI .bin (default: ../shared/data/kitti/000000, else a synthetic scan)
    profiles: tuple[str, ...] = ("fast", "base")
    amps: tuple[str, ...] = ("off", "bf16", "fp16")
    repeat: int = 10
    max_points: int = 200_000         # the max-size scan, and the TensorRT profile's maximum
    sections: tuple[str, ...] = ("versions", "student", "kernel_maps", "ddp", "resume", "backends", "segmenter", "maskclip",
                                 "train")


@dataclass
class GpuCheckReport:
    started: str
    gpus: list[str]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "gpus": self.gpus, "sections": self.sections}


def _record(report: GpuCheckReport, name: str, fn: Callable[[], Any], on_section: Callable[[str], None] | None) -> None:
    if on_section is not None:
        on_section(name)
    t0 = time.perf_counter()
    try:
        result, error = fn(), None
    except Exception as exc:  # noqa: BLE001 -- a check records any failure and goes on with the next section
        result, error = None, "".join(traceback.format_exception_only(type(exc), exc)).strip()
        error += "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])
    report.sections[name] = {"ok": error is None, "seconds": round(time.perf_counter() - t0, 2), "result": result,
                             "error": error}


def run_gpu_check(options: GpuCheckOptions, on_section: Callable[[str], None] | None = None) -> GpuCheckReport:
    """Run every section of ``options`` and write ``gpu_check.json`` + ``summary.md`` into ``options.out``."""
    gpus = require_gpu()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    report = GpuCheckReport(started=time.strftime("%Y-%m-%d %H:%M:%S"), gpus=gpus)
    scan, scan_name = _scan(options.scan)
    jobs: dict[str, Callable[[], Any]] = {
        "versions": versions,
        "student": lambda: student_checks(scan, options.profiles, options.amps, options.repeat),
        "kernel_maps": lambda: kernel_maps_check(scan),
        "ddp": lambda: ddp_check(work / "ddp"),
        "resume": lambda: resume_check(work / "resume"),
        "backends": lambda: backend_checks(work / "backends", scan, options.max_points, options.repeat),
        "segmenter": lambda: segmenter_check(work / "segmenter", scan, options.repeat),
        "maskclip": lambda: maskclip_check(max(3, options.repeat // 2)),
        "train": lambda: train_check(options.scan, options.repeat),
    }
    for name in options.sections:
        _record(report, name, jobs[name], on_section)
        write_report(report, out, scan_name)  # after every section: a crash later keeps what was measured
    return report


def write_report(report: GpuCheckReport, out: Path, scan_name: str = "") -> tuple[Path, Path]:
    data = {**report.as_dict(), "scan": scan_name}
    json_path = out / "gpu_check.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path = out / "summary.md"
    md_path.write_text(summary_markdown(data))
    return json_path, md_path


# --- inputs -------------------------------------------------------------------------------------------


def _scan(path: Path | None) -> tuple[np.ndarray, str]:
    from relidar.core.scan_io import read_scan

    if path is not None:
        return read_scan(path), str(path)
    shared = os.environ.get("RELIDAR_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
    default = Path(shared) / "kitti" / "000000" / "velodyne.bin"
    if default.is_file():
        return read_scan(default), str(default)
    from relidar.synthetic import lidar_sweep

    return lidar_sweep().points, "synthetic HDL-64E sweep (relidar.synthetic.lidar_sweep)"


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    t = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 2, cuda: bool = True) -> float:
    return round(time_calls(fn, repeat, warmup, sync=_sync if cuda else None).p50, 3)


# --- sections -----------------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "gpus": [{"name": torch.cuda.get_device_name(i), "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                  "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                 for i in range(torch.cuda.device_count())],
        "packages": {},
    }
    for package in PACKAGES:
        try:
            out["packages"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out["packages"][package] = None
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
        out["nvidia_smi"] = smi.stdout.strip().splitlines() if smi.returncode == 0 else smi.stderr.strip()
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnxruntime_providers"] = None
    else:
        out["onnxruntime_providers"] = {"compiled_in": ort.get_available_providers(),
                                        "active_in_a_cuda_session": _active_ort_providers(ort)}
    return out


def _active_ort_providers(ort: Any) -> list[str]:
    """The providers of a real session on a one-node graph that asked for CUDA first."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    return list(session.get_providers())


def student_checks(scan: np.ndarray, profiles: tuple[str, ...], amps: tuple[str, ...], repeat: int,
                   device: str = "cuda:0") -> list[dict]:
    """Forward + backward + AdamW step of one scan, per profile x amp x formulation, on ``device`` (the CPU
    runs it too, under CPU autocast: how the harness itself is tested)."""
    import torch

    from relidar.core.kernel_maps import KernelMaps, build_kernel_maps_numpy
    from relidar.core.voxelize import voxelize
    from relidar.model.kernel_maps_torch import build_neighbour_tables_torch
    from relidar.model.network import Student, StudentConfig

    device = torch.device(device)
    rows = []
    for profile in profiles:
        config = StudentConfig(profile=profile, out_dim=512)
        vox = voxelize(scan, config.grid(), config.input_features)
        maps = build_kernel_maps_numpy(vox.coords, vox.grid_shape, config.num_levels)
        cpu_maps = KernelMaps.from_tensors([torch.from_numpy(t) for t in maps.to_tensors()], config.num_levels)
        gpu_maps = cpu_maps.to(device)
        formulations = {"pairs": (cpu_maps, gpu_maps),
                        "table": (build_neighbour_tables_torch(cpu_maps), build_neighbour_tables_torch(gpu_maps))}
        features = torch.from_numpy(vox.features)
        torch.manual_seed(0)
        reference = Student(config).train()
        with torch.no_grad():
            cpu_out = reference(features, cpu_maps)
        for formulation, (_, on_gpu) in formulations.items():
            for amp in amps:
                rows.append(_student_step(reference, features, on_gpu, cpu_out, profile, formulation, amp, repeat,
                                          vox.num_voxels, device))
    return rows


def _student_step(reference: Any, features: Any, maps: Any, cpu_out: Any, profile: str, formulation: str, amp: str,
                  repeat: int, voxels: int, device: Any) -> dict[str, Any]:
    import copy

    import torch

    cuda = device.type == "cuda"
    model = copy.deepcopy(reference).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    x = features.to(device)

    def forward() -> Any:
        if dtype is None:
            return model(x, maps)
        with torch.autocast(device.type, dtype=dtype):
            return model(x, maps)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        out = forward()
        loss = out.float().square().mean()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return out

    with torch.no_grad():
        first = forward().float().cpu()
    scale = float(cpu_out.abs().max())
    row: dict[str, Any] = {"profile": profile, "formulation": formulation, "amp": amp, "voxels": voxels,
                           "forward_finite": bool(torch.isfinite(first).all()),
                           "max_rel_diff_vs_cpu_fp32": float((first - cpu_out).abs().max()) / max(scale, 1e-12)}
    # fp32 should match the CPU to float rounding (TF32 matmuls are off by default in PyTorch)
    row["matches_cpu"] = row["max_rel_diff_vs_cpu_fp32"] <= {"off": 1e-3, "bf16": 5e-2, "fp16": 2e-2}[amp]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    out = step()
    row["grads_finite"] = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    row["output_dtype"] = str(out.dtype)
    with torch.no_grad():
        row["forward_ms"] = _median_ms(forward, repeat, cuda=cuda)
    row["step_ms"] = _median_ms(step, repeat, cuda=cuda)
    row["scans_per_s"] = round(1e3 / row["step_ms"], 2)
    row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
    row["params_finite_after_steps"] = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return row


def kernel_maps_check(scan: np.ndarray, device: str = "cuda") -> dict[str, Any]:
    import torch

    from relidar.core.kernel_maps import build_kernel_maps_numpy, build_neighbour_tables_numpy
    from relidar.core.voxelize import voxelize
    from relidar.model.kernel_maps_torch import build_kernel_maps_torch, build_neighbour_tables_torch
    from relidar.model.network import StudentConfig

    config = StudentConfig(profile="fast")
    vox = voxelize(scan, config.grid(), config.input_features)
    coords = torch.from_numpy(vox.coords).to(device)
    numpy_maps = build_kernel_maps_numpy(vox.coords, vox.grid_shape, config.num_levels)
    cuda_maps = build_kernel_maps_torch(coords, vox.grid_shape, config.num_levels)
    numpy_tables = build_neighbour_tables_numpy(numpy_maps)
    cuda_tables = build_neighbour_tables_torch(cuda_maps)
    maps_equal = all(np.array_equal(a, b.cpu().numpy()) for a, b in zip(numpy_maps.to_tensors(), cuda_maps.to_tensors()))
    tables_equal = all(np.array_equal(a, b.cpu().numpy())
                       for a, b in zip(numpy_tables.to_tensors(), cuda_tables.to_tensors()))
    return {"device": device, "voxels_per_level": [numpy_maps.num_voxels(l) for l in range(config.num_levels)],
            "maps_identical": maps_equal, "tables_identical": tables_equal,
            "numpy_ms": _median_ms(lambda: build_kernel_maps_numpy(vox.coords, vox.grid_shape, config.num_levels), 5,
                                   cuda=False),
            "torch_ms": _median_ms(lambda: build_kernel_maps_torch(coords, vox.grid_shape, config.num_levels), 5),
            "torch_tables_ms": _median_ms(lambda: build_neighbour_tables_torch(cuda_maps), 5)}


def _tiny_distill_tree(cache: Path, amp: str = "off", device: str = "cuda") -> dict[str, Any]:
    """A small synthetic world and a fast student: seconds per run, yet every layer and loss term used."""
    return {
        "data": {"cache": str(cache), "val_fraction": 0.2,
                 "synthetic": {"frames": 5, "world": {"seed": 0, "lidar": {"beams": 32, "max_range": 50.0},
                                                      "cameras": {"width": 256, "height": 128}},
                               "teacher": {"feature_dim": 64, "patch_size": 8}}},
        "student": {"profile": "fast", "voxel_size": 0.2, "out_dim": 64},
        "sampling": {"pairs_per_scan": 256},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 2, "batch_size": 2, "seed": 3, "amp": amp, "device": device},
        "logging": {"checkpoint_every": 1, "tensorboard": False, "progress": False},
    }


def _write_config(path: Path, tree: dict[str, Any]):
    import yaml

    from relidar.core.config import load_config
    from relidar.training.config import DistillConfig
    from relidar.training.data import ensure_cache

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    config = load_config(path, DistillConfig)
    ensure_cache(config.data)
    return config


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())


# The bounds of tests/training/test_distill_ddp.py (fraction of each tensor's update; see update_ratios): per step,
# (median, worst). GPU kernels add their own summation-order noise (atomic index_add in the backward).
DDP_BOUNDS = {1: (0.02, 0.1), 2: (0.1, 0.5)}


def ddp_check(work: Path, device: str = "cuda", amps: tuple[str, ...] = ("off", "bf16")) -> dict[str, Any]:
    """Two ranks under torchrun vs one process on the same global batches, per amp: 2 frames, global batch 2,
    2 epochs (step 2 starts a new epoch), per-scan losses, SGD -- the setting of tests/training/test_distill_ddp.py."""
    import torch

    from relidar.training.distributed import place_rank

    result: dict[str, Any] = {"gpus": torch.cuda.device_count(),
                              "expected_backend": place_rank(device, 0, 2, torch.cuda.device_count()).backend,
                              "bounds_median_worst_per_step": DDP_BOUNDS, "runs": {}}
    for amp in amps:
        result["runs"][amp] = _ddp_pair(work / amp, device, amp)
    fp32 = result["runs"].get("off", {})
    result["ok"] = all(r.get("backend") == result["expected_backend"] and math.isfinite(r.get("final_loss") or math.nan)
                       for r in result["runs"].values()) and bool(fp32.get("within_bounds", True))
    return result


def _ddp_pair(work: Path, device: str, amp: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from relidar.model.network import Student
    from relidar.training.distill import distill
    from relidar.training.distributed import update_ratios

    tree = _tiny_distill_tree(work / "cache", amp=amp, device=device)
    tree["data"]["synthetic"]["frames"] = 2
    tree["data"]["val_fraction"] = 0.0
    tree["sampling"]["scope"] = "scan"
    config_path = work / "ddp.yaml"
    config = _write_config(config_path, tree)
    single = distill(config, out=work / "single")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "relidar.cli.distill", "--config", str(config_path), "--out", str(work / "ddp"),
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=1800)
    result: dict[str, Any] = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        result["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
        return result
    run = work / "ddp"  # --out is the run folder itself
    summary = json.loads((run / "summary.json").read_text())
    result.update({"backend": summary.get("backend"), "device": summary.get("device"), "amp": summary.get("amp"),
                   "formulation": summary.get("formulation"), "final_loss": summary["final"].get("loss_total"),
                   "steps": single.steps})
    torch.manual_seed(config.train.seed)
    init = Student(config.student).state_dict()
    within = True
    for step, (median_bound, worst_bound) in DDP_BOUNDS.items():
        ratios = update_ratios(load_file(str(run / "checkpoints" / f"step_{step:07d}.safetensors")),
                               load_file(str(work / "single" / "checkpoints" / f"step_{step:07d}.safetensors")), init)
        values = sorted(ratios.values())
        median, worst = values[len(values) // 2], values[-1]
        result[f"step_{step}_update_ratio"] = {"median": median, "worst": worst, "worst_tensor": max(ratios, key=ratios.get)}
        within = within and median <= median_bound and worst <= worst_bound
    result["within_bounds"] = within
    return result


class _Interrupted(Exception):
    """Raised from the progress callback to stop a run after a checkpoint, as a crash would."""


def resume_check(work: Path, stop_at: int = 3, tolerance: float = 1e-4, device: str = "cuda") -> dict[str, Any]:
    from relidar.core.config import load_config
    from relidar.training.config import DistillConfig
    from relidar.training.distill import CONFIG_NAME, distill

    config = _write_config(work / "resume.yaml", _tiny_distill_tree(work / "cache", device=device))
    reference = distill(config, out=work / "reference")

    def stop(step: int, total: int, losses: dict[str, float]) -> None:
        if step == stop_at:
            raise _Interrupted()

    try:
        distill(config, out=work / "interrupted", on_step=stop)
    except _Interrupted:
        pass
    run = work / "interrupted"
    resumed = distill(load_config(run / CONFIG_NAME, DistillConfig), resume=run)
    diff = _max_weight_diff(resumed.weights, reference.weights)
    return {"steps": reference.steps, "interrupted_after_step": stop_at, "max_weight_diff": diff,
            "tolerance": tolerance, "ok": resumed.steps == reference.steps and diff <= tolerance}


def _random_bundle(root: Path, profile: str = "fast", out_dim: int = 512) -> Path:
    import torch

    from relidar.bench.bundles import student_bundle
    from relidar.model.network import Student, StudentConfig

    torch.manual_seed(0)
    return student_bundle(root, Student(StudentConfig(profile=profile, out_dim=out_dim)))


def backend_cases(scan: np.ndarray, max_points: int) -> dict[str, tuple[np.ndarray, int]]:
    """(points, classes) per case: the scan at 20 classes, 1 and 256 classes, a tiny scan whose kernel
    maps have empty pair lists, and a max-size scan (uniform in the crop: one voxel per point)."""
    rng = np.random.default_rng(0)
    lo, hi = np.array([-51.2, -51.2, -4.0]), np.array([51.2, 51.2, 2.4])
    dense = np.concatenate([lo + rng.random((max_points, 3)) * (hi - lo), rng.random((max_points, 1))], axis=1)
    tiny = np.array([[0.05, 0.05, 0.05, 0.1], [5.0, 5.0, 0.0, 0.2], [5.1, 5.0, 0.0, 0.3]], np.float32)
    return {"scan": (scan, 20), "scan_1_class": (scan, 1), "scan_256_classes": (scan, 256), "tiny": (tiny, 20),
            "max_size": (dense.astype(np.float32), 20)}


def backend_checks(work: Path, scan: np.ndarray, max_points: int, repeat: int, device: str = "cuda:0",
                   engines: bool = True, bundle_dir: Path | None = None) -> dict[str, Any]:
    """Every backend on the same feeds; ONNX Runtime on the CPU with pair lists is the reference.

    The bundle is ``bundle_dir`` or a random-weight ``fast`` one written to ``work``. ``device`` and
    ``engines`` exist so the harness itself is tested on a CPU (``device="cpu"``, no TensorRT); the GPU
    check runs it with the defaults.
    """
    from relidar.core.backends import make_backend
    from relidar.core.bundle import load_bundle
    from relidar.core.graph import graph_feed
    from relidar.core.kernel_maps import build_kernel_maps_numpy, build_neighbour_tables_numpy
    from relidar.core.voxelize import VoxelGrid, voxelize

    if bundle_dir is None:
        root = _random_bundle(work / "bundle")
    else:
        root = work / "bundle"
        shutil.copytree(bundle_dir, root)  # engines are added to the bundle: work on a copy
    result: dict[str, Any] = {"engine_builds": {}, "cases": {}}
    cases = backend_cases(scan, max_points)
    if engines:
        from relidar.export.tensorrt import export_tensorrt

        for fp16 in (False, True):
            t0 = time.perf_counter()
            try:
                path, _ = export_tensorrt(root, fp16=fp16, max_points=max_points, opt_points=len(scan), sample_points=scan)
                result["engine_builds"]["fp16" if fp16 else "fp32"] = {"seconds": round(time.perf_counter() - t0, 1),
                                                                       "file": path.name}
            except Exception as exc:  # noqa: BLE001 -- recorded; the other backends still run
                result["engine_builds"]["fp16" if fp16 else "fp32"] = {"error": str(exc)}
    bundle = load_bundle(root)
    spec = bundle.manifest.student
    grid = VoxelGrid(spec.voxel_size, spec.crop_min, spec.crop_max)
    runs = [("onnxruntime", "cpu", "pairs", None), ("onnxruntime", "cpu", "table", None)]
    if device.startswith("cuda"):
        runs += [("onnxruntime", device, "pairs", None), ("onnxruntime", device, "table", None),
                 ("torch", device, "pairs", None), ("torch", device, "table", None)]
        if engines:
            runs += [("tensorrt", device, None, "fp32"), ("tensorrt", device, None, "fp16")]
    else:
        runs += [("torch", device, "table", None)]
    backends: dict[str, Any] = {}
    for name, dev, formulation, precision in runs:
        key = f"{name}-{dev.split(':')[0]}-{formulation or precision}"
        t0 = time.perf_counter()
        try:
            if name == "torch":
                # The bench sits above the model layer: no entry point needed, so this also runs from a
                # checkout that was never pip-installed (PYTHONPATH, as on a bare GPU machine).
                from relidar.model.torch_backend import TorchBackend

                backends[key] = TorchBackend.from_bundle(bundle, dev, formulation)
            else:
                backends[key] = make_backend(bundle, name, dev, precision=precision, formulation=formulation)
            result.setdefault("load_seconds", {})[key] = round(time.perf_counter() - t0, 2)
        except Exception as exc:  # noqa: BLE001 -- a backend that cannot load here is a finding, not a crash
            result.setdefault("load_errors", {})[key] = str(exc)
    for case, (points, classes) in cases.items():
        vox = voxelize(points, grid, spec.input_features)
        maps = build_kernel_maps_numpy(vox.coords, vox.grid_shape, spec.num_levels)
        text = _unit_rows(classes, spec.out_dim, seed=classes)
        feeds = {"pairs": graph_feed(vox.features, vox.point_to_voxel, text, maps),
                 "table": graph_feed(vox.features, vox.point_to_voxel, text, build_neighbour_tables_numpy(maps))}
        empty = sum(int(feeds["pairs"][n].shape[-1] == 0) for n in feeds["pairs"] if n.startswith(("subm_", "down_")))
        row: dict[str, Any] = {"points": int(len(points)), "voxels": int(vox.num_voxels), "classes": classes,
                               "empty_pair_lists": empty, "backends": {}}
        reference = None
        for key, backend in backends.items():
            feed = feeds[backend.formulation]
            try:
                out = backend.run(feed)
                entry: dict[str, Any] = {"median_ms": _median_ms(lambda b=backend, f=feed: b.run(f), repeat,
                                                                 warmup=1, cuda=False)}
                if reference is None:
                    reference = out
                entry["label_agreement"] = float((out["labels"] == reference["labels"]).mean())
                entry["max_feature_error"] = float(np.abs(out["voxel_features"] - reference["voxel_features"]).max())
                entry["max_score_error"] = float(np.abs(out["scores"] - reference["scores"]).max())
                entry["finite"] = bool(np.isfinite(out["scores"]).all() and np.isfinite(out["voxel_features"]).all())
            except Exception as exc:  # noqa: BLE001 -- e.g. an engine whose profile a case exceeds: recorded
                entry = {"error": str(exc)}
            row["backends"][key] = entry
        result["cases"][case] = row
    return result


def segmenter_check(work: Path, scan: np.ndarray, repeat: int, device: str = "cuda:0",
                    bundle_dir: Path | None = None) -> dict[str, Any]:
    """The GPU-resident Segmenter on the scan, points in and labels out, copies included (issue 22's target:
    10 ms p50 end to end), with the card's name: end-to-end p50/p90 and the Segmenter's stages, interleaved with
    the torch backend on the same device with host (numpy) preprocessing; labels against ONNX Runtime on the
    CPU (the reference); the device's voxels against the numpy path's, integer for integer.

    The bundle is ``bundle_dir`` or a random-weight ``fast`` one written to ``work``; ``device="cpu"`` runs the
    same code on a CPU (how the harness is tested)."""
    import torch

    from relidar.core.segmenter import Segmenter
    from relidar.core.timing import percentile
    from relidar.core.voxelize import voxelize
    from relidar.model.voxelize_torch import voxelize_torch

    root = bundle_dir if bundle_dir is not None else _random_bundle(work / "bundle")
    reference = Segmenter(root, backend="onnxruntime")
    segs = {"resident": Segmenter(root, backend="torch", device=device, device_pipeline=True),
            "host": Segmenter(root, backend="torch", device=device, device_pipeline=False)}
    grid, names = reference.preprocessor.grid, reference.preprocessor.input_features
    want, got = voxelize(scan, grid, names), voxelize_torch(torch.as_tensor(scan, device=device), grid, names)
    result: dict[str, Any] = {
        "device": device, "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
        "points": int(len(scan)), "voxels": want.num_voxels, "formulation": segs["resident"].formulation,
        "voxels_identical": bool(np.array_equal(got.coords.cpu().numpy(), want.coords)),
        "point_to_voxel_identical": bool(np.array_equal(got.point_to_voxel.cpu().numpy(), want.point_to_voxel)),
        "max_feature_diff": float(np.abs(got.features.cpu().numpy() - want.features).max()) if want.num_voxels else 0.0,
        "target_ms": 10.0}
    labels = reference(scan).labels
    stages: dict[str, list[dict[str, float]]] = {name: [] for name in segs}

    def call(name: str) -> Callable[[], None]:
        return lambda: stages[name].append(segs[name](scan).timings_ms)

    timed = time_interleaved({name: call(name) for name in segs}, repeat, warmup=2, sync=_sync)
    for name, seg in segs.items():
        runs = stages[name][2:]  # the timed rounds: the warm-up rounds came first
        result[name] = {**timed[name].percentiles((50, 90), "end_to_end_ms"),
                        **{f"{s}_ms_p50": percentile([r[s] for r in runs], 50) for s in runs[0]},
                        "label_agreement": float((seg(scan).labels == labels).mean()) if len(labels) else 1.0}
    result["meets_target"] = result["resident"]["end_to_end_ms_p50"] <= result["target_ms"]
    return result


def maskclip_check(repeat: int, device: str = "cuda:0",
                   image_sizes: tuple[int | None, ...] | None = None) -> list[dict[str, Any]]:
    """MaskCLIP ViT-B/16 with random weights on camera-size images: time per image and peak memory, with the
    shorter side fed at its native size (``None``) and at the teacher's default (448 px)."""
    import torch

    from relidar.training.teachers.maskclip import DEFAULT_IMAGE_SIZE, MaskCLIPTeacher

    cuda = device.startswith("cuda")
    rows = []
    for name, (height, width) in (("kitti", KITTI_IMAGE), ("nuscenes", NUSCENES_IMAGE)):
        for size in image_sizes or (None, DEFAULT_IMAGE_SIZE):
            image_size = size or min(height, width)
            teacher = MaskCLIPTeacher("ViT-B-16", "none", device, image_size)
            image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            grid = teacher.encode_image(image).shape[:2]
            ms = _median_ms(lambda t=teacher, i=image: t.encode_image(i), repeat, warmup=1, cuda=cuda)
            rows.append({"image": name, "height": height, "width": width, "image_size": image_size,
                         "patch_grid": list(grid), "ms_per_image": ms,
                         "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None})
            del teacher
            if cuda:
                torch.cuda.empty_cache()
    return rows


def train_check(scan: Path | None, repeat: int) -> dict[str, Any]:
    """``relidar bench train`` on the KITTI frame the scan belongs to (default: the shared one), CPU and CUDA."""
    from relidar.bench.train import TrainBenchConfig, run_train_bench

    shared = os.environ.get("RELIDAR_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
    frame = Path(scan).parent if scan is not None else Path(shared) / "kitti" / "000000"
    if not (frame / "image_2.png").is_file():
        raise GpuCheckError("the training bench needs a KITTI frame folder (velodyne.bin, image_2.png, calib.txt)",
                            path=frame, hint="pass --scan <frame folder>/velodyne.bin")
    return run_train_bench(TrainBenchConfig(dataset=frame, devices=("cpu", "cuda"), workers=(0, 2, 4),
                                            steps=max(4, repeat)))


# --- the readable summary -----------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(data: dict[str, Any]) -> str:
    parts = [f"# relidar GPU check, {data['started']}", "", f"GPUs: {', '.join(data['gpus'])}; scan: {data.get('scan', '')}", ""]
    for name, section in data["sections"].items():
        status = "ok" if section["ok"] else "FAILED"
        parts += [f"## {name}: {status} ({section['seconds']} s)", ""]
        result = section["result"]
        if section["error"]:
            parts += ["```", section["error"], "```", ""]
        elif name == "student":
            keys = ["profile", "formulation", "amp", "forward_finite", "grads_finite", "matches_cpu",
                    "max_rel_diff_vs_cpu_fp32", "forward_ms", "step_ms", "scans_per_s", "peak_memory_mib"]
            parts += [_table(keys, [[r.get(k) for k in keys] for r in result]), ""]
        elif name == "maskclip":
            keys = ["image", "height", "width", "image_size", "patch_grid", "ms_per_image", "peak_memory_mib"]
            parts += [_table(keys, [[r.get(k) for k in keys] for r in result]), ""]
        elif name == "backends":
            for case, row in result["cases"].items():
                parts += [f"**{case}**: {row['points']} points, {row['voxels']} voxels, {row['classes']} classes, "
                          f"{row['empty_pair_lists']} empty pair lists", ""]
                keys = ["median_ms", "label_agreement", "max_feature_error", "max_score_error", "finite", "error"]
                parts += [_table(["backend"] + keys, [[b] + [e.get(k, "") for k in keys]
                                                      for b, e in row["backends"].items()]), ""]
            parts += [f"engine builds: {json.dumps(result['engine_builds'])}",
                      f"load errors: {json.dumps(result.get('load_errors', {}))}", ""]
        else:
            parts += ["```json", json.dumps(result, indent=2, default=str), "```", ""]
    return "\n".join(parts)
