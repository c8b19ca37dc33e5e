"""Training samples over a teacher feature cache, the batches of each step, and the DataLoader that prepares
them ahead of the step.

Randomness is stateless: the frame order of epoch e comes from ``(seed, e)``, the augmentation
and pair draws of frame i in epoch e from ``(seed, e, i)``, and (batch-scope sampling) the share of
a batch's pairs each scan gives from ``(seed, e, step in epoch, rank)``. A resumed run therefore
reproduces every later batch from the step counter alone, and data-parallel ranks agree on the
global batch without talking to each other.

Because a step's batch is a function of the step number alone, batch preparation (cache read,
augmentation, voxelization, kernel maps, tensor conversion) runs in DataLoader workers
(:func:`step_loader`), ahead of the training step, each returning a packed batch
(:class:`~relidar.training.data.batches.PackedBatch`). Workers or not, the batches are the same.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from relidar.core.seeds import Purpose, stream
from relidar.model.network import StudentConfig
from relidar.training.augment import AugmentConfig, augment_points
from relidar.training.config import LoaderConfig
from relidar.training.data.batches import Batch, PackedBatch, ScanSample, collate
from relidar.training.data.errors import DataError
from relidar.training.feature_cache import CachedFrame, CacheReader, CameraImages
from relidar.training.sampling import SamplingConfig, batch_counts, kmeans, sample_pairs
from relidar.training.teachers.base import PatchGrid
from relidar.training.teachers.online import OnlineFrames


class DistillDataset:
    """Scans of a feature cache (or, online, of a dataset whose teacher runs in the step) turned into
    training samples (augmented, pairs drawn)."""

    def __init__(self, cache: CacheReader | OnlineFrames, frames: Sequence[int], sampling: SamplingConfig,
                 augment: AugmentConfig, seed: int) -> None:
        if not frames:
            raise DataError("no frames to train on", path=cache.root)
        if isinstance(cache, OnlineFrames) and sampling.mode == "balanced":
            raise DataError("'balanced' clusters the teacher's features before the step; with data.online the teacher "
                            "runs in the step", field="sampling.mode", hint="set sampling.mode=uniform")
        self.cache = cache
        self.frames = tuple(frames)
        self.sampling = sampling
        self.augment = augment
        self.seed = seed
        self._clusters: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions (into ``frames``) in the order epoch ``epoch`` visits them."""
        rng = stream(self.seed, Purpose.ORDER, epoch)
        return rng.permutation(len(self.frames))

    def clusters(self, frame: int, cached: CachedFrame) -> np.ndarray:
        """Teacher-feature cluster of each pair of ``frame`` (computed once; depends on the seed only)."""
        if frame not in self._clusters:
            rng = stream(self.seed, Purpose.CLUSTER, frame)
            self._clusters[frame] = kmeans(cached.pair_features.astype(np.float32), self.sampling.clusters,
                                           self.sampling.kmeans_iterations, rng)
        return self._clusters[frame]

    def sample(self, position: int, epoch: int, num_pairs: int | None = None,
               cached: CachedFrame | None = None) -> ScanSample:
        """Scan ``position`` as epoch ``epoch`` sees it, with ``num_pairs`` pairs drawn (default
        ``sampling.pairs_per_scan``); ``cached`` is the frame when the caller has read it already."""
        frame = self.frames[position]
        cached = cached if cached is not None else self.cache[frame]
        rng = stream(self.seed, Purpose.SAMPLE, epoch, frame)
        clusters = self.clusters(frame, cached) if self.sampling.mode == "balanced" else None
        chosen = sample_pairs(cached.num_pairs, self.sampling, rng, clusters, num_pairs)
        points = augment_points(cached.points, self.augment, rng)
        online = isinstance(cached.features, CameraImages)
        return ScanSample(
            frame_index=frame,
            points=points,
            labels=None if cached.labels is None else cached.labels.astype(np.int64),
            pair_point=cached.pair_point[chosen].astype(np.int64),
            # Decoded for the drawn pairs only (a grid-layout cache samples its grid here).
            pair_features=None if online else cached.teacher_features(chosen),
            pair_superpixel=cached.superpixels[cached.pair_point[chosen]].astype(np.int64),
            pair_camera=cached.pair_camera[chosen].astype(np.int64),
            pair_uv=cached.pair_uv[chosen],
            images=cached.features.images if online else None,
        )

    def batch(self, positions: Sequence[int], epoch: int, step_in_epoch: int, rank: int = 0,
              world_size: int = 1) -> list[ScanSample]:
        """The samples of one step: this rank's ``positions`` of the global batch, with pairs drawn as
        ``sampling.scope`` says (batch scope: ``pairs_per_batch / world_size`` over the union of their pairs)."""
        if self.sampling.scope == "scan":
            return [self.sample(int(p), epoch) for p in positions]
        frames = [self.cache[self.frames[int(p)]] for p in positions]
        rng = stream(self.seed, Purpose.BATCH, epoch, step_in_epoch, rank)
        n = max(2, self.sampling.pairs_per_batch // world_size)
        counts = batch_counts([f.num_pairs for f in frames], n, rng)
        return [self.sample(int(p), epoch, int(c), f) for p, c, f in zip(positions, counts, frames)]


def steps_per_epoch(num_frames: int, batch_size: int) -> int:
    """Full global batches per epoch (a partial last batch is dropped, so every step has the same size)."""
    return num_frames // batch_size


def global_batch_positions(dataset: DistillDataset, epoch: int, step_in_epoch: int, batch_size: int) -> np.ndarray:
    order = dataset.epoch_order(epoch)
    return order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]


