"""Student -> ONNX: the whole per-scan network in one graph, from voxel features and kernel maps to
per-point labels and scores.

Graph inputs (sizes symbolic; names and order in ``relidar.student_graph``):
  ``features`` [V, Cin] float32, ``point_to_voxel`` [N] int64 (-1 = outside the crop),
  ``text_embeddings`` [C, D] float32 (unit rows), then the kernel maps in
  ``KernelMaps.tensor_names`` order (``coords_l`` [V_l, 4] int64 -- only their lengths are read --
  ``subm_l_k`` and ``down_l_o`` [2, P] int64).
Graph outputs:
  ``labels`` [N] int32 (-1 outside the crop), ``scores`` [N] float32 (softmax probability of the
  label, 0 outside the crop), ``voxel_features`` [V, Cb] float32: the backbone's per-voxel features.

Why the graph ends at the backbone and classifies without materialising the D-dim embeddings:
the head is linear, y = xW + b, so cos(y, t) = (x(W tᵀ) + b·t) / |y| with
|y|² = x (W Wᵀ) xᵀ + 2 x·(W b) + b·b -- a [Cb, Cb] quadratic form instead of a [V, Cb] x [Cb, D]
matmul (Cb = 40 vs D = 512 for the fast profile: ~12x fewer multiply-adds at the end of the
network, and no [N, D] tensor written per scan). ONNX Runtime runs every node whatever outputs are
requested, so a D-dim output would be paid on every call; the runtime applies the head to
``voxel_features`` (numpy, ``head.npz`` in the bundle) only when features are asked for.

Scores are softmax(logit_scale * cosine) over the classes; ``logit_scale`` is a graph constant
recorded in the bundle manifest (CLIP's learned value is 100, the default here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from relidar.kernel_maps import KernelMaps
from relidar.network import Student, fold_batchnorm

from relidar.student_graph import OUTPUTS, dynamic_axes, graph_feed, input_names

DEFAULT_LOGIT_SCALE = 100.0
DEFAULT_OPSET = 17


def _row_index(g, index):  # noqa: ANN001, ANN202 - torch.onnx graph context and values
    return g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64)))


def _check_dim0(dim, op: str) -> None:  # noqa: ANN001
    from torch.onnx import symbolic_helper

    if symbolic_helper._maybe_get_const(dim, "i") != 0:
        raise ValueError(f"{op}: only dim=0 (rows of a [V, C] feature matrix) is exported")


def _index_add_symbolic(g, self, dim, index, source, alpha=None):  # noqa: ANN001, ANN202
    # Rows of one index_add_ call are distinct (one kernel offset: each voxel has at most one
    # neighbour there), so gather + add + ScatterND(reduction none) is exact. TensorRT's ONNX parser
    # rejects ScatterND reductions other than "none", and torch's stock lowering (zeros + scatter +
    # add over the whole [V, C] matrix) is several times more nodes and memory traffic.
    _check_dim0(dim, "index_add")
    rows = _row_index(g, index)
    current = g.op("Gather", self, index, axis_i=0)
    return g.op("ScatterND", self, rows, g.op("Add", current, source))


def _index_copy_symbolic(g, self, dim, index, source):  # noqa: ANN001, ANN202
    _check_dim0(dim, "index_copy")
    return g.op("ScatterND", self, _row_index(g, index), source)


class _SparseSymbolics:
    """Registers the row-scatter lowerings for the duration of one export, then removes them."""

    _OPS = {"aten::index_add": _index_add_symbolic, "aten::index_copy": _index_copy_symbolic}

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def __enter__(self) -> "_SparseSymbolics":
        for name, fn in self._OPS.items():
            torch.onnx.register_custom_op_symbolic(name, fn, self.opset)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._OPS:
            torch.onnx.unregister_custom_op_symbolic(name, self.opset)


class ClassifierHead(nn.Module):
    """Cosine classifier through the linear head without forming the D-dim embeddings (see module doc)."""

    def __init__(self, head: nn.Linear, logit_scale: float) -> None:
        super().__init__()
        w = head.weight.detach().t().contiguous()          # [Cb, D]
        b = head.bias.detach().clone() if head.bias is not None else torch.zeros(w.shape[1])
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)
        self.register_buffer("gram", w @ w.t())             # [Cb, Cb]
        self.register_buffer("wb2", 2.0 * (w @ b))         # [Cb]
        self.register_buffer("bb", (b @ b).reshape(1))     # [1]
        self.logit_scale = float(logit_scale)

    def forward(self, x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Per-voxel (label int64 [V], score [V]) for backbone features x [V, Cb] and unit text rows [C, D]."""
        dots = x @ (self.weight @ text.t()) + (text @ self.bias)        # [V, C] = y·t
        # |y|² = x·(G x + 2Wb) + b·b; the 2Wb term rides along the G x product's bias add because a
        # separate [V, Cb] @ [Cb] product is a matrix-vector MatMul that ONNX Runtime runs ~10x slower
        # than its GEMMs (13 ms of a 150 ms network on the KITTI scan)
        sq = ((x @ self.gram + self.wb2) * x).sum(dim=1) + self.bb    # [V] = |y|²
        inv_norm = torch.rsqrt(torch.clamp(sq, min=1e-12))
        logits = dots * (inv_norm * self.logit_scale).unsqueeze(1)
        prob = torch.softmax(logits, dim=1)
        score, label = prob.max(dim=1)
        return label, score


