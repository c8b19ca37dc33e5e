"""Model bundles: written, verified on load, and every kind of damage reported as a BundleError that
names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from support.bundle_support import bundle_copy, shared_bundle

from relidar.core.artifact import file_entry
from relidar.core.bundle import MANIFEST, BundleError, load_bundle
from relidar.core.vocabulary import Vocabulary


def _load_error(root: Path) -> BundleError:
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    return err.value


def _rewrite_entry(root: Path, name: str) -> None:
    """Re-checksum one file in the manifest, so only the consistency checks can object to it."""
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][name] = file_entry(root / name).model_dump()
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_layout_and_manifest(tmp_path_factory) -> None:
    root = shared_bundle(tmp_path_factory)
    bundle = load_bundle(root)
    m = bundle.manifest
    assert m.format_version == 2 and m.logit_scale == 100.0
    assert m.student.profile == "fast" and m.student.voxel_size == 0.1 and m.student.out_dim == 32
    assert m.student.opset >= 17 and {"onnx", "onnxruntime", "torch"} <= set(m.versions)
    assert m.text_encoder.kind == "simulated" and m.text_encoder.feature_dim == 32
    assert m.text_encoder.spec.seed == 0 and m.text_encoder.spec == bundle.vocabulary().encoder
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    assert on_disk == set(m.files), "every file but the manifest is listed with its checksum"
    for name, entry in m.files.items():
        assert entry.size == (root / name).stat().st_size
    assert bundle.vocabulary().class_names == ("road", "sidewalk", "building", "vegetation", "car", "person")


def test_missing_folder_and_manifest(tmp_path) -> None:
    assert _load_error(tmp_path / "nope").path == tmp_path / "nope"
    err = _load_error(tmp_path)
    assert err.path == tmp_path / MANIFEST and "relidar export bundle" in err.hint


def test_corrupt_manifest(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    (root / MANIFEST).write_text("{not json")
    err = _load_error(root)
    assert err.path == root / MANIFEST and "JSON" in err.message


def test_format_version_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["format_version"] = 99
    (root / MANIFEST).write_text(json.dumps(manifest))
    err = _load_error(root)
    assert (err.path, err.field) == (root / MANIFEST, "format_version") and "re-export" in err.hint
    manifest["format_version"] = 2
    manifest["text_encoder"]["spec"]["seed"] = -1
    (root / MANIFEST).write_text(json.dumps(manifest))
    err = _load_error(root)
    assert (err.path, err.field) == (root / MANIFEST, "text_encoder.spec.simulated.seed")


def test_truncated_student(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    data = (root / "student.onnx").read_bytes()
    (root / "student.onnx").write_bytes(data[: len(data) // 2])
    err = _load_error(root)
    assert err.path == root / "student.onnx" and "truncated" in err.message


def test_altered_embeddings(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    path = root / "vocabulary.embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    err = _load_error(root)
    assert err.path == path and "sha256" in err.message


def test_missing_text_table(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    (root / "text" / "simulated.npy").unlink()
    err = _load_error(root)
    assert err.path == root / "text" / "simulated.npy" and "missing" in err.message


def test_vocabulary_dimension_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    vocab = Vocabulary.load(root / "vocabulary.json")
    emb = np.random.default_rng(0).standard_normal((vocab.num_classes, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    Vocabulary(vocab.class_names, vocab.synonyms, vocab.colors, emb, vocab.templates,
               vocab.encoder.model_copy(update={"feature_dim": 16})).save(
        root / "vocabulary.json")
    _rewrite_entry(root, "vocabulary.json")
    _rewrite_entry(root, "vocabulary.embeddings.npy")
    assert _load_error(root).path == root / "vocabulary.json"


def test_head_shape_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    np.savez(root / "head.npz", weight=np.zeros((5, 32), np.float32), bias=np.zeros(32, np.float32))
    _rewrite_entry(root, "head.npz")
    err = _load_error(root)
    assert err.path == root / "head.npz" and "(5, 32)" in err.message


def test_unlisted_file_in_manifest_reference(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"]["head.npz"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    err = _load_error(root)
    assert (err.path, err.field) == (root / MANIFEST, "files") and "head.npz" in err.message


def test_writer_refuses_mismatched_vocabulary(tmp_path) -> None:
    import torch

    from relidar.core.vocabulary import embed_classes
    from relidar.export.bundle import write_bundle
    from relidar.model.network import Student, StudentConfig
    from relidar.synthetic.teacher import synthetic_text_encoder

    enc = synthetic_text_encoder(16)
    vocab = Vocabulary(("car",), (("car",),), np.zeros((1, 3), np.uint8),
                       embed_classes([("car",)], ("a {}.",), enc.encode_text), ("a {}.",), enc.spec)
    torch.manual_seed(0)
    with pytest.raises(BundleError) as err:
        write_bundle(tmp_path / "b", Student(StudentConfig(profile="fast", out_dim=32)), vocab, enc)
    assert "out_dim is 32" in err.value.message and err.value.hint
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "precious.txt").write_text("x")
    with pytest.raises(BundleError) as err:
        write_bundle(tmp_path / "c", Student(StudentConfig(profile="fast", out_dim=16)), vocab, enc)
    assert err.value.path == tmp_path / "c"
    assert (tmp_path / "c" / "precious.txt").read_text() == "x"


def test_copy_of_bundle_loads(tmp_path_factory, tmp_path) -> None:
    root = shutil.copytree(shared_bundle(tmp_path_factory), tmp_path / "moved")
    assert load_bundle(root).root == Path(root)


def test_export_bundle_cli(tmp_path) -> None:
    """`relidar export bundle` from a weights file and a vocabulary made by a simulated teacher of non-default
    settings: the bundle rebuilds exactly that encoder from the vocabulary's typed spec."""
    import torch
    from typer.testing import CliRunner

    from relidar.cli.app import build_app
    from relidar.core.segmenter import Segmenter
    from relidar.model.network import Student, StudentConfig
    from relidar.model.weights import save_student
    from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
    from relidar.training.text_embeddings import build_vocabulary, synthetic_class_specs

    torch.manual_seed(0)
    save_student(Student(StudentConfig(profile="fast", out_dim=16, voxel_size=0.5)), tmp_path / "w.safetensors")
    teacher = SimulatedTeacher(SimulatedTeacherConfig(feature_dim=16, seed=3, group_weight=0.5, text_jitter=0.2))
    build_vocabulary(synthetic_class_specs()[:2], ("a photo of a {}.",), teacher, teacher.text_spec).save(
        tmp_path / "vocab.json")
    result = CliRunner().invoke(build_app(), ["export", "bundle", "--checkpoint", str(tmp_path / "w.safetensors"),
                                              "--vocabulary", str(tmp_path / "vocab.json"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    seg = Segmenter(tmp_path / "b", backend="onnxruntime")
    assert seg.bundle.manifest.student.voxel_size == 0.5 and seg.bundle.manifest.text_encoder.spec == teacher.text_spec
    names = list(seg.vocabulary.class_names)
    seg.set_classes(names)  # re-encoded by the bundled simulated encoder: same rows as the vocabulary
    np.testing.assert_allclose(seg.vocabulary.embeddings, Vocabulary.load(tmp_path / "vocab.json").embeddings, atol=1e-6)
    missing = tmp_path / "missing.safetensors"
    bad = CliRunner().invoke(build_app(), ["export", "bundle", "--checkpoint", str(missing),
                                           "--vocabulary", str(tmp_path / "vocab.json"), "--out", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.output.count("\n") == 1 and str(missing) in bad.output  # one line naming the file