def rank_share(positions: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's scans of a global batch: every world_size-th, starting at ``rank``."""
    return positions[rank::world_size]


class StepBatches(torch.utils.data.Dataset):
    """Step number -> this rank's :class:`PackedBatch` of that step (a map-style dataset over steps, so that
    a DataLoader's workers can prepare any step, in any order, and get the same batch)."""

    def __init__(self, dataset: DistillDataset, student: StudentConfig, batch_size: int, rank: int = 0,
                 world_size: int = 1, patch_grid: PatchGrid | None = None, total: int | None = None) -> None:
        self.dataset = dataset
        self.student = student
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.patch_grid = patch_grid
        self.steps_per_epoch = steps_per_epoch(len(dataset), batch_size)
        if self.steps_per_epoch == 0:
            raise DataError(f"{batch_size} exceeds the {len(dataset)} training frames", field="train.batch_size",
                            hint="lower train.batch_size or add frames")
        self.total = total if total is not None else self.steps_per_epoch

    def __len__(self) -> int:
        return self.total

    def samples(self, step: int) -> list[ScanSample]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        positions = rank_share(global_batch_positions(self.dataset, epoch, in_epoch, self.batch_size), self.rank,
                               self.world_size)
        return self.dataset.batch(positions, epoch, in_epoch, self.rank, self.world_size)

    def batch(self, step: int) -> Batch:
        return collate(self.samples(step), self.student, self.patch_grid)

    def __getitem__(self, step: int) -> PackedBatch:
        return PackedBatch.pack(self.batch(step))


def _identity(item: Any) -> Any:
    return item  # module level: a DataLoader with spawned workers pickles its collate_fn


def loader_workers(config: LoaderConfig, device: torch.device, local_world_size: int = 1) -> int:
    """``data.loader.workers``; auto = none on the CPU (workers would take the cores training runs on),
    else the machine's cores shared by the ranks on it, one left to each rank's training thread, at most 8."""
    if config.workers != "auto":
        return int(config.workers)
    if device.type != "cuda":
        return 0
    import os

    cores = len(os.sched_getaffinity(0))
    return max(0, min(8, cores // max(1, local_world_size) - 1))


def step_loader(steps: StepBatches, start: int, stop: int, config: LoaderConfig, device: torch.device,
                local_world_size: int = 1) -> Iterator[Batch | PackedBatch]:
    """The batches of steps ``start .. stop-1`` in order, prepared ``data.loader.workers`` ahead in
    DataLoader workers (pinned when training on CUDA); each has ``.to(device)`` giving a :class:`Batch`."""
    workers = loader_workers(config, device, local_world_size)
    pin = device.type == "cuda" if config.pin_memory == "auto" else config.pin_memory == "on"
    if workers == 0 and not (pin and torch.cuda.is_available()):
        # Packing pays for transfers (worker -> loop through shared memory, pinned host -> GPU); in-process
        # batches for the CPU have none, and packing cost 96 of 840 ms a step there (README, bench train).
        return (steps.batch(step) for step in range(start, stop))
    loader = torch.utils.data.DataLoader(
        steps, batch_size=None, sampler=range(start, stop), num_workers=workers, collate_fn=_identity,
        pin_memory=pin and torch.cuda.is_available(), prefetch_factor=config.prefetch if workers else None,
        persistent_workers=False)
    return iter(loader)
