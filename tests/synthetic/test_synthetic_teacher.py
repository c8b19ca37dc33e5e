"""The simulated vision-language teacher: protocol, text encoder semantics; version 1 (colour) and version 2
(masks) behaviour. The version-2 targets from the literature are checked in test_synthetic_calibration_bands.py."""

from __future__ import annotations

import numpy as np
import pytest

from relidar.core.teacher import Teacher, TeacherError
from relidar.synthetic.classes import CLASS_NAMES
from relidar.synthetic.teacher import (
    ColourTeacher,
    MaskTeacher,
    SimulatedTeacher,
    SimulatedTeacherConfig,
    class_text_embeddings,
    pixel_accuracy,
    zero_shot_pixels,
)
from relidar.synthetic.truth import TruthStore
from relidar.synthetic.world import SynthConfig, SyntheticWorld
from relidar.synthetic.writers import SemanticKittiWriter

# The band the teacher is built to sit in: good enough to teach, wrong often enough to be beaten.
ACCURACY_BAND = (0.70, 0.95)


@pytest.fixture(scope="module")
def samples():
    world = SyntheticWorld(SynthConfig(seed=11, lidar={"horizontal_resolution_deg": 2.0},
                                       cameras={"names": ["front", "front_left", "front_right"]}))
    return [world.sample(i) for i in (0, 1, 25)]


@pytest.fixture(scope="module")
def views(samples):
    return [(c.image, t.classes) for s in samples for c, t in zip(s.frame.cameras, s.camera_truth)]


def v2(samples, **options) -> SimulatedTeacher:
    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, **options))
    for s in samples:
        teacher.remember(s)
    return teacher


def test_implements_teacher_protocol(views):
    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, version=1))
    assert isinstance(teacher, Teacher)
    image = views[0][0]
    feats = teacher.encode_image(image)
    assert feats.shape == (17, 30, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(feats, teacher.encode_image(image.copy()))  # deterministic, seeded by content
    assert not np.array_equal(feats, teacher.encode_image(views[1][0])[: feats.shape[0]])


def test_the_config_version_picks_the_class_and_a_class_refuses_the_other_version(views):
    assert type(SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, version=1))) is ColourTeacher
    assert type(SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64))) is MaskTeacher
    assert type(SimulatedTeacher()) is MaskTeacher and type(ColourTeacher()) is ColourTeacher
    with pytest.raises(TeacherError) as caught:
        MaskTeacher(SimulatedTeacherConfig(feature_dim=64, version=1))
    assert caught.value.field == "version"
    image = views[0][0]
    np.testing.assert_array_equal(ColourTeacher(SimulatedTeacherConfig(feature_dim=64, version=1)).encode_image(image),
                                  SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, version=1)).encode_image(image))


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


def test_v1_zero_shot_pixel_accuracy_in_band(views):
    teacher = SimulatedTeacher(SimulatedTeacherConfig(version=1))
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
    t = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, noise=0.0, variation=0.0, version=1))
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :40] = (78, 78, 82)
    img[:, 40:] = (50, 100, 40)
    ev = t.concept_evidence(img)
    road, veg = t.concept_names.index("road"), t.concept_names.index("vegetation")
    assert ev[2, 0, road] > 0.7 and ev[2, 3, veg] > 0.5
    assert 0.1 < ev[2, 2, road] < 0.9 and 0.1 < ev[2, 2, veg] < 0.9


# -- version 2 ----------------------------------------------------------------------------------------

def test_v2_protocol_determinism_and_name(samples):
    teacher = v2(samples)
    assert isinstance(teacher, Teacher) and teacher.config.version == 2
    image = samples[0].frame.cameras[0].image
    feats = teacher.encode_image(image)
    assert feats.shape == (17, 30, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(feats, v2(samples).encode_image(image.copy()))
    assert teacher.name.startswith("synthetic-vlm-d64-p16-s0-v2.")
    assert v2(samples, cone=0.3).name != teacher.name  # every switch is part of the cache's key
    assert SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, version=1)).name == "synthetic-vlm-d64-p16-s0"
    np.testing.assert_array_equal(teacher.encode_text(["a car"]),
                                  SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64, version=1)).encode_text(["a car"]))


def test_v2_refuses_an_image_without_masks(samples):
    with pytest.raises(TeacherError, match="version: 1"):
        SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64)).encode_image(samples[0].frame.cameras[0].image)
    with pytest.raises(ValueError, match="at least 16"):
        SimulatedTeacherConfig(feature_dim=12)


def test_v2_reads_the_masks_a_written_log_carries(samples, tmp_path):
    sample = samples[0]
    with SemanticKittiWriter(tmp_path, camera="front") as writer:
        writer.write(sample)
    store = TruthStore()
    assert store.scan(tmp_path) == 1
    from_disk = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=64), truth=store)
    image = sample.frame.cameras[0].image
    np.testing.assert_array_equal(from_disk.encode_image(image), v2(samples).encode_image(image))


