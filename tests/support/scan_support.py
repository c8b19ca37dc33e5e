"""Lidar scans for tests that need points shaped like a real sweep (ground, walls, cars, poles) and no data:
the synthetic world's street seen by an HDL-64E (``relidar.synthetic.lidar_sweep``), numpy only (no torch)."""

from __future__ import annotations

import functools

import numpy as np

from relidar.synthetic import lidar_sweep

REACH = 40.0  # metres in x and y: inside the test bundles' crop (+-51.2 m) on every side


@functools.lru_cache(maxsize=None)
def _near_points(seed: int, index: int) -> np.ndarray:
    points = lidar_sweep(seed, index).points
    near = points[(np.abs(points[:, :2]) < REACH).all(axis=1)]
    near.setflags(write=False)  # cached: callers get copies
    return near


def street_scan(n: int, seed: int = 0) -> np.ndarray:
    """[n, 4] float32 (x, y, z, intensity 0..1), the same for the same arguments: ``n`` returns (drawn without
    replacement, kept in firing order) within 40 m of the lidar in world ``seed``'s first sweeps along its
    street (one sweep holds about 85,000; a larger ``n`` takes the next sweeps too)."""
    parts, have, index = [], 0, 0
    while have < n:
        parts.append(_near_points(seed, index))
        have += len(parts[-1])
        index += 1
    points = np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)
    pick = np.sort(np.random.default_rng(seed).choice(len(points), n, replace=False))
    return points[pick].copy()
