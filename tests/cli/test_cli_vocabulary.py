"""`relidar vocabulary build|show`: class lists (named, YAML), templates, both teachers, errors, the confusion table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from relidar.cli.app import build_app
from relidar.core.teacher import TeacherError
from relidar.core.text.spec import ClipTextSpec, SimulatedTextSpec
from relidar.core.vocabulary import ClassSpec, Vocabulary
from relidar.synthetic.classes import CLASSES
from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
from relidar.training.config import SyntheticSource
from relidar.training.data import synthetic_vocabulary
from relidar.training.teachers.registry import build_teacher
from relidar.training.text_embeddings import (
    ClassListError,
    build_vocabulary,
    confusable_pairs,
    load_class_list_file,
    load_templates_file,
    resolve_class_list,
)

# Wide enough that rich does not fold the class tables the tests look for (errors are one plain line anyway).
RUNNER_ENV = {"COLUMNS": "250", "NO_COLOR": "1"}

CUSTOM_YAML = """\
- name: car
  synonyms: [car, automobile]
  color: [0, 0, 255]
- name: road
  synonyms: [road, street]
  color: [255, 0, 255]
- name: pole
  color: [10, 20, 30]
"""


def _invoke(args: list[str]):
    return CliRunner(env=RUNNER_ENV).invoke(build_app(), args)


def _check_files(vocab_json: Path) -> Vocabulary:
    assert vocab_json.is_file() and vocab_json.with_name(vocab_json.stem + ".embeddings.npy").is_file()
    vocab = Vocabulary.load(vocab_json)
    np.testing.assert_allclose(np.linalg.norm(vocab.embeddings, axis=1), 1.0, atol=1e-5)
    return vocab


def test_build_synthetic_matches_the_evaluation_default(tmp_path: Path) -> None:
    out = tmp_path / "vocab" / "synthetic.json"
    result = _invoke(["vocabulary", "build", "--classes", "synthetic", "--teacher", "synthetic",
                      "--synthetic-option", "feature_dim=64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    vocab = _check_files(out)
    assert vocab.class_names == tuple(c.name for c in CLASSES)
    assert vocab.embeddings.shape == (len(CLASSES), 64)
    np.testing.assert_array_equal(vocab.colors, np.array([c.colour for c in CLASSES], dtype=np.uint8))
    # What `relidar evaluate` builds itself for a synthetic config with the same teacher settings.
    reference = synthetic_vocabulary(SyntheticSource(teacher={"feature_dim": 64}))
    np.testing.assert_array_equal(vocab.embeddings, reference.embeddings)
    assert vocab.encoder == reference.encoder == SimulatedTextSpec(feature_dim=64, seed=0, group_weight=0.72, text_jitter=0.08)
    assert vocab.templates == reference.templates


def test_build_custom_yaml_and_templates(tmp_path: Path) -> None:
    classes = tmp_path / "classes.yaml"
    classes.write_text(CUSTOM_YAML)
    templates = tmp_path / "templates.txt"
    templates.write_text("# street prompts\na photo of a {}.\n\nthere is a {} here.\n")
    out = tmp_path / "custom.json"
    result = _invoke(["vocabulary", "build", "--classes", str(classes), "--teacher", "synthetic",
                      "--templates", str(templates), "--out", str(out)])
    assert result.exit_code == 0, result.output
    vocab = _check_files(out)
    assert vocab.class_names == ("car", "road", "pole")
    assert vocab.synonyms == (("car", "automobile"), ("road", "street"), ("pole",))
    np.testing.assert_array_equal(vocab.colors, [[0, 0, 255], [255, 0, 255], [10, 20, 30]])
    assert vocab.templates == ("a photo of a {}.", "there is a {} here.")
    assert vocab.embeddings.shape == (3, SimulatedTeacherConfig().feature_dim)

    teacher = SimulatedTeacher()
    direct = build_vocabulary(load_class_list_file(classes), vocab.templates, teacher, teacher.text_spec)
    np.testing.assert_array_equal(vocab.embeddings, direct.embeddings)
    # Hand reference for one class: mean of its 4 unit prompt embeddings, normalised.
    prompts = [t.format(w) for w in ("car", "automobile") for t in vocab.templates]
    rows = teacher.encode_text(prompts).astype(np.float64)
    mean = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(vocab.embeddings[0], mean / np.linalg.norm(mean), atol=1e-6)


def _save_tiny_clip_dir(folder: Path, seed: int) -> None:
    """The tiny random CLIP as an open_clip local-dir checkpoint (config JSON + safetensors weights)."""
    from safetensors.torch import save_file
    from support.tiny_clip import build_tiny_clip

    folder.mkdir()
    # The same architecture build_tiny_clip makes; loading its weights strictly below checks that.
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"layers": 2, "width": 64, "head_width": 16, "patch_size": 16, "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    state = {k: v.contiguous() for k, v in build_tiny_clip(seed).state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))


def test_build_with_a_tiny_open_clip_model(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from support.tiny_clip import build_tiny_teacher

    model_dir = tmp_path / "tiny_clip"
    _save_tiny_clip_dir(model_dir, seed=3)
    classes = tmp_path / "classes.yaml"
    classes.write_text(CUSTOM_YAML)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na street scene with a {}.\n")
    out = tmp_path / "clip.json"
    result = _invoke(["vocabulary", "build", "--classes", str(classes), "--teacher", "maskclip",
                      "--model", f"local-dir:{model_dir}", "--pretrained", "none", "--device", "cpu",
                      "--templates", str(templates), "--out", str(out)])
    assert result.exit_code == 0, result.output
    vocab = _check_files(out)
    assert vocab.embeddings.shape == (3, 32)
    assert vocab.encoder == ClipTextSpec(model=f"local-dir:{model_dir}", pretrained="none", feature_dim=32)

    tiny = build_tiny_teacher(seed=3)
    direct = build_vocabulary(load_class_list_file(classes), vocab.templates, tiny, tiny.text_spec)
    np.testing.assert_allclose(vocab.embeddings, direct.embeddings, atol=1e-5)
    # Another seed's weights give other embeddings: the CLI used the saved model, not some default.
    other_teacher = build_tiny_teacher(seed=4)
    other = build_vocabulary(load_class_list_file(classes), vocab.templates, other_teacher, other_teacher.text_spec)
    assert np.abs(vocab.embeddings - other.embeddings).max() > 1e-2


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("- name: car\n  synonyms: car\n  colour: [1, 2, 3]\n", "classes[0].synonyms"),
        ("- name: car\n  color: [0, 0, 300]\n", "classes[0].color"),
        ("- name: car\n- name: car\n", "classes"),
        ("name: car\n", None),
        ("- name: [car\n", None),
    ],
)
def test_bad_class_yaml_is_one_clear_error(tmp_path: Path, text: str, field: str | None) -> None:
    classes = tmp_path / "bad.yaml"
    classes.write_text(text)
    out = tmp_path / "bad.json"
    result = _invoke(["vocabulary", "build", "--classes", str(classes), "--teacher", "synthetic", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and str(classes) in result.output  # one line naming the file
    assert not out.exists()
    with pytest.raises(ClassListError) as err:
        load_class_list_file(classes)
    assert (err.value.path, err.value.field) == (classes, field)


def test_unknown_class_list_and_bad_template_file(tmp_path: Path) -> None:
    result = _invoke(["vocabulary", "build", "--classes", "kitti360", "--teacher", "synthetic",
                      "--out", str(tmp_path / "v.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    with pytest.raises(ClassListError) as err:
        resolve_class_list("kitti360")
    assert err.value.field == "classes"

    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {}.\na photo of a car\n")
    result = _invoke(["vocabulary", "build", "--classes", "synthetic", "--teacher", "synthetic",
                      "--templates", str(templates), "--out", str(tmp_path / "v.json")])
    assert result.exit_code == 1 and str(templates) in result.output
    with pytest.raises(ClassListError) as err:
        load_templates_file(templates)
    assert (err.value.path, err.value.field) == (templates, "line 2")

    result = _invoke(["vocabulary", "build", "--classes", "synthetic", "--teacher", "synthetic",
                      "--synthetic-option", "feature_dims=64", "--out", str(tmp_path / "v.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    with pytest.raises(TeacherError) as teacher_err:
        build_teacher("synthetic", synthetic={"feature_dims": 64})
    assert teacher_err.value.field == "feature_dims"


def test_show_prints_classes_and_most_similar_pairs(tmp_path: Path) -> None:
    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=32))
    specs = [ClassSpec("car", ("car",), (1, 2, 3)), ClassSpec("truck", ("truck", "lorry"), (4, 5, 6)),
             ClassSpec("road", ("road",), (7, 8, 9)), ClassSpec("tree", ("tree",), (10, 11, 12))]
    path = build_vocabulary(specs, ("a photo of a {}.",), teacher, teacher.text_spec).save(tmp_path / "v.json")
    result = _invoke(["vocabulary", "show", str(path), "--top", "2"])
    assert result.exit_code == 0, result.output
    for text in ("car", "truck", "lorry", "road", "tree", "32-d", "simulated seed 0", "4,  5,  6"):
        assert text in result.output

    vocab = Vocabulary.load(path)
    pairs = confusable_pairs(vocab, top=2)
    # Brute force over all pairs.
    sims = sorted(((float(vocab.embeddings[i] @ vocab.embeddings[j]), vocab.class_names[i], vocab.class_names[j])
                   for i in range(4) for j in range(i + 1, 4)), reverse=True)
    assert [(a, b) for a, b, _ in pairs] == [(a, b) for _, a, b in sims[:2]]
    np.testing.assert_allclose([c for _, _, c in pairs], [s for s, _, _ in sims[:2]], atol=1e-6)
    assert f"{pairs[0][2]:.3f}" in result.output

    missing = _invoke(["vocabulary", "show", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and str(tmp_path / "nope.json") in missing.output and "Traceback" not in missing.output
