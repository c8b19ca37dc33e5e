"""Pairing a frame's points with camera pixels and encoding the teacher's grids for them."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from relidar.core.frame import Frame
from relidar.core.rows import unit_rows
from relidar.core.teacher import Teacher, TeacherError
from relidar.training.feature_cache.basis import PcaBasis
from relidar.training.feature_cache.codec import encode_rows
from relidar.training.feature_cache.format import CacheSettings, CacheStorage
from relidar.training.feature_cache.frames import CachedFrame, CameraImages, StoredFeatures
from relidar.training.pairs import BilinearStencil, apply_stencil, assign_cameras, bilinear_stencil, superpixel_ids


def pair_frame(frame: Frame, settings: CacheSettings, *, superpixels: bool = True,
               timings: dict[str, float] | None = None) -> CachedFrame:
    """The frame's points paired with the cameras that see them (no teacher yet: ``features`` are the
    images it will encode); raises ValueError if no point projects into a camera. ``superpixels`` False
    leaves every id -1 (SLIC is the slow part and only superpixel pooling reads them)."""
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
    if superpixels:
        sp = superpixel_ids(frame, pixels, settings.superpixel_segments, settings.superpixel_compactness)
    else:
        sp = np.full(frame.num_points, -1, dtype=np.int32)
    t2 = time.perf_counter()
    timings["pairs"] = timings.get("pairs", 0.0) + (t1 - t0)
    timings["superpixels"] = timings.get("superpixels", 0.0) + (t2 - t1)
    return CachedFrame(
        frame_id=frame.frame_id,
        points=frame.points.astype(np.float32),
        labels=None if frame.labels is None else frame.labels.astype(np.int32),
        pair_point=pixels.point_index.astype(np.int32),
        pair_camera=pixels.camera_index.astype(np.uint8),
        pair_uv=pixels.uv.astype(np.float32),
        superpixels=sp.astype(np.int32),
        camera_names=tuple(cam.name for cam in frame.cameras),
        features=CameraImages(tuple(cam.image if c in used else None for c, cam in enumerate(frame.cameras))),
    )


def encode_grids(paired: CachedFrame, grids: Sequence[np.ndarray | None], storage: CacheStorage,
                 projection: PcaBasis | None = None) -> StoredFeatures:
    """The stored form of teacher grids ([h, w, D] per camera, None where unused) for ``paired``'s pairs.

    PcaBasis comes before sampling: both are linear, so projecting the grid equals projecting the
    sampled rows, and the grid layout decodes to what the pairs layout stores.
    """
    images = paired.features
    if not isinstance(images, CameraImages):
        raise TypeError("encode_grids needs a frame from pair_frame (its camera images)")
    sizes = images.image_sizes
    pair_rows: list[tuple[np.ndarray, np.ndarray]] = []
    cells, chunks, shapes = [], [], np.zeros((len(grids), 2), dtype=np.int64)
    camera_rows = [0]
    for c, grid in enumerate(grids):
        sel = np.flatnonzero(paired.pair_camera == c)
        if sel.size and grid is None:
            raise ValueError(f"frame {paired.frame_id!r}: camera {paired.camera_names[c]!r} has paired points but no "
                             "feature grid")
        if grid is None or not sel.size:
            camera_rows.append(camera_rows[-1])
            continue
        h, w = grid.shape[:2]
        flat = grid.reshape(h * w, -1).astype(np.float32, copy=False)
        flat = projection.project(flat) if projection is not None else flat
        stencil: BilinearStencil = bilinear_stencil(paired.pair_uv[sel], (h, w), int(sizes[c, 0]), int(sizes[c, 1]))
        if storage.layout == "pairs":
            pair_rows.append((sel, apply_stencil(flat, stencil)))
        else:
            kept = np.unique(stencil.cells)
            cells.append(kept)
            chunks.append(flat[kept])
            shapes[c] = (h, w)
        camera_rows.append(camera_rows[-1] + (0 if storage.layout == "pairs" else len(kept)))
    dim = projection.dim if projection is not None else next(g.shape[-1] for g in grids if g is not None)
    if storage.layout == "pairs":
        rows = np.zeros((paired.num_pairs, dim), dtype=np.float32)
        for sel, sampled in pair_rows:
            rows[sel] = sampled
        values, scales = encode_rows(unit_rows(rows), storage.dtype)
        return StoredFeatures("pairs", values, scales)
    all_rows = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    values, scales = encode_rows(all_rows, storage.dtype)
    return StoredFeatures("grid", values, scales, cells=np.concatenate(cells).astype(np.int32) if cells else
                          np.zeros(0, np.int32), camera_rows=np.asarray(camera_rows, dtype=np.int64),
                          grid_shapes=shapes.astype(np.int32), image_sizes=sizes.astype(np.int32))


def teacher_grids(paired: CachedFrame, teacher: Teacher) -> list[np.ndarray | None]:
    """The teacher's feature grid of each camera that has pairs (None for the others)."""
    images = paired.features
    if not isinstance(images, CameraImages):
        raise TypeError("teacher_grids needs a frame from pair_frame (its camera images)")
    return [None if im is None else teacher.encode_image(im) for im in images.images]


def compute_cached_frame(
    frame: Frame, teacher: Teacher, settings: CacheSettings, timings: dict[str, float] | None = None,
    projection: PcaBasis | None = None,
) -> CachedFrame:
    """Run the teacher on the frame's cameras that see points and pair them; raises ValueError if none do.
    ``timings`` (if given) accumulates seconds spent in "teacher", "pairs" and "superpixels"."""
    timings = timings if timings is not None else {}
    paired = pair_frame(frame, settings, timings=timings)
    t0 = time.perf_counter()
    grids = teacher_grids(paired, teacher)
    t1 = time.perf_counter()
    dims = {g.shape[-1] for g in grids if g is not None}
    if dims != {teacher.feature_dim}:
        raise TeacherError(f"teacher {teacher.name} returned {sorted(dims)}-d features but declares {teacher.feature_dim}")
    stored = encode_grids(paired, grids, settings.storage, projection)
    t2 = time.perf_counter()
    timings["teacher"] = timings.get("teacher", 0.0) + (t1 - t0)
    timings["pairs"] = timings.get("pairs", 0.0) + (t2 - t1)
    return CachedFrame(**{**paired.__dict__, "features": stored})
