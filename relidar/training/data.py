"""Training data over a teacher feature cache: per-scan samples and sparse batches of several scans.

Randomness is stateless: the frame order of epoch e comes from ``(seed, e)``, the augmentation
and pair draws of frame i in epoch e from ``(seed, e, i)``, and (batch-scope sampling) the share of
a batch's pairs each scan gives from ``(seed, e, step in epoch, rank)``. A resumed run therefore
reproduces every later batch from the step counter alone, and data-parallel ranks agree on the
global batch without talking to each other.

Held-out scans come from their own cache (``DataConfig.val``: an official validation split, or
another synthetic street), see :func:`split_data`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from relidar.core.errors import RelidarError
from relidar.core.preprocess import Preprocessor
from relidar.model.batch import TorchInputs, to_torch
from relidar.model.network import StudentConfig
from relidar.training.augment import AugmentConfig, augment_points
from relidar.training.config import DataConfig, ScanSource, SyntheticSource
from relidar.training.feature_cache import CachedFrame, CacheReader
from relidar.training.sampling import SamplingConfig, batch_counts, kmeans, sample_pairs

_ORDER_TAG = 0x0D15
_SAMPLE_TAG = 0x5A4E
_CLUSTER_TAG = 0xC1A5
_BATCH_TAG = 0xBA7C


class DataError(RelidarError, ValueError):
    """Data that cannot feed a run (too few frames, mismatched dims); names the setting to change."""


@dataclass(frozen=True)
class Split:
    """The training scans (frame indices of ``train_cache``) and the held-out ones (of ``val_cache``)."""

    train_cache: CacheReader
    train: tuple[int, ...]
    val_cache: CacheReader
    val: tuple[int, ...]


def _frames(cache: CacheReader, source: ScanSource) -> int:
    return min(len(cache), source.max_frames) if source.max_frames else len(cache)


def split_data(config: DataConfig, on_frame=None) -> Split:
    """Training and held-out scans of ``config`` (caches built first where the config says so).

    With ``val`` the held-out scans are that cache's; otherwise the last ``val_fraction`` of
    ``cache`` (a contiguous tail, so at least the scans inside it are not interleaved with
    training ones); with neither, none are held out.
    """
    cache = ensure_cache(config, on_frame)
    n = _frames(cache, config)
    if config.val is not None:
        val_cache = ensure_cache(config.val, on_frame)
        if val_cache.class_names != cache.class_names:
            raise DataError(f"data.val: {config.val.cache} has classes {list(val_cache.class_names)} but {config.cache} "
                            f"has {list(cache.class_names)}; prepare both from the same dataset")
        if val_cache.feature_dim != cache.feature_dim:
            raise DataError(f"data.val: {config.val.cache} holds {val_cache.feature_dim}-d teacher features, {config.cache} "
                            f"{cache.feature_dim}-d; prepare both with the same teacher")
        return Split(cache, tuple(range(n)), val_cache, tuple(range(_frames(val_cache, config.val))))
    n_val = int(round(n * config.val_fraction))
    if config.val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n - n_val < 1:
        raise DataError(f"data: {n} frames leave none to train on with val_fraction={config.val_fraction}")
    return Split(cache, tuple(range(n - n_val)), cache, tuple(range(n - n_val, n)))


@dataclass(frozen=True)
class ScanSample:
    """One scan as a training step sees it: augmented points and the drawn pairs."""

    frame_index: int
    points: np.ndarray  # [n, 4] float32, augmented
    labels: np.ndarray | None  # [n] int64
    pair_point: np.ndarray  # [m] int64 into points
    pair_features: np.ndarray  # [m, D] float32
    pair_superpixel: np.ndarray  # [m] int64


@dataclass(frozen=True)
class Batch:
    """Several scans as one sparse batch; the voxel coords carry the scan index in column 0."""

    inputs: TorchInputs  # voxel features, kernel maps, point -> voxel over the scans' concatenated points
    point_scan: Tensor  # [P] int64
    labels: Tensor | None  # [P] int64
    pair_voxel: Tensor  # [M] int64 voxel of each pair's point
    pair_point: Tensor  # [M] int64 into the concatenated points
    pair_features: Tensor  # [M, D] float32
    pair_scan: Tensor  # [M] int64
    pair_superpixel: Tensor  # [M] int64
    num_scans: int

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(
            self,
            inputs=self.inputs.to(device),
            point_scan=move(self.point_scan),
            labels=move(self.labels),
            pair_voxel=move(self.pair_voxel),
            pair_point=move(self.pair_point),
            pair_features=move(self.pair_features),
            pair_scan=move(self.pair_scan),
            pair_superpixel=move(self.pair_superpixel),
        )


def collate(samples: Sequence[ScanSample], student: StudentConfig) -> Batch:
    """Voxelize the scans together, build kernel maps, keep the pairs whose point lies in the crop."""
    inputs = Preprocessor.of(student).batch([s.points for s in samples])
    offsets = np.cumsum([0] + [len(s.points) for s in samples])
    pair_point = np.concatenate([s.pair_point + offsets[b] for b, s in enumerate(samples)])
    pair_scan = np.concatenate([np.full(len(s.pair_point), b, dtype=np.int64) for b, s in enumerate(samples)])
    pair_voxel = inputs.point_to_voxel[pair_point]
    keep = pair_voxel >= 0
    labels = None
    if all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.concatenate([s.labels for s in samples]).astype(np.int64))
    dim = samples[0].pair_features.shape[1]
    features = np.concatenate([s.pair_features for s in samples]) if pair_point.size else np.zeros((0, dim), np.float32)
    return Batch(
        inputs=to_torch(inputs),
        point_scan=torch.from_numpy(np.repeat(np.arange(len(samples)), np.diff(offsets))),
        labels=labels,
        pair_voxel=torch.from_numpy(pair_voxel[keep]),
        pair_point=torch.from_numpy(pair_point[keep]),
        pair_features=torch.from_numpy(features[keep].astype(np.float32)),
        pair_scan=torch.from_numpy(pair_scan[keep]),
        pair_superpixel=torch.from_numpy(np.concatenate([s.pair_superpixel for s in samples])[keep].astype(np.int64)),
        num_scans=len(samples),
    )


class DistillDataset:
    """Scans of a feature cache turned into training samples (augmented, pairs drawn)."""

    def __init__(self, cache: CacheReader, frames: Sequence[int], sampling: SamplingConfig,
                 augment: AugmentConfig, seed: int) -> None:
        if not frames:
            raise DataError("no frames to train on", path=cache.root)
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
        return ScanSample(
            frame_index=frame,
            points=points,
            labels=None if cached.labels is None else cached.labels.astype(np.int64),
            pair_point=cached.pair_point[chosen].astype(np.int64),
            pair_features=cached.pair_features[chosen].astype(np.float32),
            pair_superpixel=cached.superpixels[cached.pair_point[chosen]].astype(np.int64),
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


def build_synthetic_cache(cache_dir: str | Path, source: SyntheticSource, on_frame=None) -> Path:
    """Generate the synthetic world's sweeps and prepare their teacher features into ``cache_dir``.

    Re-running into the same folder only computes what is missing (the cache's own resume).
    """
    from relidar.training.feature_cache import prepare_cache
    from relidar.training.readers.base import Reader
    from relidar.training.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
    from relidar.training.synthetic.world import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig.model_validate(source.world))

    class SyntheticWorldReader(Reader):
        """The world's first ``frames`` steps as a dataset (nothing written but the cache)."""

        name = "synthetic"

        def __init__(self) -> None:
            super().__init__(Path(cache_dir))
            from relidar.training.synthetic.classes import CLASS_NAMES, IGNORE_INDEX

            self._names = CLASS_NAMES
            self.ignore_index = IGNORE_INDEX
            self._frame_ids = [f"synth_{world.config.seed:04d}_{i:06d}" for i in range(source.frames)]

        @property
        def class_names(self) -> tuple[str, ...]:
            return self._names

        def _load(self, index: int):
            sample = world.sample(index)
            teacher.remember(sample)  # the version-2 teacher reads the renderer's masks of these images
            return sample.frame

    teacher = SimulatedTeacher(SimulatedTeacherConfig.model_validate(source.teacher))
    report = prepare_cache(SyntheticWorldReader(), cache_dir, teacher, on_frame=on_frame)
    if report.failed:
        raise DataError(f"synthetic frames failed to prepare: {report.failed[:3]}", path=cache_dir)
    return Path(cache_dir)


def synthetic_vocabulary(source: SyntheticSource):
    """The synthetic world's classes embedded by its simulated teacher's text tower."""
    from relidar.training.synthetic.teacher import DEFAULT_TEMPLATES, SimulatedTeacher, SimulatedTeacherConfig
    from relidar.training.text_embeddings import build_vocabulary, synthetic_class_specs

    teacher = SimulatedTeacher(SimulatedTeacherConfig.model_validate(source.teacher))
    return build_vocabulary(synthetic_class_specs(), DEFAULT_TEMPLATES, teacher, teacher.text_spec)


def ensure_cache(config: ScanSource, on_frame=None) -> CacheReader:
    """The cache ``config`` names, built first from the synthetic world when it says so and it is absent."""
    from relidar.training.feature_cache import MANIFEST_NAME

    path = Path(config.cache)
    if config.synthetic is not None:
        complete = (path / MANIFEST_NAME).is_file() and len(CacheReader(path)) >= config.synthetic.frames
        if not complete:
            build_synthetic_cache(path, config.synthetic, on_frame)
    return CacheReader(path)
