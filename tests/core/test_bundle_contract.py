"""The student graph carries its preprocessing contract in its ONNX metadata; a bundle whose manifest
was edited is refused naming the field, and so is a table graph or weights file from
another export. Bundle files are readable by other users."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from support.bundle_support import bundle_copy, shared_bundle, write_test_bundle

from relidar.core.bundle import MANIFEST, STUDENT_TABLE_ONNX, STUDENT_WEIGHTS, BundleError, file_entry, load_bundle
from relidar.core.contract import CONTRACT_KEY, read_onnx_metadata


def test_onnx_metadata_holds_the_manifest_values(tmp_path_factory) -> None:
    import onnx  # the independent reader of the file the exporter wrote

    root = shared_bundle(tmp_path_factory)
    props = {p.key: p.value for p in onnx.load(str(root / "student.onnx")).metadata_props}
    assert read_onnx_metadata(root / "student.onnx") == props  # the core's own wire-format reader agrees
    stored = json.loads(props[CONTRACT_KEY])
    manifest = json.loads((root / MANIFEST).read_text())
    assert stored["student.voxel_size"] == manifest["student"]["voxel_size"]
    assert stored["student.crop_min"] == list(manifest["student"]["crop_min"])
    assert stored["student.input_features"] == list(manifest["student"]["input_features"])
    assert stored["logit_scale"] == manifest["logit_scale"]
    load_bundle(root)  # untouched: loads


@pytest.mark.parametrize(("field", "edit"), [
    ("student.voxel_size", lambda m: m["student"].update(voxel_size=m["student"]["voxel_size"] * 2)),
    ("student.crop_max", lambda m: m["student"].update(crop_max=[60.0, 60.0, 3.0])),
    ("student.input_features", lambda m: m["student"].update(input_features=list(reversed(m["student"]["input_features"])))),
    ("logit_scale", lambda m: m.update(logit_scale=50.0)),
])
def test_edited_manifest_is_refused_naming_the_field(tmp_path_factory, tmp_path: Path, field: str, edit) -> None:
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    manifest = json.loads((root / MANIFEST).read_text())
    edit(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    assert info.value.field == field and info.value.path == root / MANIFEST
    assert "was exported for" in info.value.message


def test_bundle_files_are_readable_by_others(tmp_path_factory) -> None:
    umask = os.umask(0)
    os.umask(umask)
    root = shared_bundle(tmp_path_factory)
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode == expected, f"{path}: {oct(mode)} (umask {oct(umask)})"


@pytest.fixture(scope="module")
def other_export(tmp_path_factory) -> Path:
    """A bundle like the shared one but exported for another voxel size (what a mixed-up copy brings)."""
    return write_test_bundle(tmp_path_factory.mktemp("other") / "b", profile="fast", feature_dim=32, voxel_size=0.2)


@pytest.mark.parametrize("name", [STUDENT_TABLE_ONNX, STUDENT_WEIGHTS])
def test_a_graph_or_weights_from_another_export_is_refused(tmp_path_factory, tmp_path: Path, other_export: Path,
                                                          name: str) -> None:
    """student.onnx and the manifest agree; the table graph (CUDA/TensorRT) or the weights (torch backend)
    come from another export, listed with their own checksums: load names that file and the field."""
    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    shutil.copyfile(other_export / name, root / name)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][name] = file_entry(root / name).model_dump()
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    assert info.value.path == root / name and info.value.field == "student.voxel_size"
    assert "0.2" in info.value.message and "0.1" in info.value.message
