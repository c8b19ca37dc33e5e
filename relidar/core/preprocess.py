"""Points -> what the student takes: per-voxel input features, each point's voxel, and kernel maps.

One object for every consumer, so they cannot drift apart: the Segmenter (node, CLI), training
batches, evaluation, ONNX tracing and the benchmarks. A :class:`Preprocessor` is made from anything
that describes the student's input (a ``StudentConfig`` or a bundle's ``StudentSpec``: voxel size,
crop box, input features, number of levels); calling it on one scan -- or :meth:`Preprocessor.batch`
on several -- gives :class:`StudentInputs`, whose :meth:`~StudentInputs.feed` is the graph's named
numpy feed. numpy only; the model layer turns the same object into torch tensors
(``relidar.model.batch.to_torch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from relidar.core.graph import graph_feed
from relidar.core.kernel_maps import KernelMaps, build_kernel_maps_numpy, build_neighbour_tables_numpy
from relidar.core.voxelize import VoxelGrid, Voxels, voxelize, voxelize_scans


class StudentInput(Protocol):
    """What fixes the student's preprocessing (``StudentConfig`` and the bundle's ``StudentSpec`` both are)."""

    @property
    def voxel_size(self) -> float: ...

    @property
    def crop_min(self) -> tuple[float, float, float]: ...

    @property
    def crop_max(self) -> tuple[float, float, float]: ...

    @property
    def input_features(self) -> Sequence[str]: ...

    @property
    def num_levels(self) -> int: ...


@dataclass(frozen=True)
class StudentInputs:
    """One scan (or a batch of scans) as the student takes it; numpy arrays.

    ``voxels``: coords [V, 4], features [V, Cin] float32, point_to_voxel [N] int64 (-1 outside the crop);
    ``maps``: the kernel maps of every level (empty pair lists when no point lies inside the crop).
    """

    voxels: Voxels
    maps: KernelMaps

    @property
    def features(self) -> np.ndarray:
        return self.voxels.features

    @property
    def point_to_voxel(self) -> np.ndarray:
        return self.voxels.point_to_voxel

    @property
    def num_voxels(self) -> int:
        return self.voxels.num_voxels

    @property
    def num_points(self) -> int:
        return int(self.voxels.point_to_voxel.shape[0])

    def feed(self, text_embeddings: np.ndarray, formulation: str = "pairs") -> dict[str, np.ndarray]:
        """The student graph's named, contiguous feed (``relidar.core.graph``) with these class embeddings, its
        kernel maps as pair lists or as neighbour tables (``formulation``: the graph's, see the backends)."""
        maps = self.maps if formulation == "pairs" else build_neighbour_tables_numpy(self.maps)
        return graph_feed(self.voxels.features, self.voxels.point_to_voxel, text_embeddings, maps)


@dataclass(frozen=True)
class Preprocessor:
    """The student's voxel grid, input features and number of levels; see the module docstring."""

    grid: VoxelGrid
    input_features: tuple[str, ...]
    num_levels: int

    @classmethod
    def of(cls, student: StudentInput) -> "Preprocessor":
        return cls(VoxelGrid(float(student.voxel_size), tuple(student.crop_min), tuple(student.crop_max)),
                   tuple(student.input_features), int(student.num_levels))

    def voxelize(self, points: np.ndarray) -> Voxels:
        """Voxels of one scan [N, >=3] (the first step of ``__call__``)."""
        return voxelize(points, self.grid, self.input_features)

    def voxelize_scans(self, scans: Sequence[np.ndarray]) -> Voxels:
        """Voxels of several scans as one batch (coords column 0 = the scan); points in concatenation order."""
        return voxelize_scans(scans, self.grid, self.input_features)

    def with_maps(self, voxels: Voxels) -> StudentInputs:
        """Voxels plus their kernel maps (the second step of ``__call__``)."""
        return StudentInputs(voxels, build_kernel_maps_numpy(voxels.coords, voxels.grid_shape, self.num_levels))

    def __call__(self, points: np.ndarray) -> StudentInputs:
        return self.with_maps(self.voxelize(points))

    def batch(self, scans: Sequence[np.ndarray]) -> StudentInputs:
        return self.with_maps(self.voxelize_scans(scans))
