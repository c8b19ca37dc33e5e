"""Several scans as one sparse batch: the per-scan sample a training step draws, the batch they are collated
into, and that batch packed for the trip from a DataLoader worker to the GPU.

A worker returns a :class:`PackedBatch`, whose tensors sit in one flat buffer per dtype so that the
pin-memory thread pins a handful of buffers and the step copies them to the GPU in as many transfers,
instead of ~100 kernel-map tensors one by one from pageable memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from relidar.core.kernel_maps import KernelMaps
from relidar.core.preprocess import Preprocessor
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import StudentConfig
from relidar.training.data.errors import DataError
from relidar.training.teachers.base import PatchGrid
from relidar.training.teachers.online import TeacherInputs, plan_teacher_inputs


@dataclass(frozen=True)
class ScanSample:
    """One scan as a training step sees it: augmented points and the drawn pairs. ``pair_features`` is
    None when the teacher runs in the step (online): ``images`` then holds the cameras' images."""

    frame_index: int
    points: np.ndarray  # [n, 4] float32, augmented
    labels: np.ndarray | None  # [n] int64
    pair_point: np.ndarray  # [m] int64 into points
    pair_features: np.ndarray | None  # [m, D] float32
    pair_superpixel: np.ndarray  # [m] int64
    pair_camera: np.ndarray | None = None  # [m] int64 (online)
    pair_uv: np.ndarray | None = None  # [m, 2] float32 pixels (online)
    images: tuple[np.ndarray | None, ...] | None = None  # per camera (online)


@dataclass(frozen=True)
class Batch:
    """Several scans as one sparse batch; the voxel coords carry the scan index in column 0.

    ``pair_features`` is None until the step's teacher fills it from ``teacher_inputs`` (online mode)."""

    inputs: TorchInputs  # voxel features, kernel maps, point -> voxel over the scans' concatenated points
    point_scan: Tensor  # [P] int64
    labels: Tensor | None  # [P] int64
    pair_voxel: Tensor  # [M] int64 voxel of each pair's point
    pair_point: Tensor  # [M] int64 into the concatenated points
    pair_features: Tensor | None  # [M, D] float32
    pair_scan: Tensor  # [M] int64
    pair_superpixel: Tensor  # [M] int64
    num_scans: int
    teacher_inputs: TeacherInputs | None = None

    def tensors(self) -> list[Tensor | None]:
        """Every tensor in a fixed order (None for absent ones); :meth:`with_tensors` inverts it."""
        online = self.teacher_inputs.tensors() if self.teacher_inputs is not None else []
        return [self.inputs.features, self.inputs.point_to_voxel, *self.inputs.maps.to_tensors(), self.point_scan,
                self.labels, self.pair_voxel, self.pair_point, self.pair_features, self.pair_scan, self.pair_superpixel,
                *online]

    def with_tensors(self, tensors: Sequence[Tensor | None]) -> "Batch":
        n_maps = len(self.inputs.maps.to_tensors())
        t = list(tensors)
        maps = KernelMaps.from_tensors(t[2:2 + n_maps], self.inputs.maps.num_levels)
        rest = t[2 + n_maps:]
        return Batch(inputs=TorchInputs(t[0], maps, t[1]), point_scan=rest[0], labels=rest[1], pair_voxel=rest[2],
                     pair_point=rest[3], pair_features=rest[4], pair_scan=rest[5], pair_superpixel=rest[6],
                     num_scans=self.num_scans,
                     teacher_inputs=TeacherInputs.from_tensors(rest[7:]) if self.teacher_inputs is not None else None)

    def to(self, device: torch.device | str) -> "Batch":
        return self.with_tensors([None if t is None else t.to(device, non_blocking=True) for t in self.tensors()])


