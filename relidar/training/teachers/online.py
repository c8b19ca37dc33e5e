"""The online teacher: the teacher runs inside the training step, on the batch's camera images, and no
feature cache is written at all (as ScaLR trains).

Meant for GPUs, where a ViT-B/16 encodes a batch's images in milliseconds and a cache of the whole
dataset would take hundreds of gigabytes (README, "Teacher feature cache"); on a CPU it works (the
tests run it with a small random ViT) but the teacher then dominates the step. Under DDP every rank
builds its own copy of the (frozen, deterministic) teacher on its own device; nothing is shared.

The work is split where it is cheapest: batch preparation (a DataLoader worker) pairs points with
pixels (:func:`relidar.training.feature_cache.pair_frame`) and plans where each drawn pair reads the
teacher's patch grid (:func:`plan_teacher_inputs`, the same bilinear stencil a cache samples with);
the step runs the teacher on the images, one batch per image size, and gathers the pairs' rows
(:func:`online_pair_features`). A student trained online therefore sees the features an exact
(float32, per-pair) cache of the same teacher would hold, up to float rounding of the batched ViT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from relidar.core.config import StrictModel
from relidar.training.feature_cache import CachedFrame, CacheSettings, pair_frame
from relidar.training.pairs import bilinear_stencil
from relidar.training.teachers.base import BatchTeacher, PatchGrid


class OnlineTeacherConfig(StrictModel):
    """The MaskCLIP teacher each rank builds (an open_clip ViT)."""

    model: str = Field("ViT-B-16", description="open_clip model name")
    pretrained: str = Field("laion2b_s34b_b88k", description="open_clip pretrained tag or checkpoint path; 'none' for "
                                                              "random weights (benchmarks)")
    image_size: int = Field(448, ge=16, description="shorter image side in pixels fed to the ViT")
    batch_size: int = Field(32, ge=1, description="images per ViT forward pass")


class OnlineSource(StrictModel):
    """``data.online``: train on a dataset's frames with the teacher in the training step (no cache)."""

    dataset: str = Field(..., description="dataset path (any format `relidar prepare` reads)")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options, e.g. {sequences: ['00']}")
    teacher: OnlineTeacherConfig = OnlineTeacherConfig()
    min_depth: float = Field(0.1, gt=0.0, description="points nearer than this (m, camera z) are not paired")
    superpixel_segments: int = Field(150, ge=1, description="SLIC segments per camera image (superpixel pooling only)")
    superpixel_compactness: float = Field(10.0, gt=0.0)

    def cache_settings(self) -> CacheSettings:
        """The pairing settings a cache of the same data would be prepared with."""
        return CacheSettings(min_depth=self.min_depth, superpixel_segments=self.superpixel_segments,
                             superpixel_compactness=self.superpixel_compactness)


def build_online_teacher(config: OnlineTeacherConfig, device: torch.device | str) -> BatchTeacher:
    """This rank's own teacher copy on ``device``. Built under a fixed seed: open_clip initialises the
    weights it does not load at random, and every rank (and a resumed run) must hold the same teacher."""
    from relidar.training.teachers.registry import TeacherKind, build_teacher

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_teacher(TeacherKind.maskclip, model=config.model, pretrained=config.pretrained, device=str(device),
                             image_size=config.image_size, batch_size=config.batch_size)


class OnlineFrames:
    """A dataset's frames paired with their cameras, images kept for the teacher: the online counterpart of
    :class:`~relidar.training.feature_cache.CacheReader` (``len``, ``[i] -> CachedFrame``)."""

    def __init__(self, source: OnlineSource, feature_dim: int, superpixels: bool = False, reader: Any = None) -> None:
        """``reader``: an already open reader of ``source.dataset`` (default: opened here)."""
        from relidar.training.readers.base import open_dataset

        self.source = source
        self.reader = reader if reader is not None else open_dataset(source.dataset, **source.options)
        self.root = Path(source.dataset)
        self.feature_dim = feature_dim
        self.superpixels = superpixels
        self._settings = source.cache_settings()

    @property
    def frame_ids(self) -> list[str]:
        return self.reader.frame_ids

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.reader.class_names)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> CachedFrame:
        return pair_frame(self.reader[index], self._settings, superpixels=self.superpixels)


@dataclass(frozen=True)
class TeacherInputs:
    """What the step's teacher needs of a batch: the images to encode, and for each pair the rows of the
    concatenated (row-major) grids of those images its bilinear sample reads, with their weights."""

    images: tuple[Tensor, ...]  # HxWx3 uint8
    pair_cells: Tensor          # [M, 4] int64
    pair_weights: Tensor        # [M, 4] float32

    def tensors(self) -> list[Tensor]:
        return [self.pair_cells, self.pair_weights, *self.images]

    @staticmethod
    def from_tensors(tensors: Sequence[Tensor]) -> "TeacherInputs":
        return TeacherInputs(tuple(tensors[2:]), tensors[0], tensors[1])


def plan_teacher_inputs(images: Sequence[Sequence[np.ndarray | None]], pair_scan: np.ndarray, pair_camera: np.ndarray,
                        pair_uv: np.ndarray, grid: PatchGrid) -> TeacherInputs:
    """Plan a batch's teacher pass: ``images[b][c]`` is scan b's camera c image; pair i of the batch lies in
    scan ``pair_scan[i]``, camera ``pair_camera[i]`` at pixel ``pair_uv[i]``. Only images with pairs are kept."""
    cells = np.zeros((len(pair_scan), 4), dtype=np.int64)
    weights = np.zeros((len(pair_scan), 4), dtype=np.float32)
    kept: list[Tensor] = []
    offset = 0
    for b, scan_images in enumerate(images):
        for c, image in enumerate(scan_images):
            sel = np.flatnonzero((pair_scan == b) & (pair_camera == c))
            if not sel.size:
                continue
            if image is None:
                raise ValueError(f"scan {b} camera {c} has pairs but no image")
            height, width = image.shape[:2]
            shape = grid.shape(height, width)
            stencil = bilinear_stencil(pair_uv[sel], shape, height, width)
            cells[sel] = stencil.cells + offset
            weights[sel] = stencil.weights
            kept.append(torch.from_numpy(np.array(image, copy=True)))  # readers may hand out read-only arrays
            offset += shape[0] * shape[1]
    return TeacherInputs(tuple(kept), torch.from_numpy(cells), torch.from_numpy(weights))


def online_pair_features(teacher: BatchTeacher, inputs: TeacherInputs, device: torch.device | str) -> Tensor:
    """[M, D] float32 unit rows: the teacher run on the batch's images, sampled at its pairs (the arithmetic
    of :func:`relidar.training.pairs.apply_stencil`, corner by corner)."""
    grids = teacher.encode_images(inputs.images)
    dim = int(grids[0].shape[-1]) if grids else 0
    rows = torch.cat([g.reshape(-1, dim) for g in grids]).to(device) if grids else torch.zeros(0, dim, device=device)
    cells = inputs.pair_cells.to(device)
    weights = inputs.pair_weights.to(device)
    if not len(cells):
        return torch.zeros(0, dim, device=device)
    out = rows[cells[:, 0]] * weights[:, 0:1]
    for corner in range(1, 4):
        out = out + rows[cells[:, corner]] * weights[:, corner:corner + 1]
    return F.normalize(out, dim=1, eps=1e-12)
