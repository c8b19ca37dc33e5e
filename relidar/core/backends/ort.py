"""ONNX Runtime backend: CPU, or CUDA where onnxruntime-gpu and a GPU are present.

A session asked for CUDA falls back to the CPU silently when the CUDA provider cannot load (no GPU,
or an onnxruntime-gpu built for another CUDA / cuDNN than the machine has); ``get_available_providers``
lists what is compiled in, not what loaded. So the backend checks the providers the session actually
runs (``session.get_providers()``) and refuses a CUDA request the session does not honour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from relidar.core.backends.base import BackendError, device_index
from relidar.core.graph import OUTPUTS

CUDA_PROVIDER = "CUDAExecutionProvider"


def require_active_provider(session: Any, device: str) -> tuple[str, ...]:
    """The providers ``session`` runs on; raises when ``device`` is CUDA and CUDA is not among them."""
    import onnxruntime as ort

    active = tuple(session.get_providers())
    if device.startswith("cuda") and CUDA_PROVIDER not in active:
        raise BackendError(f"{device!r}: ONNX Runtime runs this graph on {list(active)}, not on CUDA (providers "
                           f"compiled in: {ort.get_available_providers()})", field="device",
                           hint="install the onnxruntime-gpu built for this machine's CUDA and cuDNN "
                                "(docker/vehicle.Dockerfile pins one), or use device cpu")
    return active


class OnnxRuntimeBackend:
    name = "onnxruntime"
    # A session's Run may be called from several threads at once; with intra-op threads = 1 each call
    # runs on its caller's thread, so N callers use N cores (relidar.core.segmenter, "concurrent calls").
    concurrent = True
    pipeline = None  # the feed is made on the host (relidar.core.preprocess)

    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None,
                 formulation: str = "pairs") -> None:
        self.formulation = formulation
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)") from exc
        index = device_index(device)
        providers: list = (["CPUExecutionProvider"] if index is None
                           else [(CUDA_PROVIDER, {"device_id": index}), "CPUExecutionProvider"])
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
        self.providers = require_active_provider(self._session, device)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.device = device

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._session.run(list(OUTPUTS), {n: feed[n] for n in self._inputs})
        return dict(zip(OUTPUTS, out))
