"""The teacher feature cache: the teacher runs once per frame, distillation reads only this.

Layout of a cache folder::

    manifest.json            teacher, feature dim/dtype, dataset, class names, frame ids and files, settings
    frames/000000.npz ...    one file per dataset frame (index order), written atomically
    reports/rank-R.json      what each rank's last run computed, skipped and why frames failed

A frame file holds the points [N,4] float32, labels [N] int32 (if the dataset has them), the
point-pixel pairs (``pair_point`` int32, ``pair_camera`` uint8, ``pair_uv`` float32 pixels,
``pair_features`` float16 unit rows), per-point superpixel ids [N] int32 (-1 unpaired, unique per
frame), and a sha256 over all of it. A file is complete iff it loads and its checksum verifies:
writes go to a ``.partial`` temp file renamed into place, so an interrupted run leaves either the
old state or a complete file, and a re-run skips exactly the frames that verify.

Ranks share a dataset by index: frame i belongs to rank ``i % world_size``. Ranks never touch each
other's frames; each writes the (identical) manifest atomically.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field

from relidar.core import artifact
from relidar.core.atomic import atomic_path
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.core.frame import Frame
from relidar.training.pairs import assign_cameras, build_pairs, superpixel_ids
from relidar.training.teachers.base import Teacher, TeacherError

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
FRAMES_DIR = "frames"
REPORTS_DIR = "reports"
_CHECKSUM_KEY = "__sha256__"
_META_KEY = "__meta__"


class CacheError(RelidarError, RuntimeError):
    """A cache folder or file is missing, partial, corrupt or from another teacher; names the file and the fix."""


class CacheSettings(StrictModel):
    """How pairs and superpixels are made; part of the cache's identity."""

    min_depth: float = Field(0.1, gt=0.0, description="points nearer than this (m, camera z) are not paired")
    superpixel_segments: int = Field(150, ge=1, description="SLIC segments per camera image")
    superpixel_compactness: float = Field(10.0, gt=0.0, description="SLIC compactness (higher: squarer segments)")


class CacheManifest(StrictModel):
    format_version: int = CACHE_FORMAT_VERSION
    teacher: str
    feature_dim: int
    feature_dtype: str = "float16"
    dataset_path: str
    dataset_format: str
    class_names: list[str]
    ignore_index: int
    settings: CacheSettings
    frame_ids: list[str]
    frame_files: list[str]


@dataclass(frozen=True)
class CachedFrame:
    """What distillation needs of one frame (see the module docstring for dtypes)."""

    frame_id: str
    points: np.ndarray
    labels: np.ndarray | None
    pair_point: np.ndarray
    pair_camera: np.ndarray
    pair_uv: np.ndarray
    pair_features: np.ndarray
    superpixels: np.ndarray
    camera_names: tuple[str, ...]

    @property
    def num_pairs(self) -> int:
        return int(self.pair_point.shape[0])


def frame_file_name(index: int) -> str:
    # By dataset index, not frame id: ids can hold slashes and any characters.
    return f"{FRAMES_DIR}/{index:06d}.npz"


