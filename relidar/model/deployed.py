"""The deployed student graph: BN-folded backbone + cosine classifier + devoxelization to points.

What ``relidar export`` traces to ONNX and what the torch backend runs, so both compute the same function.
Inputs and outputs follow the contract in ``relidar.core.graph``:
  ``features`` [V, Cin] float32, ``point_to_voxel`` [N] int64 (-1 = outside the crop),
  ``text_embeddings`` [C, D] float32 (unit rows), then the kernel maps in the graph's formulation
  (pair lists, ``KernelMaps.tensor_names`` order, or neighbour tables, ``NeighbourTables.tensor_names``
  order: the same network either way, see relidar.model.sparse.functional);
  out: ``labels`` [N] int32 (-1 outside the crop), ``scores`` [N] float32 (softmax probability
  of the label, 0 outside the crop), ``voxel_features`` [V, Cb] float32 (the backbone's features).

Why the graph ends at the backbone and classifies without materialising the D-dim embeddings:
the head is linear, y = xW + b = [x, 1] W' with W' = [W; b], so cos(y, t) = [x, 1] W' tᵀ / |y| with
|y|² = [x, 1] (W' W'ᵀ) [x, 1]ᵀ -- a [Cb+1, Cb+1] quadratic form instead of a [V, Cb] x [Cb, D]
matmul (Cb = 40 vs D = 512 for the fast profile: ~12x fewer multiply-adds at the end of the
network, and no [N, D] tensor written per scan). ONNX Runtime runs every node whatever outputs are
requested, so a D-dim output would be paid on every call; the runtime applies the head to
``voxel_features`` (numpy, ``head.npz`` in the bundle) only when features are asked for.

Scores are softmax(logit_scale * cosine) over the classes; ``logit_scale`` is a graph constant
recorded in the bundle manifest (CLIP's learned value is 100, the default here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from relidar.core.graph import Formulation, maps_type
from relidar.model.network import Student, fold_batchnorm

DEFAULT_LOGIT_SCALE = 100.0


class ClassifierHead(nn.Module):
    """Cosine classifier through the linear head without forming the D-dim embeddings (see module doc)."""

    def __init__(self, head: nn.Linear, logit_scale: float) -> None:
        super().__init__()
        w = head.weight.detach().t()                                     # [Cb, D]
        b = head.bias.detach() if head.bias is not None else w.new_zeros(w.shape[1])
        augmented = torch.cat([w, b.unsqueeze(0)]).contiguous()          # [Cb + 1, D]: y = [x, 1] W'
        self.register_buffer("weight", augmented)
        self.register_buffer("gram", augmented @ augmented.t())         # [Cb + 1, Cb + 1]
        self.logit_scale = float(logit_scale)

    def forward(self, x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Per-voxel (label int64 [V], score [V]) for backbone features x [V, Cb] and unit text rows [C, D]."""
        # Homogeneous coordinates [x, 1] / s with s = max(1, max |x_i|): cos(y, t) = cos(y / s, t), and
        # every entry is at most 1, so |y / s|² stays finite in an fp16 engine (|y|² of raw backbone
        # features passes fp16's 65,504 easily, and inf there makes every score 1/C). s >= 1 keeps the
        # bias term 1/s from growing where x is small. One [Cb+1, Cb+1] product serves |y|² and the bias.
        scale = torch.clamp(x.abs().amax(dim=1, keepdim=True), min=1.0)   # [V, 1]
        xa = torch.cat([x, torch.ones_like(scale)], dim=1) / scale        # [V, Cb + 1]
        dots = xa @ (self.weight @ text.t())                              # [V, C] = (y / s)·t
        sq = ((xa @ self.gram) * xa).sum(dim=1)                           # [V] = |y / s|²
        inv_norm = torch.rsqrt(torch.clamp(sq, min=1e-12))
        logits = dots * (inv_norm * self.logit_scale).unsqueeze(1)
        prob = torch.softmax(logits, dim=1)
        score, label = prob.max(dim=1)
        return label, score


class StudentGraph(nn.Module):
    """What is exported: BN-folded backbone + cosine classifier + devoxelization to points."""

    def __init__(self, student: Student, logit_scale: float = DEFAULT_LOGIT_SCALE,
                 formulation: Formulation = "pairs") -> None:
        super().__init__()
        folded = fold_batchnorm(student)
        self.backbone = folded.backbone
        self.classifier = ClassifierHead(folded.head, logit_scale)
        self.num_levels = student.config.num_levels
        self.formulation = formulation
        self._maps_type = maps_type(formulation)

    def forward(self, features: Tensor, point_to_voxel: Tensor, text_embeddings: Tensor,
                *maps_flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        maps = self._maps_type.from_tensors(list(maps_flat), self.num_levels)
        x = self.backbone(features, maps)
        label, score = self.classifier(x, text_embeddings)
        # One padding row for points outside the crop (index -1): label -1, score 0. Every tensor made here
        # is made on the inputs' device (``new_*``): a constant left on the CPU breaks the graph on CUDA.
        v = x.shape[0]
        index = torch.where(point_to_voxel < 0, torch.full_like(point_to_voxel, v), point_to_voxel)
        label_pad = torch.cat([label.to(torch.int32), label.new_full((1,), -1, dtype=torch.int32)])
        score_pad = torch.cat([score, score.new_zeros(1)])
        return label_pad.index_select(0, index), score_pad.index_select(0, index), x


def head_arrays(student: Student) -> dict[str, np.ndarray]:
    """The projection head as numpy ([Cb, D] weight, [D] bias): what the runtime applies on request."""
    head = student.head
    return {"weight": head.weight.detach().t().contiguous().numpy().astype(np.float32),
            "bias": (head.bias.detach() if head.bias is not None else torch.zeros(head.out_features)).numpy()
            .astype(np.float32)}
