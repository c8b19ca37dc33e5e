"""The one class palette: every picture, PLY, bag, viewer and the node colour a class the same way.

Colours are looked up by class *name*, so the synthetic world, SemanticKITTI and nuScenes class lists,
vocabularies built from them and the overlay all agree. They start from the SemanticKITTI and nuScenes
devkit colours people know, changed where two classes of one list were hard to tell apart (SemanticKITTI
draws person (255, 30, 30) and traffic-sign (255, 0, 0) both red: CIEDE2000 distance 2.9). Within each
of the three class lists, and against the unknown grey and the BEV background, every pair is at least
17 CIEDE2000 apart (``tests/core/test_palette.py`` checks it with scikit-image's implementation). A class
name the table lacks gets a stable colour hashed from its name.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

# Points with no class (outside the crop box or the node's range gate, below its score threshold).
UNKNOWN_COLOUR: tuple[int, int, int] = (128, 128, 128)
UNKNOWN_NAME = "unknown"
# Dark background of bird's-eye views: class colours must stand out against it too.
BEV_BACKGROUND: tuple[int, int, int] = (18, 18, 22)

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    # SemanticKITTI's 19 classes (also the synthetic world's names)
    "car": (60, 120, 255), "bicycle": (60, 220, 200), "motorcycle": (20, 40, 110), "truck": (120, 60, 220),
    "other-vehicle": (0, 128, 128), "person": (230, 0, 0), "bicyclist": (0, 159, 223), "motorcyclist": (120, 0, 40),
    "road": (255, 0, 255), "parking": (64, 223, 255), "sidewalk": (100, 0, 100), "other-ground": (170, 90, 150),
    "building": (255, 170, 0), "fence": (180, 120, 90), "vegetation": (0, 140, 0), "trunk": (120, 70, 20),
    "terrain": (150, 240, 80), "pole": (220, 220, 255), "traffic-sign": (255, 255, 0),
    # nuScenes lidarseg's 16 classes (names it shares with the list above keep their colour's meaning)
    "barrier": (200, 200, 200), "bus": (0, 159, 223), "construction_vehicle": (160, 110, 40), "pedestrian": (230, 0, 0),
    "traffic_cone": (0, 128, 128), "trailer": (255, 150, 150), "driveable_surface": (255, 0, 255),
    "other_flat": (170, 90, 150), "manmade": (255, 170, 0),
}  # fmt: skip


def class_colour(name: str) -> tuple[int, int, int]:
    """The palette's colour of a class name; a stable, fairly saturated hashed colour for names it lacks."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    h = hashlib.blake2b(name.encode(), digest_size=3).digest()
    return tuple(int(60 + (b * 195) // 255) for b in h)  # type: ignore[return-value]


def palette_for(class_names: Sequence[str]) -> np.ndarray:
    """[C,3] uint8 colours of these classes, in order."""
    return np.array([class_colour(n) for n in class_names], dtype=np.uint8).reshape(-1, 3)


def label_colours(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """[N,3] uint8 colours of class indices; any label outside ``0..C-1`` (unknown) is :data:`UNKNOWN_COLOUR`."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    labels = np.asarray(labels)
    c = len(palette)
    # one gather from the palette with the unknown colour appended as row C (a boolean-mask assignment
    # took 4.8 ms on a 115k-point scan, this 0.4 ms: the node colours every scan it publishes)
    rows = np.where((labels >= 0) & (labels < c), labels, c)
    return np.concatenate([palette, np.asarray([UNKNOWN_COLOUR], dtype=np.uint8)])[rows]


def score_colours(scores: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """[N,3] uint8 colours of scores in 0..1 (the colour bar of score pictures uses the same map)."""
    from matplotlib import colormaps

    t = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, 1.0)
    return (colormaps[cmap](t)[:, :3] * 255).astype(np.uint8)
