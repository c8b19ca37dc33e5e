"""Procedural street scenes, generated block by block so any stretch of street is the same for a seed.

The street runs along world +x. Ground is analytic (road at z=0, sidewalk and terrain on a kerb at
``KERB`` m, cross streets every few blocks); everything standing on it is a primitive: an oriented box
(yaw about z), a vertical capped cylinder, or an ellipsoid. A car is a body box plus a cabin box, a
pedestrian an ellipsoid plus a head, a tree a trunk cylinder plus a crown ellipsoid.

Every primitive carries the id of the object it belongs to (``obj``): the same car keeps its id in every
frame, so a teacher can give an object a persistent appearance (``relidar.synthetic.teacher``).
Ids are positive and unique per seed; ground tiles get negative ids (``ground_instance``); 0 is sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relidar.core.seeds import Purpose, stream
from relidar.synthetic.classes import CLASSES, class_id

BOX, CYLINDER, ELLIPSOID = 0, 1, 2

ROAD_HALF_WIDTH = 5.1  # two 3.1 m lanes plus a 2.0 m parking strip on each side
LANE_WIDTH = 3.1
SIDEWALK_WIDTH = 3.5
VERGE_WIDTH = 2.0  # a grass strip with street trees between the sidewalk and the lots
KERB = 0.15
BLOCK_LENGTH = 50.0
CROSS_STREET_EVERY = 3  # block k has a cross street at its centre when k % 3 == 1
EGO_LANE_Y = -LANE_WIDTH / 2  # right-hand traffic, driving +x: the ego lane is at negative y (REP 103: y left)


@dataclass(frozen=True)
class Primitives:
    """Every standing object of a stretch of street, one row per primitive.

    ``size`` is half-extents (box), (radius, radius, half-height) (cylinder) or radii (ellipsoid);
    ``albedo`` is the object's base colour (RGB 0..255) and ``reflectivity`` its lidar return strength.
    """

    kind: np.ndarray  # [M] int8
    center: np.ndarray  # [M,3]
    size: np.ndarray  # [M,3]
    yaw: np.ndarray  # [M]
    cls: np.ndarray  # [M] int64
    albedo: np.ndarray  # [M,3] float32
    reflectivity: np.ndarray  # [M] float32
    obj: np.ndarray  # [M] int64 object id (> 0), shared by an object's primitives

    @property
    def bounding_radius(self) -> np.ndarray:
        r = np.linalg.norm(self.size, axis=1)
        return np.where(self.kind == ELLIPSOID, self.size.max(axis=1), r)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def select(self, index: np.ndarray) -> "Primitives":
        return Primitives(*(getattr(self, f)[index] for f in FIELDS))


FIELDS = ("kind", "center", "size", "yaw", "cls", "albedo", "reflectivity", "obj")
GROUND_TILE = 10.0  # metres: the ground is cut into tiles, each one "instance" of its class


def object_id(block: int, k: int) -> int:
    """Id of the k-th object of block ``block`` (blocks may be negative): unique, positive, stable."""
    return ((int(block) + (1 << 30)) << 20) | (int(k) + 1)


def ground_instance(cls: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Negative instance ids of ground points: one per (class, GROUND_TILE x GROUND_TILE tile)."""
    tx = np.floor(np.asarray(x) / GROUND_TILE).astype(np.int64) + (1 << 20)
    ty = np.floor(np.asarray(y) / GROUND_TILE).astype(np.int64) + (1 << 10)
    return -(((np.asarray(cls, dtype=np.int64) + 1) << 40) | (tx << 12) | ty)


def cross_street_center(x: np.ndarray) -> np.ndarray:
    """x of the cross street in the block containing ``x``, NaN where that block has none."""
    block = np.floor(np.asarray(x) / BLOCK_LENGTH)
    has = np.mod(block, CROSS_STREET_EVERY) == 1
    return np.where(has, (block + 0.5) * BLOCK_LENGTH, np.nan)


