"""TensorRT: optimisation-profile shapes (run everywhere), engine build + parity (GPU + tensorrt only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from support.bundle_support import bundle_copy, shared_bundle
from support.scan_support import street_scan

from relidar.core.bundle import load_bundle
from relidar.core.graph import input_names
from relidar.core.preprocess import Preprocessor
from relidar.export.tensorrt import engine_name, profile_shapes


def test_profile_covers_every_input_and_measured_scans(tmp_path_factory) -> None:
    root = shared_bundle(tmp_path_factory)
    bundle = load_bundle(root)
    feed = Preprocessor.of(bundle.manifest.student)(street_scan(20000)).feed(bundle.vocabulary().embeddings)
    prof = profile_shapes(bundle, max_points=60000, opt_points=20000, sample_feed=feed).shapes
    assert set(prof) == set(input_names(bundle.manifest.student.num_levels))
    for name, (lo, opt, hi) in prof.items():
        assert len(lo) == len(opt) == len(hi) == feed[name].ndim, name
        assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (name, lo, opt, hi)
        # the measured scan itself (at opt_points) fits the profile
        assert all(a <= s <= c for a, s, c in zip(lo, feed[name].shape, hi)), (name, feed[name].shape, lo, hi)
    assert prof["features"][1] == (feed["features"].shape[0], 4)
    # the coarsest level cannot hold more voxels than its grid has cells
    s = bundle.manifest.student
    cells = np.prod(np.ceil((np.array(s.crop_max) - np.array(s.crop_min)) / s.voxel_size / 2 ** (s.num_levels - 1)))
    assert prof[f"coords_{s.num_levels - 1}"][2][0] <= cells


def test_table_profile_has_no_empty_inputs(tmp_path_factory) -> None:
    """The graph TensorRT builds from (the bundle's neighbour-table one): every input at least one row, and
    a measured scan's table feed inside the profile."""
    root = shared_bundle(tmp_path_factory)
    bundle = load_bundle(root)
    assert "table" in bundle.formulations
    scan = street_scan(20000)
    inputs = Preprocessor.of(bundle.manifest.student)(scan)
    pairs_feed = inputs.feed(bundle.vocabulary().embeddings)
    table_feed = inputs.feed(bundle.vocabulary().embeddings, "table")
    prof = profile_shapes(bundle, max_points=60000, opt_points=20000, sample_feed=pairs_feed, formulation="table").shapes
    levels = bundle.manifest.student.num_levels
    assert set(prof) == set(input_names(levels, "table"))
    for name, (lo, _, hi) in prof.items():
        assert all(d >= 1 for d in lo), (name, lo)
        assert all(a <= s <= c for a, s, c in zip(lo, table_feed[name].shape, hi)), (name, table_feed[name].shape)
    assert prof["subm_table_0"][1][0] == table_feed["features"].shape[0]
    assert prof["down_table_0"][2][0] == prof["subm_table_1"][2][0]  # parents are the next level's voxels


def test_engine_names_key_every_build_setting() -> None:
    names = {engine_name("nvidia-a100", "10.16.1.11", p, f, m, o) for p in ("fp16", "fp32")
             for f in ("pairs", "table") for m, o in ((300_000, 120_000), (300_000, 60_000), (150_000, 60_000))}
    assert len(names) == 12


def _tensorrt_with_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from relidar.core.backends.trt import tensorrt_available

    return tensorrt_available()


@pytest.mark.skipif(not _tensorrt_with_gpu(), reason="needs the tensorrt package, cuda-python and an NVIDIA GPU")
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_cache_and_parity(tmp_path_factory, tmp_path, fp16: bool) -> None:
    from relidar.export.tensorrt import export_tensorrt, tensorrt_parity

    root = bundle_copy(tmp_path_factory, tmp_path / "b")
    points = street_scan(30000, 1)
    path, built = export_tensorrt(root, fp16=fp16, max_points=60000, opt_points=30000, sample_points=points)
    assert built and path.is_file() and path.parent.name == "engines"
    again, built_again = export_tensorrt(root, fp16=fp16, max_points=60000, opt_points=30000)
    assert again == path and not built_again  # cached by GPU, TensorRT version, precision, formulation, profile
    spec = next(e for e in load_bundle(root).manifest.engines if e.file.endswith(path.name))
    assert (spec.formulation, spec.max_points, spec.opt_points) == ("table", 60000, 30000)
    bigger, built_bigger = export_tensorrt(root, fp16=fp16, max_points=90000, opt_points=30000)
    assert built_bigger and bigger != path  # another profile is another engine, not the cached one
    report = tensorrt_parity(root, points, fp16)
    if fp16:
        assert report.label_agreement >= 0.99, report
    else:
        assert report.max_abs_feature <= 1e-4 and report.label_agreement >= 0.999, report
