"""Vectorised ray casting against the analytic ground and the scene's primitives.

Rays come in a grid (a lidar's beams x azimuths, a camera's rows x columns). For each primitive the
grid names the few rays that can reach its bounding sphere, and only those are intersected: a Python
loop over primitives, numpy over rays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from relidar.synthetic.scene import BOX, CYLINDER, ELLIPSOID, KERB, Primitives, ground_class, ground_height

EPS = 1e-6


@dataclass
class Hits:
    """Nearest hit of each ray: distance ``t`` (inf for none), class (-1 for none), world normal, the
    primitive's row (-1 for ground or none), and the world hit point."""

    t: np.ndarray
    cls: np.ndarray
    normal: np.ndarray
    prim: np.ndarray
    point: np.ndarray


class RayGrid(Protocol):
    origin: np.ndarray  # [3] world
    dirs: np.ndarray  # [N,3] world, unit

    def candidates(self, center: np.ndarray, radius: float) -> np.ndarray:
        """Indices of the rays that may meet the sphere (center, radius) in world coordinates."""
        ...


class SphericalGrid:
    """A spinning lidar's rays: ``elevations`` [B] x ``azimuths`` [A] (radians, sensor frame, azimuths
    increasing and evenly spaced over a turn), rotated into the world by ``rotation``."""

    def __init__(self, origin: np.ndarray, rotation: np.ndarray, elevations: np.ndarray, azimuths: np.ndarray) -> None:
        self.origin = np.asarray(origin, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.elevations = np.asarray(elevations, dtype=np.float64)
        self.azimuths = np.asarray(azimuths, dtype=np.float64)
        ce, se = np.cos(self.elevations)[:, None], np.sin(self.elevations)[:, None]
        local = np.stack(
            [ce * np.cos(self.azimuths)[None], ce * np.sin(self.azimuths)[None], np.broadcast_to(se, (len(se), len(self.azimuths)))],
            axis=-1,
        ).reshape(-1, 3)
        self.local_dirs = local
        self.dirs = local @ self.rotation.T
        self._step = 2 * np.pi / len(self.azimuths)

    def candidates(self, center: np.ndarray, radius: float) -> np.ndarray:
        c = (np.asarray(center) - self.origin) @ self.rotation
        dist = float(np.linalg.norm(c))
        n_az = len(self.azimuths)
        if dist <= radius:
            return np.arange(len(self.dirs))
        dxy = float(np.hypot(c[0], c[1]))
        el = np.arctan2(c[2], dxy)
        half_el = np.arcsin(radius / dist)
        rows = np.flatnonzero((self.elevations >= el - half_el) & (self.elevations <= el + half_el))
        if rows.size == 0:
            return rows
        if dxy <= radius:
            cols = np.arange(n_az)
        else:
            half_az = np.arcsin(radius / dxy)
            az = np.arctan2(c[1], c[0])
            k0 = int(np.floor((az - half_az - self.azimuths[0]) / self._step))
            k1 = int(np.ceil((az + half_az - self.azimuths[0]) / self._step))
            cols = np.arange(k0, k1 + 1) % n_az
            cols = np.unique(cols) if k1 - k0 + 1 >= n_az else cols
        return (rows[:, None] * n_az + cols[None, :]).reshape(-1)


class PinholeGrid:
    """One ray per pixel centre of a ``width`` x ``height`` pinhole camera; ``rotation`` is
    R_world_from_optical (optical frame: z forward, x right, y down)."""

    def __init__(self, origin: np.ndarray, rotation: np.ndarray, K: np.ndarray, width: int, height: int) -> None:
        self.origin = np.asarray(origin, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.K = np.asarray(K, dtype=np.float64)
        self.width, self.height = int(width), int(height)
        u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        pix = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
        cam = pix @ np.linalg.inv(self.K).T
        self.z_of_unit = 1.0 / np.linalg.norm(cam, axis=1)  # optical z of each unit ray
        self.local_dirs = cam * self.z_of_unit[:, None]
        self.dirs = self.local_dirs @ self.rotation.T

    def candidates(self, center: np.ndarray, radius: float) -> np.ndarray:
        c = (np.asarray(center) - self.origin) @ self.rotation
        if c[2] + radius <= 0.05:
            return np.zeros(0, dtype=np.int64)
        if c[2] - radius <= 0.05:
            return np.arange(len(self.dirs))
        zs = np.array([c[2] - radius, c[2] + radius])
        xs = (c[0] + np.array([-radius, radius]))[:, None] / zs[None, :]
        ys = (c[1] + np.array([-radius, radius]))[:, None] / zs[None, :]
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        u0, u1 = int(np.floor(fx * xs.min() + cx)), int(np.ceil(fx * xs.max() + cx))
        v0, v1 = int(np.floor(fy * ys.min() + cy)), int(np.ceil(fy * ys.max() + cy))
        u0, u1 = max(u0, 0), min(u1, self.width - 1)
        v0, v1 = max(v0, 0), min(v1, self.height - 1)
        if u0 > u1 or v0 > v1:
            return np.zeros(0, dtype=np.int64)
        return (np.arange(v0, v1 + 1)[:, None] * self.width + np.arange(u0, u1 + 1)[None, :]).reshape(-1)


def _to_local(o: np.ndarray, d: np.ndarray, center: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (o - center) @ R, d @ R, R


def intersect_box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance (inf for a miss) and local normal of rays o + t d (local frame) with an
    axis-aligned box of half-extents ``half`` centred at the origin."""
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / safe
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2).min(axis=1)
    axis = tnear.argmax(axis=1)
    t_in = tnear.max(axis=1)
    hit = (t_in <= tfar) & (t_in > EPS)
    t = np.where(hit, t_in, np.inf)
    n = np.zeros_like(d)
    rows = np.arange(len(d))
    n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


def intersect_cylinder(o: np.ndarray, d: np.ndarray, radius: float, half_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertical capped cylinder centred at the origin (the top cap is kept, the bottom sits on ground)."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - radius**2
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (a > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t_side = np.where(ok, (-b - sq) / np.where(a > 1e-12, 2 * a, 1.0), np.inf)
    z = o[2] + t_side * d[:, 2]
    t_side = np.where((t_side > EPS) & (np.abs(z) <= half_h), t_side, np.inf)
    dz = np.where(np.abs(d[:, 2]) < 1e-12, -1e-12, d[:, 2])
    t_cap = (half_h - o[2]) / dz
    px, py = o[0] + t_cap * d[:, 0], o[1] + t_cap * d[:, 1]
    t_cap = np.where((t_cap > EPS) & (px * px + py * py <= radius**2) & (d[:, 2] < 0), t_cap, np.inf)
    use_cap = t_cap < t_side
    t = np.minimum(t_side, t_cap)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    n = np.stack([p[:, 0], p[:, 1], np.zeros(len(d))], axis=1) / radius
    n[use_cap] = (0.0, 0.0, 1.0)
    return t, n


def intersect_ellipsoid(o: np.ndarray, d: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    os_, ds = o / radii, d / radii
    a = (ds * ds).sum(axis=1)
    b = 2 * (ds @ os_)
    c = float(os_ @ os_) - 1.0
    disc = b * b - 4 * a * c
    ok = disc >= 0
    t = np.where(ok, (-b - np.sqrt(np.where(ok, disc, 0.0))) / (2 * a), np.inf)
    t = np.where(t > EPS, t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    n = p / (radii**2)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return t, n


def intersect_ground(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays against the kerb-level plane where the ground there is raised, else the road plane."""
    down = d[:, 2] < -1e-9
    dz = np.where(down, d[:, 2], -1.0)
    t_kerb = np.where(down, (KERB - o[2]) / dz, np.inf)
    t_road = np.where(down, (0.0 - o[2]) / dz, np.inf)
    p_kerb = o + np.where(np.isfinite(t_kerb), t_kerb, 0.0)[:, None] * d
    cls_kerb = ground_class(p_kerb[:, 0], p_kerb[:, 1])
    raised = (ground_height(cls_kerb) > 0) & down
    t = np.where(raised, t_kerb, t_road)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    cls = np.where(raised, cls_kerb, ground_class(p[:, 0], p[:, 1]))
    return t, np.where(down, cls, -1)


def cast(grid: RayGrid, prims: Primitives, max_range: float) -> Hits:
    """Nearest hit of every ray of ``grid`` within ``max_range``."""
    o, dirs = grid.origin, grid.dirs
    n = len(dirs)
    t, cls = intersect_ground(o, dirs)
    t = np.where(t <= max_range, t, np.inf)
    cls = np.where(np.isfinite(t), cls, -1)
    normal = np.zeros((n, 3))
    normal[:, 2] = 1.0
    prim = np.full(n, -1, dtype=np.int64)
    radii = prims.bounding_radius
    for i in range(len(prims)):
        idx = grid.candidates(prims.center[i], float(radii[i]))
        if idx.size == 0:
            continue
        lo, ld, R = _to_local(o, dirs[idx], prims.center[i], float(prims.yaw[i]))
        kind = prims.kind[i]
        if kind == BOX:
            ti, ni = intersect_box(lo, ld, prims.size[i])
        elif kind == CYLINDER:
            ti, ni = intersect_cylinder(lo, ld, float(prims.size[i, 0]), float(prims.size[i, 2]))
        elif kind == ELLIPSOID:
            ti, ni = intersect_ellipsoid(lo, ld, prims.size[i])
        else:
            raise ValueError(f"primitive {i}: unknown kind {kind}")
        closer = ti < t[idx]
        if not closer.any():
            continue
        j = idx[closer]
        t[j] = ti[closer]
        cls[j] = prims.cls[i]
        normal[j] = ni[closer] @ R.T
        prim[j] = i
    t = np.where(t <= max_range, t, np.inf)
    finite = np.isfinite(t)
    point = o + np.where(finite, t, 0.0)[:, None] * dirs
    return Hits(t=t, cls=np.where(finite, cls, -1), normal=normal, prim=np.where(finite, prim, -1), point=point)