def ground_class(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class index of the ground at world (x, y)."""
    ay = np.abs(y)
    with np.errstate(invalid="ignore"):
        dx = np.abs(x - cross_street_center(x))
        near_cross = np.nan_to_num(dx, nan=np.inf)
    road = (ay < ROAD_HALF_WIDTH) | (near_cross < ROAD_HALF_WIDTH)
    crossing = near_cross < ROAD_HALF_WIDTH + SIDEWALK_WIDTH
    walk = ay < ROAD_HALF_WIDTH + SIDEWALK_WIDTH
    out = np.full(np.shape(x), class_id("terrain"), dtype=np.int64)
    out[walk | crossing] = class_id("sidewalk")
    out[road] = class_id("road")
    return out


def ground_height(cls: np.ndarray) -> np.ndarray:
    return np.where(cls == class_id("road"), 0.0, KERB)


class _Builder:
    def __init__(self, rng: np.random.Generator, block: int) -> None:
        self.rng = rng
        self.block = block
        self.rows: list[tuple] = []
        self._objects = 0
        self._obj = object_id(block, 0)

    def new_object(self) -> None:
        """Primitives added from now on belong to a new object."""
        self._objects += 1
        self._obj = object_id(self.block, self._objects)

    def paint(self, name: str, jitter: float = 0.08) -> np.ndarray:
        palette = CLASSES[class_id(name)].albedos
        base = np.array(palette[self.rng.integers(len(palette))], dtype=np.float64)
        return np.clip(base * (1.0 + self.rng.uniform(-jitter, jitter, 3)), 0, 255)

    def add(self, kind: int, name: str, center, size, yaw: float, albedo, reflectivity: float | None = None) -> None:
        refl = CLASSES[class_id(name)].reflectivity if reflectivity is None else reflectivity
        refl *= float(self.rng.uniform(0.85, 1.15))
        self.rows.append((kind, center, size, yaw, class_id(name), albedo, refl, self._obj))

    def car(self, x: float, y: float, yaw: float) -> None:
        self.new_object()
        rng = self.rng
        L, W, H = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.65)
        paint = self.paint("car")
        c, s = np.cos(yaw), np.sin(yaw)
        body_h = H * 0.55
        self.add(BOX, "car", (x, y, 0.2 + body_h / 2), (L / 2, W / 2, body_h / 2), yaw, paint)
        glass = 0.6 * paint + 0.4 * np.array([45.0, 52.0, 60.0])
        cab_l = L * rng.uniform(0.45, 0.55)
        off = -0.08 * L
        self.add(BOX, "car", (x + c * off, y + s * off, 0.2 + body_h + (H - 0.2 - body_h) / 2),
                 (cab_l / 2, W / 2 * 0.92, (H - 0.2 - body_h) / 2), yaw, glass)

    def truck(self, x: float, y: float, yaw: float) -> None:
        self.new_object()
        rng = self.rng
        L, W, H = rng.uniform(6.0, 10.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.6)
        c, s = np.cos(yaw), np.sin(yaw)
        cab_l = 2.0
        cargo_l = L - cab_l - 0.2
        cab_off = L / 2 - cab_l / 2
        cargo_off = -L / 2 + cargo_l / 2
        self.add(BOX, "truck", (x + c * cab_off, y + s * cab_off, 0.35 + 2.4 / 2), (cab_l / 2, W / 2, 1.2), yaw,
                 self.paint("truck"))
        self.add(BOX, "truck", (x + c * cargo_off, y + s * cargo_off, 0.5 + (H - 0.5) / 2),
                 (cargo_l / 2, W / 2, (H - 0.5) / 2), yaw, self.paint("truck"))

    def person(self, x: float, y: float, z0: float, name: str = "person", height: float | None = None) -> None:
        self.new_object()
        h = self.rng.uniform(1.55, 1.92) if height is None else height
        yaw = self.rng.uniform(-np.pi, np.pi)
        self.add(ELLIPSOID, name, (x, y, z0 + 0.44 * h), (0.24, 0.16, 0.44 * h), yaw, self.paint(name))
        skin = np.array([180.0, 140.0, 110.0]) * self.rng.uniform(0.7, 1.1)
        self.add(ELLIPSOID, name, (x, y, z0 + h - 0.11), (0.1, 0.1, 0.12), 0.0, np.clip(skin, 0, 255))

    def bicyclist(self, x: float, y: float, yaw: float) -> None:
        self.new_object()
        self.add(BOX, "bicyclist", (x, y, 0.55), (0.85, 0.06, 0.4), yaw, self.paint("bicyclist") * 0.6)
        h = self.rng.uniform(1.6, 1.85)
        self.add(ELLIPSOID, "bicyclist", (x, y, 0.75 + 0.3 * h), (0.3, 0.2, 0.28 * h), yaw, self.paint("bicyclist"))
        self.add(ELLIPSOID, "bicyclist", (x, y, 0.75 + 0.68 * h), (0.11, 0.11, 0.13), 0.0, self.paint("bicyclist"))

    def tree(self, x: float, y: float, z0: float, scale: float = 1.0) -> None:
        self.new_object()
        rng = self.rng
        trunk_h = rng.uniform(1.8, 3.2) * scale
        r_trunk = rng.uniform(0.12, 0.25) * scale
        self.add(CYLINDER, "vegetation", (x, y, z0 + trunk_h / 2), (r_trunk, r_trunk, trunk_h / 2), 0.0,
                 np.array([95.0, 75.0, 55.0]) * rng.uniform(0.8, 1.1))
        rx, rz = rng.uniform(1.4, 3.0) * scale, rng.uniform(1.5, 3.2) * scale
        self.add(ELLIPSOID, "vegetation", (x, y, z0 + trunk_h + 0.7 * rz), (rx, rx * rng.uniform(0.8, 1.2), rz),
                 rng.uniform(-np.pi, np.pi), self.paint("vegetation"))

    def bush(self, x: float, y: float, z0: float) -> None:
        self.new_object()
        r = self.rng.uniform(0.5, 1.3)
        self.add(ELLIPSOID, "vegetation", (x, y, z0 + 0.5 * r), (r * self.rng.uniform(1.0, 2.5), r, r * 0.8),
                 self.rng.uniform(-np.pi, np.pi), self.paint("vegetation"))

    def hedge(self, x0: float, x1: float, y: float, z0: float) -> None:
        self.new_object()
        h = self.rng.uniform(1.0, 1.9)
        self.add(BOX, "vegetation", ((x0 + x1) / 2, y, z0 + h / 2), ((x1 - x0) / 2, self.rng.uniform(0.35, 0.6), h / 2),
                 0.0, self.paint("vegetation"))

    def pole(self, x: float, y: float, height: float) -> None:
        self.new_object()
        r = self.rng.uniform(0.08, 0.14)
        self.add(CYLINDER, "pole", (x, y, KERB + height / 2), (r, r, height / 2), 0.0, self.paint("pole"))

    def sign(self, x: float, y: float, facing: float) -> None:
        self.new_object()
        h = self.rng.uniform(2.2, 3.0)
        self.add(CYLINDER, "pole", (x, y, KERB + h / 2), (0.045, 0.045, h / 2), 0.0, self.paint("pole"))
        size = self.rng.uniform(0.3, 0.45)
        self.new_object()  # the panel is an object of its own class
        self.add(BOX, "traffic-sign", (x, y, KERB + h + size * 0.9), (0.03, size, size), facing,
                 self.paint("traffic-sign"))

    def build(self) -> Primitives:
        if not self.rows:
            empty = np.zeros((0, 3))
            return Primitives(np.zeros(0, np.int8), empty, empty, np.zeros(0), np.zeros(0, np.int64),
                              empty.astype(np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        kind, center, size, yaw, cls, albedo, refl, obj = zip(*self.rows)
        return Primitives(
            kind=np.array(kind, dtype=np.int8),
            center=np.array(center, dtype=np.float64),
            size=np.array(size, dtype=np.float64),
            yaw=np.array(yaw, dtype=np.float64),
            cls=np.array(cls, dtype=np.int64),
            albedo=np.array(albedo, dtype=np.float32),
            reflectivity=np.clip(np.array(refl, dtype=np.float32), 0.02, 1.0),
            obj=np.array(obj, dtype=np.int64),
        )


def _free(x0: float, x1: float, block: int) -> bool:
    """True when [x0, x1] stays clear of the block's cross street (and its sidewalks)."""
    if block % CROSS_STREET_EVERY != 1:
        return True
    xc = (block + 0.5) * BLOCK_LENGTH
    margin = ROAD_HALF_WIDTH + SIDEWALK_WIDTH
    return x1 < xc - margin or x0 > xc + margin


def generate_block(seed: int, block: int) -> Primitives:
    """The objects of block ``block`` (x in [block*L, (block+1)*L)) for scene seed ``seed``."""
    rng = stream(seed, Purpose.BLOCK, block & 0xFFFFFFFF)
    b = _Builder(rng, block)
    x_start = block * BLOCK_LENGTH
    x_end = x_start + BLOCK_LENGTH
    kerb_y = ROAD_HALF_WIDTH
    verge_y = ROAD_HALF_WIDTH + SIDEWALK_WIDTH
    lot_y = verge_y + VERGE_WIDTH
    for side in (-1.0, 1.0):
        # Lots behind the sidewalk: buildings with front gardens and hedges, and parks. The shares follow
        # real suburban driving data, where vegetation is the largest class (relidar.synthetic.calibration_bands).
        x = x_start + rng.uniform(0.0, 3.0)
        while x < x_end - 4.0:
            width = min(rng.uniform(9.0, 26.0), x_end - x)
            if not _free(x, x + width, block):
                x += width + 1.0
                continue
            if rng.random() < 0.55:
                setback = rng.uniform(1.0, 7.0)
                depth = rng.uniform(8.0, 16.0)
                height = rng.uniform(6.0, 20.0)
                y_c = side * (lot_y + setback + depth / 2)
                b.new_object()
                b.add(BOX, "building", (x + width / 2, y_c, height / 2), (width / 2 - 0.3, depth / 2, height / 2), 0.0,
                      b.paint("building", 0.1))
                if rng.random() < 0.6:
                    b.hedge(x + 0.5, x + width - 0.5, side * (lot_y + 0.5), KERB)
                if setback > 2.5:
                    for _ in range(rng.integers(1, 4)):
                        b.bush(x + rng.uniform(1.0, width - 1.0), side * (lot_y + rng.uniform(1.2, setback - 0.5)), KERB)
                    if rng.random() < 0.5:
                        b.tree(x + rng.uniform(1.0, width - 1.0), side * (lot_y + setback / 2), KERB, scale=0.9)
            else:
                if rng.random() < 0.4:
                    b.hedge(x + 0.5, x + width - 0.5, side * (lot_y + 0.5), KERB)
                for _ in range(rng.integers(3, 8)):
                    b.tree(x + rng.uniform(1.0, width - 1.0), side * (lot_y + rng.uniform(2.0, 16.0)), KERB)
                for _ in range(rng.integers(2, 6)):
                    b.bush(x + rng.uniform(1.0, width - 1.0), side * (lot_y + rng.uniform(1.0, 8.0)), KERB)
            x += width + rng.uniform(0.5, 4.0)
        # Signs at the kerb; lamp poles and street trees in the verge.
        for xp in np.arange(x_start + rng.uniform(2, 12), x_end, rng.uniform(30.0, 40.0)):
            if _free(xp - 1, xp + 1, block):
                b.pole(xp, side * (verge_y + 0.4), rng.uniform(5.5, 8.0))
        for _ in range(rng.poisson(1.0)):
            xs = rng.uniform(x_start, x_end)
            if _free(xs - 1, xs + 1, block):
                b.sign(xs, side * (kerb_y + 0.4), 0.0)
        for xt in np.arange(x_start + rng.uniform(3, 9), x_end, 9.0):
            if rng.random() < 0.7 and _free(xt - 2, xt + 2, block):
                b.tree(xt, side * (verge_y + VERGE_WIDTH / 2), KERB, scale=0.9)
        for _ in range(rng.poisson(0.8)):
            xs = rng.uniform(x_start, x_end)
            if _free(xs - 1, xs + 1, block):
                b.person(xs, side * (kerb_y + rng.uniform(0.8, SIDEWALK_WIDTH - 0.4)), KERB)
        # Parked vehicles along the kerb (right side faces +x, left side faces -x).
        xs = x_start + rng.uniform(0.0, 4.0)
        while xs < x_end - 5.0:
            is_truck = rng.random() < 0.02
            slot = 11.0 if is_truck else 6.0
            if rng.random() < 0.2 and _free(xs, xs + slot, block):
                yaw = (0.0 if side < 0 else np.pi) + rng.normal(0.0, 0.04)
                y = side * (kerb_y - 1.05 - rng.uniform(0.0, 0.15))
                (b.truck if is_truck else b.car)(xs + slot / 2, y, yaw)
            xs += slot + rng.uniform(0.3, 2.0)
        if rng.random() < 0.15:
            xb = rng.uniform(x_start, x_end)
            b.bicyclist(xb, side * (LANE_WIDTH + 0.5), (0.0 if side < 0 else np.pi) + rng.normal(0.0, 0.1))
    # Oncoming traffic (the ego lane is kept clear: the ego vehicle drives through it).
    xs = x_start + rng.uniform(0.0, 10.0)
    while xs < x_end:
        if rng.random() < 0.25:
            if rng.random() < 0.03:
                b.truck(xs, LANE_WIDTH / 2 + rng.normal(0, 0.15), np.pi + rng.normal(0, 0.03))
            else:
                b.car(xs, LANE_WIDTH / 2 + rng.normal(0, 0.15), np.pi + rng.normal(0, 0.03))
        xs += rng.uniform(12.0, 30.0)
    if block % CROSS_STREET_EVERY == 1:
        xc = x_start + BLOCK_LENGTH / 2
        for _ in range(rng.poisson(1.2)):  # people on the crossing
            b.person(xc + rng.uniform(-ROAD_HALF_WIDTH - 2.5, -ROAD_HALF_WIDTH), rng.uniform(3.0, 5.5) * rng.choice([-1, 1]), 0.0)
        if rng.random() < 0.6:  # a car waiting in the cross street
            b.car(xc + rng.choice([-1.0, 1.0]) * LANE_WIDTH / 2, rng.choice([-1, 1]) * rng.uniform(12.0, 25.0),
                  np.pi / 2 * rng.choice([-1, 1]))
    return b.build()


def concat(parts: list[Primitives]) -> Primitives:
    return Primitives(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


class Scene:
    """The street of one seed; blocks are generated on demand and kept."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._blocks: dict[int, Primitives] = {}

    def block(self, k: int) -> Primitives:
        if k not in self._blocks:
            self._blocks[k] = generate_block(self.seed, k)
        return self._blocks[k]

    def primitives_near(self, xy: np.ndarray, radius: float) -> Primitives:
        """Primitives whose bounding sphere comes within ``radius`` of world point ``xy`` (horizontally)."""
        k0 = int(np.floor((xy[0] - radius) / BLOCK_LENGTH))
        k1 = int(np.floor((xy[0] + radius) / BLOCK_LENGTH))
        prims = concat([self.block(k) for k in range(k0, k1 + 1)])
        d = np.linalg.norm(prims.center[:, :2] - np.asarray(xy)[None, :2], axis=1)
        return prims.select(np.flatnonzero(d - prims.bounding_radius < radius))
