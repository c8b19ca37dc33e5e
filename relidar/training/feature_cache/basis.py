"""The PCA basis a projecting storage mode maps rows through (``projection.npz``): fit, publish, read."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from relidar.core import artifact
from relidar.core.rows import unit_rows
from relidar.training.feature_cache.format import _CHECKSUM_KEY, CACHE_FORMAT_VERSION, CacheError, _load_verified


@dataclass(frozen=True)
class PcaBasis:
    """A fixed orthonormal basis ``basis`` [D, k] float32: rows x [.., D] map to x @ basis."""

    basis: np.ndarray
    energy: float  # fraction of the fitted rows' squared norm the k directions keep
    fitted_on: tuple[str, ...]
    sha256: str

    @property
    def input_dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    def project(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=np.float32) @ self.basis

    def project_text(self, embeddings: np.ndarray) -> np.ndarray:
        """Text embeddings [C, D] in the projected space, unit rows (cosines stay cosines)."""
        return unit_rows(self.project(embeddings))

    def project_vocabulary(self, vocabulary: Any) -> Any:
        """A ``relidar.core.vocabulary.Vocabulary`` whose embeddings went through this basis. Its text encoder
        is recorded by name only: the projected space needs this cache's basis, not just the text tower."""
        from dataclasses import replace

        from relidar.core.text.spec import NamedTextSpec

        if vocabulary.feature_dim != self.input_dim:
            raise CacheError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the cache's projection takes "
                             f"{self.input_dim}-d rows", field="embeddings",
                             hint="use the vocabulary of the teacher the cache was prepared with")
        spec = NamedTextSpec(name=f"{vocabulary.encoder.describe()} through PCA basis {self.sha256[:12]}", feature_dim=self.dim)
        return replace(vocabulary, embeddings=self.project_text(vocabulary.embeddings), encoder=spec)


def fit_projection(rows: np.ndarray, dim: int, fitted_on: Sequence[str]) -> PcaBasis:
    """The ``dim`` leading eigenvectors of the rows' second-moment matrix (uncentred PCA), each signed
    so that its largest-magnitude entry is positive (a deterministic basis for a given fit)."""
    x = np.asarray(rows, dtype=np.float64)
    if dim >= x.shape[1]:
        raise CacheError(f"{dim} is not fewer than the teacher's {x.shape[1]} dims", field="storage.projection_dim",
                         hint="choose a smaller projection_dim, or none")
    if x.shape[0] < dim:
        raise CacheError(f"{x.shape[0]} pairs in the fitting frames are fewer than projection_dim {dim}",
                         field="storage.projection_frames", hint="fit on more frames")
    moment = x.T @ x
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1][:dim]
    basis = vectors[:, order]
    peak = np.argmax(np.abs(basis), axis=0)
    basis *= np.sign(basis[peak, np.arange(dim)])
    energy = float(values[order].sum() / max(values.sum(), 1e-30))
    basis32 = basis.astype(np.float32)
    return PcaBasis(basis32, energy, tuple(fitted_on), artifact.sha256_arrays({"basis": basis32}))


def write_projection(path: Path, projection: PcaBasis) -> PcaBasis:
    """Publish ``projection`` at ``path`` unless one is there already (an exclusive link: of several
    ranks fitting at once, the first wins); returns the one at ``path``."""
    arrays = {"format_version": np.array(CACHE_FORMAT_VERSION), "basis": projection.basis,
              "energy": np.array(projection.energy),
              "fitted_on": np.array(json.dumps(list(projection.fitted_on)))}
    arrays[_CHECKSUM_KEY] = np.array(artifact.sha256_arrays(arrays))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return read_projection(path)


def read_projection(path: Path) -> PcaBasis:
    fix = "delete it and every frame file, then run `relidar prepare` again"
    arrays = _load_verified(path, fix, what="projection file")
    artifact.check_format_version(int(arrays.get("format_version", -1)), CACHE_FORMAT_VERSION, path=path,
                                  error=CacheError, what="projection file", hint=fix)
    basis = arrays["basis"]
    return PcaBasis(basis, float(arrays["energy"]), tuple(json.loads(str(arrays["fitted_on"]))),
                      artifact.sha256_arrays({"basis": basis}))
