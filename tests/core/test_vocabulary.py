"""Vocabulary: class lists, prompt averaging (against a hand computation), save/load and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relidar.core.text.spec import NamedTextSpec
from relidar.core.vocabulary import (
    DEFAULT_TEMPLATES,
    NUSCENES_CLASSES,
    SEMANTIC_KITTI_CLASSES,
    ClassSpec,
    Vocabulary,
    VocabularyError,
    check_class_names,
    class_prompts,
    embed_classes,
)
from relidar.training.text_embeddings import build_vocabulary

HASH = NamedTextSpec(name="hash", feature_dim=8)


class HashEncoder:
    """A deterministic text encoder: each distinct prompt gets its own random direction."""

    feature_dim = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def vector(self, prompt: str) -> np.ndarray:
        seed = sum(ord(c) * (i + 1) for i, c in enumerate(prompt)) % (2**32)
        v = np.random.default_rng(seed).normal(size=self.feature_dim)
        return v / np.linalg.norm(v)

    def encode_text(self, prompts):
        self.seen.extend(prompts)
        return np.stack([self.vector(p) for p in prompts]).astype(np.float32)


def test_default_class_lists():
    assert len(NUSCENES_CLASSES) == 16
    assert len(SEMANTIC_KITTI_CLASSES) == 19
    assert [c.name for c in SEMANTIC_KITTI_CLASSES][:3] == ["car", "bicycle", "motorcycle"]
    for specs in (NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES):
        assert len({c.name for c in specs}) == len(specs)
        assert len({c.color for c in specs}) == len(specs)  # distinguishable in pictures
        assert all(c.synonyms for c in specs)
    assert 10 <= len(DEFAULT_TEMPLATES) and all(t.count("{}") == 1 for t in DEFAULT_TEMPLATES)


def test_build_vocabulary_averages_synonyms_times_templates():
    specs = (ClassSpec("car", ("car", "sedan"), (1, 2, 3)), ClassSpec("tree", ("tree",), (4, 5, 6)))
    templates = ("a photo of a {}.", "a {} on the road.")
    enc = HashEncoder()
    vocab = build_vocabulary(specs, templates, enc, HASH)
    assert sorted(enc.seen) == sorted(
        ["a photo of a car.", "a car on the road.", "a photo of a sedan.", "a sedan on the road.",
         "a photo of a tree.", "a tree on the road."]
    )
    car = sum(enc.vector(p) for p in class_prompts(("car", "sedan"), templates))
    tree = sum(enc.vector(p) for p in class_prompts(("tree",), templates))
    expected = np.stack([car / np.linalg.norm(car), tree / np.linalg.norm(tree)])
    np.testing.assert_allclose(vocab.embeddings, expected, atol=1e-6)
    assert vocab.class_names == ("car", "tree")
    assert vocab.colors.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert vocab.encoder == HASH


def test_embed_classes_normalises_unnormalised_encoder_rows():
    # Scaling one prompt's raw embedding must not change its weight in the class average.
    def enc(prompts):
        return np.array([[10.0, 0.0] if "a" in p else [0.0, 1.0] for p in prompts])

    out = embed_classes([("a", "b")], ("{}",), enc)
    np.testing.assert_allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)


def test_bad_template_is_rejected():
    with pytest.raises(VocabularyError) as err:
        embed_classes([("car",)], ("a photo of a car",), HashEncoder().encode_text)
    assert err.value.field == "templates"


def _vocab() -> Vocabulary:
    return build_vocabulary(NUSCENES_CLASSES, DEFAULT_TEMPLATES[:3], HashEncoder(), HASH)


def test_save_load_roundtrip(tmp_path):
    vocab = _vocab()
    path = vocab.save(tmp_path / "vocabulary.json")
    assert (tmp_path / "vocabulary.embeddings.npy").is_file()
    loaded = Vocabulary.load(path)
    assert loaded.class_names == vocab.class_names
    assert loaded.synonyms == vocab.synonyms
    assert loaded.templates == vocab.templates
    assert loaded.encoder == HASH
    np.testing.assert_array_equal(loaded.colors, vocab.colors)
    np.testing.assert_array_equal(loaded.embeddings, vocab.embeddings)
    sub = loaded.subset(["car", "pedestrian"])
    np.testing.assert_array_equal(sub.embeddings[1], vocab.embeddings[vocab.class_names.index("pedestrian")])


def _load_error(path) -> VocabularyError:
    with pytest.raises(VocabularyError) as err:
        Vocabulary.load(path)
    return err.value


def test_load_errors_name_file_and_field(tmp_path):
    path = _vocab().save(tmp_path / "vocabulary.json")
    meta = json.loads(path.read_text())

    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "colors"}))
    err = _load_error(path)
    assert (err.path, err.field) == (path, "colors")

    path.write_text(json.dumps(meta | {"colors": [[0, 0, 0]] * 16, "class_names": meta["class_names"][:15]}))
    err = _load_error(path)
    assert (err.path, err.field) == (path, "synonyms")

    path.write_text(json.dumps(meta | {"colors": [[0, 0, 300]] + meta["colors"][1:]}))
    assert (_load_error(path).path, _load_error(path).field) == (path, "colors")

    path.write_text(json.dumps(meta | {"encoder": {"kind": "clip", "model": "ViT-B-16", "feature_dim": 8}}))
    assert _load_error(path).field == "encoder.clip.pretrained"

    path.write_text(json.dumps(meta))
    npy = tmp_path / "vocabulary.embeddings.npy"
    npy.write_bytes(npy.read_bytes()[:-8])
    err = _load_error(path)
    assert err.path == npy and "embeddings_sha256" in err.message

    err = _load_error(tmp_path / "absent.json")
    assert err.path == tmp_path / "absent.json" and err.hint


def test_vocabulary_of_an_earlier_format_is_refused_with_the_fix(tmp_path):
    # format 1 recorded the encoder as a name ("synthetic-vlm-d64-p16-s0"), parsed back by a regex
    path = _vocab().save(tmp_path / "vocabulary.json")
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(meta | {"format_version": 1, "encoder": "synthetic-vlm-d64-p16-s0"}))
    err = _load_error(path)
    assert (err.path, err.field) == (path, "format_version")
    assert "relidar vocabulary build" in err.hint


def test_class_names_rule():
    assert check_class_names([" car", "road "]) == ("car", "road")
    for bad in ([], ["car", " "], ["car", "road", "car"], "car"):
        with pytest.raises(VocabularyError) as err:
            check_class_names(bad)
        assert err.value.field == "class_names"


def test_constructor_validates():
    with pytest.raises(VocabularyError) as err:
        Vocabulary(("a",), (("a",),), np.zeros((1, 3), np.uint8), np.ones((1, 4), np.float32), ("{}",),
                   NamedTextSpec(name="x", feature_dim=4))
    assert err.value.field == "embeddings"
    unit = np.eye(1, 4, dtype=np.float32)
    with pytest.raises(VocabularyError) as err:
        Vocabulary(("a",), (("a",),), np.zeros((1, 3), np.uint8), unit, ("{}",), NamedTextSpec(name="x", feature_dim=5))
    assert err.value.field == "encoder.feature_dim"
    with pytest.raises(VocabularyError) as err:
        Vocabulary(("a", "a"), (("a",), ("a",)), np.zeros((2, 3), np.uint8), np.eye(2, 4, dtype=np.float32), ("{}",),
                   NamedTextSpec(name="x", feature_dim=4))
    assert err.value.field == "class_names"
