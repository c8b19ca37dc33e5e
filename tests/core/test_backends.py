"""Inference backends: the ONNX Runtime providers a session really runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from relidar.core.backends.base import BackendError  # noqa: E402
from relidar.core.backends.ort import CUDA_PROVIDER, OnnxRuntimeBackend, require_active_provider  # noqa: E402


def _identity_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_cuda_request_checked_against_the_sessions_active_providers(tmp_path: Path) -> None:
    session = ort.InferenceSession(str(_identity_onnx(tmp_path / "id.onnx")), providers=["CPUExecutionProvider"])
    assert require_active_provider(session, "cpu") == ("CPUExecutionProvider",)
    with pytest.raises(BackendError) as info:
        require_active_provider(session, "cuda:0")
    assert info.value.field == "device"


def test_backend_refuses_cuda_it_cannot_activate(tmp_path: Path) -> None:
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: whether CUDA activates depends on the machine "
                    "(scripts/gpu_check.sh reports the providers a real session runs on)")
    path = _identity_onnx(tmp_path / "id.onnx")
    with pytest.raises(BackendError), pytest.warns(UserWarning, match=CUDA_PROVIDER):
        OnnxRuntimeBackend(path, device="cuda:0")
    assert OnnxRuntimeBackend(path, device="cpu").providers == ("CPUExecutionProvider",)
