"""The cache folder's names, its error, the storage settings and manifest (its identity), and the
checksummed npz loading every cache file goes through (see :mod:`relidar.training.feature_cache`)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from relidar.core import artifact
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROJECTION_NAME = "projection.npz"
FRAMES_DIR = "frames"
REPORTS_DIR = "reports"
_CHECKSUM_KEY = "__sha256__"
_META_KEY = "__meta__"


class CacheError(RelidarError, RuntimeError):
    """A cache folder or file is missing, partial, corrupt or from another teacher; names the file and the fix."""


class CacheStorage(StrictModel):
    """How the teacher's features are kept on disk (see the module docstring)."""

    layout: Literal["pairs", "grid"] = Field("pairs", description="one row per point-pixel pair, or the cameras' "
                                                                   "patch grids (pairs sampled bilinearly on read)")
    dtype: Literal["float32", "float16", "int8"] = Field("float16", description="int8: per-row float16 scales")
    projection_dim: int | None = Field(None, ge=2, description="keep this many dims of a PCA basis fitted on the data")
    projection_frames: int = Field(8, ge=1, description="frames (spread over the dataset) the PCA basis is fitted on")
    projection_rows: int = Field(65536, ge=16, description="pairs of those frames (at most) the fit uses")

    def describe(self) -> str:
        proj = f", PCA {self.projection_dim}-d" if self.projection_dim else ""
        return f"{self.layout} {self.dtype}{proj}"


class CacheSettings(StrictModel):
    """How pairs and superpixels are made and features stored; part of the cache's identity."""

    min_depth: float = Field(0.1, gt=0.0, description="points nearer than this (m, camera z) are not paired")
    superpixel_segments: int = Field(150, ge=1, description="SLIC segments per camera image")
    superpixel_compactness: float = Field(10.0, gt=0.0, description="SLIC compactness (higher: squarer segments)")
    storage: CacheStorage = CacheStorage()


class CacheManifest(StrictModel):
    format_version: int = CACHE_FORMAT_VERSION
    teacher: str
    feature_dim: int = Field(..., description="dims of the rows a reader gets (the projection's when there is one)")
    teacher_dim: int | None = Field(None, description="dims of the teacher's own features (before any projection)")
    feature_dtype: str = "float16"
    dataset_path: str
    dataset_format: str
    class_names: list[str]
    ignore_index: int
    settings: CacheSettings
    frame_ids: list[str]
    frame_files: list[str]


def _file_identity(fh: Any) -> tuple[int, int, int, int]:
    st = os.fstat(fh.fileno())
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _load_verified(path: Path, fix: str, *, what: str = "cache file", verified: dict[str, Any] | None = None
                   ) -> dict[str, np.ndarray]:
    """The arrays of an npz file with a checksum entry, verified (or known verified: ``verified`` maps a path to
    the identity of the file that verified there); CacheError naming the file if missing, partial or corrupt."""
    try:
        with open(path, "rb") as fh:
            identity = _file_identity(fh)  # of the file being read, so a rename meanwhile cannot fool the memo
            with np.load(fh, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError as exc:
        raise CacheError(f"{what} not found", path=path, hint="run `relidar prepare` to compute it") from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CacheError(f"partial or corrupt {what} ({type(exc).__name__}: {exc})", path=path, hint=fix) from exc
    stored = arrays.pop(_CHECKSUM_KEY, None)
    key = str(path)
    if verified is not None and verified.get(key) == identity and stored is not None:
        return arrays
    if stored is None or str(stored) != artifact.sha256_arrays(arrays):
        raise CacheError("checksum does not verify (partial or altered file)", path=path, hint=fix)
    if verified is not None:
        verified[key] = identity
    return arrays


def frame_file_name(index: int) -> str:
    # By dataset index, not frame id: ids can hold slashes and any characters.
    return f"{FRAMES_DIR}/{index:06d}.npz"


def load_manifest(cache_dir: Path) -> CacheManifest:
    return artifact.read_manifest(
        Path(cache_dir) / MANIFEST_NAME, CacheManifest, CacheError, version=CACHE_FORMAT_VERSION,
        what="feature cache manifest", missing_hint=f"is {cache_dir} a folder written by `relidar prepare`?",
        hint="the manifest is damaged or from another relidar version: prepare the cache again into a new folder")
