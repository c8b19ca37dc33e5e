"""One palette: every class list's colours are far apart (CIEDE2000, scikit-image's implementation as
the reference), from the unknown grey and from the BEV background; the class lists use it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from relidar.core.viz.palette import BEV_BACKGROUND, UNKNOWN_COLOUR, class_colour, label_colours, palette_for
from relidar.core.vocabulary import NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES
from relidar.synthetic.classes import CLASSES

LISTS = {
    "semantickitti": [c.name for c in SEMANTIC_KITTI_CLASSES],
    "nuscenes": [c.name for c in NUSCENES_CLASSES],
    "synthetic": [c.name for c in CLASSES],
}


@pytest.mark.parametrize("which", sorted(LISTS))
def test_each_class_list_is_visibly_distinct(which: str) -> None:
    from skimage.color import deltaE_ciede2000, rgb2lab

    names = LISTS[which] + ["(unknown)", "(background)"]
    rgb = np.vstack([palette_for(LISTS[which]), [UNKNOWN_COLOUR, BEV_BACKGROUND]]).astype(float)
    lab = rgb2lab(rgb[None] / 255.0)[0]
    closest = min((float(deltaE_ciede2000(lab[i], lab[j])), names[i], names[j])
                  for i, j in itertools.combinations(range(len(names)), 2) if j < len(names) - 2 or i < len(names) - 2)
    assert closest[0] >= 17.0, closest


def test_person_and_traffic_sign_differ_and_lists_use_the_palette() -> None:
    assert class_colour("person") != class_colour("traffic-sign")
    for spec in SEMANTIC_KITTI_CLASSES + NUSCENES_CLASSES:
        assert tuple(spec.color) == class_colour(spec.name), spec.name
    for c in CLASSES:
        assert tuple(c.colour) == class_colour(c.name), c.name


def test_unknown_names_get_a_stable_colour_and_labels_map() -> None:
    assert class_colour("my robot") == class_colour("my robot") != class_colour("my robot 2")
    pal = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    out = label_colours(np.array([1, -1, 0, 2]), pal)
    assert out.tolist() == [[4, 5, 6], list(UNKNOWN_COLOUR), [1, 2, 3], list(UNKNOWN_COLOUR)]
