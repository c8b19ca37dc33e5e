"""PyTorch backend: the student rebuilt from the bundle's weights, run through the same graph module
that is exported (BN folded, fused classifier). Needs torch; CPU or CUDA.

Two ways in. :meth:`TorchBackend.run` takes the core's numpy feed (voxels and kernel maps made on the host,
relidar.core.preprocess), as every backend does. :attr:`TorchBackend.pipeline` (:class:`DevicePipeline`)
takes the points themselves and keeps the whole scan on the backend's device: voxelization
(relidar.model.voxelize_torch), kernel maps or neighbour tables (relidar.model.kernel_maps_torch), the
network, the fused classifier and devoxelisation to points. Per scan it copies the points to the device
once and the labels and scores back once -- packed in one [2, N] int32 tensor, the scores' bits viewed as
int32, so the copy out is one transfer and one synchronisation, not two. The class embeddings are copied
only when they change. The Segmenter takes this path for the torch backend on CUDA (where the host
pipeline cost 18.9 ms of a 33.8 ms scan on an H200, issue 22) and on request elsewhere
(``Segmenter(device_pipeline=True)``: how it is tested on a CPU, the same code with ``device="cpu"``).

What the host still reads on the device path: the sizes that ``torch.nonzero`` / ``torch.unique``
synchronise on and, per level transition, the 8 group bounds of the downsampling pairs (a list of 8
ints); no array of the scan's size (tests/model/test_device_pipeline.py counts every transfer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from relidar.core.backends.base import BackendError

if TYPE_CHECKING:
    from torch import Tensor

    from relidar.core.bundle import Bundle
    from relidar.core.preprocess import Preprocessor


@dataclass(frozen=True)
class DeviceInputs:
    """One scan on the backend's device (relidar.core.backends.base.DeviceScan): what the graph takes."""

    features: "Tensor"             # [V, Cin] float32
    point_to_voxel: "Tensor"       # [N] int64, -1 outside the crop
    maps: tuple["Tensor", ...]     # the kernel maps in the graph's formulation, relidar.core.graph order
    num_points: int
    num_voxels: int


class DevicePipeline:
    """Points in, labels out, on one device (module docstring; relidar.core.backends.base.ScanPipeline)."""

    def __init__(self, graph: Any, preprocessor: "Preprocessor", device: Any, formulation: str) -> None:
        import torch

        self._torch = torch
        self._graph = graph
        self._pre = preprocessor
        self._device = device
        self._formulation = formulation
        self._text_host: np.ndarray | None = None  # the embeddings last copied to the device, and their copy
        self._text: Any = None

    def sync(self) -> None:
        """Wait for the device's queued work (stage timings are then the stage's own); nothing on a CPU."""
        if self._device.type == "cuda":
            self._torch.cuda.synchronize(self._device)

    def prepare(self, points: np.ndarray) -> DeviceInputs:
        """Voxels and kernel maps of one scan [N, >=3], made on the device from one copy of the points."""
        from relidar.model.kernel_maps_torch import build_kernel_maps_torch, build_neighbour_tables_torch
        from relidar.model.voxelize_torch import voxelize_torch

        torch = self._torch
        pre = self._pre
        points_on_device = torch.as_tensor(np.ascontiguousarray(points[:, :4]), device=self._device)  # the copy in
        with torch.inference_mode():
            voxels = voxelize_torch(points_on_device, pre.grid, pre.input_features)
            maps = build_kernel_maps_torch(voxels.coords, voxels.grid_shape, pre.num_levels)
            if self._formulation == "table":
                maps = build_neighbour_tables_torch(maps)
        self.sync()
        return DeviceInputs(voxels.features, voxels.point_to_voxel, tuple(maps.to_tensors()),
                            int(points_on_device.shape[0]), voxels.num_voxels)

    def _text_on_device(self, embeddings: np.ndarray) -> "Tensor":
        if self._text_host is None or not np.array_equal(self._text_host, embeddings):
            self._text_host = np.array(embeddings, dtype=np.float32)  # our own copy: a caller may reuse its array
            self._text = self._torch.as_tensor(self._text_host, device=self._device)
        return self._text

    def label(self, scan: DeviceInputs, embeddings: np.ndarray, return_features: bool = False) -> dict[str, np.ndarray]:
        torch = self._torch
        text = self._text_on_device(embeddings)
        with torch.inference_mode():
            labels, scores, voxel_features = self._graph(scan.features, scan.point_to_voxel, text, *scan.maps)
            packed = torch.stack((labels, scores.view(torch.int32)))
        host = packed.numpy(force=True)  # the copy out (a view on a CPU)
        out = {"labels": host[0], "scores": host[1].view(np.float32)}
        if return_features:  # the head is applied on the host (relidar.core.segmenter): on request only
            out["voxel_features"] = voxel_features.numpy(force=True)
            out["point_to_voxel"] = scan.point_to_voxel.numpy(force=True)
        return out


class TorchBackend:
    """The ``torch`` backend, registered under the ``relidar.backends`` entry point (pyproject.toml)."""

    name = "torch"
    concurrent = False  # one module and one CUDA stream; calls are serialised by the Segmenter

    @classmethod
    def from_bundle(cls, bundle: "Bundle", device: str = "cpu", formulation: str | None = None) -> "TorchBackend":
        weights = bundle.manifest.student.weights
        if not weights:
            raise BackendError("backend 'torch' needs student weights, which this bundle does not ship",
                               path=bundle.root, hint="re-export it with `relidar export bundle`")
        return cls(bundle.path(weights), bundle.manifest.logit_scale, device, formulation)

    def __init__(self, weights: str | Path, logit_scale: float, device: str = "cpu",
                 formulation: str | None = None) -> None:
        """``formulation``: pair lists or neighbour tables; ``auto`` or None: the device's own
        (relidar.core.graph.resolve_formulation; this backend builds either graph)."""
        try:
            import torch
        except ImportError as exc:
            raise BackendError("backend 'torch' needs PyTorch; use backend 'onnxruntime'") from exc
        from relidar.core.graph import input_names, resolve_formulation
        from relidar.core.preprocess import Preprocessor
        from relidar.model.deployed import StudentGraph
        from relidar.model.weights import load_student

        self._torch = torch
        self._device = torch.device(device)
        self.formulation = resolve_formulation(formulation, self._device.type)
        student = load_student(weights).eval()
        self._graph = StudentGraph(student, logit_scale, self.formulation).to(self._device).eval()
        self._names = input_names(self._graph.num_levels, self.formulation)
        self.pipeline = DevicePipeline(self._graph, Preprocessor.of(student.config), self._device, self.formulation)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from relidar.core.graph import OUTPUTS

        torch = self._torch
        with torch.inference_mode():
            out = self._graph(*(torch.from_numpy(np.ascontiguousarray(feed[n])).to(self._device) for n in self._names))
        return {name: t.cpu().numpy() for name, t in zip(OUTPUTS, out)}
