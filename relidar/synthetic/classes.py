"""The synthetic world's classes: names, SemanticKITTI ids, display colours, appearance and reflectivity.

Appearance (``albedos``) is what the camera renders and what the simulated teacher has "learned":
confusable classes share parts of their palettes (road/sidewalk/terrain greys and greens, car/truck
paints, person/bicyclist clothing, pole/sign metal) so the teacher makes the mistakes a real one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relidar.core.viz.palette import class_colour

IGNORE_INDEX = -1
UNLABELED_KITTI_ID = 0


@dataclass(frozen=True)
class SyntheticClass:
    """How one class of the synthetic world looks to the camera and the lidar (the vocabulary's own class
    entry, with prompts' synonyms and colour only, is ``relidar.core.vocabulary.ClassSpec``)."""

    name: str
    kitti_id: int
    colour: tuple[int, int, int]  # display colour: the one palette's (relidar.core.viz.palette)
    albedos: tuple[tuple[int, int, int], ...]  # base RGB colours an object of the class is painted with
    texture: float  # amplitude of the procedural texture, in albedo units
    reflectivity: float  # lidar return strength at normal incidence, 0..1
    group: str  # classes of one group have correlated text embeddings
    synonyms: tuple[str, ...]  # words a prompt may use for the class (the name itself first)


CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("car", 10, class_colour("car"),
              ((170, 30, 30), (30, 50, 140), (25, 25, 28), (160, 168, 184), (225, 225, 220), (95, 28, 40)),
              0.04, 0.55, "vehicle", ("car", "automobile", "sedan", "passenger car")),
    SyntheticClass("truck", 18, class_colour("truck"),
              ((230, 230, 225), (215, 120, 30), (200, 175, 40), (120, 150, 185)),
              0.05, 0.5, "vehicle", ("truck", "lorry", "delivery truck", "van")),
    SyntheticClass("person", 30, class_colour("person"),
              ((40, 50, 90), (120, 30, 35), (35, 35, 38), (105, 90, 72), (180, 140, 110)),
              0.06, 0.35, "human", ("person", "pedestrian", "people", "man", "woman", "human")),
    SyntheticClass("bicyclist", 31, class_colour("bicyclist"),
              ((40, 50, 90), (210, 200, 40), (200, 90, 30), (35, 35, 38)),
              0.06, 0.4, "human", ("bicyclist", "cyclist", "person riding a bicycle", "bicycle", "bike")),
    SyntheticClass("road", 40, class_colour("road"),
              ((78, 78, 82),),
              0.05, 0.12, "ground", ("road", "street", "asphalt", "driveable surface")),
    SyntheticClass("sidewalk", 48, class_colour("sidewalk"),
              ((160, 150, 136),),
              0.05, 0.3, "ground", ("sidewalk", "pavement", "footpath", "walkway")),
    SyntheticClass("building", 50, class_colour("building"),
              ((195, 170, 135), (150, 75, 55), (215, 200, 150), (135, 95, 80)),
              0.06, 0.35, "structure", ("building", "house", "facade", "wall")),
    SyntheticClass("vegetation", 70, class_colour("vegetation"),
              ((45, 95, 35), (70, 110, 40), (35, 75, 45)),
              0.18, 0.65, "nature", ("vegetation", "tree", "bush", "hedge", "foliage")),
    SyntheticClass("terrain", 72, class_colour("terrain"),
              ((105, 125, 55), (120, 118, 65)),
              0.12, 0.5, "ground", ("terrain", "grass", "lawn", "soil", "dirt")),
    SyntheticClass("pole", 80, class_colour("pole"),
              ((115, 118, 122), (60, 62, 65)),
              0.03, 0.45, "pole", ("pole", "post", "lamppost", "street light")),
    SyntheticClass("traffic-sign", 81, class_colour("traffic-sign"),
              ((200, 30, 30), (30, 70, 170), (230, 230, 230), (220, 180, 30)),
              0.03, 0.9, "pole", ("traffic sign", "road sign", "sign", "stop sign")),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CLASSES)}
PALETTE: np.ndarray = np.array([c.colour for c in CLASSES], dtype=np.uint8)

# The teacher also knows sky (it is no lidar class, so camera pixels of sky carry IGNORE_INDEX).
SKY_ALBEDOS: tuple[tuple[int, int, int], ...] = ((150, 185, 225), (185, 205, 230))


def class_id(name: str) -> int:
    return CLASS_INDEX[name]


def to_kitti_ids(labels: np.ndarray) -> np.ndarray:
    """Class indices (IGNORE_INDEX for none) -> raw SemanticKITTI label ids, uint32."""
    lut = np.array([c.kitti_id for c in CLASSES] + [UNLABELED_KITTI_ID], dtype=np.uint32)
    labels = np.asarray(labels)
    return lut[np.where(labels < 0, len(CLASSES), labels)]


def from_kitti_ids(raw: np.ndarray) -> np.ndarray:
    """Raw SemanticKITTI label words (upper 16 bits = instance, ignored) -> class indices, IGNORE_INDEX
    for ids this world does not use."""
    semantic = np.asarray(raw, dtype=np.uint32) & 0xFFFF
    lut = np.full(65536, IGNORE_INDEX, dtype=np.int64)
    for i, c in enumerate(CLASSES):
        lut[c.kitti_id] = i
    return lut[semantic]
