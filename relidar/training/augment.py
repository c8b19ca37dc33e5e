"""Geometric augmentation of a lidar scan: rotation about z, flips, uniform scaling.

Point-pixel pairs refer to points by index, and these transforms move points without reordering,
adding or removing any, so every pair (and every label) still belongs to the same physical point.
The teacher's features describe what the camera saw and do not change.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from relidar.core.config import StrictModel


class AugmentConfig(StrictModel):
    enabled: bool = True
    rotate: bool = Field(True, description="uniform rotation about the lidar's z axis")
    flip_x: bool = Field(True, description="mirror x -> -x with probability 1/2")
    flip_y: bool = Field(True, description="mirror y -> -y with probability 1/2")
    scale: tuple[float, float] = Field((0.95, 1.05), description="uniform scale factor range")

    @model_validator(mode="after")
    def _check(self) -> "AugmentConfig":
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale {self.scale} must be (low, high) with 0 < low <= high")
        return self


def random_transform(config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 linear map (rotation about z, flips, scale) drawn from ``config``; identity when disabled."""
    if not config.enabled:
        return np.eye(3)
    m = np.eye(3)
    if config.rotate:
        a = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(a), np.sin(a)
        m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ m
    flips = np.ones(3)
    if config.flip_x and rng.random() < 0.5:
        flips[0] = -1.0
    if config.flip_y and rng.random() < 0.5:
        flips[1] = -1.0
    m = np.diag(flips) @ m
    return rng.uniform(*config.scale) * m


def augment_points(points: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A transformed copy of ``points`` [N, >=3]: xyz mapped, other columns (intensity) kept, order kept."""
    out = np.array(points, dtype=np.float32, copy=True)
    m = random_transform(config, rng)
    out[:, :3] = (out[:, :3].astype(np.float64) @ m.T).astype(np.float32)
    return out
