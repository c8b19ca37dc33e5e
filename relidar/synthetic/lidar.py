"""A spinning multi-beam lidar ray-cast against a scene: ranges with noise, dropout, intensity, ring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydantic import Field

from relidar.core.config import StrictModel
from relidar.synthetic.classes import CLASSES, class_id
from relidar.synthetic.raycast import SphericalGrid, cast, intersect_box
from relidar.synthetic.scene import Primitives
from relidar.synthetic.texture import lane_marking

# Vertical field of view of common sensors (degrees): HDL-32E spans +10.67..-30.67, HDL-64E +2..-24.8.
PRESETS: dict[int, tuple[float, float]] = {32: (10.67, -30.67), 64: (2.0, -24.8), 16: (15.0, -15.0), 128: (15.0, -25.0)}


class LidarConfig(StrictModel):
    beams: int = Field(32, ge=1, le=256, description="number of laser beams (rings)")
    fov_up_deg: float | None = Field(None, description="highest beam elevation; None: the preset for `beams`")
    fov_down_deg: float | None = Field(None, description="lowest beam elevation; None: the preset for `beams`")
    horizontal_resolution_deg: float = Field(0.2, gt=0.0, le=5.0)
    min_range: float = Field(1.0, ge=0.0)
    max_range: float = Field(80.0, gt=1.0)
    range_noise: float = Field(0.02, ge=0.0, description="std of range noise, metres")
    dropout: float = Field(0.03, ge=0.0, lt=1.0, description="probability a return is lost, at short range")
    far_dropout: float = Field(0.25, ge=0.0, lt=1.0, description="extra loss probability at max_range (grows with range squared)")
    intensity_noise: float = Field(0.05, ge=0.0)
    faint_return: float = Field(0.005, ge=0.0, description="received-power scale (reflectivity x |cos incidence| x "
                                "(10 m / range)^2) below which returns fade out: dark asphalt at grazing angles far "
                                "away is mostly lost, as with real spinning lidars; 0 keeps every return")

    def elevations_deg(self) -> np.ndarray:
        """Beam elevations, lowest first (ring 0 is the lowest beam, as Velodyne drivers number them)."""
        up, down = PRESETS.get(self.beams, (15.0, -25.0))
        up = self.fov_up_deg if self.fov_up_deg is not None else up
        down = self.fov_down_deg if self.fov_down_deg is not None else down
        if up <= down:
            raise ValueError(f"lidar.fov_up_deg ({up}) must exceed lidar.fov_down_deg ({down})")
        return np.linspace(down, up, self.beams)

    def azimuths(self) -> np.ndarray:
        n = int(round(360.0 / self.horizontal_resolution_deg))
        return -np.pi + np.arange(n) * (2 * np.pi / n)


# A Velodyne HDL-64E (KITTI's sensor) at 10 Hz: 64 beams from +2 to -24.8 degrees, 0.17 degrees between firings.
HDL64E = LidarConfig(beams=64, horizontal_resolution_deg=0.17)


@dataclass(frozen=True)
class LidarScan:
    """Returns of one sweep in the lidar frame: ``points`` [N,4] (x, y, z, intensity 0..1),
    ``labels`` [N] class indices, ``ring`` [N] beam numbers (0 = lowest)."""

    points: np.ndarray
    labels: np.ndarray
    ring: np.ndarray


def scan(prims: Primitives, T_world_lidar: np.ndarray, cfg: LidarConfig, rng: np.random.Generator,
         blocked: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> LidarScan:
    """One full turn. ``rng`` draws the firing phase, noise and dropout (the caller seeds it per frame).
    ``blocked``: axis-aligned boxes (min corner, max corner) in the lidar frame that stop rays with no
    return (the ego vehicle's roof and hood: datasets drop those points)."""
    az = cfg.azimuths()
    az = az + rng.uniform(0.0, az[1] - az[0])  # firing phase differs from turn to turn
    grid = SphericalGrid(T_world_lidar[:3, 3], T_world_lidar[:3, :3], np.deg2rad(cfg.elevations_deg()), az)
    hits = cast(grid, prims, cfg.max_range)
    for lo, hi in blocked:
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        t_body, _ = intersect_box(-(lo + hi)[None] / 2, grid.local_dirs, (hi - lo) / 2)
        hits.t[t_body < hits.t] = np.inf
    n_az = len(az)
    ring = np.repeat(np.arange(cfg.beams, dtype=np.uint16), n_az)
    column = np.tile(np.arange(n_az), cfg.beams)
    t = hits.t + rng.normal(0.0, cfg.range_noise, hits.t.shape)
    p_drop = cfg.dropout + cfg.far_dropout * np.clip(hits.t / cfg.max_range, 0, 1) ** 2
    finite = np.isfinite(hits.t)
    refl_all = np.where(hits.prim >= 0, prims.reflectivity[np.maximum(hits.prim, 0)],
                        _ground_reflectivity(hits.cls, hits.point))
    if cfg.faint_return > 0:
        cos_all = np.abs((grid.dirs * hits.normal).sum(axis=1))
        power = refl_all * cos_all * (10.0 / np.where(finite, np.maximum(hits.t, 1.0), np.inf)) ** 2
        p_drop = 1.0 - (1.0 - p_drop) * (1.0 - np.exp(-power / cfg.faint_return))
    keep = finite & (t >= cfg.min_range) & (rng.random(t.shape) >= p_drop)
    # Returns in firing order: column by column, each column bottom beam to top.
    order = np.lexsort((ring, column))
    keep_idx = order[keep[order]]
    d = grid.local_dirs[keep_idx]
    xyz = d * t[keep_idx, None]
    cos_inc = np.abs((grid.dirs[keep_idx] * hits.normal[keep_idx]).sum(axis=1))
    refl = refl_all[keep_idx]
    intensity = refl * (0.25 + 0.75 * cos_inc) * (1.0 + rng.normal(0.0, cfg.intensity_noise, len(keep_idx)))
    points = np.concatenate([xyz, np.clip(intensity, 0.0, 1.0)[:, None]], axis=1).astype(np.float32)
    return LidarScan(points=points, labels=hits.cls[keep_idx].astype(np.int64), ring=ring[keep_idx])


def _ground_reflectivity(cls: np.ndarray, point: np.ndarray) -> np.ndarray:
    base = np.array([c.reflectivity for c in CLASSES], dtype=np.float64)[np.maximum(cls, 0)]
    marking = (cls == class_id("road")) & lane_marking(point[:, 0], point[:, 1])
    return np.where(marking, 0.7, base)
