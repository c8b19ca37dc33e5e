"""The synthetic world: an ego vehicle drives down a procedural street; each step is one Frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from pydantic import Field

from relidar.core.config import StrictModel
from relidar.core.frame import Camera, Frame
from relidar.core.geometry import invert_transform, make_transform, rotation_z
from relidar.core.seeds import Purpose, stream
from relidar.synthetic.cameras import CameraConfig, CameraRender, T_base_from_optical, render
from relidar.synthetic.classes import CLASS_NAMES, IGNORE_INDEX
from relidar.synthetic.lidar import HDL64E, LidarConfig, scan
from relidar.synthetic.scene import EGO_LANE_Y, Scene
from relidar.synthetic.truth import ViewTruth

LIDAR_MOUNT = (1.0, 0.0, 1.8)  # lidar origin in base_link, metres
# The ego vehicle's roof and hood in base_link (min corner, max corner), metres: the lidar's steep beams
# end on them, so the nearest ground ring lies several metres out, as on a real car.
EGO_BODY: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, -0.75, 0.2), (1.9, 0.75, 1.5)),  # the roof, lidar about 0.3 m above it
    ((-0.9, -0.95, 0.2), (3.6, 0.95, 1.0)),  # body: trunk, doors and hood
)


class SynthConfig(StrictModel):
    seed: int = Field(0, ge=0, description="everything in the world follows from it")
    rate_hz: float = Field(10.0, gt=0.0, description="lidar sweeps per second")
    speed_mps: float = Field(8.0, ge=0.0, description="ego speed along the street")
    start_x: float = Field(0.0, description="where the ego starts along the street (m)")
    lidar: LidarConfig = LidarConfig()
    cameras: CameraConfig = CameraConfig()


@dataclass(frozen=True)
class CameraTruth(ViewTruth):
    """What the renderer knows about one camera image and a real dataset would not (the masks of
    ``ViewTruth``; ``classes`` holds IGNORE_INDEX for sky), with the camera's name."""

    name: str = ""


@dataclass(frozen=True)
class SyntheticSample:
    """One step of the world: the Frame every reader yields, plus the synthetic-only truth."""

    frame: Frame
    ring: np.ndarray  # [N] uint16 beam of each point (0 = lowest)
    T_world_base: np.ndarray  # 4x4 pose of base_link
    T_base_lidar: np.ndarray
    T_base_optical: dict[str, np.ndarray]
    camera_truth: list[CameraTruth]
    stamp_ns: int


def sun_direction(seed: int) -> np.ndarray:
    rng = stream(seed, Purpose.SUN)
    az = rng.uniform(-np.pi, np.pi)
    el = np.deg2rad(rng.uniform(35.0, 65.0))
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


class SyntheticWorld:
    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.scene = Scene(config.seed)
        self.sun = sun_direction(config.seed)
        self.T_base_lidar = make_transform(np.eye(3), LIDAR_MOUNT)
        mount = np.asarray(LIDAR_MOUNT)
        self.ego_body_in_lidar = [(np.asarray(lo) - mount, np.asarray(hi) - mount) for lo, hi in EGO_BODY]
        self.T_base_optical = {name: T_base_from_optical(name) for name in config.cameras.names}
        self.K = config.cameras.intrinsics()

    def ego_pose(self, index: int) -> np.ndarray:
        """base_link in the world at step ``index``: along the ego lane with a gentle lane-keeping sway."""
        cfg = self.config
        x = cfg.start_x + index * cfg.speed_mps / cfg.rate_hz
        phase = 2 * np.pi * x / 70.0
        y = EGO_LANE_Y + 0.25 * np.sin(phase)
        yaw = np.arctan2(0.25 * 2 * np.pi / 70.0 * np.cos(phase), 1.0)
        return make_transform(rotation_z(yaw), (x, y, 0.0))

    def sample(self, index: int) -> SyntheticSample:
        cfg = self.config
        rng = stream(cfg.seed, Purpose.SWEEP, index)
        T_world_base = self.ego_pose(index)
        T_world_lidar = T_world_base @ self.T_base_lidar
        reach = max(cfg.lidar.max_range, 120.0)
        prims = self.scene.primitives_near(T_world_lidar[:3, 3], reach)
        sweep = scan(prims.select(np.flatnonzero(np.linalg.norm(prims.center[:, :2] - T_world_lidar[:2, 3], axis=1)
                                                 - prims.bounding_radius < cfg.lidar.max_range)),
                     T_world_lidar, cfg.lidar, rng, blocked=self.ego_body_in_lidar)
        cameras: list[Camera] = []
        truth: list[CameraTruth] = []
        for name in cfg.cameras.names:
            T_base_opt = self.T_base_optical[name]
            out: CameraRender = render(prims, T_world_base @ T_base_opt, self.K, cfg.cameras.width, cfg.cameras.height,
                                       self.sun, rng)
            T_cam_from_lidar = invert_transform(T_base_opt) @ self.T_base_lidar
            cameras.append(Camera(name=name, image=out.image, K=self.K.copy(), T_cam_from_lidar=T_cam_from_lidar))
            truth.append(CameraTruth(name=name, classes=out.classes, depth=out.depth, instances=out.instances,
                                     incidence=out.incidence))
        stamp_ns = int(round(index * 1e9 / cfg.rate_hz))
        frame = Frame(
            frame_id=f"synth_{cfg.seed:04d}_{index:06d}",
            points=sweep.points,
            cameras=cameras,
            labels=sweep.labels,
            class_names=CLASS_NAMES,
            ignore_index=IGNORE_INDEX,
            timestamp=stamp_ns * 1e-9,
        )
        return SyntheticSample(frame=frame, ring=sweep.ring, T_world_base=T_world_base, T_base_lidar=self.T_base_lidar,
                               T_base_optical=dict(self.T_base_optical), camera_truth=truth, stamp_ns=stamp_ns)

    def samples(self, num_frames: int, start: int = 0) -> Iterator[SyntheticSample]:
        for i in range(start, start + num_frames):
            yield self.sample(i)

    def frames(self, num_frames: int, start: int = 0) -> Iterator[Frame]:
        for s in self.samples(num_frames, start):
            yield s.frame


def lidar_sweep(seed: int = 0, index: int = 0, lidar: LidarConfig = HDL64E) -> Frame:
    """Sweep ``index`` of world ``seed``'s street by ``lidar`` alone (no cameras rendered): a realistic labelled
    scan, the same for the same arguments, for benchmarks and tests that have no dataset. The default lidar is
    KITTI's HDL-64E (about 86,000 returns a sweep, labels in ``frame.labels``)."""
    return SyntheticWorld(SynthConfig(seed=seed, lidar=lidar, cameras=CameraConfig(names=()))).sample(index).frame
