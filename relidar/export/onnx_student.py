"""Student -> ONNX: the deployed graph (relidar.model.deployed.StudentGraph, from voxel features and
kernel maps to per-point labels and scores) traced into one ONNX graph, with the row-scatter lowerings
that keep it small and TensorRT-parsable.

Graph inputs and outputs: see ``relidar.core.graph`` (the contract) and ``relidar.model.deployed``
(why the graph ends at the backbone and classifies without materialising the D-dim embeddings).
Either formulation of the kernel maps (pair lists for CPUs, neighbour tables for GPUs; see
relidar.model.sparse.functional) exports from the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from relidar.core.graph import OUTPUTS, Formulation, dynamic_axes, graph_feed, input_names
from relidar.core.kernel_maps import KernelMaps, build_neighbour_tables_numpy
from relidar.core.preprocess import Preprocessor
from relidar.model.deployed import DEFAULT_LOGIT_SCALE, StudentGraph
from relidar.model.network import Student

DEFAULT_OPSET = 17


def _row_index(g, index):
    return g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64)))


def _check_dim0(dim, op: str) -> None:
    from torch.onnx import symbolic_helper

    if symbolic_helper._maybe_get_const(dim, "i") != 0:
        raise ValueError(f"{op}: only dim=0 (rows of a [V, C] feature matrix) is exported")


def _index_add_symbolic(g, self, dim, index, source, alpha=None):
    # Rows of one index_add_ call are distinct (one kernel offset: each voxel has at most one
    # neighbour there), so gather + add + ScatterND(reduction none) is exact. TensorRT's ONNX parser
    # rejects ScatterND reductions other than "none", and torch's stock lowering (zeros + scatter +
    # add over the whole [V, C] matrix) is several times more nodes and memory traffic.
    _check_dim0(dim, "index_add")
    rows = _row_index(g, index)
    current = g.op("Gather", self, index, axis_i=0)
    return g.op("ScatterND", self, rows, g.op("Add", current, source))


def _index_copy_symbolic(g, self, dim, index, source):
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


def table_example(example: dict[str, np.ndarray], num_levels: int) -> dict[str, np.ndarray]:
    """The neighbour-table feed of a pair-list feed (same features, points, text; tables from its pairs)."""
    maps = KernelMaps.from_tensors([example[n] for n in KernelMaps.tensor_names(num_levels)], num_levels)
    return graph_feed(example["features"], example["point_to_voxel"], example["text_embeddings"],
                      build_neighbour_tables_numpy(maps))


def export_student_onnx(student: Student, path: str | Path, example: dict[str, np.ndarray],
                        logit_scale: float = DEFAULT_LOGIT_SCALE, opset: int = DEFAULT_OPSET,
                        formulation: Formulation = "pairs") -> Path:
    """Trace ``StudentGraph(student)`` on ``example`` (a pair-list ``relidar.core.graph.graph_feed``) and write
    ONNX to ``path``, with its kernel maps as pair lists or as neighbour tables (``formulation``).

    The example should have every pair list non-empty where possible; sizes are symbolic anyway.
    Uses the TorchScript exporter (``dynamo=False``): its ``dynamic_axes`` give symbolic dims for
    gathers/scatters over value-sized tensors with no guards to satisfy.
    """
    import warnings

    path = Path(path)
    graph = StudentGraph(student, logit_scale, formulation).eval()
    names = input_names(graph.num_levels, formulation)
    feed = example if formulation == "pairs" else table_example(example, graph.num_levels)
    args = tuple(torch.from_numpy(feed[n]) for n in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), _SparseSymbolics(opset):
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(graph, args, str(path), input_names=names, output_names=list(OUTPUTS),
                          dynamic_axes=dynamic_axes(graph.num_levels, formulation), opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return path


def example_feed(student: Student, points: np.ndarray, text_embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """A complete numpy feed for tracing: ``points`` preprocessed for ``student`` (its grid, features, levels)."""
    return Preprocessor.of(student.config)(points).feed(text_embeddings)
