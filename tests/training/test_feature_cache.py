"""Teacher feature cache: contents against a direct computation, resume, ranks, corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")

from support.tiny_clip import build_tiny_teacher

from relidar.core.frame import Camera, Frame
from relidar.training.feature_cache import (
    CacheError,
    CacheReader,
    CacheSettings,
    prepare_cache,
    rank_frames,
)
from relidar.training.pairs import assign_cameras, build_pairs, superpixel_ids
from relidar.training.readers.base import Reader

R_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]])
K = np.array([[60.0, 0.0, 48.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])
CLASSES = ("road", "car")


class MemoryReader(Reader):
    """Frames held in memory behind the dataset reader interface."""

    name = "memory"

    def __init__(self, frames: list[Frame], root: Path) -> None:
        super().__init__(root)
        self._frames = frames
        self._frame_ids = [f.frame_id for f in frames]

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASSES

    def _load(self, index: int) -> Frame:
        return self._frames[index]


def make_frame(i: int, overlap: bool = True) -> Frame:
    rng = np.random.default_rng(100 + i)
    ahead = rng.uniform([4, -3, -1, 0], [25, 3, 1, 1], size=(300, 4))
    behind = rng.uniform([-25, -3, -1, 0], [-4, 3, 1, 1], size=(100, 4))
    points = np.concatenate([ahead if overlap else behind, behind]).astype(np.float32)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    image[:, :48] //= 4  # two regions for SLIC
    labels = rng.integers(-1, 2, size=len(points))
    return Frame(f"seq/{i:03d}", points, [Camera("front", image, K, R_CAM_FROM_LIDAR)], labels, CLASSES)


SETTINGS = CacheSettings(superpixel_segments=8)


@pytest.fixture(scope="module")
def teacher():
    return build_tiny_teacher(seed=3, image_size=64)


@pytest.fixture()
def reader(tmp_path):
    return MemoryReader([make_frame(i) for i in range(5)], tmp_path / "dataset")


def test_cache_equals_direct_computation(tmp_path, teacher, reader):
    report = prepare_cache(reader, tmp_path / "cache", teacher, settings=SETTINGS)
    assert len(report.done) == 5 and not report.failed and not report.skipped
    cache = CacheReader(tmp_path / "cache")
    assert len(cache) == 5 and cache.frame_ids == reader.frame_ids
    assert cache.manifest.teacher == teacher.name and cache.feature_dim == 32
    assert cache.class_names == CLASSES and cache.manifest.ignore_index == -1
    assert cache.manifest.dataset_format == "memory"
    for i in (0, 3):
        frame = reader[i]
        got = cache[i]
        pixels = assign_cameras(frame)
        pairs = build_pairs(frame, [teacher.encode_image(frame.cameras[0].image)], pixels)
        sp = superpixel_ids(frame, pixels, n_segments=8, compactness=SETTINGS.superpixel_compactness)
        assert got.frame_id == frame.frame_id and got.camera_names == ("front",)
        np.testing.assert_array_equal(got.points, frame.points)
        np.testing.assert_array_equal(got.labels, frame.labels)
        np.testing.assert_array_equal(got.pair_point, pairs.point_index)
        np.testing.assert_array_equal(got.pair_camera, pairs.camera_index)
        np.testing.assert_allclose(got.pair_uv, pairs.uv)
        assert got.features.layout == "pairs" and got.features.values.dtype == np.float16  # the default storage
        assert got.pair_features.dtype == np.float32
        np.testing.assert_allclose(got.pair_features, pairs.features, atol=2e-3)
        np.testing.assert_array_equal(got.superpixels, sp)
        assert (got.superpixels[got.pair_point] >= 0).all()
        unpaired = np.setdiff1d(np.arange(frame.num_points), got.pair_point)
        assert unpaired.size >= 100 and (got.superpixels[unpaired] == -1).all()
    assert report.bytes_per_frame > 0 and report.pairs_written == sum(cache[i].num_pairs for i in range(5))


def test_resume_recomputes_only_damaged_frames(tmp_path, teacher, reader):
    out = tmp_path / "cache"
    prepare_cache(reader, out, teacher, settings=SETTINGS)
    files = sorted((out / "frames").glob("*.npz"))
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    files[1].unlink()                                            # never written
    files[2].write_bytes(files[2].read_bytes()[:1000])           # torn write without the atomic rename
    partial = files[3].parent / f".{files[3].name}.abc123.partial"
    partial.write_bytes(files[3].read_bytes()[:-50])             # a killed writer's temp file...
    files[3].unlink()                                            # ...that never got renamed

    damaged = CacheReader(out)
    assert damaged.missing_frame_ids == ["seq/001", "seq/003"]  # the .partial is not a frame file
    with pytest.raises(CacheError) as err:
        damaged[damaged.frame_ids.index("seq/002")]
    assert err.value.path == files[2] and "relidar prepare" in err.value.hint

    report = prepare_cache(reader, out, teacher, settings=SETTINGS)
    assert report.done == ["seq/001", "seq/002", "seq/003"]
    assert report.skipped == ["seq/000", "seq/004"]
    assert [f for f, _ in report.replaced] == ["seq/002"]
    assert report.removed_partials == 1 and not partial.exists()
    assert files[0].stat().st_mtime_ns == stamps[files[0].name]  # untouched
    cache = CacheReader(out)
    assert len(cache) == 5 and all(cache[i].frame_id == reader.frame_ids[i] for i in range(5))
    ranks = json.loads((out / "reports" / "rank-0.json").read_text())
    assert ranks["skipped_existing"] == ["seq/000", "seq/004"]


class InterruptingTeacher:
    """Delegates to a real teacher and stops the run (like Ctrl-C) on its n-th image."""

    def __init__(self, inner, stop_at: int) -> None:
        self._inner, self._stop_at, self._calls = inner, stop_at, 0

    name = property(lambda self: self._inner.name)
    feature_dim = property(lambda self: self._inner.feature_dim)

    def encode_text(self, prompts):
        return self._inner.encode_text(prompts)

    def encode_image(self, image):
        self._calls += 1
        if self._calls == self._stop_at:
            raise KeyboardInterrupt
        return self._inner.encode_image(image)


def test_interrupted_run_leaves_no_partial_frame(tmp_path, teacher, reader):
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(reader, out, InterruptingTeacher(teacher, stop_at=3), settings=SETTINGS)
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000000.npz", "000001.npz"]
    cache = CacheReader(out)
    assert len(cache) == 2 and cache.missing_frame_ids == ["seq/002", "seq/003", "seq/004"]
    report = prepare_cache(reader, out, teacher, settings=SETTINGS)
    assert report.done == ["seq/002", "seq/003", "seq/004"] and len(report.skipped) == 2


def test_ranks_cover_every_frame_once(tmp_path, teacher, reader):
    out = tmp_path / "cache"
    r0 = prepare_cache(reader, out, teacher, settings=SETTINGS, rank=0, world_size=2)
    r1 = prepare_cache(reader, out, teacher, settings=SETTINGS, rank=1, world_size=2)
    assert r0.done == ["seq/000", "seq/002", "seq/004"] and r1.done == ["seq/001", "seq/003"]
    assert len(CacheReader(out)) == 5
    for w in (1, 3, 4):
        owned = [rank_frames(10, r, w) for r in range(w)]
        assert sorted(i for share in owned for i in share) == list(range(10))
    with pytest.raises(ValueError, match="rank 2"):
        rank_frames(10, 2, 2)


def test_limit_and_frame_without_overlap(tmp_path, teacher):
    frames = [make_frame(0), make_frame(1, overlap=False), make_frame(2), make_frame(3)]
    reader = MemoryReader(frames, tmp_path / "dataset")
    out = tmp_path / "cache"
    report = prepare_cache(reader, out, teacher, settings=SETTINGS, limit=3)
    assert report.done == ["seq/000", "seq/002"]
    assert report.failed[0][0] == "seq/001" and "no point projects" in report.failed[0][1]
    cache = CacheReader(out)
    assert cache.frame_ids == ["seq/000", "seq/002"] and cache.missing_frame_ids == ["seq/001"]
    assert "no point projects" in cache.failures()[0]["reason"]


def test_corrupt_files_and_conflicts_raise_clear_errors(tmp_path, teacher, reader):
    out = tmp_path / "cache"
    prepare_cache(reader, out, teacher, settings=SETTINGS, limit=2)
    path = out / "frames" / "000001.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the feature array
    path.write_bytes(bytes(data))
    cache = CacheReader(out)
    with pytest.raises(CacheError) as err:
        cache[1]
    assert err.value.path == path
    cache[0]  # the intact frame still reads

    with pytest.raises(CacheError) as err:
        prepare_cache(reader, out, build_tiny_teacher(seed=3, image_size=32), settings=SETTINGS)
    assert (err.value.path, err.value.field) == (out / "manifest.json", "teacher")
    with pytest.raises(CacheError) as err:
        CacheReader(tmp_path / "nothing")
    assert err.value.path == tmp_path / "nothing" / "manifest.json"
    (out / "manifest.json").write_text('{"format_version": 1, "teacher": 3}')
    with pytest.raises(CacheError) as err:
        CacheReader(out)
    assert (err.value.path, err.value.field) == (out / "manifest.json", "teacher")
    (out / "manifest.json").write_text('{"format_version": 7}')
    with pytest.raises(CacheError) as err:
        CacheReader(out)
    assert err.value.field == "format_version"


def test_prepare_cli_on_real_kitti_frame_resumes(tmp_path, kitti_frame_dir):
    pytest.importorskip("relidar.synthetic.teacher")
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.prepare import prepare

    app = single_command_app(prepare)  # what `torchrun -m relidar.cli.prepare` runs
    out = tmp_path / "cache"
    args = [str(kitti_frame_dir), "--out", str(out), "--teacher", "synthetic", "--superpixels", "50"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    cache = CacheReader(out)
    assert len(cache) == 1 and cache.manifest.dataset_format == "kitti_object"
    frame = cache[0]
    assert frame.points.shape == (115384, 4)
    # Roughly the points ahead of the car land in the camera's 90-degree view: a fifth of a 360-degree sweep.
    assert 10_000 < frame.num_pairs < 40_000
    assert frame.pair_features.shape == (frame.num_pairs, cache.feature_dim)
    assert np.all(frame.pair_uv[:, 0] < 1242) and np.all(frame.pair_uv[:, 1] < 375)

    second = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    report = json.loads((out / "reports" / "rank-0.json").read_text())
    assert report["done"] == [] and len(report["skipped_existing"]) == 1

    bad = CliRunner().invoke(app, [str(tmp_path), "--out", str(out), "--teacher", "synthetic"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.output.count("\n") == 1 and f"error: {tmp_path}: not a dataset" in bad.output


def test_non_finite_points_are_left_out_and_counted(tmp_path, teacher):
    """A NaN/inf coordinate or intensity never reaches a training cache (it would make its voxel's mean
    feature NaN): the frame is cached as the same frame without those points, and the report counts them."""
    clean = make_frame(0)
    dirty_points = clean.points.copy()
    bad = np.array([3, 50, 120, 310])
    dirty_points[bad[0], 0] = np.nan
    dirty_points[bad[1], 3] = np.nan
    dirty_points[bad[2], 2] = np.inf
    dirty_points[bad[3], 3] = -np.inf
    dirty = Frame(clean.frame_id, dirty_points, clean.cameras, clean.labels, CLASSES)
    keep = np.setdiff1d(np.arange(clean.num_points), bad)
    reference = Frame(clean.frame_id, clean.points[keep], clean.cameras, clean.labels[keep], CLASSES)
    got = prepare_cache(MemoryReader([dirty], tmp_path / "d"), tmp_path / "dirty", teacher, settings=SETTINGS)
    want = prepare_cache(MemoryReader([reference], tmp_path / "r"), tmp_path / "ref", teacher, settings=SETTINGS)
    assert got.points_dropped_nonfinite == 4 and want.points_dropped_nonfinite == 0
    assert got.to_json()["points_dropped_nonfinite"] == 4
    a, b = CacheReader(tmp_path / "dirty")[0], CacheReader(tmp_path / "ref")[0]
    assert np.isfinite(a.points).all()
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.pair_point, b.pair_point)
    np.testing.assert_array_equal(a.pair_features, b.pair_features)
