"""The student graph's interface, numpy only: input/output names, symbolic dims and the feed.

Shared by the exporter (relidar.export.onnx_student), every backend and the Segmenter, so all of
them agree on one contract.

Inputs: ``features`` [V, Cin] float32, ``point_to_voxel`` [N] int64 (-1 = outside the crop),
``text_embeddings`` [C, D] float32 unit rows, then the kernel maps in ``KernelMaps.tensor_names``
order (``coords_l`` [V_l, 4] int64, of which only the length is read; ``subm_l_k``/``down_l_o`` [2, P]).
Outputs: ``labels`` [N] int32 (-1 outside the crop), ``scores`` [N] float32, ``voxel_features``
[V, Cb] float32 (backbone features; the linear head maps them to D on request).
"""

from __future__ import annotations

import numpy as np

from relidar.core.kernel_maps import KernelMaps

FIXED_INPUTS = ("features", "point_to_voxel", "text_embeddings")
OUTPUTS = ("labels", "scores", "voxel_features")


def input_names(num_levels: int) -> list[str]:
    return list(FIXED_INPUTS) + KernelMaps.tensor_names(num_levels)


def dynamic_axes(num_levels: int) -> dict[str, dict[int, str]]:
    """Symbolic dimension names for every input and output: no point/voxel/pair/class count is fixed."""
    axes: dict[str, dict[int, str]] = {
        "features": {0: "voxels"},
        "point_to_voxel": {0: "points"},
        "text_embeddings": {0: "classes"},
        "labels": {0: "points"},
        "scores": {0: "points"},
        "voxel_features": {0: "voxels"},
    }
    for name in KernelMaps.tensor_names(num_levels):
        if name.startswith("coords_"):
            level = name.split("_")[1]
            axes[name] = {0: "voxels" if level == "0" else f"voxels_{level}"}
        else:
            axes[name] = {1: f"pairs_{name}"}
    return axes


def graph_feed(features: np.ndarray, point_to_voxel: np.ndarray, text_embeddings: np.ndarray,
               maps: KernelMaps) -> dict[str, np.ndarray]:
    """The named, contiguous numpy feed for any backend."""
    feed = {
        "features": np.ascontiguousarray(features, dtype=np.float32),
        "point_to_voxel": np.ascontiguousarray(point_to_voxel, dtype=np.int64),
        "text_embeddings": np.ascontiguousarray(text_embeddings, dtype=np.float32),
    }
    for name, arr in zip(KernelMaps.tensor_names(maps.num_levels), maps.to_tensors()):
        feed[name] = np.ascontiguousarray(arr, dtype=np.int64)
    return feed
