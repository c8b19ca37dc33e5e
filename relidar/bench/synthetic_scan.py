"""A deterministic lidar-like scan made procedurally, so benchmarks run with no data.

A 64-beam spinning sensor 1.73 m above a ground plane (KITTI's HDL-64E geometry) ray-casts a street:
two building walls, parked cars and a few poles, all axis-aligned boxes. Rays that hit nothing within
``max_range`` return no point. Sizes and voxel counts land close to a real KITTI scan.
"""

from __future__ import annotations

import numpy as np

SENSOR_HEIGHT = 1.73

# (x_min, y_min, z_min, x_max, y_max, z_max, intensity); z relative to the sensor.
_BOXES = np.array(
    [
        (-60.0, 9.0, -1.73, 60.0, 10.0, 8.0, 0.25),    # building wall, left
        (-60.0, -11.0, -1.73, 60.0, -10.0, 8.0, 0.30),  # building wall, right
        (6.0, 3.0, -1.73, 10.5, 4.8, -0.2, 0.60),       # parked cars
        (14.0, 3.1, -1.73, 18.2, 4.9, -0.3, 0.55),
        (25.0, -5.0, -1.73, 29.5, -3.2, -0.25, 0.65),
        (-12.0, 3.2, -1.73, -7.6, 5.0, -0.3, 0.50),
        (-22.0, -4.9, -1.73, -17.5, -3.1, -0.2, 0.60),
        (3.0, -2.0, -1.73, 7.2, -0.2, -0.25, 0.70),     # car ahead in the lane
        (12.0, 7.5, -1.73, 12.3, 7.8, 4.0, 0.80),       # poles
        (-5.0, -8.6, -1.73, -4.7, -8.3, 4.0, 0.80),
        (30.0, 7.4, -1.73, 30.3, 7.7, 4.0, 0.80),
    ],
    dtype=np.float64,
)


def synthetic_scan(num_beams: int = 64, num_azimuths: int = 2048, max_range: float = 80.0, seed: int = 0) -> np.ndarray:
    """[N, 4] float32 (x, y, z, intensity) in the sensor frame; the same array for the same arguments."""
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(np.linspace(-24.8, 2.0, num_beams))
    azimuth = np.linspace(-np.pi, np.pi, num_azimuths, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    best = np.full(d.shape[0], np.inf)
    intensity = np.zeros(d.shape[0])
    # ground plane z = -SENSOR_HEIGHT
    down = d[:, 2] < -1e-6
    t_ground = np.where(down, -SENSOR_HEIGHT / np.where(down, d[:, 2], -1.0), np.inf)
    best = np.minimum(best, t_ground)
    intensity[np.isfinite(best)] = 0.15
    # slab test against every box
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
    for box in _BOXES:
        lo, hi, value = box[:3], box[3:6], box[6]
        t1 = lo[None, :] * inv
        t2 = hi[None, :] * inv
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < best)
        best = np.where(hit, t_near, best)
        intensity = np.where(hit, value, intensity)
    keep = best < max_range
    r = best[keep] + rng.normal(0.0, 0.01, size=int(keep.sum()))
    xyz = d[keep] * r[:, None]
    inten = np.clip(intensity[keep] + rng.normal(0.0, 0.05, size=xyz.shape[0]), 0.0, 1.0)
    return np.c_[xyz, inten].astype(np.float32)
