"""The simulated vision-language teacher: protocol, text encoder semantics, zero-shot accuracy band."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.training.synthetic.classes import CLASS_NAMES
from relidar.training.synthetic.teacher import (
    SimulatedTeacher,
    SimulatedTeacherConfig,
    class_text_embeddings,
    pixel_accuracy,
    zero_shot_pixels,
)
from relidar.training.synthetic.world import SynthConfig, SyntheticWorld
from relidar.training.teachers.base import Teacher

# The band the teacher is built to sit in: good enough to teach, wrong often enough to be beaten.
ACCURACY_BAND = (0.70, 0.95)


@pytest.fixture(scope="module")
def views():
    world = SyntheticWorld(SynthConfig(seed=11, lidar={"horizontal_resolution_deg": 2.0},
                                       cameras={"names": ["front", "front_left", "front_right"]}))
    out = []
    for i in (0, 25):
        s = world.sample(i)
        out += [(c.image, t.classes) for c, t in zip(s.frame.cameras, s.camera_truth)]
    return out


def test_implements_teacher_protocol(views):
    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64))
    assert isinstance(teacher, Teacher)
    image = views[0][0]
    feats = teacher.encode_image(image)
    assert feats.shape == (17, 30, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(feats, teacher.encode_image(image.copy()))  # deterministic, seeded by content
    assert not np.array_equal(feats, teacher.encode_image(views[1][0])[: feats.shape[0]])


def test_text_encoder_synonyms_groups_and_unknown_words():
    t = SimulatedTeacher()
    e = t.encode_text(["a photo of a car.", "a photo of an automobile.", "a photo of a truck.",
                       "a photo of a road.", "a photo of a pedestrian.", "a photo of a person.",
                       "a photo of a flamingo.", "a photo of a zeppelin."])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    cos = e @ e.T
    assert cos[0, 1] > 0.95  # synonyms
    assert cos[4, 5] > 0.95
    assert 0.3 < cos[0, 2] < 0.95  # confusable classes: close, not equal
    assert cos[0, 2] > cos[0, 3] + 0.2  # car is nearer truck than road
    assert abs(cos[6, 7]) < 0.3 and abs(cos[0, 6]) < 0.3  # unknown words: unrelated directions
    assert t._concept_of("a person riding a bicycle") == t._concept_of("cyclist")
    assert np.array_equal(e, t.encode_text(["a photo of a car.", "a photo of an automobile.", "a photo of a truck.",
                                            "a photo of a road.", "a photo of a pedestrian.", "a photo of a person.",
                                            "a photo of a flamingo.", "a photo of a zeppelin."]))


def test_zero_shot_pixel_accuracy_in_band(views):
    teacher = SimulatedTeacher()
    text = class_text_embeddings(teacher, CLASS_NAMES)
    correct = total = 0
    for image, truth in views:
        pred = zero_shot_pixels(teacher, image, text)
        valid = truth >= 0
        correct += int((pred[valid] == truth[valid]).sum())
        total += int(valid.sum())
        assert pixel_accuracy(pred, truth) == pytest.approx((pred[valid] == truth[valid]).mean())
    acc = correct / total
    assert ACCURACY_BAND[0] <= acc <= ACCURACY_BAND[1], acc


def test_boundaries_blur_at_patch_scale():
    """A sharp vertical edge between road and vegetation colours yields mixed features on the edge patches."""
    t = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, noise=0.0, variation=0.0))
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :40] = (78, 78, 82)
    img[:, 40:] = (50, 100, 40)
    ev = t.concept_evidence(img)
    road, veg = t.concept_names.index("road"), t.concept_names.index("vegetation")
    assert ev[2, 0, road] > 0.7 and ev[2, 3, veg] > 0.5
    assert 0.1 < ev[2, 2, road] < 0.9 and 0.1 < ev[2, 2, veg] < 0.9
