"""Which caches a run reads: built first from the synthetic world when the config says so, then split into
training and held-out scans.

Held-out scans come from their own cache (``DataConfig.val``: an official validation split, or another
synthetic street), else from the tail of the training cache, see :func:`split_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relidar.training.config import DataConfig, ScanSource, SyntheticSource
from relidar.training.data.errors import DataError
from relidar.training.feature_cache import PROJECTION_NAME, CacheReader, write_projection
from relidar.training.teachers.online import OnlineFrames


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
