"""Surface appearance: procedural value noise keyed on world position, lane markings, facade windows."""

from __future__ import annotations

import numpy as np

LANE_MARKING_RGB = np.array([225.0, 225.0, 218.0])
WINDOW_RGB = np.array([55.0, 68.0, 85.0])
LANE_WIDTH_M = 3.1  # scene.LANE_WIDTH (kept here: the scene imports this module's neighbours, not the reverse)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0,1) per integer lattice cell, a pure function of the cell (so frames agree)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791) ^ salt
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def value_noise(p: np.ndarray, scale: float, salt: int = 0) -> np.ndarray:
    """Noise in [-1, 1] of world points [N,3], constant over cubes of side ``scale`` (blocky, like
    gravel, leaves or brick), two octaves."""
    q = np.floor(p / scale)
    q2 = np.floor(p / (scale * 4.0))
    n1 = _hash01(q[:, 0], q[:, 1], q[:, 2], salt)
    n2 = _hash01(q2[:, 0], q2[:, 1], q2[:, 2], salt + 7)
    return (0.6 * n1 + 0.4 * n2) * 2.0 - 1.0


def lane_marking(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Dashed centre line (3 m of every 9 m) and solid edge lines of the main street."""
    centre = (np.abs(y) < 0.08) & (np.mod(x, 9.0) < 3.0)
    edge = np.abs(np.abs(y) - 2 * LANE_WIDTH_M) < 0.07
    return centre | edge


def windows(point: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Window panes on axis-aligned facades: a grid of 3.0 m x 3.2 m bays above the ground floor."""
    along = np.where(np.abs(normal[:, 0]) > np.abs(normal[:, 1]), point[:, 1], point[:, 0])
    fu = np.mod(along, 3.0) / 3.0
    fz = np.mod(point[:, 2], 3.2) / 3.2
    vertical = np.abs(normal[:, 2]) < 0.5
    return vertical & (point[:, 2] > 2.8) & (fu > 0.3) & (fu < 0.75) & (fz > 0.3) & (fz < 0.8)
