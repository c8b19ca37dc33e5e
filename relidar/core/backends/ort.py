"""ONNX Runtime backend: CPU, or CUDA where onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from relidar.core.backends.base import BackendError
from relidar.core.graph import OUTPUTS


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)") from exc
        if device.startswith("cuda"):
            if not cuda_available():
                raise BackendError(f"device {device!r}: this onnxruntime has no CUDAExecutionProvider "
                                   f"(available: {ort.get_available_providers()}); install onnxruntime-gpu or use cpu")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise BackendError(f"device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        # Idle pool threads sleep instead of spinning: on a vehicle computer (and on the shared 2-core
        # dev box, where it measured faster) the cores are shared with the rest of the stack.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidGraph...)
            raise BackendError(f"{onnx_path}: ONNX Runtime cannot load this graph ({exc})") from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.device = device

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._session.run(list(OUTPUTS), {n: feed[n] for n in self._inputs})
        return dict(zip(OUTPUTS, out))
