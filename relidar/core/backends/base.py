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


class Backend(Protocol):
    """Runs the student graph (its contract: relidar.core.graph) on a named numpy feed.

    ``run`` returns ``labels`` [N] int32, ``scores`` [N] float32 and ``voxel_features`` [V, Cb] float32;
    ``formulation`` ("pairs" or "table") says which kernel maps the feed must carry; ``concurrent`` says
    whether ``run`` may be called from several threads at once (the Segmenter serialises the calls of a
    backend that may not).
    """

    name: str
    formulation: str
    concurrent: bool

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
