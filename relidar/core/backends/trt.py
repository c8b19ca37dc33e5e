"""TensorRT backend: runs a serialized engine built by ``relidar export tensorrt`` (TensorRT 10 API).

Device memory and copies go through cuda-python's runtime bindings (``cuda.bindings.runtime``, or
``cuda.cudart`` in older releases), so no PyTorch is needed. Written against TensorRT 10's Python API
(tensor-name based I/O: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); this
development machine has no GPU, so it has not run here (``scripts/gpu_check.sh`` runs it).

The CUDA runtime's current device is per host thread: the constructor selects the engine's GPU, but
``run`` may be called from another thread (a ROS executor's), which would target GPU 0 -- so ``run``
selects it again (a cheap call when already current).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from relidar.core.backends.base import BackendError
from relidar.core.graph import OUTPUTS


def tensorrt_available() -> bool:
    """Whether tensorrt and a CUDA runtime binding import and a GPU is visible."""
    try:
        import tensorrt  # noqa: F401
        cudart = _cudart()
    except (ImportError, BackendError):
        return False
    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendError("the TensorRT backend needs cuda-python (pip install cuda-python)") from exc
    return cudart


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA error {err} in {what}")
    return rest[0] if len(rest) == 1 else rest


def gpu_name(device: int = 0) -> str:
    """The GPU's name, filename-safe (engine cache key)."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return "".join(c if c.isalnum() else "-" for c in name.strip("\x00 ")).strip("-").lower()


class TensorRTBackend:
    name = "tensorrt"
    concurrent = False  # one execution context and its bound buffers
    pipeline = None  # the feed is made on the host (relidar.core.preprocess)

    def __init__(self, engine_path: str | Path, device: int = 0, formulation: str = "pairs") -> None:
        self.formulation = formulation
        self._device = device
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError("backend 'tensorrt' needs the tensorrt package (pip install tensorrt-cu12)") from exc
        self._trt = trt
        self._cudart = _cudart()
        _check(self._cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise BackendError(f"{engine_path}: TensorRT could not deserialize this engine (built by another TensorRT "
                               "version or for another GPU?); rebuild it with `relidar export tensorrt`")
        self._context = self._engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers.get(name, (0, 0))
        if nbytes > cap:  # grow geometrically so a slowly growing scan size does not reallocate each call
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            cap = max(nbytes, int(cap * 1.5), 256)
            ptr = _check(self._cudart.cudaMalloc(cap), "cudaMalloc")
            self._buffers[name] = (ptr, cap)
        return ptr

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, cudart, ctx = self._trt, self._cudart, self._context
        _check(cudart.cudaSetDevice(self._device), "cudaSetDevice")  # per thread: see the module docstring
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._inputs:
            dtype = trt.nptype(self._engine.get_tensor_dtype(name))
            host = np.ascontiguousarray(feed[name], dtype=dtype)
            if not ctx.set_input_shape(name, tuple(host.shape)):
                raise BackendError(f"input {name!r} shape {host.shape} is outside the engine's optimisation profile; "
                                   "rebuild the engine with larger --max-points")
            ptr = self._buffer(name, max(host.nbytes, 1))
            if host.nbytes:
                _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream), "copy in")
            ctx.set_tensor_address(name, ptr)
        outputs: dict[str, np.ndarray] = {}
        for name in OUTPUTS:
            shape = tuple(ctx.get_tensor_shape(name))
            host = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            ctx.set_tensor_address(name, self._buffer(name, max(host.nbytes, 1)))
            outputs[name] = host
        if not ctx.execute_async_v3(self._stream):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        for name, host in outputs.items():
            if host.nbytes:
                _check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, d2h, self._stream),
                       "copy out")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return outputs

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(ptr)
