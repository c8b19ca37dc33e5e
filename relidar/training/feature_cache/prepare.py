"""Preparing a cache: each rank computes its share of the frames (see the package docstring)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from relidar.core import artifact
from relidar.core.teacher import Teacher, TeacherError
from relidar.training.feature_cache.basis import PcaBasis, fit_projection, read_projection, write_projection
from relidar.training.feature_cache.format import (
    MANIFEST_NAME,
    PROJECTION_NAME,
    REPORTS_DIR,
    CacheError,
    CacheManifest,
    CacheSettings,
    CacheStorage,
    frame_file_name,
    load_manifest,
)
from relidar.training.feature_cache.frames import read_cached_frame, write_cached_frame
from relidar.training.feature_cache.pairing import compute_cached_frame, encode_grids, pair_frame, teacher_grids


def _write_or_check_manifest(cache_dir: Path, manifest: CacheManifest) -> CacheManifest:
    """Write the manifest, or keep a compatible existing one (same teacher/settings, frame lists one a
    prefix of the other, e.g. a run with ``--limit``); CacheError on a conflicting one."""
    path = cache_dir / MANIFEST_NAME
    if path.exists():
        old = load_manifest(cache_dir)
        for key in ("format_version", "teacher", "feature_dim", "feature_dtype", "dataset_format", "settings"):
            if getattr(old, key) != getattr(manifest, key):
                raise CacheError(f"is {getattr(old, key)!r} but this run has {getattr(manifest, key)!r}", path=path,
                                 field=key, hint="write to another --out folder (or delete this cache)")
        n = min(len(old.frame_ids), len(manifest.frame_ids))
        if old.frame_ids[:n] != manifest.frame_ids[:n]:
            raise CacheError(f"lists other frames than dataset {manifest.dataset_path}", path=path, field="frame_ids",
                             hint="write to another --out folder")
        if len(old.frame_ids) >= len(manifest.frame_ids):
            return old
    artifact.write_json(path, manifest)
    return manifest


@dataclass
class PrepareReport:
    """What one rank's ``prepare_cache`` run did."""

    rank: int
    world_size: int
    assigned: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed_partials: int = 0
    seconds: float = 0.0
    verify_seconds: float = 0.0
    bytes_written: int = 0
    pairs_written: int = 0
    points_written: int = 0
    points_dropped_nonfinite: int = 0  # NaN/inf coordinate or intensity: not stored (Frame.finite)
    feature_bytes: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    storage: str = ""
    projection_energy: float | None = None  # share of the fitted rows' squared norm the projection keeps

    @property
    def frames_per_second(self) -> float:
        """Frames computed per second of computing (checking existing files excluded)."""
        busy = self.seconds - self.verify_seconds
        return len(self.done) / busy if busy > 0 and self.done else 0.0

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes_written / len(self.done) if self.done else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "storage": self.storage,
            "projection_energy": self.projection_energy,
            "assigned": self.assigned,
            "done": self.done,
            "skipped_existing": self.skipped,
            "recomputed": [{"frame_id": f, "reason": r} for f, r in self.replaced],
            "failed": [{"frame_id": f, "reason": r} for f, r in self.failed],
            "removed_partials": self.removed_partials,
            "seconds": self.seconds,
            "verify_seconds": self.verify_seconds,
            "frames_per_second": self.frames_per_second,
            "bytes_written": self.bytes_written,
            "bytes_per_frame": self.bytes_per_frame,
            "feature_bytes": self.feature_bytes,
            "pairs_written": self.pairs_written,
            "points_written": self.points_written,
            "points_dropped_nonfinite": self.points_dropped_nonfinite,
            "phase_seconds": self.phase_seconds,
        }


