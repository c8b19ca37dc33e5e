"""Student -> ONNX: the deployed graph (relidar.model.deployed.StudentGraph, from voxel features and
kernel maps to per-point labels and scores) traced into one ONNX graph, with the row-scatter lowerings
that keep it small and fast in ONNX Runtime; :func:`tensorrt_compatible` rewrites the one construct
TensorRT's parser rejects.

Graph inputs and outputs: see ``relidar.core.graph`` (the contract) and ``relidar.model.deployed``
(why the graph ends at the backbone and classifies without materialising the D-dim embeddings).
Either formulation of the kernel maps (pair lists for CPUs, neighbour tables for GPUs; see
relidar.model.sparse.functional) exports from the same weights.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from relidar.core.contract import contract_metadata
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
    # Rows of one index_add_ call are distinct (one kernel offset: each voxel has at most one neighbour
    # there), so ScatterND(reduction="add") is exact on any number of threads. ONNX Runtime's CPU
    # ScatterND copies its whole [V, C] input every call and runs the rows of one call in parallel, so:
    # - one call per offset, not one per conv over all offsets concatenated: duplicate rows race between
    #   its threads (measured: labels differ on 2 threads, exact on 1);
    # - reduction "add", not gather + add + ScatterND("none") (what TensorRT's parser accepts, see
    #   tensorrt_compatible): two [P, C] passes fewer per offset; the fast network on KITTI 000000
    #   (47k voxels, 2-core box, same load, side by side) took 109 ms instead of 136 ms, same outputs bit for bit.
    _check_dim0(dim, "index_add")
    return g.op("ScatterND", self, _row_index(g, index), source, reduction_s="add")


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
    gathers/scatters over value-sized tensors with no guards to satisfy. The graph's preprocessing
    contract (``relidar.core.contract``) goes into the file's metadata, where loading a bundle checks it.
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
    _write_metadata(path, contract_metadata(student_contract(student), logit_scale))
    return path


def student_contract(student: Student) -> SimpleNamespace:
    """What the graph's preprocessing contract is made of, from the student itself."""
    cfg = student.config
    return SimpleNamespace(voxel_size=cfg.voxel_size, crop_min=cfg.crop_min, crop_max=cfg.crop_max,
                           input_features=tuple(cfg.input_features), num_levels=cfg.num_levels,
                           backbone_dim=student.backbone.out_channels, out_dim=cfg.out_dim)


def _write_metadata(path: Path, entries: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))


def example_feed(student: Student, points: np.ndarray, text_embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """A complete numpy feed for tracing: ``points`` preprocessed for ``student`` (its grid, features, levels)."""
    return Preprocessor.of(student.config)(points).feed(text_embeddings)


def tensorrt_compatible(model):
    """The same ONNX model (an ``onnx.ModelProto``, changed in place and returned) with every
    ScatterND(reduction="add") written as Gather + Add + ScatterND(reduction="none"): TensorRT's ONNX
    parser supports no ScatterND reduction. Exact for the student's scatters, whose rows are distinct."""
    import onnx

    nodes = []
    for node in model.graph.node:
        reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
        if node.op_type != "ScatterND" or reduction == "none":
            nodes.append(node)
            continue
        if reduction != "add":
            raise ValueError(f"{node.name}: ScatterND reduction {reduction!r} has no TensorRT lowering here")
        data, rows, updates = node.input
        current, total = f"{node.name}/current", f"{node.name}/sum"
        nodes.append(onnx.helper.make_node("GatherND", [data, rows], [current], name=f"{node.name}/GatherND"))
        nodes.append(onnx.helper.make_node("Add", [current, updates], [total], name=f"{node.name}/Add"))
        nodes.append(onnx.helper.make_node("ScatterND", [data, rows, total], list(node.output), name=node.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