def compute_cached_frame(
    frame: Frame, teacher: Teacher, settings: CacheSettings, timings: dict[str, float] | None = None
) -> CachedFrame:
    """Run the teacher on the frame's cameras that see points and pair them; raises ValueError if none do.
    ``timings`` (if given) accumulates seconds spent in "teacher", "pairs" and "superpixels"."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    if not frame.cameras:
        raise ValueError("frame has no cameras")
    pixels = assign_cameras(frame, min_depth=settings.min_depth)
    if len(pixels) == 0:
        raise ValueError("no point projects into any camera (check the calibration: `relidar render overlay`)")
    if len(frame.cameras) > 255:
        raise ValueError(f"{len(frame.cameras)} cameras; the cache stores camera indices as uint8")
    used = set(np.unique(pixels.camera_index).tolist())
    t1 = time.perf_counter()
    grids = [teacher.encode_image(cam.image) if c in used else None for c, cam in enumerate(frame.cameras)]
    t2 = time.perf_counter()
    pairs = build_pairs(frame, grids, pixels)
    t3 = time.perf_counter()
    sp = superpixel_ids(frame, pixels, settings.superpixel_segments, settings.superpixel_compactness)
    t4 = time.perf_counter()
    for key, dt in (("pairs", (t1 - t0) + (t3 - t2)), ("teacher", t2 - t1), ("superpixels", t4 - t3)):
        timings[key] = timings.get(key, 0.0) + dt
    return CachedFrame(
        frame_id=frame.frame_id,
        points=frame.points.astype(np.float32),
        labels=None if frame.labels is None else frame.labels.astype(np.int32),
        pair_point=pairs.point_index.astype(np.int32),
        pair_camera=pairs.camera_index.astype(np.uint8),
        pair_uv=pairs.uv.astype(np.float32),
        pair_features=pairs.features.astype(np.float16),
        superpixels=sp.astype(np.int32),
        camera_names=tuple(cam.name for cam in frame.cameras),
    )


def write_cached_frame(path: Path, cached: CachedFrame, teacher_name: str) -> int:
    """Write atomically with a checksum; returns the file's size in bytes."""
    arrays = {
        "points": cached.points,
        "pair_point": cached.pair_point,
        "pair_camera": cached.pair_camera,
        "pair_uv": cached.pair_uv,
        "pair_features": cached.pair_features,
        "superpixels": cached.superpixels,
    }
    if cached.labels is not None:
        arrays["labels"] = cached.labels
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "frame_id": cached.frame_id,
        "teacher": teacher_name,
        "camera_names": list(cached.camera_names),
    }
    arrays[_META_KEY] = np.array(json.dumps(meta))
    arrays[_CHECKSUM_KEY] = np.array(artifact.sha256_arrays(arrays))
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temp name.
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path.stat().st_size


def read_cached_frame(path: Path) -> tuple[CachedFrame, dict[str, Any]]:
    """Load and verify one frame file; CacheError (naming the file) if it is missing, partial or corrupt."""
    fix = "delete it and run `relidar prepare` again to recompute that frame"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError as exc:
        raise CacheError("cache frame file not found", path=path, hint="run `relidar prepare` to compute it") from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CacheError(f"partial or corrupt cache file ({type(exc).__name__}: {exc})", path=path, hint=fix) from exc
    stored = arrays.pop(_CHECKSUM_KEY, None)
    if stored is None or str(stored) != artifact.sha256_arrays(arrays):
        raise CacheError("checksum does not verify (partial or altered file)", path=path, hint=fix)
    meta = json.loads(str(arrays.pop(_META_KEY)))
    artifact.check_format_version(meta.get("format_version"), CACHE_FORMAT_VERSION, path=path, error=CacheError,
                                  what="cache frame", hint=fix)
    cached = CachedFrame(
        frame_id=meta["frame_id"],
        points=arrays["points"],
        labels=arrays.get("labels"),
        pair_point=arrays["pair_point"],
        pair_camera=arrays["pair_camera"],
        pair_uv=arrays["pair_uv"],
        pair_features=arrays["pair_features"],
        superpixels=arrays["superpixels"],
        camera_names=tuple(meta["camera_names"]),
    )
    return cached, meta


def load_manifest(cache_dir: Path) -> CacheManifest:
    return artifact.read_manifest(
        Path(cache_dir) / MANIFEST_NAME, CacheManifest, CacheError, version=CACHE_FORMAT_VERSION,
        what="feature cache manifest", missing_hint=f"is {cache_dir} a folder written by `relidar prepare`?",
        hint="the manifest is damaged or from another relidar version: prepare the cache again into a new folder")


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
    phase_seconds: dict[str, float] = field(default_factory=dict)

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
            "pairs_written": self.pairs_written,
            "points_written": self.points_written,
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
    out = Path(out)
    frame_ids = list(reader.frame_ids)
    if limit is not None:
        frame_ids = frame_ids[: max(0, limit)]
    mine = rank_frames(len(frame_ids), rank, world_size)
    manifest = _write_or_check_manifest(
        out,
        CacheManifest(
            teacher=teacher.name,
            feature_dim=teacher.feature_dim,
            dataset_path=str(Path(reader.root).resolve()),
            dataset_format=reader.name,
            class_names=list(reader.class_names),
            ignore_index=int(reader.ignore_index),
            settings=settings,
            frame_ids=frame_ids,
            frame_files=[frame_file_name(i) for i in range(len(frame_ids))],
        ),
    )
    report = PrepareReport(rank=rank, world_size=world_size, assigned=len(mine))
    phases = {"read": 0.0, "teacher": 0.0, "pairs": 0.0, "superpixels": 0.0, "write": 0.0}
    start = time.perf_counter()
    for k, i in enumerate(mine):
        status = _prepare_one(reader, i, frame_ids[i], out / manifest.frame_files[i], teacher, manifest, report, phases)
        if on_frame:
            on_frame(k + 1, len(mine), status)
    report.seconds = time.perf_counter() - start
    report.phase_seconds = phases
    artifact.write_json(out / REPORTS_DIR / f"rank-{rank}.json", report.to_json())
    return report


