"""Compact cache modes (patch grids, int8 rows, PCA projection) against the exact per-pair features,
checksums verified once per file, and prepare resumed after SIGKILL for the compact modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("open_clip")

from support.tiny_clip import build_tiny_teacher
from support.tiny_dataset import write_synthetic_kitti

from relidar.core import artifact
from relidar.training import feature_cache
from relidar.training.feature_cache import (
    CacheError,
    CacheReader,
    CacheSettings,
    CacheStorage,
    decode_rows,
    encode_rows,
    fit_projection,
    prepare_cache,
)
from relidar.training.pairs import assign_cameras, build_pairs
from relidar.training.readers.base import open_dataset

REPO = Path(__file__).resolve().parents[2]


def settings(**storage) -> CacheSettings:
    return CacheSettings(superpixel_segments=8, storage=CacheStorage(**storage))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_kitti(tmp_path_factory.mktemp("kitti"), frames=4)


@pytest.fixture(scope="module")
def teacher():
    return build_tiny_teacher(seed=5, image_size=64)


@pytest.fixture(scope="module")
def reference(dataset, teacher):
    """Per frame: the exact pair features computed directly from the teacher (no cache code)."""
    reader = open_dataset(dataset)
    out = []
    for i in range(len(reader)):
        frame = reader[i]
        pixels = assign_cameras(frame)
        out.append(build_pairs(frame, [teacher.encode_image(c.image) for c in frame.cameras], pixels).features)
    return out


def _prepare(tmp_path, dataset, teacher, name, **storage) -> CacheReader:
    report = prepare_cache(open_dataset(dataset), tmp_path / name, teacher, settings=settings(**storage))
    assert len(report.done) == 4 and not report.failed
    return CacheReader(tmp_path / name)


def test_grid_and_int8_modes_decode_to_the_exact_features(tmp_path, dataset, teacher, reference):
    sizes = {}
    for name, storage, tol in [("pairs32", {"dtype": "float32"}, 1e-6), ("grid32", {"layout": "grid", "dtype": "float32"}, 1e-5),
                               ("pairs16", {}, 2e-3), ("grid16", {"layout": "grid"}, 2e-3),
                               ("pairs8", {"dtype": "int8"}, 1.5e-2), ("grid8", {"layout": "grid", "dtype": "int8"}, 1.5e-2)]:
        cache = _prepare(tmp_path, dataset, teacher, name, **storage)
        assert cache.feature_dim == teacher.feature_dim and cache.storage == CacheStorage(**storage)
        for i in range(len(cache)):
            got = cache[i]
            np.testing.assert_allclose(np.linalg.norm(got.pair_features, axis=1), 1.0, atol=1e-5)
            np.testing.assert_allclose(got.pair_features, reference[i], atol=tol, err_msg=name)
            picks = np.array([5, 0, got.num_pairs - 1, 5])  # any subset, any order, repeats
            np.testing.assert_array_equal(got.teacher_features(picks), got.pair_features[picks])
        sizes[name] = sum(f.stat().st_size for f in (tmp_path / name / "frames").iterdir())
        if storage.get("layout") == "grid":
            stored = cache[0].features
            h, w = (int(v) for v in stored.grid_shapes[0])
            assert 0 < len(stored.cells) <= h * w  # only the cells the pairs' stencils read
    assert sizes["grid32"] < sizes["pairs32"] and sizes["grid16"] < sizes["pairs16"] < sizes["pairs32"]
    assert sizes["pairs8"] < sizes["pairs16"] and sizes["grid8"] < sizes["grid16"]


def test_int8_rows_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 24)).astype(np.float32) * rng.uniform(0.01, 5, size=(50, 1)).astype(np.float32)
    q, scales = encode_rows(rows, "int8")
    assert q.dtype == np.int8 and scales.dtype == np.float16 and np.abs(q).max() == 127
    back = decode_rows(q, scales)
    step = scales.astype(np.float32)[:, None]
    assert np.all(np.abs(back - rows) <= 0.5 * step + 1e-6 * np.abs(rows))


def test_projection_is_the_leading_subspace_and_text_goes_through_it(tmp_path, dataset, teacher, reference):
    cache = _prepare(tmp_path, dataset, teacher, "pca", projection_dim=8, projection_frames=3, dtype="float32")
    grid = _prepare(tmp_path, dataset, teacher, "pca_grid", layout="grid", projection_dim=8, projection_frames=3,
                    dtype="float32")
    proj = cache.projection
    assert cache.feature_dim == 8 and cache.manifest.teacher_dim == teacher.feature_dim
    assert proj.basis.shape == (teacher.feature_dim, 8) and proj.fitted_on == ("00/000000", "00/000002", "00/000003")
    np.testing.assert_allclose(proj.basis.T @ proj.basis, np.eye(8), atol=1e-5)
    # Independent reference: the top right-singular vectors of the fitted rows span the same subspace.
    rows = np.concatenate([reference[i] for i in (0, 2, 3)]).astype(np.float64)
    _, sv, vt = np.linalg.svd(rows, full_matrices=False)
    overlap = np.linalg.svd(proj.basis.T.astype(np.float64) @ vt[:8].T, compute_uv=False)
    assert overlap.min() > 0.999
    assert proj.energy == pytest.approx((sv[:8] ** 2).sum() / (sv ** 2).sum(), rel=1e-4)
    assert grid.projection.sha256 == proj.sha256  # fitted on the same frames' pairs, whatever the layout
    for i in range(len(cache)):
        want = reference[i] @ proj.basis
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(cache[i].pair_features, want, atol=1e-5)
        np.testing.assert_allclose(grid[i].pair_features, want, atol=1e-5)

    from relidar.core.text.spec import NamedTextSpec
    from relidar.core.vocabulary import Vocabulary

    text = teacher.encode_text(["a car", "a road", "a tree"])
    vocab = Vocabulary(("car", "road", "tree"), (("car",), ("road",), ("tree",)), np.zeros((3, 3), np.uint8),
                       text / np.linalg.norm(text, axis=1, keepdims=True), ("{}",),
                       NamedTextSpec(name="tiny", feature_dim=teacher.feature_dim))
    projected = cache.project_vocabulary(vocab)
    assert projected.feature_dim == 8 and projected.class_names == vocab.class_names
    want = vocab.embeddings @ proj.basis
    np.testing.assert_allclose(projected.embeddings, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    assert _prepare(tmp_path, dataset, teacher, "plain").project_vocabulary(vocab) is vocab
    with pytest.raises(CacheError) as err:
        cache.project_vocabulary(projected)
    assert err.value.field == "embeddings"
    with pytest.raises(CacheError) as err:
        fit_projection(rows, teacher.feature_dim, ["x"])
    assert err.value.field == "storage.projection_dim"


def test_changed_projection_makes_frames_stale(tmp_path, dataset, teacher):
    out = tmp_path / "pca"
    storage = {"projection_dim": 4, "projection_frames": 2}
    prepare_cache(open_dataset(dataset), out, teacher, settings=settings(**storage), limit=2)
    (out / "projection.npz").unlink()
    rows = np.random.default_rng(1).normal(size=(100, teacher.feature_dim))
    feature_cache.write_projection(out / "projection.npz", fit_projection(rows, 4, ["other"]))
    with pytest.raises(CacheError) as err:
        CacheReader(out)[0]
    assert err.value.path == out / "frames" / "000000.npz"
    report = prepare_cache(open_dataset(dataset), out, teacher, settings=settings(**storage), limit=2)
    assert [r for _, r in report.replaced] == ["stale: encoded with another projection"] * 2
    CacheReader(out)[0]


def test_checksum_verified_once_per_unchanged_file(tmp_path, dataset, teacher, monkeypatch):
    out = tmp_path / "cache"
    prepare_cache(open_dataset(dataset), out, teacher, settings=settings(layout="grid", dtype="int8"), limit=2)
    calls = []
    real = artifact.sha256_arrays
    monkeypatch.setattr(artifact, "sha256_arrays", lambda arrays: calls.append(1) or real(arrays))
    cache = CacheReader(out)
    for _ in range(3):
        cache[0], cache[1]
    assert len(calls) == 2
    always = CacheReader(out, verify="always")
    for _ in range(3):
        always[0]
    assert len(calls) == 5

    # A file replaced (a new inode, as every relidar write is) is verified again -- and a damaged one refused.
    path = out / "frames" / "000001.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as err:
        cache[1]
    assert err.value.path == path


def _prepare_cmd(dataset: Path, out: Path, rank: int) -> list[str]:
    return [sys.executable, "-m", "relidar.cli.prepare", str(dataset), "--out", str(out), "--teacher", "synthetic",
            "--superpixels", "8", "--rank", str(rank), "--world-size", "2", "--layout", "grid", "--dtype", "int8",
            "--projection-dim", "8", "--projection-frames", "2"]


def test_rank_killed_with_sigkill_resumes_only_its_unfinished_frames(tmp_path):
    """Compact mode (grid + int8 + PCA), two ranks: rank 0 is SIGKILLed after its first frame file appears; the
    files present then all verify, and its restart recomputes only what it had not finished."""
    dataset = write_synthetic_kitti(tmp_path / "kitti", frames=8, beams=32)
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    one = subprocess.run(_prepare_cmd(dataset, out, 1), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    rank1_files = {p.name: p.stat().st_mtime_ns for p in (out / "frames").glob("*.npz")}
    assert sorted(rank1_files) == ["000001.npz", "000003.npz", "000005.npz", "000007.npz"]

    proc = subprocess.Popen(_prepare_cmd(dataset, out, 0), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "frames" / "000000.npz").exists():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"rank 0 ended before it was killed: {err.decode()[-2000:]}"

    cache = CacheReader(out, verify="always")
    finished = [fid for fid in cache.frame_ids if int(fid[-6:]) % 2 == 0]
    assert 1 <= len(finished) < 4
    for i in range(len(cache)):
        cache[i]  # every file present is complete: it loads and its checksum verifies

    again = subprocess.run(_prepare_cmd(dataset, out, 0), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads((out / "reports" / "rank-0.json").read_text())
    assert report["skipped_existing"] == finished
    assert report["done"] == [f"00/{i:06d}" for i in (0, 2, 4, 6) if f"00/{i:06d}" not in finished]
    assert not list((out / "frames").glob(".*.partial"))
    assert 0 < report["projection_energy"] <= 1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "frames").glob("00000[1357].npz")} == rank1_files
    full = CacheReader(out)
    assert len(full) == 8 and full.feature_dim == 8 and full.storage.layout == "grid"
    assert all(full[i].pair_features.shape[1] == 8 for i in range(8))


def test_projected_synthetic_cache_trains_and_evaluates_in_its_basis(tmp_path):
    """data.synthetic.storage picks the mode; the student learns k-d rows and evaluation projects the text."""
    from support.tiny_distill import tiny_config_tree, write_config

    from relidar.core.config import load_config
    from relidar.model.weights import load_student
    from relidar.training.config import DistillConfig
    from relidar.training.data import DataError, ensure_cache, synthetic_vocabulary
    from relidar.training.distill import distill
    from relidar.training.evaluate import evaluate

    tree = tiny_config_tree(tmp_path / "cache")
    tree["data"]["synthetic"]["storage"] = {"layout": "grid", "dtype": "int8", "projection_dim": 8,
                                            "projection_frames": 2}
    tree["data"]["val"]["synthetic"]["storage"] = tree["data"]["synthetic"]["storage"]  # built in the training basis
    tree["student"]["out_dim"] = 8
    tree["train"]["epochs"] = 1
    cfg = load_config(write_config(tmp_path / "pca.yaml", tree), DistillConfig)
    result = distill(cfg, out=tmp_path / "runs")
    cache = CacheReader(tmp_path / "cache")
    assert cache.feature_dim == 8 and cache.storage.layout == "grid" and cache[0].pair_features.shape[1] == 8
    assert CacheReader(tmp_path / "cache_val").feature_space == cache.feature_space
    report = evaluate(load_student(result.weights), cfg)
    full = synthetic_vocabulary(cfg.data.synthetic)
    want = full.embeddings @ cache.projection.basis
    np.testing.assert_allclose(report.vocabulary.embeddings, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    summary = report.summary()
    assert 0 <= summary["zero_shot_miou"] <= 1 and 0 < summary["teacher_miou_visible"] <= 1

    tree["data"]["synthetic"]["storage"] = {}
    with pytest.raises(DataError) as err:
        ensure_cache(load_config(write_config(tmp_path / "other.yaml", tree), DistillConfig).data)
    assert err.value.field == "data.cache" and err.value.path == tmp_path / "cache"
