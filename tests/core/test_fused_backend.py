"""The fused CPU backend: its compiled convolution against a dense neighbour-table product and the pair
definition of the kernel-2 convolutions, its network against PyTorch (BatchNorm with real statistics) and
against the stock ONNX graph on ONNX Runtime (random clouds and the real KITTI scan), and what it refuses.

The tolerance, stated once: backbone features within ``FEATURE_RTOL`` of the largest reference feature
(float32 sums in another order: the kernel adds each voxel's neighbours in one pass, the graph per offset);
scores within ``SCORE_ATOL``; labels identical wherever the reference's two best logits (logit_scale x
cosine, computed in float64 from the reference's own features) are at least ``MARGIN`` apart, and points
below that margin may take either of the tied classes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from support.bundle_support import bundle_copy, shared_bundle

from relidar.core import fused_loops
from relidar.core.backends import BackendError
from relidar.core.backends.fused import Conv, FusedBackend, Pairs, scan_pairs
from relidar.core.bundle import BundleError, load_bundle
from relidar.core.contract import read_safetensors
from relidar.core.kernel_maps import build_kernel_maps_numpy, build_neighbour_tables_numpy
from relidar.core.segmenter import Segmenter
from relidar.core.voxelize import VoxelGrid, voxelize

FEATURE_RTOL = 1e-5
SCORE_ATOL = 1e-5
MARGIN = 1e-3
NO_RESIDUAL = np.zeros((0, 0), np.float32)


def _street(n: int, seed: int) -> np.ndarray:
    """A ground plane, a few walls and scattered clutter: voxels with 3x3x3 neighbours, as in a real scan."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-20, 20, (n // 2, 2)), rng.normal(-1.7, 0.03, n // 2)]
    k = n // 3
    wall = np.c_[rng.uniform(-20, 20, k), rng.choice([-8.0, 9.5], k) + rng.normal(0, 0.05, k), rng.uniform(-1.7, 2.0, k)]
    clutter = np.c_[rng.uniform(-25, 25, (n - n // 2 - k, 2)), rng.uniform(-2, 1.5, n - n // 2 - k)]
    xyz = np.concatenate([ground, wall, clutter])
    return np.c_[xyz, rng.random(len(xyz))].astype(np.float32)


def _maps(seed: int, levels: int = 3):
    grid = VoxelGrid(0.25, (-6.0, -6.0, -2.0), (6.0, 6.0, 1.0))
    rng = np.random.default_rng(seed)
    pts = np.c_[rng.uniform(-6, 6, (6000, 2)), rng.uniform(-2, 1, (6000, 1)), rng.random((6000, 1))]
    vox = voxelize(pts.astype(np.float32), grid)
    return build_kernel_maps_numpy(vox.coords, vox.grid_shape, levels)


def _run(x, weight, bias, pairs: Pairs, residual=NO_RESIDUAL, relu=False, split=None, block=64) -> np.ndarray:
    conv = Conv.of("subm", 0, weight, bias)
    out = np.full((pairs.num_out, conv.cout), np.nan, np.float32)  # every element must be written
    bounds = [0, *(split or []), pairs.num_out]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        fused_loops.sparse_conv(x, conv.weight, conv.bias, pairs.index, pairs.offsets, conv.tiles, out, residual, relu, lo,
                                hi, block)
    return out


def test_balanced_rows_split_the_work_evenly() -> None:
    maps = _maps(seed=3)
    pairs = scan_pairs(maps)["subm", 0]
    v = pairs.num_out
    per_row = 1 + np.bincount(np.concatenate([pairs.index[o:o + n] for o, _, n in pairs.offsets]), minlength=v)
    for parts in (1, 2, 3, 7):
        bounds = fused_loops.balanced_rows(pairs.index, pairs.offsets, v, parts)
        assert bounds[0] == 0 and bounds[-1] == v and np.all(np.diff(bounds) >= 0)
        work = [per_row[lo:hi].sum() for lo, hi in zip(bounds[:-1], bounds[1:])]
        assert max(work) - min(work) <= 2 * per_row.max(), (parts, work)


def test_column_tiles_cover_each_width_once() -> None:
    for width in range(8, 264, 8):
        tiles = fused_loops.column_tiles(width)
        columns = np.concatenate([np.arange(start, start + 8 * vectors) for start, vectors in tiles])
        np.testing.assert_array_equal(columns, np.arange(width))
        assert set(tiles[:, 1]) <= ({1} if width == 8 else {2, 3})


@pytest.mark.parametrize(("cin", "cout"), [(4, 16), (5, 24), (16, 8), (7, 40), (33, 48), (16, 64)])
def test_submanifold_conv_equals_the_dense_neighbour_table_product(cin: int, cout: int) -> None:
    maps = _maps(seed=cin)
    table = build_neighbour_tables_numpy(maps).subm[0]
    v = maps.num_voxels(0)
    rng = np.random.default_rng(cout)
    x = rng.standard_normal((v, cin)).astype(np.float32)
    weight = rng.standard_normal((27, cin, cout)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    residual = rng.standard_normal((v, cout)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((1, cin), np.float32)]).astype(np.float64)
    want = np.einsum("vkc,kco->vo", padded[table], weight.astype(np.float64)) + bias + residual
    pairs = scan_pairs(maps)["subm", 0]
    got = _run(x, weight, bias, pairs, residual, relu=True)
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=1e-5, atol=1e-4)
    # rows in several ranges and small blocks (as the thread pool runs them): the same bits
    np.testing.assert_array_equal(_run(x, weight, bias, pairs, residual, relu=True, split=[7, v // 2], block=5), got)
    np.testing.assert_allclose(_run(x, weight, bias, pairs), want - residual, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["down", "up"])
def test_kernel_two_convs_equal_their_pair_definition(kind: str) -> None:
    """down: out[parent] += x[child] @ W[o]; up (transposed): out[child] = x[parent] @ W[o], over each offset's pairs."""
    maps = _maps(seed=1)
    rng = np.random.default_rng(2)
    fine, coarse = maps.num_voxels(0), maps.num_voxels(1)
    cin, cout = 12, 24
    x = rng.standard_normal((fine if kind == "down" else coarse, cin)).astype(np.float32)
    weight = rng.standard_normal((8, cin, cout)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    want = np.tile(bias.astype(np.float64), (coarse if kind == "down" else fine, 1))
    for o, (parent, child) in enumerate(maps.down[0]):
        src, dst = (child, parent) if kind == "down" else (parent, child)
        np.add.at(want, dst, x[src].astype(np.float64) @ weight[o])
    np.testing.assert_allclose(_run(x, weight, bias, scan_pairs(maps)[kind, 0]), want, rtol=1e-5, atol=1e-4)


def test_safetensors_reader_matches_the_library(tmp_path_factory) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = load_bundle(shared_bundle(tmp_path_factory)).path("student.safetensors")
    metadata, tensors = read_safetensors(path)
    library = load_file(str(path))
    assert tensors.keys() == library.keys()
    for name, array in library.items():
        assert tensors[name].dtype == array.dtype and np.array_equal(tensors[name], array), name
    with safe_open(str(path), framework="numpy") as fh:
        assert metadata == fh.metadata()


def test_network_is_the_models_fold_and_forward(tmp_path: Path) -> None:
    """Weights with real BatchNorm statistics: the folded convs equal the model's fold_batchnorm (to the last bit
    but one: torch's float32 sqrt is not always numpy's correctly rounded one), and backbone, labels and scores
    equal relidar.model.deployed.StudentGraph's (PyTorch) within the tolerance."""
    torch = pytest.importorskip("torch")
    from support.student_support import randomise_batchnorm

    from relidar.core.backends.fused import load_network
    from relidar.core.preprocess import Preprocessor
    from relidar.model.deployed import StudentGraph, head_arrays
    from relidar.model.network import Student, StudentConfig, fold_batchnorm
    from relidar.model.weights import save_student

    torch.manual_seed(0)
    config = StudentConfig(profile="fast", voxel_size=0.2, out_dim=24)
    student = Student(config).eval()
    randomise_batchnorm(student, 3)
    network = load_network(save_student(student, tmp_path / "s.safetensors"), "fast")
    folded = fold_batchnorm(student).backbone
    stem = folded.stem[0].conv
    cout = stem.weight.shape[2]
    np.testing.assert_allclose(network.stem[0].weight.reshape(27, -1, cout), stem.weight.detach().numpy(), rtol=3e-7, atol=0)
    np.testing.assert_allclose(network.stem[0].bias[0], stem.bias.detach().numpy(), rtol=0, atol=1e-7)
    conv2 = folded.decoder[0].blocks[0].conv2.conv
    np.testing.assert_allclose(network.decoder[0].blocks[0].conv2.weight.reshape(conv2.weight.shape),
                               conv2.weight.detach().numpy(), rtol=3e-7, atol=0)

    head = head_arrays(student)
    backend = FusedBackend(network, head["weight"], head["bias"], 100.0, threads=2)
    inputs = Preprocessor.of(config)(_street(12000, seed=4))
    text = np.random.default_rng(5).standard_normal((7, 24)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    feed = inputs.feed(text)
    graph = StudentGraph(student, 100.0).eval()
    with torch.no_grad():
        from relidar.core.graph import input_names

        want = [t.numpy() for t in graph(*(torch.from_numpy(feed[n]) for n in input_names(config.num_levels)))]
    got = backend.run(feed)
    _assert_labels_as_reference(got, dict(zip(("labels", "scores", "voxel_features"), want)), inputs.point_to_voxel,
                                head["weight"], head["bias"], text, 100.0)


def _assert_labels_as_reference(got: dict, want: dict, point_to_voxel: np.ndarray, head_weight: np.ndarray,
                                head_bias: np.ndarray, text: np.ndarray, logit_scale: float) -> None:
    """The module docstring's tolerance: features, scores, and labels except at near-ties of the reference."""
    ref = want["voxel_features"]
    assert got["voxel_features"].shape == ref.shape and got["voxel_features"].dtype == np.float32
    assert np.abs(got["voxel_features"] - ref).max() <= FEATURE_RTOL * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got["scores"], want["scores"], atol=SCORE_ATOL)
    assert got["labels"].dtype == np.int32 and got["scores"].dtype == np.float32
    y = ref.astype(np.float64) @ head_weight + head_bias
    logits = logit_scale * (y / np.linalg.norm(y, axis=1, keepdims=True)) @ text.T.astype(np.float64)
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = np.ones(len(point_to_voxel), bool)
    inside = point_to_voxel >= 0
    clear[inside] = (top2[:, 1] - top2[:, 0])[point_to_voxel[inside]] >= MARGIN
    np.testing.assert_array_equal(got["labels"][clear], want["labels"][clear])
    assert np.all(got["labels"][~inside] == -1) and np.all(got["scores"][~inside] == 0)


@pytest.fixture(scope="module")
def stock_and_fused(tmp_path_factory) -> tuple[Segmenter, Segmenter]:
    root = shared_bundle(tmp_path_factory)
    return Segmenter(root, backend="onnxruntime"), Segmenter(root, backend="fused")


def _compare_with_stock(stock: Segmenter, fused: Segmenter, points: np.ndarray) -> None:
    inputs = stock.preprocess(points)
    feed = inputs.feed(stock.vocabulary.embeddings)
    weight, bias = stock.bundle.head()
    _assert_labels_as_reference(fused._backend.run(feed), stock._backend.run(feed), inputs.point_to_voxel, weight, bias,
                                stock.vocabulary.embeddings, stock.bundle.manifest.logit_scale)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_what_the_stock_graph_labels_on_random_streets(stock_and_fused, seed: int) -> None:
    stock, fused = stock_and_fused
    assert fused.backend == "fused" and fused.formulation == "pairs"
    points = _street(20000 + 7000 * seed, seed)
    points[:50, 0] = 80.0  # outside the crop
    _compare_with_stock(stock, fused, points)


def test_labels_the_real_kitti_scan_as_the_stock_graph(stock_and_fused, kitti_scan_path: Path) -> None:
    from relidar.core.scan_io import read_scan

    stock, fused = stock_and_fused
    points = read_scan(kitti_scan_path)
    _compare_with_stock(stock, fused, points)
    a, b = stock(points), fused(points)
    np.testing.assert_array_equal(a.labels, b.labels)  # on this scan no point is within MARGIN of a tie


def test_threads_and_concurrent_calls_change_no_bit(tmp_path_factory) -> None:
    """Each output row is summed in the same order whichever thread runs it: 1 or 3 threads, and two calls
    at once on one backend, give the same bits."""
    root = shared_bundle(tmp_path_factory)
    one, three = Segmenter(root, backend="fused", threads=1), Segmenter(root, backend="fused", threads=3)
    scans = [_street(15000, seed) for seed in (7, 8)]
    expected = [one(s) for s in scans]
    got = [three(s) for s in scans]
    results: list = [None, None]

    def lane(i: int) -> None:
        results[i] = three(scans[i])

    workers = [threading.Thread(target=lane, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    for want, a, b in zip(expected, got, results):
        for result in (a, b):
            np.testing.assert_array_equal(result.labels, want.labels)
            np.testing.assert_array_equal(result.scores, want.scores)


def test_auto_runs_fused_on_a_cpu_where_the_bundle_ships_weights(tmp_path_factory) -> None:
    from relidar.core.backends import make_backend

    bundle = load_bundle(shared_bundle(tmp_path_factory))
    assert make_backend(bundle, "auto", "cpu").name == "fused"
    no_weights = bundle.manifest.model_copy(update={"student": bundle.manifest.student.model_copy(update={"weights": None})})
    assert make_backend(type(bundle)(bundle.root, no_weights), "auto", "cpu").name == "onnxruntime"
    tables = make_backend(bundle, "auto", "cpu", formulation="table")  # the table graph: only ONNX Runtime runs it here
    assert (tables.name, tables.formulation) == ("onnxruntime", "table")


def test_refuses_what_it_cannot_run(tmp_path_factory, tmp_path: Path) -> None:
    root = shared_bundle(tmp_path_factory)
    with pytest.raises(BundleError) as err:
        Segmenter(root, backend="fused", device="cuda")
    assert err.value.field == "device"
    with pytest.raises(BundleError) as err:
        Segmenter(root, backend="fused", formulation="table")
    assert err.value.field == "formulation"
    bundle = load_bundle(bundle_copy(tmp_path_factory, tmp_path / "b"))
    fake = bundle.manifest.model_copy(update={"student": bundle.manifest.student.model_copy(update={"weights": None})})
    with pytest.raises(BackendError) as err:
        FusedBackend.from_bundle(type(bundle)(bundle.root, fake))
    assert err.value.path == bundle.root
    backend = Segmenter(root, backend="fused")._backend
    feed = Segmenter(root, backend="onnxruntime").preprocess(_street(3000, 9)).feed(np.eye(2, 32, dtype=np.float32))
    bad = dict(feed, features=feed["features"][:, :3])
    with pytest.raises(BackendError) as err:
        backend.run(bad)
    assert err.value.field == "features"
    # pairs that would make the kernel (which checks no bounds) read or write outside its arrays, or race
    for name, change in (("subm_1_4", lambda a: a + 10**6), ("down_0_3", lambda a: -a - 1), ("subm_0_2", lambda a: a[:, ::-1])):
        assert feed[name].shape[1] >= 2
        with pytest.raises(BackendError) as err:
            backend.run(dict(feed, **{name: np.ascontiguousarray(change(feed[name]))}))
        assert err.value.field == name[:-1] + "*"
