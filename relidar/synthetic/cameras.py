"""Pinhole cameras on the ego vehicle, rendered by casting one ray per pixel into the scene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, field_validator

from relidar.core.config import StrictModel
from relidar.core.geometry import make_transform, rotation_z
from relidar.synthetic.classes import CLASSES, SKY_ALBEDOS, class_id
from relidar.synthetic.raycast import PinholeGrid, cast
from relidar.synthetic.scene import Primitives, ground_instance
from relidar.synthetic.texture import LANE_MARKING_RGB, WINDOW_RGB, lane_marking, value_noise, windows

# Mounting in base_link: x, y, z (m) and yaw (deg, 0 = looking forward), nuScenes-like surround.
MOUNTS: dict[str, tuple[float, float, float, float]] = {
    "front": (1.7, 0.0, 1.55, 0.0),
    "front_left": (1.6, 0.45, 1.55, 55.0),
    "front_right": (1.6, -0.45, 1.55, -55.0),
    "back_left": (0.6, 0.5, 1.55, 110.0),
    "back_right": (0.6, -0.5, 1.55, -110.0),
    "back": (-0.6, 0.0, 1.55, 180.0),
}
FRONT_THREE = ("front", "front_left", "front_right")

# Optical frame (z forward, x right, y down) expressed in a body frame (x forward, y left, z up).
R_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

# Texture scale (m) per class: fine for asphalt and leaves, coarse for lawn.
TEXTURE_SCALE: dict[str, float] = {"vegetation": 0.12, "terrain": 0.25, "road": 0.08, "sidewalk": 0.1}


class CameraConfig(StrictModel):
    names: tuple[str, ...] = Field(FRONT_THREE, description=f"cameras to render, from {', '.join(MOUNTS)}")
    width: int = Field(480, ge=16, le=4096)
    height: int = Field(270, ge=16, le=4096)
    hfov_deg: float = Field(70.0, gt=10.0, lt=170.0)

    @field_validator("names")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in MOUNTS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; choose from {list(MOUNTS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names repeat: {list(names)}")
        return names

    def intrinsics(self) -> np.ndarray:
        fx = self.width / 2.0 / np.tan(np.deg2rad(self.hfov_deg) / 2.0)
        return np.array([[fx, 0.0, self.width / 2.0], [0.0, fx, self.height / 2.0], [0.0, 0.0, 1.0]])


def T_base_from_optical(name: str) -> np.ndarray:
    """Pose of camera ``name``'s optical frame in base_link."""
    x, y, z, yaw = MOUNTS[name]
    return make_transform(rotation_z(np.deg2rad(yaw)) @ R_BODY_FROM_OPTICAL, (x, y, z))


@dataclass(frozen=True)
class CameraRender:
    """``image`` HxWx3 uint8 RGB; ``classes`` HxW int16 class index (-1: sky); ``depth`` HxW float32
    optical-axis depth in metres (inf: sky); ``instances`` HxW int64 object id (``scene.Primitives.obj``,
    negative for ground tiles, 0 for sky); ``incidence`` HxW float32 |cos| of the angle between the
    viewing ray and the surface normal (0 for sky)."""

    image: np.ndarray
    classes: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    incidence: np.ndarray


def render(
    prims: Primitives,
    T_world_optical: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    sun: np.ndarray,
    rng: np.random.Generator,
    max_range: float = 250.0,
) -> CameraRender:
    grid = PinholeGrid(T_world_optical[:3, 3], T_world_optical[:3, :3], K, width, height)
    hits = cast(grid, prims, max_range)
    hit = hits.prim >= 0
    ground = (hits.prim < 0) & (hits.cls >= 0)
    n = len(hits.t)
    albedo = np.zeros((n, 3))
    albedo[hit] = prims.albedo[hits.prim[hit]]
    base = np.array([c.albedos[0] for c in CLASSES], dtype=np.float64)
    albedo[ground] = base[hits.cls[ground]]
    terrain = hits.cls == class_id("terrain")
    mix = (value_noise(hits.point[terrain] + 100.0, 1.5, salt=11) + 1.0) / 2.0
    albedo[terrain] = np.outer(1 - mix, CLASSES[class_id("terrain")].albedos[0]) + np.outer(mix, CLASSES[class_id("terrain")].albedos[1])
    walk = ground & (hits.cls == class_id("sidewalk"))
    joints = (np.mod(hits.point[:, 0], 0.6) < 0.03) | (np.mod(hits.point[:, 1], 0.6) < 0.03)
    albedo[walk & joints] *= 0.82
    paint = ground & (hits.cls == class_id("road")) & lane_marking(hits.point[:, 0], hits.point[:, 1])
    albedo[paint] = LANE_MARKING_RGB
    building = hits.cls == class_id("building")
    albedo[building & windows(hits.point, hits.normal)] = WINDOW_RGB
    # Texture: each class has its own grain and amplitude.
    amp = np.array([c.texture for c in CLASSES])[np.maximum(hits.cls, 0)]
    scale = np.array([TEXTURE_SCALE.get(c.name, 0.2) for c in CLASSES])[np.maximum(hits.cls, 0)]
    noise = np.zeros(n)
    for s in np.unique(scale[hits.cls >= 0]):
        sel = (scale == s) & (hits.cls >= 0)
        noise[sel] = value_noise(hits.point[sel], float(s), salt=3)
    albedo *= (1.0 + amp * noise)[:, None]
    shade = 0.5 + 0.55 * np.clip(hits.normal @ sun, 0.0, None)
    colour = albedo * shade[:, None]
    # Sky: brighter towards the horizon; distant surfaces fade into it.
    elev = np.clip(grid.dirs[:, 2], 0.0, 1.0)[:, None]
    sky = (1 - elev) * np.array(SKY_ALBEDOS[1]) + elev * np.array(SKY_ALBEDOS[0])
    finite = np.isfinite(hits.t)
    haze = np.where(finite, 1.0 - np.exp(-np.where(finite, hits.t, 0.0) / 300.0), 1.0)[:, None]
    colour = colour * (1 - haze) + sky * haze
    colour += rng.normal(0.0, 2.5, colour.shape)
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(height, width, 3)
    depth = np.where(finite, hits.t * grid.z_of_unit, np.inf).astype(np.float32).reshape(height, width)
    classes = hits.cls.astype(np.int16).reshape(height, width)
    instances = np.zeros(n, dtype=np.int64)
    instances[hit] = prims.obj[hits.prim[hit]]
    instances[ground] = ground_instance(hits.cls[ground], hits.point[ground, 0], hits.point[ground, 1])
    incidence = np.where(finite, np.abs((grid.dirs * hits.normal).sum(axis=1)), 0.0).astype(np.float32)
    return CameraRender(image=image, classes=classes, depth=depth, instances=instances.reshape(height, width),
                        incidence=incidence.reshape(height, width))
