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

from bundle_support import bundle_copy, shared_bundle

from relidar.core.bundle import MANIFEST, BundleError, file_entry, load_bundle
from relidar.core.vocabulary import Vocabulary


def _rewrite_entry(root: Path, name: str) -> None:
    """Re-checksum one file in the manifest, so only the consistency checks can object to it."""
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][name] = file_entry(root / name).model_dump()
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_layout_and_manifest(tmp_path_factory) -> None:
    root = shared_bundle(tmp_path_factory)
    bundle = load_bundle(root)
    m = bundle.manifest
    assert m.format_version == 1 and m.logit_scale == 100.0
    assert m.student.profile == "fast" and m.student.voxel_size == 0.1 and m.student.out_dim == 32
    assert m.student.opset >= 17 and {"onnx", "onnxruntime", "torch"} <= set(m.versions)
    assert m.text_encoder.kind == "simulated" and m.text_encoder.feature_dim == 32
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    assert on_disk == set(m.files), "every file but the manifest is listed with its checksum"
    for name, entry in m.files.items():
        assert entry.size == (root / name).stat().st_size
    assert bundle.vocabulary().class_names == ("road", "sidewalk", "building", "vegetation", "car", "person")


def test_missing_folder_and_manifest(tmp_path) -> None:
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json: manifest not found"):
        load_bundle(tmp_path)


def test_corrupt_manifest(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    (root / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json: not valid JSON"):
        load_bundle(root)


def test_format_version_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["format_version"] = 99
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version' is 99"):
        load_bundle(root)


def test_truncated_student(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    data = (root / "student.onnx").read_bytes()
    (root / "student.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"student\.onnx: .*truncated"):
        load_bundle(root)


def test_altered_embeddings(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    path = root / "vocabulary.embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"vocabulary\.embeddings\.npy: contents differ .*altered"):
        load_bundle(root)


def test_missing_text_table(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    (root / "text" / "simulated.npy").unlink()
    with pytest.raises(BundleError, match=r"simulated\.npy: listed in the manifest but missing"):
        load_bundle(root)


def test_vocabulary_dimension_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    vocab = Vocabulary.load(root / "vocabulary.json")
    emb = np.random.default_rng(0).standard_normal((vocab.num_classes, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    Vocabulary(vocab.class_names, vocab.synonyms, vocab.colors, emb, vocab.templates, vocab.encoder).save(
        root / "vocabulary.json")
    _rewrite_entry(root, "vocabulary.json")
    _rewrite_entry(root, "vocabulary.embeddings.npy")
    with pytest.raises(BundleError, match=r"vocabulary\.json: embeddings are 16-d but the student's out_dim is 32"):
        load_bundle(root)


def test_head_shape_mismatch(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    np.savez(root / "head.npz", weight=np.zeros((5, 32), np.float32), bias=np.zeros(32, np.float32))
    _rewrite_entry(root, "head.npz")
    with pytest.raises(BundleError, match=r"head\.npz: weight \(5, 32\)"):
        load_bundle(root)


def test_unlisted_file_in_manifest_reference(tmp_path_factory, tmp_path) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"]["head.npz"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="head.npz is used but not listed"):
        load_bundle(root)


def test_writer_refuses_mismatched_vocabulary(tmp_path) -> None:
    import torch

    from relidar.core.vocabulary import embed_classes
    from relidar.export.bundle import write_bundle
    from relidar.model.network import Student, StudentConfig
    from relidar.training.synthetic.teacher import synthetic_text_encoder

    enc = synthetic_text_encoder(16)
    vocab = Vocabulary(("car",), (("car",),), np.zeros((1, 3), np.uint8),
                       embed_classes([("car",)], ("a {}.",), enc.encode_text), ("a {}.",), enc.key)
    torch.manual_seed(0)
    with pytest.raises(BundleError, match="16-d but the student's out_dim is 32"):
        write_bundle(tmp_path / "b", Student(StudentConfig(profile="fast", out_dim=32)), vocab, enc)
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "precious.txt").write_text("x")
    with pytest.raises(BundleError, match="not a bundle"):
        write_bundle(tmp_path / "c", Student(StudentConfig(profile="fast", out_dim=16)), vocab, enc)


def test_copy_of_bundle_loads(tmp_path_factory, tmp_path) -> None:
    root = shutil.copytree(shared_bundle(tmp_path_factory), tmp_path / "moved")
    assert load_bundle(root).root == Path(root)


def test_export_bundle_cli(tmp_path) -> None:
    """`relidar export bundle` from a weights file and a vocabulary made by the simulated encoder."""
    import torch
    from typer.testing import CliRunner

    from relidar.cli.app import build_app
    from relidar.core.segmenter import Segmenter
    from relidar.core.vocabulary import embed_classes
    from relidar.model.network import Student, StudentConfig
    from relidar.model.weights import save_student
    from relidar.training.synthetic.teacher import synthetic_text_encoder

    torch.manual_seed(0)
    save_student(Student(StudentConfig(profile="fast", out_dim=16, voxel_size=0.5)), tmp_path / "w.safetensors")
    enc = synthetic_text_encoder(16, seed=0)
    syn = (("car",), ("road",))
    Vocabulary(("car", "road"), syn, np.array([[255, 0, 0], [90, 90, 90]], np.uint8),
               embed_classes(syn, ("a photo of a {}.",), enc.encode_text), ("a photo of a {}.",),
               "synthetic-vlm-d16-p16-s0").save(tmp_path / "vocab.json")
    result = CliRunner().invoke(build_app(), ["export", "bundle", "--checkpoint", str(tmp_path / "w.safetensors"),
                                              "--vocabulary", str(tmp_path / "vocab.json"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    seg = Segmenter(tmp_path / "b", backend="onnxruntime")
    assert seg.bundle.manifest.student.voxel_size == 0.5 and seg.bundle.manifest.text_encoder.kind == "simulated"
    seg.set_classes(["car", "road"])  # re-encoded by the bundled simulated encoder: same rows as the vocabulary
    np.testing.assert_allclose(seg.vocabulary.embeddings, Vocabulary.load(tmp_path / "vocab.json").embeddings, atol=1e-6)
    bad = CliRunner().invoke(build_app(), ["export", "bundle", "--checkpoint", str(tmp_path / "missing.safetensors"),
                                           "--vocabulary", str(tmp_path / "vocab.json"), "--out", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "not found" in " ".join(bad.output.split())
