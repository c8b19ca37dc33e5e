"""The vehicle image's GPU runtimes match its CUDA base image (read statically from the Dockerfile).

Which CUDA each pinned wheel needs is a fact of the published wheels, written down here: onnxruntime-gpu
on PyPI requires nvidia-cuda-runtime-cu12 (its ``cuda`` extra) from 1.19 to 1.26.0 and CUDA 13 from
1.27.0 on (wheel metadata); tensorrt-cuXX is built for CUDA XX, and TensorRT 11 removed
``BuilderFlag.FP16``, which the fp16 engine build uses (relidar.export.tensorrt); cuda-python X.Y binds
the CUDA X.Y runtime API.
"""

from __future__ import annotations

import re
from pathlib import Path

from relidar.export.tensorrt import tensorrt_major

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "vehicle.Dockerfile"


def _onnxruntime_gpu_cuda_major(version: str) -> int:
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (1, 19):
        return 11
    return 12 if (major, minor) <= (1, 26) else 13


def _base_cuda() -> tuple[int, int]:
    image = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-", DOCKERFILE.read_text(), re.M)
    assert image, "the vehicle image builds FROM an nvidia/cuda:<version>-cudnn-runtime image"
    return int(image.group(1)), int(image.group(2))


def _pins() -> dict[str, str]:
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    pins = dict(re.findall(r"\b(onnxruntime-gpu|tensorrt-cu\d+|cuda-python)==([\w.]+)", text))
    for package in ("onnxruntime-gpu", "cuda-python"):
        assert package in pins, f"{package} must be pinned with == in {DOCKERFILE.name}"
        assert not re.search(rf"\b{package}(?!==)[\s\"'<>]", text), f"{package} also appears unpinned"
    assert any(p.startswith("tensorrt-cu") for p in pins), "tensorrt-cuXX must be pinned with =="
    return pins


def test_gpu_runtimes_match_the_cuda_base_image() -> None:
    cuda_major, cuda_minor = _base_cuda()
    pins = _pins()
    assert _onnxruntime_gpu_cuda_major(pins["onnxruntime-gpu"]) == cuda_major
    trt = next(p for p in pins if p.startswith("tensorrt-cu"))
    assert trt == f"tensorrt-cu{cuda_major}"
    assert tensorrt_major(pins[trt]) == 10, "TensorRT 10: the last major with BuilderFlag.FP16"
    assert tuple(int(p) for p in pins["cuda-python"].split(".")[:2]) == (cuda_major, cuda_minor)


def test_cuda_major_of_onnxruntime_gpu_wheels() -> None:
    assert [_onnxruntime_gpu_cuda_major(v) for v in ("1.18.1", "1.19.0", "1.26.0", "1.27.0", "1.31.1")] == [11, 12, 12, 13, 13]
