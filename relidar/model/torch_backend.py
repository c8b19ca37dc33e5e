"""PyTorch backend: the student rebuilt from the bundle's weights, run through the same graph module
that is exported (BN folded, fused classifier). Needs torch; CPU or CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from relidar.core.backends.base import BackendError

if TYPE_CHECKING:
    from relidar.core.bundle import Bundle


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
        from relidar.model.deployed import StudentGraph
        from relidar.model.weights import load_student

        self._torch = torch
        self._device = torch.device(device)
        self.formulation = resolve_formulation(formulation, self._device.type)
        self._graph = StudentGraph(load_student(weights).eval(), logit_scale, self.formulation).to(self._device).eval()
        self._names = input_names(self._graph.num_levels, self.formulation)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from relidar.core.graph import OUTPUTS

        torch = self._torch
        with torch.inference_mode():
            out = self._graph(*(torch.from_numpy(np.ascontiguousarray(feed[n])).to(self._device) for n in self._names))
        return {name: t.cpu().numpy() for name, t in zip(OUTPUTS, out)}
