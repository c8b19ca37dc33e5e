"""Student -> ONNX, in both kernel-map formulations: TensorRT-parsable ops (pairs after tensorrt_compatible),
symbolic sizes, and ONNX Runtime equal to PyTorch (the raw graph against the unfolded eval-mode student at two sizes;
a bundle through the Segmenter on a street and the real KITTI scan); the neighbour-table graph is one gather and
one GEMM per convolution."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from support.bundle_support import shared_bundle  # noqa: E402
from support.scan_support import street_scan  # noqa: E402

from relidar.core.graph import OUTPUTS, input_names  # noqa: E402
from relidar.core.kernel_maps import KernelMaps, NeighbourTables  # noqa: E402
from relidar.core.scan_io import read_scan  # noqa: E402
from relidar.export.onnx_student import example_feed, export_student_onnx, table_example, tensorrt_compatible  # noqa: E402
from relidar.export.parity import FEATURE_TOLERANCE_FP32, LABEL_AGREEMENT_MIN, ParityReport, compare_backends  # noqa: E402
from relidar.model.network import Student, StudentConfig  # noqa: E402

# Operators TensorRT 10's ONNX parser supports, from its operator support matrix
# (onnx-tensorrt docs/operators.md, "Supported ONNX Operators", TensorRT 10.x), restricted to the
# ones a sparse-conv student plausibly lowers to. ScatterND is listed with the restriction
# "`reduction` other than `none` is not supported", checked separately below.
TENSORRT_ONNX_OPS = {
    "Abs", "Add", "ArgMax", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Expand", "Gather",
    "GatherElements", "GatherND", "Gemm", "Greater", "Identity", "Less", "MatMul", "Max", "Min", "Mul", "Neg",
    "ReduceMax", "ReduceSum", "Relu", "Reshape", "ScatterElements", "ScatterND", "Shape", "Slice", "Softmax",
    "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where", "Reciprocal",
}


def _student(seed: int = 0) -> Student:
    torch.manual_seed(seed)
    student = Student(StudentConfig(profile="fast", out_dim=24)).eval()
    # Non-trivial BatchNorm statistics, so that folding them is actually exercised.
    with torch.no_grad():
        for m in student.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return student


def _cloud(n: int, seed: int, extent: float = 12.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-extent, extent, (n, 3))
    xyz[:, 2] = rng.uniform(-2.0, 1.0, n)
    xyz[: n // 20, 0] = 80.0  # 5 % outside the crop: label -1
    return np.concatenate([xyz, rng.random((n, 1))], axis=1).astype(np.float32)


def _text(c: int, d: int, seed: int = 3) -> np.ndarray:
    t = np.random.default_rng(seed).standard_normal((c, d)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


@pytest.fixture(scope="module", params=["pairs", "table"])
def exported(request, tmp_path_factory):
    student = _student()
    text = _text(5, 24)
    path = export_student_onnx(student, tmp_path_factory.mktemp("onnx") / f"student_{request.param}.onnx",
                               example_feed(student, _cloud(3000, 0), text), formulation=request.param)
    return student, path, request.param


def _feed(student: Student, points: np.ndarray, text: np.ndarray, formulation: str) -> dict:
    feed = example_feed(student, points, text)
    return feed if formulation == "pairs" else table_example(feed, student.config.num_levels)


def _reductions(model) -> list[str]:
    return [{a.name: a.s.decode() for a in n.attribute}.get("reduction", "none")
            for n in model.graph.node if n.op_type in ("ScatterND", "ScatterElements")]


def test_ops_are_tensorrt_parsable(exported) -> None:
    _, path, formulation = exported
    exported_model = onnx.load(str(path))
    if formulation == "pairs":  # ONNX Runtime's fast form (see onnx_student), rewritten for TensorRT
        assert set(_reductions(exported_model)) == {"add", "none"}
    model = tensorrt_compatible(exported_model)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    ops = {n.op_type for n in model.graph.node}
    assert ops <= TENSORRT_ONNX_OPS, f"ops TensorRT's parser may reject: {sorted(ops - TENSORRT_ONNX_OPS)}"
    for node in model.graph.node:
        if node.op_type in ("ScatterND", "ScatterElements"):
            reduction = {a.name: a.s.decode() for a in node.attribute}.get("reduction", "none")
            assert reduction == "none", f"{node.name}: {node.op_type} reduction={reduction!r} (TensorRT: none only)"


def test_sizes_are_symbolic(exported) -> None:
    student, path, formulation = exported
    model = onnx.load(str(path))
    levels = student.config.num_levels

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in model.graph.input}
    outputs = {o.name: dims(o) for o in model.graph.output}
    assert list(inputs) == input_names(levels, formulation)
    assert list(outputs) == list(OUTPUTS)
    assert inputs["features"] == ["voxels", student.config.in_channels]
    assert inputs["point_to_voxel"] == ["points"]
    assert inputs["text_embeddings"] == ["classes", 24]
    if formulation == "table":
        assert inputs["subm_table_0"] == ["voxels", 27]  # the same symbol as features: the same voxels
        for name in NeighbourTables.tensor_names(levels):
            assert isinstance(inputs[name][0], str) and inputs[name][1:] in ([], [27], [8]), (name, inputs[name])
    for name in KernelMaps.tensor_names(levels) if formulation == "pairs" else []:
        shape = inputs[name]
        if name.startswith("coords_"):
            assert isinstance(shape[0], str) and shape[1] == 4, (name, shape)
        else:
            assert shape[0] == 2 and isinstance(shape[1], str), (name, shape)
    assert outputs["labels"] == ["points"] and outputs["scores"] == ["points"]
    assert outputs["voxel_features"][0] == "voxels"


def _reference(student: Student, feed: dict, text: np.ndarray):
    """Unfolded eval-mode student, dense cosine classification, per point."""
    levels = student.config.num_levels
    maps = KernelMaps.from_tensors([torch.from_numpy(feed[n]) for n in KernelMaps.tensor_names(levels)], levels)
    with torch.no_grad():
        feats = torch.from_numpy(feed["features"])
        backbone = student.backbone(feats, maps)
        emb = torch.nn.functional.normalize(student.head(backbone), dim=1)
        prob = torch.softmax(100.0 * emb @ torch.from_numpy(text).t(), dim=1)
    p2v = feed["point_to_voxel"]
    score, label = prob.max(dim=1)
    labels = np.where(p2v >= 0, label.numpy()[np.maximum(p2v, 0)], -1)
    scores = np.where(p2v >= 0, score.numpy()[np.maximum(p2v, 0)], 0.0)
    return backbone.numpy(), labels, scores


# ONNX Runtime against PyTorch, one rule at both levels it can break: the raw exported graph against the
# unfolded eval-mode student (two sizes and class counts), and a bundle through the Segmenter (torch backend
# against onnxruntime) on a synthetic street and on the real KITTI scan; each in both formulations (the
# ``exported`` fixture's). Merged from test_export_parity::test_onnxruntime_matches_pytorch_on_kitti,
# test_export_student::test_onnxruntime_matches_pytorch_at_two_sizes and test_segmenter::test_torch_backend_agrees.
PARITY_CASES = {
    "graph-2000pts-3classes": ("graph", 2000, 3),
    "graph-6000pts-7classes": ("graph", 6000, 7),
    "bundle-street": ("bundle", "street", None),
    "bundle-kitti": ("bundle", "kitti", None),
}


def _graph_parity(exported, n_points: int, classes: int) -> ParityReport:
    student, path, formulation = exported
    text = _text(classes, 24, seed=n_points)
    cloud = _cloud(n_points, seed=n_points, extent=15.0)
    feed = _feed(student, cloud, text, formulation)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, scores, voxel_features = session.run(list(OUTPUTS), {i.name: feed[i.name] for i in session.get_inputs()})
    ref_backbone, ref_labels, ref_scores = _reference(student, example_feed(student, cloud, text), text)
    assert labels.shape == (n_points,) and labels.dtype == np.int32
    assert voxel_features.shape == ref_backbone.shape
    # backbone features before the head: absolute and relative 1e-4 (float32 sums in another order)
    np.testing.assert_allclose(voxel_features, ref_backbone, atol=1e-4, rtol=1e-4)
    assert np.all(labels[feed["point_to_voxel"] < 0] == -1) and np.all(scores[labels == -1] == 0)
    return ParityReport("pytorch", "onnxruntime", n_points, 0.0, float(np.abs(scores - ref_scores).max()),
                        float((labels == ref_labels).mean()))


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_onnxruntime_matches_pytorch(exported, case: str, request, tmp_path_factory) -> None:
    kind, a, b = PARITY_CASES[case]
    if kind == "graph":
        report = _graph_parity(exported, a, b)
    else:
        points = street_scan(8000, 2) if a == "street" else read_scan(request.getfixturevalue("kitti_scan_path"))
        report = compare_backends(shared_bundle(tmp_path_factory), points, "torch", "onnxruntime",
                                  formulation=exported[2])
        assert report.points == (115384 if a == "kitti" else 8000)
        assert report.max_abs_feature <= FEATURE_TOLERANCE_FP32, report  # per-point unit features
        assert report.ok(), report
    assert report.label_agreement >= LABEL_AGREEMENT_MIN, report  # near-ties may flip: 1 point in 1000
    assert report.max_abs_score <= 1e-4, report


def test_tensorrt_form_computes_the_same(exported, tmp_path) -> None:
    """The rewrite TensorRT gets (gather + add + plain scatter) gives ONNX Runtime's outputs bit for bit."""
    student, path, formulation = exported
    rewritten = tmp_path / "student_trt.onnx"
    onnx.save(tensorrt_compatible(onnx.load(str(path))), str(rewritten))
    text = _text(4, 24)
    feed = _feed(student, _cloud(5000, seed=11, extent=15.0), text, formulation)
    outs = []
    for p in (path, rewritten):
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        outs.append(session.run(list(OUTPUTS), {i.name: feed[i.name] for i in session.get_inputs()}))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_maps_with_empty_pair_lists_run(exported) -> None:
    """A sparse scan where some kernel offsets have no pairs at all (zero-length inputs)."""
    student, path, formulation = exported
    pts = np.array([[0.05, 0.05, 0.05, 0.1], [5.0, 5.0, 0.0, 0.2], [5.1, 5.0, 0.0, 0.3]], np.float32)
    pairs_feed = example_feed(student, pts, _text(2, 24))
    assert min(pairs_feed[n].shape[1] for n in KernelMaps.tensor_names(student.config.num_levels)
               if n.startswith("subm_")) == 0
    feed = _feed(student, pts, _text(2, 24), formulation)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, scores, _ = session.run(list(OUTPUTS), {i.name: feed[i.name] for i in session.get_inputs()})
    _, ref_labels, ref_scores = _reference(student, pairs_feed, _text(2, 24))
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("exported", ["table"], indirect=True)  # the pair-list graph has a scatter per offset
def test_table_graph_is_one_gather_and_one_gemm_per_convolution(exported) -> None:
    student, path, formulation = exported
    from relidar.model.sparse.modules import PointConv, SparseConv

    convs = [m for m in student.modules() if isinstance(m, SparseConv)]
    gathered = [m for m in convs if not isinstance(m, PointConv)]  # 1x1 shortcuts need no gather
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "ScatterND" not in ops
    classifier_matmuls = 4  # W tᵀ, x (W tᵀ), t b, x G (the |y|² quadratic form)
    assert ops.count("Gemm") + ops.count("MatMul") <= len(convs) + classifier_matmuls
    # one row gather per conv (up convs read their product back with one more), plus devoxelization
    assert ops.count("Gather") <= 2 * len(gathered) + 3


def test_export_onnx_cli_writes_either_formulation(tmp_path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import build_app
    from relidar.model.weights import save_student

    torch.manual_seed(0)
    weights = save_student(Student(StudentConfig(profile="fast", out_dim=8)).eval(), tmp_path / "student.safetensors")
    app = build_app()
    for formulation in ("pairs", "table"):
        out = tmp_path / f"{formulation}.onnx"
        result = CliRunner().invoke(app, ["export", "onnx", "--checkpoint", str(weights), "--out", str(out),
                                          "--formulation", formulation])
        assert result.exit_code == 0, result.output
        names = [i.name for i in onnx.load(str(out)).graph.input]
        assert names == input_names(5, formulation)
    result = CliRunner().invoke(app, ["export", "onnx", "--checkpoint", str(weights), "--formulation", "dense"])
    assert result.exit_code == 1
