"""The student graph carries its preprocessing contract in its ONNX metadata; a bundle whose manifest
was edited is refused naming the field. Bundle files are readable by other users."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from bundle_support import bundle_copy, shared_bundle

from relidar.core.bundle import MANIFEST, BundleError, load_bundle
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
