"""The student graph's interface, numpy only: input/output names, symbolic dims and the feed.

Shared by the exporter (relidar.export.onnx_student), every backend and the Segmenter, so all of
them agree on one contract.

Inputs: ``features`` [V, Cin] float32, ``point_to_voxel`` [N] int64 (-1 = outside the crop),
``text_embeddings`` [C, D] float32 unit rows, then the kernel maps in one of two formulations:

* ``pairs`` (the CPU formulation): ``KernelMaps.tensor_names`` order (``coords_l`` [V_l, 4] int64, of
  which only the length is read; ``subm_l_k``/``down_l_o`` [2, P]);
* ``table`` (the GPU formulation): ``NeighbourTables.tensor_names`` order (``subm_table_l`` [V_l, 27],
  ``down_table_l`` [V_l+1, 8], ``up_index_l`` [V_l], all int64).

A bundle can carry the graph in both (relidar.core.bundle); each backend runs the one that suits it.
Outputs: ``labels`` [N] int32 (-1 outside the crop), ``scores`` [N] float32, ``voxel_features``
[V, Cb] float32 (backbone features; the linear head maps them to D on request).
"""

from __future__ import annotations

from typing import Collection, Literal, Union

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.kernel_maps import KernelMaps, NeighbourTables

FIXED_INPUTS = ("features", "point_to_voxel", "text_embeddings")
OUTPUTS = ("labels", "scores", "voxel_features")
Formulation = Literal["pairs", "table"]
FORMULATIONS: tuple[Formulation, ...] = ("pairs", "table")
Maps = Union[KernelMaps, NeighbourTables]
AUTO = "auto"


class GraphError(RelidarError, ValueError):
    """A graph formulation that does not exist."""


def requested_formulation(requested: str | None) -> Formulation | None:
    """``requested`` checked: None for ``auto`` (or None), else ``pairs`` or ``table``."""
    if requested is None or requested == AUTO:
        return None
    if requested not in FORMULATIONS:
        raise GraphError(f"{requested!r}: unknown formulation", field="formulation",
                         hint=f"choose one of {AUTO}, {', '.join(FORMULATIONS)}")
    return requested  # type: ignore[return-value]


def resolve_formulation(requested: str | None, device: str,
                        available: Collection[str] = FORMULATIONS) -> Formulation:
    """The formulation to run on ``device`` (``cpu``, ``cuda``, ``cuda:1``...): ``requested`` where it names one;
    for ``auto`` (or None) neighbour tables on CUDA, where one gather and one GEMM per convolution beat the pair
    lists' thousands of small kernels, and pair lists on a CPU, where they do a third of the multiply-adds and
    measured faster on the 2-core dev box, per scan and per training step (README Benchmarks; many-core CPUs
    may ask for tables); pair lists too where ``available`` (a bundle's graphs) has no tables. The one place
    this rule is written: backends, training and benchmarks all call it."""
    chosen = requested_formulation(requested)
    if chosen is not None:
        return chosen
    return "table" if device.startswith("cuda") and "table" in available else "pairs"


def maps_type(formulation: Formulation | str) -> type[KernelMaps] | type[NeighbourTables]:
    """The kernel-map container a formulation feeds: KernelMaps (pairs) or NeighbourTables (table)."""
    if formulation == "pairs":
        return KernelMaps
    if formulation == "table":
        return NeighbourTables
    raise GraphError(f"formulation {formulation!r}: choose one of {FORMULATIONS}", field="formulation")


def formulation_of(maps: Maps) -> Formulation:
    return "table" if isinstance(maps, NeighbourTables) else "pairs"


def input_names(num_levels: int, formulation: Formulation | str = "pairs") -> list[str]:
    return list(FIXED_INPUTS) + maps_type(formulation).tensor_names(num_levels)


def _voxels(level: int) -> str:
    return "voxels" if level == 0 else f"voxels_{level}"


def dynamic_axes(num_levels: int, formulation: Formulation | str = "pairs") -> dict[str, dict[int, str]]:
    """Symbolic dimension names for every input and output: no point/voxel/pair/class count is fixed."""
    axes: dict[str, dict[int, str]] = {
        "features": {0: "voxels"},
        "point_to_voxel": {0: "points"},
        "text_embeddings": {0: "classes"},
        "labels": {0: "points"},
        "scores": {0: "points"},
        "voxel_features": {0: "voxels"},
    }
    for name in maps_type(formulation).tensor_names(num_levels):
        if name.startswith(("coords_", "subm_table_", "up_index_")):  # one row per voxel of the level
            axes[name] = {0: _voxels(int(name.rsplit("_", 1)[1]))}
        elif name.startswith("down_table_"):  # one row per parent
            axes[name] = {0: _voxels(int(name.rsplit("_", 1)[1]) + 1)}
        else:  # pair lists
            axes[name] = {1: f"pairs_{name}"}
    return axes


def graph_feed(features: np.ndarray, point_to_voxel: np.ndarray, text_embeddings: np.ndarray,
               maps: Maps) -> dict[str, np.ndarray]:
    """The named, contiguous numpy feed for any backend, in the formulation of ``maps``."""
    feed = {
        "features": np.ascontiguousarray(features, dtype=np.float32),
        "point_to_voxel": np.ascontiguousarray(point_to_voxel, dtype=np.int64),
        "text_embeddings": np.ascontiguousarray(text_embeddings, dtype=np.float32),
    }
    for name, arr in zip(type(maps).tensor_names(maps.num_levels), maps.to_tensors()):
        feed[name] = np.ascontiguousarray(arr, dtype=np.int64)
    return feed