@dataclass(frozen=True)
class PackedBatch:
    """A :class:`Batch` with its tensors in one flat buffer per dtype (see the module docstring).

    ``layout[i]`` is (dtype, offset, shape) of the batch's i-th tensor (:meth:`Batch.tensors`), or None;
    ``skeleton`` is the batch with every tensor emptied, for its structure."""

    buffers: dict[str, Tensor]
    layout: tuple[tuple[str, int, tuple[int, ...]] | None, ...]
    skeleton: Batch

    @staticmethod
    def pack(batch: Batch) -> "PackedBatch":
        tensors = batch.tensors()
        parts: dict[str, list[Tensor]] = {}
        sizes: dict[str, int] = {}
        layout: list[tuple[str, int, tuple[int, ...]] | None] = []
        for t in tensors:
            if t is None:
                layout.append(None)
                continue
            key = str(t.dtype).removeprefix("torch.")
            layout.append((key, sizes.get(key, 0), tuple(t.shape)))
            parts.setdefault(key, []).append(t.reshape(-1))
            sizes[key] = sizes.get(key, 0) + t.numel()
        buffers = {key: torch.cat(chunks) for key, chunks in parts.items()}
        empty = [None if t is None else t.new_empty((0,) * t.ndim) for t in tensors]
        return PackedBatch(buffers, tuple(layout), batch.with_tensors(empty))

    def pin_memory(self) -> "PackedBatch":
        """Called by the DataLoader's pin-memory thread."""
        return replace(self, buffers={k: v.pin_memory() for k, v in self.buffers.items()})

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``: one copy per buffer (asynchronous from pinned memory), then views."""
        buffers = {k: v.to(device, non_blocking=True) for k, v in self.buffers.items()}
        views: list[Tensor | None] = []
        for entry in self.layout:
            if entry is None:
                views.append(None)
                continue
            key, offset, shape = entry
            n = int(np.prod(shape, dtype=np.int64))
            views.append(buffers[key][offset:offset + n].view(shape))
        return self.skeleton.with_tensors(views)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())


def collate(samples: Sequence[ScanSample], student: StudentConfig, patch_grid: PatchGrid | None = None,
            timings: dict[str, float] | None = None) -> Batch:
    """Voxelize the scans together, build kernel maps, keep the pairs whose point lies in the crop.
    Samples without features (online) need ``patch_grid``, the teacher's, to plan its pass.
    ``timings`` (if given) accumulates seconds in "voxelize", "kernel_maps" and "tensors"."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    pre = Preprocessor.of(student)
    voxels = pre.voxelize_scans([s.points for s in samples])
    t1 = time.perf_counter()
    inputs = pre.with_maps(voxels)
    t2 = time.perf_counter()
    offsets = np.cumsum([0] + [len(s.points) for s in samples])
    pair_point = np.concatenate([s.pair_point + offsets[b] for b, s in enumerate(samples)])
    pair_scan = np.concatenate([np.full(len(s.pair_point), b, dtype=np.int64) for b, s in enumerate(samples)])
    pair_voxel = inputs.point_to_voxel[pair_point]
    keep = pair_voxel >= 0
    labels = None
    if all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.concatenate([s.labels for s in samples]).astype(np.int64))
    features, teacher_inputs = None, None
    if samples[0].pair_features is None:
        if patch_grid is None:
            raise DataError("samples without teacher features (online) need the teacher's patch grid to be collated")
        cams = np.concatenate([s.pair_camera for s in samples])[keep]
        uv = np.concatenate([s.pair_uv for s in samples])[keep]
        teacher_inputs = plan_teacher_inputs([s.images for s in samples], pair_scan[keep], cams, uv, patch_grid)
    else:
        dim = samples[0].pair_features.shape[1]
        rows = np.concatenate([s.pair_features for s in samples]) if pair_point.size else np.zeros((0, dim), np.float32)
        features = torch.from_numpy(rows[keep].astype(np.float32))
    batch = Batch(
        inputs=to_torch(inputs),
        point_scan=torch.from_numpy(np.repeat(np.arange(len(samples)), np.diff(offsets))),
        labels=labels,
        pair_voxel=torch.from_numpy(pair_voxel[keep]),
        pair_point=torch.from_numpy(pair_point[keep]),
        pair_features=features,
        pair_scan=torch.from_numpy(pair_scan[keep]),
        pair_superpixel=torch.from_numpy(np.concatenate([s.pair_superpixel for s in samples])[keep].astype(np.int64)),
        num_scans=len(samples),
        teacher_inputs=teacher_inputs,
    )
    for key, dt in (("voxelize", t1 - t0), ("kernel_maps", t2 - t1), ("tensors", time.perf_counter() - t2)):
        timings[key] = timings.get(key, 0.0) + dt
    return batch
