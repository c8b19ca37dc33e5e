"""The Segmenter on a small random-weight bundle: output contract, backends agreeing, the fused
classifier against the per-point features it returns, run-time class changes, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from support.bundle_support import shared_bundle
from support.scan_support import street_scan

from relidar.core.bundle import BundleError
from relidar.core.segmenter import Segmenter, SegmenterError, lane_threads


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Segmenter:
    return Segmenter(shared_bundle(tmp_path_factory), backend="onnxruntime")


def test_output_contract(segmenter: Segmenter) -> None:
    pts = street_scan(8000)
    pts[:200, 0] = 70.0  # outside the crop (x < 51.2)
    result = segmenter(pts)
    assert segmenter.backend == "onnxruntime"
    assert result.labels.shape == (len(pts),) and result.labels.dtype == np.int32
    assert result.scores.shape == (len(pts),) and result.scores.dtype == np.float32
    assert result.features is None
    assert np.all(result.labels[:200] == -1) and np.all(result.scores[:200] == 0)
    inside = result.labels >= 0
    assert inside[200:].all()
    assert result.labels.max() < segmenter.vocabulary.num_classes
    c = segmenter.vocabulary.num_classes
    assert np.all(result.scores[inside] >= 1.0 / c - 1e-6) and np.all(result.scores <= 1.0)
    assert set(result.timings_ms) == {"preprocess", "network", "postprocess", "total"}
    assert result.timings_ms["total"] >= result.timings_ms["network"] > 0


def test_fused_classifier_agrees_with_features(segmenter: Segmenter) -> None:
    """Labels/scores come from the graph's quadratic-form cosine; recompute them from the returned
    D-dim features (head applied in numpy) with a plain softmax over 100 * cosine."""
    result = segmenter(street_scan(8000, 1), return_features=True)
    feats = result.features
    inside = result.labels >= 0
    assert feats.shape == (len(result.labels), 32)
    np.testing.assert_allclose(np.linalg.norm(feats[inside], axis=1), 1.0, atol=1e-5)
    assert np.all(feats[~inside] == 0)
    logits = 100.0 * feats[inside] @ segmenter.vocabulary.embeddings.T
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    assert (prob.argmax(axis=1) == result.labels[inside]).mean() >= 0.999
    np.testing.assert_allclose(prob.max(axis=1), result.scores[inside], atol=1e-4)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_neighbour_table_graph_agrees_with_pair_lists(tmp_path_factory, segmenter: Segmenter, backend: str) -> None:
    """The bundle's GPU formulation (what CUDA backends run by default), here forced on the CPU."""
    if backend == "torch":
        pytest.importorskip("torch")
    root = shared_bundle(tmp_path_factory)
    assert segmenter.formulation == "pairs"  # the CPU default
    tables = Segmenter(root, backend=backend, formulation="table")
    assert tables.formulation == "table"
    pts = street_scan(8000, 3)
    a, b = segmenter(pts, return_features=True), tables(pts, return_features=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)


def test_set_classes_changes_vocabulary_not_network(tmp_path_factory) -> None:
    seg = Segmenter(shared_bundle(tmp_path_factory), backend="onnxruntime")
    backend = seg._backend
    pts = street_scan(8000, 3)
    before = seg(pts)
    seg.set_classes(["car", "road"])
    after = seg(pts)
    assert seg._backend is backend, "the network is not reloaded"
    assert seg.vocabulary.class_names == ("car", "road") and seg.vocabulary.embeddings.shape == (2, 32)
    assert after.labels.max() <= 1 and set(np.unique(after.labels)) <= {-1, 0, 1}
    assert not np.array_equal(before.scores, after.scores)
    # The same classes through the bundle's own vocabulary rows give the same embeddings.
    full = seg.bundle.vocabulary()
    np.testing.assert_allclose(seg.vocabulary.embeddings[1], full.embeddings[full.class_names.index("road")], atol=1e-6)
    for bad in (["car", "car"], [], ["car", " "]):
        with pytest.raises(SegmenterError) as err:
            seg.set_classes(bad)
        assert err.value.field == "classes"
    assert seg.vocabulary.class_names == ("car", "road"), "a refused class list leaves the classes as they were"


def test_edge_inputs(segmenter: Segmenter) -> None:
    empty = segmenter(np.zeros((0, 4), np.float32), return_features=True)
    assert empty.labels.shape == (0,) and empty.features.shape == (0, 32)
    outside = segmenter(np.full((5, 3), 500.0, np.float32))
    assert np.all(outside.labels == -1) and np.all(outside.scores == 0)
    xyz_only = segmenter(street_scan(500)[:, :3])
    assert xyz_only.labels.shape == (500,)
    with pytest.raises(SegmenterError) as err:
        segmenter(np.zeros((10, 2), np.float32))
    assert err.value.field == "points"


def test_preprocess_next_scan_while_labelling_this_one(segmenter: Segmenter) -> None:
    """preprocess + label (the split a pipelined caller uses) is __call__, also with the two in parallel
    threads (both release the GIL)."""
    import threading

    scans = [street_scan(6000, seed) for seed in range(4)]
    expected = [segmenter(s) for s in scans]
    feeds = [segmenter.preprocess(scans[0])]

    def preprocess_rest() -> None:
        for s in scans[1:]:
            feeds.append(segmenter.preprocess(s))

    worker = threading.Thread(target=preprocess_rest)
    worker.start()
    first = segmenter.label(feeds[0], preprocess_ms=1.5)
    worker.join()
    results = [first] + [segmenter.label(f) for f in feeds[1:]]
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert first.timings_ms["preprocess"] == 1.5
    assert first.timings_ms["total"] == pytest.approx(1.5 + first.timings_ms["network"] + first.timings_ms["postprocess"])