def _prepare_one(
    reader: Any,
    index: int,
    frame_id: str,
    path: Path,
    teacher: Teacher,
    manifest: CacheManifest,
    report: PrepareReport,
    phases: dict[str, float],
) -> str:
    """Bring one frame's file up to date; returns 'skipped', 'done' or 'failed' (recorded in ``report``)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink()  # left by an interrupted run of the rank that owns this frame (this one)
            report.removed_partials += 1
    t_check = time.perf_counter()
    existing = _existing_status(path, frame_id, teacher.name)
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
    try:
        cached = compute_cached_frame(frame, teacher, manifest.settings, phases)
    except (ValueError, TeacherError) as exc:
        report.failed.append((frame_id, str(exc)))
        return "failed"
    t2 = time.perf_counter()
    if cached.pair_features.shape[1] != manifest.feature_dim:
        raise TeacherError(f"teacher {teacher.name} returned {cached.pair_features.shape[1]}-d features "
                           f"but declares {manifest.feature_dim}")
    report.bytes_written += write_cached_frame(path, cached, teacher.name)
    report.done.append(frame_id)
    report.pairs_written += cached.num_pairs
    report.points_written += len(cached.points)
    phases["write"] += time.perf_counter() - t2
    return "done"


def _existing_status(path: Path, frame_id: str, teacher_name: str) -> str:
    """'ok' if ``path`` holds a verified file of this frame by this teacher, else why not."""
    if not path.exists():
        return "missing"
    try:
        _, meta = read_cached_frame(path)
    except CacheError as exc:
        return f"invalid: {exc}"
    if meta["frame_id"] != frame_id or meta["teacher"] != teacher_name:
        return "stale"
    return "ok"


class CacheReader:
    """Read-only access to a prepared cache: ``len``, ``[i] -> CachedFrame`` over the frames present.

    Frames the manifest lists but whose file is absent (failed or not yet computed) are left out and
    listed in ``missing_frame_ids``; a present but corrupt file raises CacheError when read.
    """

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        self.manifest = load_manifest(self.root)
        present = [(fid, f) for fid, f in zip(self.manifest.frame_ids, self.manifest.frame_files) if (self.root / f).is_file()]
        self._frame_ids = [fid for fid, _ in present]
        self._files = [self.root / f for _, f in present]
        have = set(self._frame_ids)
        self.missing_frame_ids = [fid for fid in self.manifest.frame_ids if fid not in have]

    @property
    def frame_ids(self) -> list[str]:
        return list(self._frame_ids)

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.class_names)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> CachedFrame:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"cache frame {index} out of range: {self.root} has {n} prepared frames")
        path = self._files[index]
        cached, meta = read_cached_frame(path)
        if meta["teacher"] != self.manifest.teacher or cached.frame_id != self._frame_ids[index]:
            raise CacheError(f"holds frame {cached.frame_id!r} by teacher {meta['teacher']!r}, but {MANIFEST_NAME} "
                             f"expects {self._frame_ids[index]!r} by {self.manifest.teacher!r}", path=path,
                             hint="re-run `relidar prepare` into this folder")
        if cached.pair_features.shape[1] != self.manifest.feature_dim:
            raise CacheError(f"{cached.pair_features.shape[1]}-d, the manifest says {self.manifest.feature_dim}", path=path,
                             field="pair_features", hint="re-run `relidar prepare` into this folder")
        return cached

    def failures(self) -> list[dict[str, str]]:
        """Failed frames with reasons, from every rank's last report."""
        out: list[dict[str, str]] = []
        for report in sorted((self.root / REPORTS_DIR).glob("rank-*.json")):
            out.extend(json.loads(report.read_text()).get("failed", []))
        return out