class StudentGraph(nn.Module):
    """What is exported: BN-folded backbone + cosine classifier + devoxelization to points."""

    def __init__(self, student: Student, logit_scale: float = DEFAULT_LOGIT_SCALE) -> None:
        super().__init__()
        folded = fold_batchnorm(student)
        self.backbone = folded.backbone
        self.classifier = ClassifierHead(folded.head, logit_scale)
        self.num_levels = student.config.num_levels

    def forward(self, features: Tensor, point_to_voxel: Tensor, text_embeddings: Tensor,
                *maps_flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        maps = KernelMaps.from_tensors(list(maps_flat), self.num_levels)
        x = self.backbone(features, maps)
        label, score = self.classifier(x, text_embeddings)
        # One padding row for points outside the crop (index -1): label -1, score 0.
        v = x.shape[0]
        index = torch.where(point_to_voxel < 0, torch.full_like(point_to_voxel, v), point_to_voxel)
        label_pad = torch.cat([label.to(torch.int32), torch.full((1,), -1, dtype=torch.int32)])
        score_pad = torch.cat([score, torch.zeros(1, dtype=score.dtype)])
        return label_pad.index_select(0, index), score_pad.index_select(0, index), x


def export_student_onnx(student: Student, path: str | Path, example: dict[str, np.ndarray],
                        logit_scale: float = DEFAULT_LOGIT_SCALE, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``StudentGraph(student)`` on ``example`` (a ``relidar.student_graph.graph_feed``) and write ONNX to ``path``.

    The example should have every pair list non-empty where possible; sizes are symbolic anyway.
    Uses the TorchScript exporter (``dynamo=False``): its ``dynamic_axes`` give symbolic dims for
    gathers/scatters over value-sized tensors with no guards to satisfy.
    """
    import warnings

    path = Path(path)
    graph = StudentGraph(student, logit_scale).eval()
    names = input_names(graph.num_levels)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), _SparseSymbolics(opset):
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(graph, args, str(path), input_names=names, output_names=list(OUTPUTS),
                          dynamic_axes=dynamic_axes(graph.num_levels), opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return path


def run_torch(graph: StudentGraph, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the same graph in PyTorch on a numpy feed (the reference for parity, and the torch backend)."""
    names = input_names(graph.num_levels)
    with torch.no_grad():
        out = graph(*(torch.from_numpy(feed[n]) for n in names))
    return {name: t.numpy() for name, t in zip(OUTPUTS, out)}


def head_arrays(student: Student) -> dict[str, np.ndarray]:
    """The projection head as numpy ([Cb, D] weight, [D] bias): what the runtime applies on request."""
    head = student.head
    return {"weight": head.weight.detach().t().contiguous().numpy().astype(np.float32),
            "bias": (head.bias.detach() if head.bias is not None else torch.zeros(head.out_features)).numpy()
            .astype(np.float32)}


def example_feed(student: Student, points: np.ndarray, text_embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Voxelize ``points`` with the student's grid and build its kernel maps: a complete numpy feed."""
    from relidar.kernel_maps import build_kernel_maps_numpy
    from relidar.voxelize import voxelize

    cfg = student.config
    vox = voxelize(points, cfg.grid(), cfg.input_features)
    maps = build_kernel_maps_numpy(vox.coords, vox.grid_shape, cfg.num_levels)
    return graph_feed(vox.features, vox.point_to_voxel, text_embeddings, maps)