def test_bad_bundle_and_backend(tmp_path, tmp_path_factory) -> None:
    with pytest.raises(BundleError) as err:
        Segmenter(tmp_path / "missing")
    assert err.value.path == tmp_path / "missing"
    with pytest.raises(BundleError) as err:
        Segmenter(shared_bundle(tmp_path_factory), backend="nope")
    assert err.value.path == shared_bundle(tmp_path_factory) and "'nope'" in err.value.message


def _voxel_of(xyz: np.ndarray, seg: Segmenter) -> list[tuple[int, int, int]]:
    grid = seg.preprocessor.grid
    cells = np.floor((xyz.astype(np.float64) - np.asarray(grid.crop_min)) / grid.voxel_size).astype(np.int64)
    return [tuple(c) for c in cells]


@pytest.mark.parametrize("source", ["synthetic", "kitti"])
def test_non_finite_points_are_repaired_and_counted(segmenter: Segmenter, source: str, request) -> None:
    import warnings

    if source == "kitti":
        from relidar.core.scan_io import read_scan

        scan = read_scan(request.getfixturevalue("kitti_scan_path"))
    else:
        scan = street_scan(20000)
    rng = np.random.default_rng(3)
    n = len(scan)
    bad = scan.copy()
    rows_i = rng.choice(n, max(1, n // 1000), replace=False)  # 0.1 % of the intensities NaN or inf
    bad[rows_i, 3] = rng.choice([np.nan, np.inf, -np.inf], len(rows_i))
    rows_xyz = rng.choice(np.setdiff1d(np.arange(n), rows_i), max(1, n // 100), replace=False)
    bad[rows_xyz, rng.integers(0, 3, len(rows_xyz))] = rng.choice([np.nan, np.inf], len(rows_xyz))
    clean = np.ones(n, bool)
    clean[rows_i] = clean[rows_xyz] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        result = segmenter(bad)
    reference = segmenter(scan[clean])
    # the finite points are labelled exactly as in the scan without the bad points
    np.testing.assert_array_equal(result.labels[clean], reference.labels)
    np.testing.assert_array_equal(result.scores[clean], reference.scores)
    assert np.isfinite(result.scores).all()
    assert result.non_finite_xyz == len(rows_xyz) and result.non_finite_intensity == len(rows_i)
    assert np.all(result.labels[rows_xyz] == -1) and np.all(result.scores[rows_xyz] == 0)
    # a point with a bad intensity takes its voxel's label (found here by brute force), else -1
    by_voxel = dict(zip(_voxel_of(scan[clean, :3], segmenter), reference.labels))
    expected = [by_voxel.get(v, -1) for v in _voxel_of(scan[rows_i, :3], segmenter)]
    assert result.labels[rows_i].tolist() == expected
    assert any(e >= 0 for e in expected) or source == "synthetic"


def test_all_non_finite_scan(segmenter: Segmenter) -> None:
    import warnings

    scan = np.full((100, 4), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = segmenter(scan, return_features=True)
    assert np.all(result.labels == -1) and result.non_finite_xyz == 100 and result.features.shape == (100, 32)


def _run_side_by_side(seg: Segmenter, scans: list[np.ndarray], during_run=None) -> list:
    """Label ``scans`` from one thread each at once; ``during_run`` wraps the backend's real ``run``."""
    import threading

    if during_run is not None:
        real_run = seg._backend.run
        seg._backend.run = lambda feed: during_run(real_run, feed)  # instance attribute: this Segmenter only
    inputs = [seg.preprocess(s) for s in scans]
    results: list = [None] * len(scans)

    def lane(i: int) -> None:
        results[i] = seg.label(inputs[i])

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(len(scans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_calls_overlap_on_onnxruntime_and_label_as_one_at_a_time(tmp_path_factory) -> None:
    """The node's lanes: two threads label with one Segmenter (ONNX Runtime, one intra-op thread each).
    Both calls are inside the backend at once (the barrier below needs both), and the labels are those
    of calls made one after the other."""
    import threading

    seg = Segmenter(shared_bundle(tmp_path_factory), backend="onnxruntime", threads=1)
    scans = [street_scan(6000, seed) for seed in (5, 6)]
    expected = [seg(s) for s in scans]
    both_inside = threading.Barrier(2, timeout=30)

    def meet_then_run(real_run, feed):
        both_inside.wait()  # raises BrokenBarrierError if the calls were made to take turns
        return real_run(feed)

    results = _run_side_by_side(seg, scans, meet_then_run)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_calls_on_a_backend_that_runs_one_at_a_time_take_turns(tmp_path_factory) -> None:
    """torch (like TensorRT) declares ``concurrent = False``: calls from several threads never overlap."""
    import threading
    import time

    pytest.importorskip("torch")
    seg = Segmenter(shared_bundle(tmp_path_factory), backend="torch")
    scans = [street_scan(4000, seed) for seed in (7, 8, 9)]
    expected = [seg(s) for s in scans]
    lock = threading.Lock()
    inside, most = [0], [0]

    def count_then_run(real_run, feed):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # long enough for another thread to come in, were it let in
        try:
            return real_run(feed)
        finally:
            with lock:
                inside[0] -= 1

    results = _run_side_by_side(seg, scans, count_then_run)
    assert most[0] == 1
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.labels, want.labels)


def test_lane_threads_share_the_usable_cpus_among_the_lanes() -> None:
    import os

    cpus = len(os.sched_getaffinity(0))
    assert lane_threads(2) == max(1, cpus // 2)
    assert lane_threads(cpus * 4) == 1  # more lanes than CPUs: still one thread each
    assert lane_threads(1) is None  # one lane: ONNX Runtime's own choice
    assert lane_threads(2, 3) == 3 and lane_threads(1, 1) == 1  # a requested count is used as given
