"""Inference backends behind one interface (:class:`relidar.core.backends.base.Backend`):
``onnxruntime`` (CPU / CUDA), ``tensorrt`` (where importable with a GPU), ``fused`` (the CPU, compiled
sparse convolutions over the bundle's weights: relidar.core.backends.fused), ``torch``.

:func:`make_backend` picks one for a bundle; ``auto`` prefers TensorRT on a GPU (an engine for this GPU
must be in the bundle), ``fused`` on the CPU (the bundle must ship its weights; it runs the stock graph's
network about twice as fast as ONNX Runtime and labels what it labels: README "Backends"), then ONNX
Runtime, then PyTorch. Each backend runs the kernel-map formulation that suits its device
(:func:`relidar.core.graph.resolve_formulation`): pair lists on a CPU, neighbour tables on a GPU
(relidar.model.sparse.functional).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relidar.core.backends.base import Backend, BackendError, device_index
from relidar.core.graph import FORMULATIONS, requested_formulation, resolve_formulation

if TYPE_CHECKING:
    from relidar.core.bundle import Bundle

BACKENDS = ("auto", "tensorrt", "onnxruntime", "fused", "torch")
ENTRY_POINT_GROUP = "relidar.backends"

# the package each named backend needs beyond the core, and those that run on a GPU only; a backend not
# listed needs nothing the core does not (it is then available everywhere)
_RUNTIME = {"tensorrt": "tensorrt", "onnxruntime": "onnxruntime", "torch": "torch"}
_GPU_ONLY = ("tensorrt",)
# The graph formulations each backend runs (relidar.core.graph.FORMULATIONS where not listed): the fused
# kernels walk the pair lists only.
_FORMULATIONS = {"fused": ("pairs",)}

__all__ = ["BACKENDS", "Backend", "BackendError", "available_backends", "backend_formulations", "device_index", "make_backend"]


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_backends(device: str = "cpu") -> tuple[str, ...]:
    """The named backends (``BACKENDS`` less ``auto``) whose runtime is installed here and can run on ``device``:
    what the benchmarks iterate over, so a backend added to the registry is measured without being named there.
    Installed is not loadable (a TensorRT engine for this GPU, the torch entry point): callers try each."""
    gpu = device_index(device) is not None
    return tuple(name for name in BACKENDS if name != "auto" and (gpu or name not in _GPU_ONLY)
                 and (name not in _RUNTIME or _importable(_RUNTIME[name])))


def backend_formulations(name: str) -> tuple[str, ...]:
    """The graph formulations backend ``name`` runs: what the benchmarks time it in."""
    return _FORMULATIONS.get(name, FORMULATIONS)


def _tensorrt_engine(bundle: "Bundle", device: str, precision: str | None = None, formulation: str | None = None):
    import tensorrt as trt

    from relidar.core.backends.trt import TensorRTBackend, gpu_name

    index = device_index(device) or 0
    gpu = gpu_name(index)
    for wanted in ((precision,) if precision else ("fp16", "fp32")):
        spec = bundle.engine_for(gpu, trt.__version__, wanted, formulation=formulation)
        if spec is not None:
            return TensorRTBackend(bundle.path(spec.file), index, spec.formulation)
    raise BackendError(f"{bundle.root}: no {precision or ''} TensorRT engine for GPU {gpu!r} and TensorRT {trt.__version__}; build "
                       f"one with `relidar export tensorrt --bundle {bundle.root}`")


def make_backend(bundle: "Bundle", backend: str = "auto", device: str = "cpu", threads: int | None = None,
                 precision: str | None = None, formulation: str | None = None) -> Backend:
    """The named backend for ``bundle``; ``auto`` = tensorrt (GPU device, engine present) > fused (CPU device, weights
    in the bundle) > onnxruntime > torch.
    ``precision`` ("fp16"/"fp32") picks a TensorRT engine; by default fp16 where built, else fp32.
    ``formulation`` ("pairs"/"table") overrides the device's own (``auto`` or None: ``resolve_formulation``
    over the bundle's graphs; benchmarks compare both)."""
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r}: choose one of {BACKENDS}")
    device_index(device)  # a malformed device is refused before any backend is tried
    formulation = requested_formulation(formulation)
    if backend == "auto":
        if device.startswith("cuda") and _importable("tensorrt"):
            from relidar.core.backends.trt import tensorrt_available

            if tensorrt_available():
                try:
                    return _tensorrt_engine(bundle, device, precision, formulation)
                except BackendError:
                    pass  # no engine for this GPU yet: ONNX Runtime runs the same graph
        if device == "cpu":
            from relidar.core.backends.fused import FusedBackend

            try:
                return FusedBackend.from_bundle(bundle, device, threads, resolve_formulation(formulation, device,
                                                                                             bundle.formulations))
            except BackendError:
                pass  # no weights in the bundle (or a table graph asked for): ONNX Runtime runs the stock graph
        if _importable("onnxruntime"):
            backend = "onnxruntime"
        elif _importable("torch"):
            backend = "torch"
        else:
            raise BackendError("no inference runtime here: install onnxruntime (or tensorrt / torch)")
    if backend == "tensorrt":
        if not _importable("tensorrt"):
            raise BackendError("backend 'tensorrt': the tensorrt package is not installed (pip install tensorrt-cu12)")
        return _tensorrt_engine(bundle, device if device.startswith("cuda") else "cuda:0", precision, formulation)
    chosen = resolve_formulation(formulation, device, bundle.formulations)
    if backend == "fused":
        from relidar.core.backends.fused import FusedBackend

        return FusedBackend.from_bundle(bundle, device, threads, chosen)
    if backend == "onnxruntime":
        from relidar.core.backends.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.student_onnx_for(chosen), device, threads, chosen)
    return _plugin_backend(backend, bundle, device, chosen)


def _plugin_backend(name: str, bundle: "Bundle", device: str, formulation: str) -> Backend:
    """A backend that lives above the core (``torch`` in relidar.model), found through the
    ``relidar.backends`` entry-point group so that the core never imports the layers above it."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise BackendError(f"backend {name!r} is not installed here (it comes with relidar's model layer and "
                           "PyTorch); use backend 'onnxruntime'")
    try:
        factory = found[0].load()
    except ImportError as exc:
        raise BackendError(f"backend {name!r} cannot be loaded here ({exc}); use backend 'onnxruntime'") from exc
    return factory.from_bundle(bundle, device, formulation)