def _zero_shot_iou(teacher, samples):
    text = class_text_embeddings(teacher, CLASS_NAMES)
    C = len(CLASS_NAMES)
    conf = np.zeros((C, C))
    for s in samples:
        for cam, truth in zip(s.frame.cameras, s.camera_truth):
            pred = zero_shot_pixels(teacher, cam.image, text)
            ok = truth.classes >= 0
            conf += np.bincount(truth.classes[ok] * C + pred[ok], minlength=C * C).reshape(C, C)
    inter = np.diag(conf)
    return inter / np.maximum(conf.sum(0) + conf.sum(1) - inter, 1), inter.sum() / conf.sum()


def test_v2_recognition_switches(samples):
    """Turning the confusion model and the size/distance model off makes a near-oracle teacher; with them on,
    small things are found weakly, and the cone moves hardly any zero-shot decision."""
    iou, acc = _zero_shot_iou(v2(samples), samples)
    oracle_iou, oracle_acc = _zero_shot_iou(v2(samples, shape_recognition=False, confusions=False, image_noise=0.0,
                                                instance_offsets=0.0, geometry_terms=0.0, context=0.0), samples)
    assert oracle_acc > acc + 0.1
    small = [CLASS_NAMES.index(n) for n in ("person", "pole", "traffic-sign")]
    assert oracle_iou[small].mean() > iou[small].mean() + 0.1
    image = samples[0].frame.cameras[0].image
    text = class_text_embeddings(v2(samples), CLASS_NAMES)
    with_cone, without = v2(samples).encode_image(image), v2(samples, cone=0.0).encode_image(image)
    # The shared direction is orthogonal to the concepts; only the prompts' small jitter can tip a near tie.
    assert ((with_cone @ text.T).argmax(2) == (without @ text.T).argmax(2)).mean() > 0.95
    flat = with_cone.reshape(-1, 64)
    flat0 = without.reshape(-1, 64)
    assert (flat @ flat.T).mean() > (flat0 @ flat0.T).mean() + 0.3  # a narrow cone
    assert (flat @ text.T).max(1).mean() < (flat0 @ text.T).max(1).mean()  # and a modality gap


def _object_means(teacher, sample, min_pixels=3000):
    """Mean feature of the patches each large object dominates in the front camera, by object id."""
    cam, truth = sample.frame.cameras[0], sample.camera_truth[0]
    f = teacher.encode_image(cam.image)
    h, w, _ = f.shape
    H, W = cam.image.shape[:2]
    cell = ((np.arange(H) * h // H)[:, None] * w + (np.arange(W) * w // W)[None, :]).reshape(-1)
    ids, inv = np.unique(truth.instances.reshape(-1), return_inverse=True)
    counts = np.bincount(cell * len(ids) + inv, minlength=h * w * len(ids)).reshape(h * w, len(ids))
    owner = counts.argmax(1)
    out = {}
    for k in np.flatnonzero(np.bincount(inv) >= min_pixels):
        cells = np.flatnonzero((owner == k) & (counts.max(1) > 200))
        if ids[k] > 0 and len(cells) >= 2:
            out[int(ids[k])] = (f.reshape(h * w, -1)[cells].mean(0), int(truth.classes.reshape(-1)[inv == k][0]))
    return out


def test_v2_instance_offsets_persist_and_image_noise_does_not(samples):
    """An object seen in two consecutive frames keeps what lidar can learn (its own offset) and loses the
    image-only noise; two objects of one class differ by their offsets."""
    def agreement(**options):
        t = v2(samples, **options)
        a, b = _object_means(t, samples[0]), _object_means(t, samples[1])
        same = [float(a[i][0] @ b[i][0] / np.linalg.norm(a[i][0]) / np.linalg.norm(b[i][0])) for i in a if i in b]
        other = [float(a[i][0] @ b[j][0] / np.linalg.norm(a[i][0]) / np.linalg.norm(b[j][0]))
                 for i in a for j in b if i != j and a[i][1] == b[j][1]]
        assert same and other
        return np.mean(same), np.mean(other)
    same, other = agreement(image_noise=0.0, geometry_terms=0.0)
    assert same > other + 0.05
    noisy_same, _ = agreement(instance_offsets=0.0, geometry_terms=0.0, image_noise=3.0)
    clean_same, _ = agreement(instance_offsets=0.0, geometry_terms=0.0, image_noise=0.0)
    assert noisy_same < clean_same - 0.02


def test_truth_sidecar_of_another_format_is_refused_with_its_path(samples, tmp_path):
    from relidar.synthetic.truth import TruthError, read_truth, write_truth

    path = write_truth(tmp_path / "truth_2" / "000000.npz", samples[0].frame.cameras[0].image, samples[0].camera_truth[0])
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["format_version"] = np.array(99)
    np.savez(path, **arrays)
    with pytest.raises(TruthError, match=r"000000\.npz.*'format_version' is 99"):
        read_truth(path)
    (tmp_path / "truth_2" / "000001.npz").write_bytes(b"not a zip")
    with pytest.raises(TruthError, match="000001.npz"):
        TruthStore().scan(tmp_path)