def rank_frames(num_frames: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices owned by ``rank``: i % world_size == rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return list(range(rank, num_frames, world_size))


def prepare_cache(
    reader: Any,
    out: str | Path,
    teacher: Teacher,
    *,
    settings: CacheSettings | None = None,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
    on_frame: Callable[[int, int, str], None] | None = None,
) -> PrepareReport:
    """Compute and store this rank's share of ``reader``'s frames (an ``open_dataset`` reader: ``len``,
    ``[i] -> Frame``, ``frame_ids``, ``class_names``, ``ignore_index``, ``name``, ``root``).

    ``on_frame(done_count, total, status)`` is called after each frame (progress bars).
    """
    settings = settings or CacheSettings()
    storage = settings.storage
    out = Path(out)
    frame_ids = list(reader.frame_ids)
    if limit is not None:
        frame_ids = frame_ids[: max(0, limit)]
    mine = rank_frames(len(frame_ids), rank, world_size)
    if storage.projection_dim is not None and storage.projection_dim >= teacher.feature_dim:
        raise CacheError(f"{storage.projection_dim} is not fewer than the teacher's {teacher.feature_dim} dims",
                         field="storage.projection_dim", hint="choose a smaller projection_dim, or none")
    manifest = _write_or_check_manifest(
        out,
        CacheManifest(
            teacher=teacher.name,
            feature_dim=storage.projection_dim or teacher.feature_dim,
            teacher_dim=teacher.feature_dim,
            feature_dtype=storage.dtype,
            dataset_path=str(Path(reader.root).resolve()),
            dataset_format=reader.name,
            class_names=list(reader.class_names),
            ignore_index=int(reader.ignore_index),
            settings=settings,
            frame_ids=frame_ids,
            frame_files=[frame_file_name(i) for i in range(len(frame_ids))],
        ),
    )
    report = PrepareReport(rank=rank, world_size=world_size, assigned=len(mine), storage=storage.describe())
    phases = {"read": 0.0, "teacher": 0.0, "pairs": 0.0, "superpixels": 0.0, "write": 0.0, "projection": 0.0}
    start = time.perf_counter()
    projection = None
    if storage.projection_dim is not None:
        t0 = time.perf_counter()
        projection = ensure_projection(out, reader, frame_ids, teacher, settings)
        phases["projection"] += time.perf_counter() - t0
        report.projection_energy = projection.energy
    for k, i in enumerate(mine):
        status = _prepare_one(reader, i, frame_ids[i], out / manifest.frame_files[i], teacher, manifest, report, phases,
                              projection)
        if on_frame:
            on_frame(k + 1, len(mine), status)
    report.seconds = time.perf_counter() - start
    report.phase_seconds = phases
    artifact.write_json(out / REPORTS_DIR / f"rank-{rank}.json", report.to_json())
    return report


def ensure_projection(out: Path, reader: Any, frame_ids: Sequence[str], teacher: Teacher,
                      settings: CacheSettings) -> PcaBasis:
    """The cache's projection: the one in ``out`` if there is one (checked against the teacher and settings),
    else fitted on ``storage.projection_frames`` frames spread evenly over ``frame_ids`` and published."""
    storage = settings.storage
    path = out / PROJECTION_NAME
    if not path.exists():
        n = len(frame_ids)
        picks = np.unique(np.linspace(0, n - 1, min(n, storage.projection_frames)).round().astype(int)) if n else []
        rows, used = [], []
        for i in picks:
            try:
                frame = reader[int(i)]
                paired = pair_frame(frame, settings, superpixels=False)
            except ValueError:  # unreadable or unpaired frames are reported when their rank gets to them
                continue
            exact = encode_grids(paired, teacher_grids(paired, teacher), CacheStorage(layout="pairs", dtype="float32"))
            rows.append(exact.values)
            used.append(frame_ids[int(i)])
        if not rows:
            raise CacheError("no frame to fit the projection on (none of the fitting frames has pairs)", path=path,
                             field="storage.projection_frames", hint="check the dataset with `relidar render overlay`")
        x = np.concatenate(rows)
        if len(x) > storage.projection_rows:
            x = x[np.random.default_rng(0).choice(len(x), storage.projection_rows, replace=False)]
        write_projection(path, fit_projection(x, storage.projection_dim, used))
    projection = read_projection(path)
    if projection.input_dim != teacher.feature_dim or projection.dim != storage.projection_dim:
        raise CacheError(f"maps {projection.input_dim} to {projection.dim} dims; this run needs {teacher.feature_dim} "
                         f"to {storage.projection_dim}", path=path, hint="write to another --out folder")
    return projection


def _prepare_one(
    reader: Any,
    index: int,
    frame_id: str,
    path: Path,
    teacher: Teacher,
    manifest: CacheManifest,
    report: PrepareReport,
    phases: dict[str, float],
    projection: PcaBasis | None,
) -> str:
    """Bring one frame's file up to date; returns 'skipped', 'done' or 'failed' (recorded in ``report``)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink()  # left by an interrupted run of the rank that owns this frame (this one)
            report.removed_partials += 1
    t_check = time.perf_counter()
    existing = _existing_status(path, frame_id, teacher.name, projection)
    report.verify_seconds += time.perf_counter() - t_check
    if existing == "ok":
        report.skipped.append(frame_id)
        return "skipped"
    if existing != "missing":
        report.replaced.append((frame_id, existing))
    t0 = time.perf_counter()
    try:
        frame = reader[index]
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError: an unreadable frame
        report.failed.append((frame_id, f"could not read the frame: {exc}"))
        return "failed"
    phases["read"] += time.perf_counter() - t0
    if frame.frame_id != frame_id:
        report.failed.append((frame_id, f"reader returned frame {frame.frame_id!r} at index {index}: "
                                        "the dataset changed since the manifest"))
        return "failed"
    frame, dropped = frame.finite()
    report.points_dropped_nonfinite += dropped
    try:
        cached = compute_cached_frame(frame, teacher, manifest.settings, phases, projection)
    except (ValueError, TeacherError) as exc:
        report.failed.append((frame_id, str(exc)))
        return "failed"
    t2 = time.perf_counter()
    report.bytes_written += write_cached_frame(path, cached, teacher.name, projection)
    report.done.append(frame_id)
    report.pairs_written += cached.num_pairs
    report.points_written += len(cached.points)
    report.feature_bytes += cached.features.nbytes
    phases["write"] += time.perf_counter() - t2
    return "done"


def _existing_status(path: Path, frame_id: str, teacher_name: str, projection: PcaBasis | None) -> str:
    """'ok' if ``path`` holds a verified file of this frame by this teacher (and projection), else why not."""
    if not path.exists():
        return "missing"
    try:
        _, meta = read_cached_frame(path)
    except CacheError as exc:
        return f"invalid: {exc}"
    if meta["frame_id"] != frame_id or meta["teacher"] != teacher_name:
        return "stale"
    if meta.get("projection_sha256") != (projection.sha256 if projection is not None else None):
        return "stale: encoded with another projection"
    return "ok"
