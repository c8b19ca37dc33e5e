"""Training data over a teacher feature cache: per-scan samples and sparse batches of several scans.

Randomness is stateless: the frame order of epoch e comes from ``(seed, e)``, the augmentation
and pair draws of frame i in epoch e from ``(seed, e, i)``, and (batch-scope sampling) the share of
a batch's pairs each scan gives from ``(seed, e, step in epoch, rank)``. A resumed run therefore
reproduces every later batch from the step counter alone, and data-parallel ranks agree on the
global batch without talking to each other.

Because a step's batch is a function of the step number alone, batch preparation (cache read,
augmentation, voxelization, kernel maps, tensor conversion) runs in DataLoader workers
(:func:`step_loader`), ahead of the training step: a worker returns a :class:`PackedBatch`, whose
tensors sit in one flat buffer per dtype so that the pin-memory thread pins a handful of buffers and
the step copies them to the GPU in as many transfers, instead of ~100 kernel-map tensors one by one
from pageable memory. Workers or not, the batches are the same.

Held-out scans come from their own cache (``DataConfig.val``: an official validation split, or
another synthetic street), see :func:`split_data`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from relidar.core.errors import RelidarError
from relidar.core.kernel_maps import KernelMaps
from relidar.core.preprocess import Preprocessor
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import StudentConfig
from relidar.training.augment import AugmentConfig, augment_points
from relidar.training.config import DataConfig, LoaderConfig, ScanSource, SyntheticSource
from relidar.training.feature_cache import (
    PROJECTION_NAME,
    CachedFrame,
    CacheReader,
    CameraImages,
    write_projection,
)
from relidar.training.sampling import SamplingConfig, batch_counts, kmeans, sample_pairs
from relidar.training.teachers.base import PatchGrid
from relidar.training.teachers.online import OnlineFrames, TeacherInputs, plan_teacher_inputs

_ORDER_TAG = 0x0D15
_SAMPLE_TAG = 0x5A4E
_CLUSTER_TAG = 0xC1A5
_BATCH_TAG = 0xBA7C


class DataError(RelidarError, ValueError):
    """Data that cannot feed a run (too few frames, mismatched dims); names the setting to change."""


@dataclass(frozen=True)
class Split:
    """The training scans (frame indices of ``train_cache``) and the held-out ones (of ``val_cache``)."""

    train_cache: CacheReader | OnlineFrames
    train: tuple[int, ...]
    val_cache: CacheReader | OnlineFrames
    val: tuple[int, ...]


def _frames(cache: CacheReader | OnlineFrames, source: ScanSource) -> int:
    return min(len(cache), source.max_frames) if source.max_frames else len(cache)


def split_data(config: DataConfig, on_frame=None, online: OnlineFrames | None = None) -> Split:
    """Training and held-out scans of ``config`` (caches built first where the config says so).

    With ``val`` the held-out scans are that cache's; otherwise the last ``val_fraction`` of
    ``cache`` (a contiguous tail, so at least the scans inside it are not interleaved with
    training ones); with neither, none are held out. ``online`` (the ``data.online`` dataset, whose
    teacher runs in the step) stands in for ``cache``, which training then does not open.
    """
    cache = online if online is not None else ensure_cache(config, on_frame)
    n = _frames(cache, config)
    if config.val is not None:
        if isinstance(cache, CacheReader):
            share_projection(cache, config.val)
        val_cache = ensure_cache(config.val, on_frame)
        if val_cache.class_names != cache.class_names:
            raise DataError(f"data.val: {config.val.cache} has classes {list(val_cache.class_names)} but {config.cache} "
                            f"has {list(cache.class_names)}; prepare both from the same dataset")
        if val_cache.feature_dim != cache.feature_dim:
            raise DataError(f"data.val: {config.val.cache} holds {val_cache.feature_dim}-d teacher features, {config.cache} "
                            f"{cache.feature_dim}-d; prepare both with the same teacher")
        if isinstance(cache, CacheReader) and val_cache.feature_space != cache.feature_space:
            raise DataError(f"{config.val.cache} holds {val_cache.feature_space}, {config.cache} {cache.feature_space}",
                            field="data.val", hint=f"copy {Path(config.cache) / PROJECTION_NAME} into {config.val.cache} "
                                                   "before preparing it, so that both share the basis")
        return Split(cache, tuple(range(n)), val_cache, tuple(range(_frames(val_cache, config.val))))
    n_val = int(round(n * config.val_fraction))
    if config.val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n - n_val < 1:
        raise DataError(f"data: {n} frames leave none to train on with val_fraction={config.val_fraction}")
    return Split(cache, tuple(range(n - n_val)), cache, tuple(range(n - n_val, n)))


def share_projection(train: CacheReader, val: ScanSource) -> None:
    """A synthetic held-out cache still to be built takes the training cache's PCA basis (its own fit would
    put its rows in another space, where the student's features and the projected text do not apply)."""
    storage = val.synthetic.storage if val.synthetic is not None else None
    target = Path(val.cache) / PROJECTION_NAME
    if train.projection is None or storage is None or storage.projection_dim is None or target.exists():
        return
    if storage.projection_dim != train.projection.dim:
        raise DataError(f"data.val.synthetic.storage.projection_dim is {storage.projection_dim}, the training cache's "
                        f"basis {train.projection.dim}-d", field="data.val.synthetic.storage.projection_dim",
                        hint=f"set it to {train.projection.dim}")
    write_projection(target, train.projection)


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
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, _ORDER_TAG]))
        return rng.permutation(len(self.frames))

    def clusters(self, frame: int, cached: CachedFrame) -> np.ndarray:
        """Teacher-feature cluster of each pair of ``frame`` (computed once; depends on the seed only)."""
        if frame not in self._clusters:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, frame, _CLUSTER_TAG]))
            self._clusters[frame] = kmeans(cached.pair_features.astype(np.float32), self.sampling.clusters,
                                           self.sampling.kmeans_iterations, rng)
        return self._clusters[frame]

    def sample(self, position: int, epoch: int, num_pairs: int | None = None,
               cached: CachedFrame | None = None) -> ScanSample:
        """Scan ``position`` as epoch ``epoch`` sees it, with ``num_pairs`` pairs drawn (default
        ``sampling.pairs_per_scan``); ``cached`` is the frame when the caller has read it already."""
        frame = self.frames[position]
        cached = cached if cached is not None else self.cache[frame]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, frame, _SAMPLE_TAG]))
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
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, step_in_epoch, rank, _BATCH_TAG]))
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


