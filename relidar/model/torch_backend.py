"""PyTorch backend: the student rebuilt from the bundle's weights, run through the same graph module
that is exported (BN folded, fused classifier). Needs torch; CPU or CUDA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from relidar.core.backends.base import BackendError

if TYPE_CHECKING:
    from relidar.core.bundle import Bundle


def load_student(weights: str | Path):
    """A Student from safetensors: a ``relidar.model.weights`` file (config under its own metadata key), or a
    distillation checkpoint (metadata 'config' = the run config, whose 'student' section is used)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from relidar.model.network import Student, StudentConfig
    from relidar.model.weights import CONFIG_KEY, WeightsError
    from relidar.model.weights import load_student as load_weights_file

    path = Path(weights)
    if not path.is_file():
        raise BackendError(f"{path}: student weights not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own untyped SafetensorError
        raise BackendError(f"{path}: not a safetensors file ({exc})") from exc
    if CONFIG_KEY in meta:
        try:
            return load_weights_file(path).eval()
        except WeightsError as exc:
            raise BackendError(str(exc)) from exc
        except RuntimeError as exc:  # torch's load_state_dict size mismatch
            raise BackendError(f"{path}: the weights do not fit this relidar's student architecture (was the "
                               f"profile changed since export?): {str(exc).splitlines()[0]}") from exc
    if "config" not in meta:
        raise BackendError(f"{path}: no student config in the safetensors metadata; not a relidar student checkpoint")
    raw = json.loads(meta["config"])
    config = StudentConfig.model_validate(raw["student"] if isinstance(raw, dict) and "student" in raw else raw)
    student = Student(config)
    missing, unexpected = student.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise BackendError(f"{path}: weights do not fit a {config.profile!r} student (missing {list(missing)[:3]}, "
                           f"unexpected {list(unexpected)[:3]})")
    return student.eval()


class TorchBackend:
    """The ``torch`` backend, registered under the ``relidar.backends`` entry point (pyproject.toml)."""

    name = "torch"

    @classmethod
    def from_bundle(cls, bundle: "Bundle", device: str = "cpu", formulation: str | None = None) -> "TorchBackend":
        weights = bundle.manifest.student.weights
        if not weights:
            raise BackendError(f"{bundle.root}: backend 'torch' needs student weights, which this bundle does not "
                               "ship (re-export it with `relidar export bundle`)")
        return cls(bundle.path(weights), bundle.manifest.logit_scale, device, formulation)

    def __init__(self, weights: str | Path, logit_scale: float, device: str = "cpu",
                 formulation: str | None = None) -> None:
        """``formulation``: pair lists or neighbour tables; by default tables on CUDA, pairs on the CPU
        (the same rule as relidar.core.backends.default_formulation; this backend builds either graph)."""
        try:
            import torch
        except ImportError as exc:
            raise BackendError("backend 'torch' needs PyTorch; use backend 'onnxruntime'") from exc
        from relidar.core.graph import input_names
        from relidar.model.deployed import StudentGraph

        self._torch = torch
        self._device = torch.device(device)
        if formulation not in (None, "pairs", "table"):
            raise BackendError(f"formulation {formulation!r}: use 'pairs' or 'table'")
        self.formulation = formulation or ("table" if self._device.type == "cuda" else "pairs")
        self._graph = StudentGraph(load_student(weights), logit_scale, self.formulation).to(self._device).eval()
        self._names = input_names(self._graph.num_levels, self.formulation)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from relidar.core.graph import OUTPUTS

        torch = self._torch
        with torch.inference_mode():
            out = self._graph(*(torch.from_numpy(np.ascontiguousarray(feed[n])).to(self._device) for n in self._names))
        return {name: t.cpu().numpy() for name, t in zip(OUTPUTS, out)}
