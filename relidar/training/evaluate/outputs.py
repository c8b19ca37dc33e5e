"""The student's per-point outputs on one scan (backbone features and unit embeddings), for every
evaluation that reads them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from relidar.core.preprocess import Preprocessor
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import Student


@dataclass(frozen=True)
class ScanOutput:
    """Student outputs for one scan's points: ``backbone`` [n, C] and ``embedding`` [n, D] (unit rows);
    rows of points outside the crop (``inside`` False) are zero."""

    backbone: np.ndarray
    embedding: np.ndarray
    inside: np.ndarray


def student_inputs(model: Student, points: np.ndarray, device: torch.device) -> tuple[TorchInputs, np.ndarray]:
    """The student's input for one scan on ``device``, and each point's voxel (numpy)."""
    prepared = Preprocessor.of(model.config)(points)
    return to_torch(prepared, device), prepared.point_to_voxel


@torch.no_grad()
def scan_output(model: Student, points: np.ndarray, device: torch.device | str = "cpu") -> ScanOutput:
    device = torch.device(device)
    inputs, p2v = student_inputs(model, points, device)
    was_training = model.training
    model.eval()
    backbone = model.backbone(inputs.features, inputs.maps)
    emb = F.normalize(model.head(backbone).float(), dim=1)
    model.train(was_training)
    inside = p2v >= 0
    idx = np.where(inside, p2v, 0)
    b = backbone.float().cpu().numpy()[idx]
    e = emb.cpu().numpy()[idx]
    b[~inside] = 0.0
    e[~inside] = 0.0
    return ScanOutput(backbone=b, embedding=e, inside=inside)