def build_synthetic_cache(cache_dir: str | Path, source: SyntheticSource, on_frame=None) -> Path:
    """Generate the synthetic world's sweeps and prepare their teacher features into ``cache_dir``.

    Re-running into the same folder only computes what is missing (the cache's own resume).
    """
    from relidar.synthetic.teacher import SimulatedTeacher
    from relidar.training.feature_cache import CacheSettings, prepare_cache
    from relidar.training.readers.base import open_dataset

    teacher = SimulatedTeacher(source.teacher)
    # Nothing is written but the cache; the reader hands the renderer's masks to the teacher as it goes.
    reader = open_dataset(cache_dir, "synthetic", frames=source.frames, world=source.world, truth=teacher.truth)
    report = prepare_cache(reader, cache_dir, teacher, settings=CacheSettings(storage=source.storage), on_frame=on_frame)
    if report.failed:
        raise DataError(f"synthetic frames failed to prepare: {report.failed[:3]}", path=cache_dir)
    return Path(cache_dir)


def synthetic_vocabulary(source: SyntheticSource):
    """The synthetic world's classes embedded by its simulated teacher's text tower."""
    from relidar.synthetic.teacher import DEFAULT_TEMPLATES, SimulatedTeacher
    from relidar.training.text_embeddings import build_vocabulary, synthetic_class_specs

    teacher = SimulatedTeacher(source.teacher)
    return build_vocabulary(synthetic_class_specs(), DEFAULT_TEMPLATES, teacher, teacher.text_spec)


def ensure_cache(config: ScanSource, on_frame=None) -> CacheReader:
    """The cache ``config`` names, built first from the synthetic world when it says so and it is absent."""
    from relidar.training.feature_cache import MANIFEST_NAME

    path = Path(config.cache)
    if config.synthetic is not None:
        if (path / MANIFEST_NAME).is_file() and CacheReader(path).storage != config.synthetic.storage:
            raise DataError(f"the cache there keeps features as {CacheReader(path).storage.describe()}, "
                            f"data.synthetic.storage asks for {config.synthetic.storage.describe()}", path=path,
                            field="data.cache", hint="give each storage mode its own cache folder")
        complete = (path / MANIFEST_NAME).is_file() and len(CacheReader(path)) >= config.synthetic.frames
        if not complete:
            build_synthetic_cache(path, config.synthetic, on_frame)
    return CacheReader(path)
