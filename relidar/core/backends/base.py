"""The one interface every inference backend implements, and its error."""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from relidar.core.errors import RelidarError


class BackendError(RelidarError, RuntimeError):
    """A backend that cannot be built or run here; the message says what is missing and the fix."""


def device_index(device: str) -> int | None:
    """The GPU index of a ``--device`` value: None for ``cpu``, N for ``cuda`` (0) or ``cuda:N``; anything
    else (``cuda:x``, ``cuda:``, ``gpu``) is refused naming the field, before a backend or bundle is opened."""
    if device == "cpu":
        return None
    kind, colon, index = device.partition(":")
    if kind == "cuda" and not colon:
        return 0
    if kind == "cuda" and index.isascii() and index.isdigit():
        return int(index)
    raise BackendError(f"{device!r} is not a device", field="device", hint="use cpu, cuda or cuda:N (N a GPU index)")


class DeviceScan(Protocol):
    """One scan voxelized, with its kernel maps, on a backend's device by its :class:`ScanPipeline`; the core
    only counts it (its tensors live above the core, e.g. relidar.model.torch_backend)."""

    @property
    def num_points(self) -> int: ...

    @property
    def num_voxels(self) -> int: ...


class ScanPipeline(Protocol):
    """Points in, labels out, with the whole pipeline on the backend's device: voxelization, kernel maps, the
    network, classification and devoxelisation. Per scan one copy of the points goes to the device and one of
    the labels and scores comes back (the class embeddings only when they change).

    ``label`` returns ``labels`` [N] int32 and ``scores`` [N] float32; with ``return_features`` also
    ``voxel_features`` [V, Cb] and ``point_to_voxel`` [N] int64 (two more copies, made only on request).
    """

    def prepare(self, points: np.ndarray) -> DeviceScan: ...

    def label(self, scan: DeviceScan, embeddings: np.ndarray, return_features: bool = False) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    """Runs the student graph (its contract: relidar.core.graph) on a named numpy feed.

    ``run`` returns ``labels`` [N] int32, ``scores`` [N] float32 and ``voxel_features`` [V, Cb] float32;
    ``formulation`` ("pairs" or "table") says which kernel maps the feed must carry; ``concurrent`` says
    whether ``run`` may be called from several threads at once (the Segmenter serialises the calls of a
    backend that may not); ``pipeline`` is the backend's device-resident path from the points themselves
    (:class:`ScanPipeline`), None where it has none (the feed is then made on the host, numpy).
    """

    name: str
    formulation: str
    concurrent: bool
    pipeline: ScanPipeline | None

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
