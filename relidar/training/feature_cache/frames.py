"""One frame as the cache holds it: its pairs, its stored features, and its checksummed file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from relidar.core import artifact
from relidar.core.atomic import atomic_path
from relidar.core.rows import unit_rows
from relidar.training.feature_cache.basis import PcaBasis
from relidar.training.feature_cache.codec import decode_rows
from relidar.training.feature_cache.format import _CHECKSUM_KEY, _META_KEY, CACHE_FORMAT_VERSION, CacheError, _load_verified
from relidar.training.pairs import apply_stencil, bilinear_stencil


@dataclass(frozen=True)
class CameraImages:
    """A frame's camera images, for a teacher that runs later (the online teacher, inside the training step):
    ``images[c]`` is camera c's HxWx3 uint8 RGB image, or None where no point pairs with it."""

    images: tuple[np.ndarray | None, ...]

    @property
    def image_sizes(self) -> np.ndarray:
        return np.array([(0, 0) if im is None else im.shape[:2] for im in self.images], dtype=np.int64)


@dataclass(frozen=True)
class StoredFeatures:
    """A frame's teacher features as a storage mode keeps them (see the module docstring).

    ``pairs`` layout: ``values``/``scales`` hold one row per pair. ``grid`` layout: they hold the kept
    grid cells, camera c's in rows ``camera_rows[c]:camera_rows[c+1]``, ``cells`` their flat index
    (row * w + col) in that camera's grid of shape ``grid_shapes[c]`` over an image of ``image_sizes[c]``.
    """

    layout: str
    values: np.ndarray
    scales: np.ndarray | None
    cells: np.ndarray | None = None
    camera_rows: np.ndarray | None = None
    grid_shapes: np.ndarray | None = None
    image_sizes: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.values, self.scales, self.cells, self.camera_rows, self.grid_shapes,
                                      self.image_sizes) if a is not None)

    def rows(self, pairs: np.ndarray, pair_camera: np.ndarray, pair_uv: np.ndarray) -> np.ndarray:
        """[m, d] float32 unit rows of the pairs ``pairs`` (indices into the frame's pairs)."""
        if self.layout == "pairs":
            scales = None if self.scales is None else self.scales[pairs]
            return unit_rows(decode_rows(self.values[pairs], scales))
        out = np.zeros((len(pairs), self.dim), dtype=np.float32)
        cams = pair_camera[pairs]
        for c in np.unique(cams):
            sel = np.flatnonzero(cams == c)
            lo, hi = int(self.camera_rows[c]), int(self.camera_rows[c + 1])
            h, w = (int(v) for v in self.grid_shapes[c])
            rows = decode_rows(self.values[lo:hi], None if self.scales is None else self.scales[lo:hi])
            row_of_cell = np.full(h * w, -1, dtype=np.int64)
            row_of_cell[self.cells[lo:hi]] = np.arange(hi - lo)
            height, width = (int(v) for v in self.image_sizes[c])
            stencil = bilinear_stencil(pair_uv[pairs[sel]], (h, w), height, width)
            out[sel] = apply_stencil(rows, stencil, row_of_cell)
        return unit_rows(out)


@dataclass(frozen=True)
class CachedFrame:
    """What distillation needs of one frame (see the module docstring for dtypes); ``features`` are the
    stored teacher features, or the camera images when the teacher runs in the training step."""

    frame_id: str
    points: np.ndarray
    labels: np.ndarray | None
    pair_point: np.ndarray
    pair_camera: np.ndarray
    pair_uv: np.ndarray
    superpixels: np.ndarray
    camera_names: tuple[str, ...]
    features: StoredFeatures | CameraImages

    @property
    def num_pairs(self) -> int:
        return int(self.pair_point.shape[0])

    def teacher_features(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """[m, d] float32 unit rows of the teacher's features at ``pairs`` (indices into the frame's pairs;
        all by default), decoded from the storage mode."""
        if isinstance(self.features, CameraImages):
            raise CacheError(f"frame {self.frame_id!r} carries camera images, not teacher features: its teacher "
                             "runs in the training step", hint="read features from a prepared cache")
        index = np.arange(self.num_pairs) if pairs is None else np.asarray(pairs, dtype=np.int64)
        return self.features.rows(index, self.pair_camera, self.pair_uv)

    @cached_property
    def pair_features(self) -> np.ndarray:
        """[M, d] float32 unit rows of every pair (decoded once)."""
        return self.teacher_features()


def _frame_arrays(cached: CachedFrame) -> dict[str, np.ndarray]:
    stored = cached.features
    if not isinstance(stored, StoredFeatures):
        raise TypeError("only frames with stored teacher features are written")
    arrays = {
        "points": cached.points,
        "pair_point": cached.pair_point,
        "pair_camera": cached.pair_camera,
        "pair_uv": cached.pair_uv,
        "superpixels": cached.superpixels,
    }
    if cached.labels is not None:
        arrays["labels"] = cached.labels
    prefix = "pair" if stored.layout == "pairs" else "grid"
    arrays[f"{prefix}_features"] = stored.values
    if stored.scales is not None:
        arrays[f"{prefix}_scales"] = stored.scales
    if stored.layout == "grid":
        arrays.update(grid_cells=stored.cells, grid_camera_rows=stored.camera_rows, grid_shapes=stored.grid_shapes,
                      image_sizes=stored.image_sizes)
    return arrays


def write_cached_frame(path: Path, cached: CachedFrame, teacher_name: str, projection: PcaBasis | None = None) -> int:
    """Write atomically with a checksum; returns the file's size in bytes."""
    arrays = _frame_arrays(cached)
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "frame_id": cached.frame_id,
        "teacher": teacher_name,
        "camera_names": list(cached.camera_names),
        "projection_sha256": projection.sha256 if projection is not None else None,
    }
    arrays[_META_KEY] = np.array(json.dumps(meta))
    arrays[_CHECKSUM_KEY] = np.array(artifact.sha256_arrays(arrays))
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temp name.
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path.stat().st_size


def read_cached_frame(path: Path, verified: dict[str, Any] | None = None) -> tuple[CachedFrame, dict[str, Any]]:
    """Load and verify one frame file; CacheError (naming the file) if it is missing, partial or corrupt.
    ``verified``: see :func:`_load_verified` (None hashes every read)."""
    fix = "delete it and run `relidar prepare` again to recompute that frame"
    arrays = _load_verified(path, fix, verified=verified)
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
        artifact.check_format_version(meta.get("format_version"), CACHE_FORMAT_VERSION, path=path, error=CacheError,
                                      what="cache frame", hint=fix)
        if "pair_features" in arrays:
            stored = StoredFeatures("pairs", arrays["pair_features"], arrays.get("pair_scales"))
        else:
            stored = StoredFeatures("grid", arrays["grid_features"], arrays.get("grid_scales"),
                                    cells=arrays["grid_cells"].astype(np.int64),
                                    camera_rows=arrays["grid_camera_rows"], grid_shapes=arrays["grid_shapes"],
                                    image_sizes=arrays["image_sizes"])
        cached = CachedFrame(
            frame_id=meta["frame_id"],
            points=arrays["points"],
            labels=arrays.get("labels"),
            pair_point=arrays["pair_point"],
            pair_camera=arrays["pair_camera"],
            pair_uv=arrays["pair_uv"],
            superpixels=arrays["superpixels"],
            camera_names=tuple(meta["camera_names"]),
            features=stored,
        )
    except KeyError as exc:
        raise CacheError(f"lacks entry {exc} (written by another relidar version?)", path=path, hint=fix) from exc
    return cached, meta
