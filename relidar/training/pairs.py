"""Point <-> pixel pairs: which camera pixel each lidar point lands on, and the teacher's feature there.

A point seen by several cameras (overlapping fields of view) is paired with one of them: the camera
in which it lies closest to the image centre, where lens distortion and truncated context are least.
Teacher features live on a patch grid; grid cell (i, j) of an h x w grid over an H x W image covers
pixels v in [i*H/h, (i+1)*H/h), u in [j*W/w, (j+1)*W/w), so its centre is ((j+0.5)*W/w, (i+0.5)*H/h)
and features are interpolated bilinearly between cell centres (clamped at the border).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from relidar.core.frame import Frame
from relidar.core.rows import unit_rows


@dataclass(frozen=True)
class PointPixels:
    """``point_index`` [M] int64 (into the frame's points), ``camera_index`` [M] int64 (into its
    cameras), ``uv`` [M,2] float32 pixel coordinates in that camera's image."""

    point_index: np.ndarray
    camera_index: np.ndarray
    uv: np.ndarray

    def __len__(self) -> int:
        return int(self.point_index.shape[0])


@dataclass(frozen=True)
class PointPixelPairs(PointPixels):
    """Point-pixel pairs with the teacher feature sampled at each pixel: ``features`` [M,D] float32."""

    features: np.ndarray


def assign_cameras(frame: Frame, min_depth: float = 0.1) -> PointPixels:
    """Each point that projects into at least one camera, with the one camera chosen for it."""
    n = frame.num_points
    if not frame.cameras or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PointPixels(empty, empty.copy(), np.zeros((0, 2), dtype=np.float32))
    scores = np.full((len(frame.cameras), n), np.inf)
    uvs = np.zeros((len(frame.cameras), n, 2), dtype=np.float32)
    for c, cam in enumerate(frame.cameras):
        proj = cam.project(frame.points[:, :3], min_depth=min_depth)
        du = (proj.uv[:, 0] - cam.width / 2) / (cam.width / 2)
        dv = (proj.uv[:, 1] - cam.height / 2) / (cam.height / 2)
        scores[c] = np.where(proj.mask, du * du + dv * dv, np.inf)
        uvs[c] = proj.uv
    best = np.argmin(scores, axis=0)
    point_index = np.flatnonzero(np.isfinite(scores[best, np.arange(n)]))
    camera_index = best[point_index]
    return PointPixels(point_index.astype(np.int64), camera_index.astype(np.int64), uvs[camera_index, point_index])


@dataclass(frozen=True)
class BilinearStencil:
    """Where bilinear samples of an h x w feature grid read: for each of M pixels, the flat indices
    (row * w + col) of its four neighbouring cell centres and their weights [M, 4] (rows sum to 1)."""

    cells: np.ndarray    # [M, 4] int64: (y0, x0), (y0, x1), (y1, x0), (y1, x1)
    weights: np.ndarray  # [M, 4] float32


def bilinear_stencil(uv: np.ndarray, grid_shape: tuple[int, int], image_height: int, image_width: int) -> BilinearStencil:
    """The cells and weights a bilinear sample at pixels uv [M,2] reads (cell centres at integers of
    the continuous grid coordinates, clamped at the border)."""
    h, w = grid_shape
    x = np.clip(uv[:, 0].astype(np.float64) * w / image_width - 0.5, 0.0, w - 1.0)
    y = np.clip(uv[:, 1].astype(np.float64) * h / image_height - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    cells = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=1)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1)
    return BilinearStencil(cells, weights)


def apply_stencil(rows: np.ndarray, stencil: BilinearStencil, row_of_cell: np.ndarray | None = None) -> np.ndarray:
    """[M, D] float32 bilinear samples from feature rows [K, D]: row ``row_of_cell[c]`` holds grid cell c
    (all cells in row-major order when ``row_of_cell`` is None)."""
    index = stencil.cells if row_of_cell is None else row_of_cell[stencil.cells]
    g = rows.astype(np.float32, copy=False)
    out = g[index[:, 0]] * stencil.weights[:, 0:1]
    for corner in range(1, 4):
        out += g[index[:, corner]] * stencil.weights[:, corner:corner + 1]
    return out


def sample_bilinear(grid: np.ndarray, uv: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
    """Bilinear samples [M,D] of a feature grid [h,w,D] (over an image of the given size) at pixels uv [M,2]."""
    h, w = grid.shape[:2]
    return apply_stencil(grid.reshape(h * w, -1), bilinear_stencil(uv, (h, w), image_height, image_width))


def build_pairs(frame: Frame, grids: Sequence[np.ndarray | None], pixels: PointPixels | None = None) -> PointPixelPairs:
    """Pairs of ``frame``'s points with teacher features ``grids`` (one [h,w,D] grid per camera, in the
    frame's camera order; None for a camera no point is paired with, so its image need not be
    encoded); sampled features are re-normalised to unit length (an interpolation of unit
    vectors is shorter than one, and every loss compares directions)."""
    if len(grids) != len(frame.cameras):
        raise ValueError(f"frame {frame.frame_id!r}: {len(grids)} feature grids for {len(frame.cameras)} cameras")
    pixels = pixels if pixels is not None else assign_cameras(frame)
    dims = {g.shape[-1] for g in grids if g is not None}
    if len(dims) > 1:
        raise ValueError(f"frame {frame.frame_id!r}: feature grids of different dims {sorted(dims)}")
    dim = dims.pop() if dims else 0
    features = np.zeros((len(pixels), dim), dtype=np.float32)
    for c, (cam, grid) in enumerate(zip(frame.cameras, grids)):
        sel = np.flatnonzero(pixels.camera_index == c)
        if sel.size:
            if grid is None:
                raise ValueError(f"frame {frame.frame_id!r}: camera {cam.name!r} has paired points but no feature grid")
            features[sel] = sample_bilinear(grid, pixels.uv[sel], cam.height, cam.width)
    unit_rows(features)
    return PointPixelPairs(pixels.point_index, pixels.camera_index, pixels.uv, features)


def superpixel_ids(
    frame: Frame,
    pixels: PointPixels,
    n_segments: int = 150,
    compactness: float = 10.0,
    max_side: int = 640,
) -> np.ndarray:
    """[N] int32 superpixel id of every point (-1 where unpaired), unique across the frame's cameras.

    SLIC runs on each camera image that has paired points, decimated so its longer side is at most
    ``max_side`` pixels (segments span tens of pixels; full resolution only costs time).
    """
    from skimage.segmentation import slic

    ids = np.full(frame.num_points, -1, dtype=np.int32)
    offset = 0
    for c, cam in enumerate(frame.cameras):
        sel = np.flatnonzero(pixels.camera_index == c)
        if sel.size == 0:
            continue
        step = max(1, int(np.ceil(max(cam.height, cam.width) / max_side)))
        small = cam.image[::step, ::step]
        labels = slic(small, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
        u = np.clip((pixels.uv[sel, 0] // step).astype(np.int64), 0, small.shape[1] - 1)
        v = np.clip((pixels.uv[sel, 1] // step).astype(np.int64), 0, small.shape[0] - 1)
        ids[pixels.point_index[sel]] = labels[v, u] + offset
        offset += int(labels.max()) + 1
    return ids
