"""The teacher feature cache: the teacher runs once per frame, distillation reads only this.

Layout of a cache folder::

    manifest.json            teacher, feature dim, storage mode, dataset, class names, frame ids and files, settings
    projection.npz           the fixed linear projection (PCA basis) when the storage mode projects
    frames/000000.npz ...    one file per dataset frame (index order), written atomically
    reports/rank-R.json      what each rank's last run computed, skipped and why frames failed

A frame file holds the points [N,4] float32, labels [N] int32 (if the dataset has them), the
point-pixel pairs (``pair_point`` int32, ``pair_camera`` uint8, ``pair_uv`` float32 pixels), per-point
superpixel ids [N] int32 (-1 unpaired, unique per frame), the teacher features as the storage mode
keeps them (below), and a sha256 over all of it. A file is complete iff it loads and its checksum
verifies: writes go to a ``.partial`` temp file renamed into place, so an interrupted run leaves
either the old state or a complete file, and a re-run skips exactly the frames that verify.

Storage modes (:class:`CacheStorage`, part of the cache's identity), measured in the README:

* ``layout: pairs`` keeps one feature row per pair (``pair_features``); ``layout: grid`` keeps the
  teacher's patch grid of each camera instead -- only the cells some pair's bilinear stencil reads
  (``grid_cells``, ``grid_features``) -- and pairs are sampled from it when read. A ViT patch covers
  tens to hundreds of points, so the grid is several times smaller, and it decodes to the same
  features as the pairs layout (the stencil is the one :mod:`relidar.training.pairs` samples with).
* ``dtype``: float32, float16, or int8 with one float16 scale per row (``*_scales``: row = q * scale).
* ``projection_dim``: rows are first mapped to fewer dimensions by a fixed orthonormal basis W [D, k]
  (uncentred PCA, fitted on the pairs of a few frames spread over the dataset; ``projection.npz``).
  A linear map without centring keeps dot products meaningful, so text embeddings go through the same
  basis (:meth:`Projection.project_vocabulary`) and zero-shot classification still compares cosines.

Whatever the mode, a reader gets float32 unit rows (:meth:`CachedFrame.teacher_features`).

Ranks share a dataset by index: frame i belongs to rank ``i % world_size``. Ranks never touch each
other's frames; each writes the (identical) manifest atomically. The projection is fitted by
whichever rank gets there first and published with an exclusive link, so every rank encodes with
the same basis (frame files record its sha256; a frame encoded with another basis is recomputed).

Reads verify a frame file's checksum once per process (:class:`CacheReader`): a file whose device,
inode, size and modification time are unchanged since it verified is not hashed again. Frame files
are only ever replaced by a rename, never edited in place, so an unchanged identity means unchanged
bytes; ``verify="always"`` hashes every read.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import Field

from relidar.core import artifact
from relidar.core.atomic import atomic_path
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.core.frame import Frame
from relidar.training.pairs import BilinearStencil, apply_stencil, assign_cameras, bilinear_stencil, superpixel_ids
from relidar.training.teachers.base import Teacher, TeacherError

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


# --- rows: quantisation ---------------------------------------------------------------------------


def encode_rows(rows: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows [K, D] as stored: values in ``dtype`` and, for int8, one float16 scale per row
    (``max |row| / 127``, so each row uses the full int8 range)."""
    x = np.asarray(rows, dtype=np.float32)
    if dtype == "int8":
        peak = np.abs(x).max(axis=1) if x.size else np.zeros(len(x), np.float32)
        scales = (np.maximum(peak, 1e-12) / 127.0).astype(np.float16)
        # Divide by the float16 scale that is stored, so the rounding error is the only error.
        q = np.clip(np.rint(x / scales.astype(np.float32)[:, None]), -127, 127).astype(np.int8)
        return q, scales
    return x.astype(dtype), None


def decode_rows(values: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """float32 rows from :func:`encode_rows`' output."""
    x = values.astype(np.float32)
    if scales is not None:
        x *= scales.astype(np.float32)[:, None]
    return x


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


# --- the projection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
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


def fit_projection(rows: np.ndarray, dim: int, fitted_on: Sequence[str]) -> Projection:
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
    return Projection(basis32, energy, tuple(fitted_on), artifact.sha256_arrays({"basis": basis32}))


def write_projection(path: Path, projection: Projection) -> Projection:
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


def read_projection(path: Path) -> Projection:
    fix = "delete it and every frame file, then run `relidar prepare` again"
    arrays = _load_verified(path, fix, what="projection file")
    artifact.check_format_version(int(arrays.get("format_version", -1)), CACHE_FORMAT_VERSION, path=path,
                                  error=CacheError, what="projection file", hint=fix)
    basis = arrays["basis"]
    return Projection(basis, float(arrays["energy"]), tuple(json.loads(str(arrays["fitted_on"]))),
                      artifact.sha256_arrays({"basis": basis}))


# --- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraImages:
    """A frame's camera images, for a teacher that runs later (the online teacher, inside the training step):
    ``images[c]`` is camera c's HxWx3 uint8 RGB image, or None where no point pairs with it."""

    images: tuple[np.ndarray | None, ...]

    @property
    def image_sizes(self) -> np.ndarray:
        return np.array([(0, 0) if im is None else im.shape[:2] for im in self.images], dtype=np.int64)


@dataclass(frozen=True)
class StoredFeatures:
    """A frame's teacher features as a storage mode keeps them (see the module docstring).

    ``pairs`` layout: ``values``/``scales`` hold one row per pair. ``grid`` layout: they hold the kept
    grid cells, camera c's in rows ``camera_rows[c]:camera_rows[c+1]``, ``cells`` their flat index
    (row * w + col) in that camera's grid of shape ``grid_shapes[c]`` over an image of ``image_sizes[c]``.
    """

    layout: str
    values: np.ndarray
    scales: np.ndarray | None
    cells: np.ndarray | None = None
    camera_rows: np.ndarray | None = None
    grid_shapes: np.ndarray | None = None
    image_sizes: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.values, self.scales, self.cells, self.camera_rows, self.grid_shapes,
                                      self.image_sizes) if a is not None)

    def rows(self, pairs: np.ndarray, pair_camera: np.ndarray, pair_uv: np.ndarray) -> np.ndarray:
        """[m, d] float32 unit rows of the pairs ``pairs`` (indices into the frame's pairs)."""
        if self.layout == "pairs":
            scales = None if self.scales is None else self.scales[pairs]
            return unit_rows(decode_rows(self.values[pairs], scales))
        out = np.zeros((len(pairs), self.dim), dtype=np.float32)
        cams = pair_camera[pairs]
        for c in np.unique(cams):
            sel = np.flatnonzero(cams == c)
            lo, hi = int(self.camera_rows[c]), int(self.camera_rows[c + 1])
            h, w = (int(v) for v in self.grid_shapes[c])
            rows = decode_rows(self.values[lo:hi], None if self.scales is None else self.scales[lo:hi])
            row_of_cell = np.full(h * w, -1, dtype=np.int64)
            row_of_cell[self.cells[lo:hi]] = np.arange(hi - lo)
            height, width = (int(v) for v in self.image_sizes[c])
            stencil = bilinear_stencil(pair_uv[pairs[sel]], (h, w), height, width)
            out[sel] = apply_stencil(rows, stencil, row_of_cell)
        return unit_rows(out)


@dataclass(frozen=True)
class CachedFrame:
    """What distillation needs of one frame (see the module docstring for dtypes); ``features`` are the
    stored teacher features, or the camera images when the teacher runs in the training step."""

    frame_id: str
    points: np.ndarray
    labels: np.ndarray | None
    pair_point: np.ndarray
    pair_camera: np.ndarray
    pair_uv: np.ndarray
    superpixels: np.ndarray
    camera_names: tuple[str, ...]
    features: StoredFeatures | CameraImages

    @property
    def num_pairs(self) -> int:
        return int(self.pair_point.shape[0])

    def teacher_features(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """[m, d] float32 unit rows of the teacher's features at ``pairs`` (indices into the frame's pairs;
        all by default), decoded from the storage mode."""
        if isinstance(self.features, CameraImages):
            raise CacheError(f"frame {self.frame_id!r} carries camera images, not teacher features: its teacher "
                             "runs in the training step", hint="read features from a prepared cache")
        index = np.arange(self.num_pairs) if pairs is None else np.asarray(pairs, dtype=np.int64)
        return self.features.rows(index, self.pair_camera, self.pair_uv)

    @cached_property
    def pair_features(self) -> np.ndarray:
        """[M, d] float32 unit rows of every pair (decoded once)."""
        return self.teacher_features()


def frame_file_name(index: int) -> str:
    # By dataset index, not frame id: ids can hold slashes and any characters.
    return f"{FRAMES_DIR}/{index:06d}.npz"


def pair_frame(frame: Frame, settings: CacheSettings, *, superpixels: bool = True,
               timings: dict[str, float] | None = None) -> CachedFrame:
    """The frame's points paired with the cameras that see them (no teacher yet: ``features`` are the
    images it will encode); raises ValueError if no point projects into a camera. ``superpixels`` False
    leaves every id -1 (SLIC is the slow part and only superpixel pooling reads them)."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    if not frame.cameras:
        raise ValueError("frame has no cameras")
    pixels = assign_cameras(frame, min_depth=settings.min_depth)
    if len(pixels) == 0:
        raise ValueError("no point projects into any camera (check the calibration: `relidar render overlay`)")
    if len(frame.cameras) > 255:
        raise ValueError(f"{len(frame.cameras)} cameras; the cache stores camera indices as uint8")
    used = set(np.unique(pixels.camera_index).tolist())
    t1 = time.perf_counter()
    if superpixels:
        sp = superpixel_ids(frame, pixels, settings.superpixel_segments, settings.superpixel_compactness)
    else:
        sp = np.full(frame.num_points, -1, dtype=np.int32)
    t2 = time.perf_counter()
    timings["pairs"] = timings.get("pairs", 0.0) + (t1 - t0)
    timings["superpixels"] = timings.get("superpixels", 0.0) + (t2 - t1)
    return CachedFrame(
        frame_id=frame.frame_id,
        points=frame.points.astype(np.float32),
        labels=None if frame.labels is None else frame.labels.astype(np.int32),
        pair_point=pixels.point_index.astype(np.int32),
        pair_camera=pixels.camera_index.astype(np.uint8),
        pair_uv=pixels.uv.astype(np.float32),
        superpixels=sp.astype(np.int32),
        camera_names=tuple(cam.name for cam in frame.cameras),
        features=CameraImages(tuple(cam.image if c in used else None for c, cam in enumerate(frame.cameras))),
    )


def encode_grids(paired: CachedFrame, grids: Sequence[np.ndarray | None], storage: CacheStorage,
                 projection: Projection | None = None) -> StoredFeatures:
    """The stored form of teacher grids ([h, w, D] per camera, None where unused) for ``paired``'s pairs.

    Projection comes before sampling: both are linear, so projecting the grid equals projecting the
    sampled rows, and the grid layout decodes to what the pairs layout stores.
    """
    images = paired.features
    if not isinstance(images, CameraImages):
        raise TypeError("encode_grids needs a frame from pair_frame (its camera images)")
    sizes = images.image_sizes
    pair_rows: list[tuple[np.ndarray, np.ndarray]] = []
    cells, chunks, shapes = [], [], np.zeros((len(grids), 2), dtype=np.int64)
    camera_rows = [0]
    for c, grid in enumerate(grids):
        sel = np.flatnonzero(paired.pair_camera == c)
        if sel.size and grid is None:
            raise ValueError(f"frame {paired.frame_id!r}: camera {paired.camera_names[c]!r} has paired points but no "
                             "feature grid")
        if grid is None or not sel.size:
            camera_rows.append(camera_rows[-1])
            continue
        h, w = grid.shape[:2]
        flat = grid.reshape(h * w, -1).astype(np.float32, copy=False)
        flat = projection.project(flat) if projection is not None else flat
        stencil: BilinearStencil = bilinear_stencil(paired.pair_uv[sel], (h, w), int(sizes[c, 0]), int(sizes[c, 1]))
        if storage.layout == "pairs":
            pair_rows.append((sel, apply_stencil(flat, stencil)))
        else:
            kept = np.unique(stencil.cells)
            cells.append(kept)
            chunks.append(flat[kept])
            shapes[c] = (h, w)
        camera_rows.append(camera_rows[-1] + (0 if storage.layout == "pairs" else len(kept)))
    dim = projection.dim if projection is not None else next(g.shape[-1] for g in grids if g is not None)
    if storage.layout == "pairs":
        rows = np.zeros((paired.num_pairs, dim), dtype=np.float32)
        for sel, sampled in pair_rows:
            rows[sel] = sampled
        values, scales = encode_rows(unit_rows(rows), storage.dtype)
        return StoredFeatures("pairs", values, scales)
    all_rows = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    values, scales = encode_rows(all_rows, storage.dtype)
    return StoredFeatures("grid", values, scales, cells=np.concatenate(cells).astype(np.int32) if cells else
                          np.zeros(0, np.int32), camera_rows=np.asarray(camera_rows, dtype=np.int64),
                          grid_shapes=shapes.astype(np.int32), image_sizes=sizes.astype(np.int32))


def teacher_grids(paired: CachedFrame, teacher: Teacher) -> list[np.ndarray | None]:
    """The teacher's feature grid of each camera that has pairs (None for the others)."""
    images = paired.features
    if not isinstance(images, CameraImages):
        raise TypeError("teacher_grids needs a frame from pair_frame (its camera images)")
    return [None if im is None else teacher.encode_image(im) for im in images.images]


def compute_cached_frame(
    frame: Frame, teacher: Teacher, settings: CacheSettings, timings: dict[str, float] | None = None,
    projection: Projection | None = None,
) -> CachedFrame:
    """Run the teacher on the frame's cameras that see points and pair them; raises ValueError if none do.
    ``timings`` (if given) accumulates seconds spent in "teacher", "pairs" and "superpixels"."""
    timings = timings if timings is not None else {}
    paired = pair_frame(frame, settings, timings=timings)
    t0 = time.perf_counter()
    grids = teacher_grids(paired, teacher)
    t1 = time.perf_counter()
    dims = {g.shape[-1] for g in grids if g is not None}
    if dims != {teacher.feature_dim}:
        raise TeacherError(f"teacher {teacher.name} returned {sorted(dims)}-d features but declares {teacher.feature_dim}")
    stored = encode_grids(paired, grids, settings.storage, projection)
    t2 = time.perf_counter()
    timings["teacher"] = timings.get("teacher", 0.0) + (t1 - t0)
    timings["pairs"] = timings.get("pairs", 0.0) + (t2 - t1)
    return CachedFrame(**{**paired.__dict__, "features": stored})


def _frame_arrays(cached: CachedFrame) -> dict[str, np.ndarray]:
    stored = cached.features
    if not isinstance(stored, StoredFeatures):
        raise TypeError("only frames with stored teacher features are written")
    arrays = {
        "points": cached.points,
        "pair_point": cached.pair_point,
        "pair_camera": cached.pair_camera,
        "pair_uv": cached.pair_uv,
        "superpixels": cached.superpixels,
    }
    if cached.labels is not None:
        arrays["labels"] = cached.labels
    prefix = "pair" if stored.layout == "pairs" else "grid"
    arrays[f"{prefix}_features"] = stored.values
    if stored.scales is not None:
        arrays[f"{prefix}_scales"] = stored.scales
    if stored.layout == "grid":
        arrays.update(grid_cells=stored.cells, grid_camera_rows=stored.camera_rows, grid_shapes=stored.grid_shapes,
                      image_sizes=stored.image_sizes)
    return arrays


def write_cached_frame(path: Path, cached: CachedFrame, teacher_name: str, projection: Projection | None = None) -> int:
    """Write atomically with a checksum; returns the file's size in bytes."""
    arrays = _frame_arrays(cached)
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "frame_id": cached.frame_id,
        "teacher": teacher_name,
        "camera_names": list(cached.camera_names),
        "projection_sha256": projection.sha256 if projection is not None else None,
    }
    arrays[_META_KEY] = np.array(json.dumps(meta))
    arrays[_CHECKSUM_KEY] = np.array(artifact.sha256_arrays(arrays))
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temp name.
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path.stat().st_size


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


def read_cached_frame(path: Path, verified: dict[str, Any] | None = None) -> tuple[CachedFrame, dict[str, Any]]:
    """Load and verify one frame file; CacheError (naming the file) if it is missing, partial or corrupt.
    ``verified``: see :func:`_load_verified` (None hashes every read)."""
    fix = "delete it and run `relidar prepare` again to recompute that frame"
    arrays = _load_verified(path, fix, verified=verified)
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
        artifact.check_format_version(meta.get("format_version"), CACHE_FORMAT_VERSION, path=path, error=CacheError,
                                      what="cache frame", hint=fix)
        if "pair_features" in arrays:
            stored = StoredFeatures("pairs", arrays["pair_features"], arrays.get("pair_scales"))
        else:
            stored = StoredFeatures("grid", arrays["grid_features"], arrays.get("grid_scales"),
                                    cells=arrays["grid_cells"].astype(np.int64),
                                    camera_rows=arrays["grid_camera_rows"], grid_shapes=arrays["grid_shapes"],
                                    image_sizes=arrays["image_sizes"])
        cached = CachedFrame(
            frame_id=meta["frame_id"],
            points=arrays["points"],
            labels=arrays.get("labels"),
            pair_point=arrays["pair_point"],
            pair_camera=arrays["pair_camera"],
            pair_uv=arrays["pair_uv"],
            superpixels=arrays["superpixels"],
            camera_names=tuple(meta["camera_names"]),
            features=stored,
        )
    except KeyError as exc:
        raise CacheError(f"lacks entry {exc} (written by another relidar version?)", path=path, hint=fix) from exc
    return cached, meta


def load_manifest(cache_dir: Path) -> CacheManifest:
    return artifact.read_manifest(
        Path(cache_dir) / MANIFEST_NAME, CacheManifest, CacheError, version=CACHE_FORMAT_VERSION,
        what="feature cache manifest", missing_hint=f"is {cache_dir} a folder written by `relidar prepare`?",
        hint="the manifest is damaged or from another relidar version: prepare the cache again into a new folder")


def _write_or_check_manifest(cache_dir: Path, manifest: CacheManifest) -> CacheManifest:
    """Write the manifest, or keep a compatible existing one (same teacher/settings, frame lists one a
    prefix of the other, e.g. a run with ``--limit``); CacheError on a conflicting one."""
    path = cache_dir / MANIFEST_NAME
    if path.exists():
        old = load_manifest(cache_dir)
        for key in ("format_version", "teacher", "feature_dim", "feature_dtype", "dataset_format", "settings"):
            if getattr(old, key) != getattr(manifest, key):
                raise CacheError(f"is {getattr(old, key)!r} but this run has {getattr(manifest, key)!r}", path=path,
                                 field=key, hint="write to another --out folder (or delete this cache)")
        n = min(len(old.frame_ids), len(manifest.frame_ids))
        if old.frame_ids[:n] != manifest.frame_ids[:n]:
            raise CacheError(f"lists other frames than dataset {manifest.dataset_path}", path=path, field="frame_ids",
                             hint="write to another --out folder")
        if len(old.frame_ids) >= len(manifest.frame_ids):
            return old
    artifact.write_json(path, manifest)
    return manifest


@dataclass
class PrepareReport:
    """What one rank's ``prepare_cache`` run did."""

    rank: int
    world_size: int
    assigned: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed_partials: int = 0
    seconds: float = 0.0
    verify_seconds: float = 0.0
    bytes_written: int = 0
    pairs_written: int = 0
    points_written: int = 0
    feature_bytes: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    storage: str = ""
    projection_energy: float | None = None  # share of the fitted rows' squared norm the projection keeps

    @property
    def frames_per_second(self) -> float:
        """Frames computed per second of computing (checking existing files excluded)."""
        busy = self.seconds - self.verify_seconds
        return len(self.done) / busy if busy > 0 and self.done else 0.0

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes_written / len(self.done) if self.done else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "storage": self.storage,
            "projection_energy": self.projection_energy,
            "assigned": self.assigned,
            "done": self.done,
            "skipped_existing": self.skipped,
            "recomputed": [{"frame_id": f, "reason": r} for f, r in self.replaced],
            "failed": [{"frame_id": f, "reason": r} for f, r in self.failed],
            "removed_partials": self.removed_partials,
            "seconds": self.seconds,
            "verify_seconds": self.verify_seconds,
            "frames_per_second": self.frames_per_second,
            "bytes_written": self.bytes_written,
            "bytes_per_frame": self.bytes_per_frame,
            "feature_bytes": self.feature_bytes,
            "pairs_written": self.pairs_written,
            "points_written": self.points_written,
            "phase_seconds": self.phase_seconds,
        }


def rank_frames(num_frames: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices owned by ``rank``: i % world_size == rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return list(range(rank, num_frames, world_size))


def prepare_cache(
    reader: Any,
    out: str | Path,
    teacher: Teacher,
    *,
    settings: CacheSettings | None = None,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
    on_frame: Callable[[int, int, str], None] | None = None,
) -> PrepareReport:
    """Compute and store this rank's share of ``reader``'s frames (an ``open_dataset`` reader: ``len``,
    ``[i] -> Frame``, ``frame_ids``, ``class_names``, ``ignore_index``, ``name``, ``root``).

    ``on_frame(done_count, total, status)`` is called after each frame (progress bars).
    """
    settings = settings or CacheSettings()
    storage = settings.storage
    out = Path(out)
    frame_ids = list(reader.frame_ids)
    if limit is not None:
        frame_ids = frame_ids[: max(0, limit)]
    mine = rank_frames(len(frame_ids), rank, world_size)
    if storage.projection_dim is not None and storage.projection_dim >= teacher.feature_dim:
        raise CacheError(f"{storage.projection_dim} is not fewer than the teacher's {teacher.feature_dim} dims",
                         field="storage.projection_dim", hint="choose a smaller projection_dim, or none")
    manifest = _write_or_check_manifest(
        out,
        CacheManifest(
            teacher=teacher.name,
            feature_dim=storage.projection_dim or teacher.feature_dim,
            teacher_dim=teacher.feature_dim,
            feature_dtype=storage.dtype,
            dataset_path=str(Path(reader.root).resolve()),
            dataset_format=reader.name,
            class_names=list(reader.class_names),
            ignore_index=int(reader.ignore_index),
            settings=settings,
            frame_ids=frame_ids,
            frame_files=[frame_file_name(i) for i in range(len(frame_ids))],
        ),
    )
    report = PrepareReport(rank=rank, world_size=world_size, assigned=len(mine), storage=storage.describe())
    phases = {"read": 0.0, "teacher": 0.0, "pairs": 0.0, "superpixels": 0.0, "write": 0.0, "projection": 0.0}
    start = time.perf_counter()
    projection = None
    if storage.projection_dim is not None:
        t0 = time.perf_counter()
        projection = ensure_projection(out, reader, frame_ids, teacher, settings)
        phases["projection"] += time.perf_counter() - t0
        report.projection_energy = projection.energy
    for k, i in enumerate(mine):
        status = _prepare_one(reader, i, frame_ids[i], out / manifest.frame_files[i], teacher, manifest, report, phases,
                              projection)
        if on_frame:
            on_frame(k + 1, len(mine), status)
    report.seconds = time.perf_counter() - start
    report.phase_seconds = phases
    artifact.write_json(out / REPORTS_DIR / f"rank-{rank}.json", report.to_json())
    return report


def ensure_projection(out: Path, reader: Any, frame_ids: Sequence[str], teacher: Teacher,
                      settings: CacheSettings) -> Projection:
    """The cache's projection: the one in ``out`` if there is one (checked against the teacher and settings),
    else fitted on ``storage.projection_frames`` frames spread evenly over ``frame_ids`` and published."""
    storage = settings.storage
    path = out / PROJECTION_NAME
    if not path.exists():
        n = len(frame_ids)
        picks = np.unique(np.linspace(0, n - 1, min(n, storage.projection_frames)).round().astype(int)) if n else []
        rows, used = [], []
        for i in picks:
            try:
                frame = reader[int(i)]
                paired = pair_frame(frame, settings, superpixels=False)
            except ValueError:  # unreadable or unpaired frames are reported when their rank gets to them
                continue
            exact = encode_grids(paired, teacher_grids(paired, teacher), CacheStorage(layout="pairs", dtype="float32"))
            rows.append(exact.values)
            used.append(frame_ids[int(i)])
        if not rows:
            raise CacheError("no frame to fit the projection on (none of the fitting frames has pairs)", path=path,
                             field="storage.projection_frames", hint="check the dataset with `relidar render overlay`")
        x = np.concatenate(rows)
        if len(x) > storage.projection_rows:
            x = x[np.random.default_rng(0).choice(len(x), storage.projection_rows, replace=False)]
        write_projection(path, fit_projection(x, storage.projection_dim, used))
    projection = read_projection(path)
    if projection.input_dim != teacher.feature_dim or projection.dim != storage.projection_dim:
        raise CacheError(f"maps {projection.input_dim} to {projection.dim} dims; this run needs {teacher.feature_dim} "
                         f"to {storage.projection_dim}", path=path, hint="write to another --out folder")
    return projection


def _prepare_one(
    reader: Any,
    index: int,
    frame_id: str,
    path: Path,
    teacher: Teacher,
    manifest: CacheManifest,
    report: PrepareReport,
    phases: dict[str, float],
    projection: Projection | None,
) -> str:
    """Bring one frame's file up to date; returns 'skipped', 'done' or 'failed' (recorded in ``report``)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink()  # left by an interrupted run of the rank that owns this frame (this one)
            report.removed_partials += 1
    t_check = time.perf_counter()
    existing = _existing_status(path, frame_id, teacher.name, projection)
    report.verify_seconds += time.perf_counter() - t_check
    if existing == "ok":
        report.skipped.append(frame_id)
        return "skipped"
    if existing != "missing":
        report.replaced.append((frame_id, existing))
    t0 = time.perf_counter()
    try:
        frame = reader[index]
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError: an unreadable frame
        report.failed.append((frame_id, f"could not read the frame: {exc}"))
        return "failed"
    phases["read"] += time.perf_counter() - t0
    if frame.frame_id != frame_id:
        report.failed.append((frame_id, f"reader returned frame {frame.frame_id!r} at index {index}: "
                                        "the dataset changed since the manifest"))
        return "failed"
    try:
        cached = compute_cached_frame(frame, teacher, manifest.settings, phases, projection)
    except (ValueError, TeacherError) as exc:
        report.failed.append((frame_id, str(exc)))
        return "failed"
    t2 = time.perf_counter()
    report.bytes_written += write_cached_frame(path, cached, teacher.name, projection)
    report.done.append(frame_id)
    report.pairs_written += cached.num_pairs
    report.points_written += len(cached.points)
    report.feature_bytes += cached.features.nbytes
    phases["write"] += time.perf_counter() - t2
    return "done"


def _existing_status(path: Path, frame_id: str, teacher_name: str, projection: Projection | None) -> str:
    """'ok' if ``path`` holds a verified file of this frame by this teacher (and projection), else why not."""
    if not path.exists():
        return "missing"
    try:
        _, meta = read_cached_frame(path)
    except CacheError as exc:
        return f"invalid: {exc}"
    if meta["frame_id"] != frame_id or meta["teacher"] != teacher_name:
        return "stale"
    if meta.get("projection_sha256") != (projection.sha256 if projection is not None else None):
        return "stale: encoded with another projection"
    return "ok"


class CacheReader:
    """Read-only access to a prepared cache: ``len``, ``[i] -> CachedFrame`` over the frames present.

    Frames the manifest lists but whose file is absent (failed or not yet computed) are left out and
    listed in ``missing_frame_ids``; a present but corrupt file raises CacheError when read.
    ``verify``: "once" hashes a file on its first read in this process (see the module docstring),
    "always" on every read.
    """

    def __init__(self, path: str | Path, verify: Literal["once", "always"] = "once") -> None:
        self.root = Path(path)
        self.manifest = load_manifest(self.root)
        present = [(fid, f) for fid, f in zip(self.manifest.frame_ids, self.manifest.frame_files) if (self.root / f).is_file()]
        self._frame_ids = [fid for fid, _ in present]
        self._files = [self.root / f for _, f in present]
        have = set(self._frame_ids)
        self.missing_frame_ids = [fid for fid in self.manifest.frame_ids if fid not in have]
        self._verified: dict[str, Any] | None = {} if verify == "once" else None
        self.projection: Projection | None = None
        if self.manifest.settings.storage.projection_dim is not None:
            self.projection = read_projection(self.root / PROJECTION_NAME)

    @property
    def frame_ids(self) -> list[str]:
        return list(self._frame_ids)

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def storage(self) -> CacheStorage:
        return self.manifest.settings.storage

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.class_names)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> CachedFrame:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"cache frame {index} out of range: {self.root} has {n} prepared frames")
        path = self._files[index]
        cached, meta = read_cached_frame(path, self._verified)
        if meta["teacher"] != self.manifest.teacher or cached.frame_id != self._frame_ids[index]:
            raise CacheError(f"holds frame {cached.frame_id!r} by teacher {meta['teacher']!r}, but {MANIFEST_NAME} "
                             f"expects {self._frame_ids[index]!r} by {self.manifest.teacher!r}", path=path,
                             hint="re-run `relidar prepare` into this folder")
        expected = self.projection.sha256 if self.projection is not None else None
        if meta.get("projection_sha256") != expected:
            raise CacheError(f"was encoded with another projection than {PROJECTION_NAME}", path=path,
                             hint="re-run `relidar prepare` into this folder")
        dim = cached.features.dim if isinstance(cached.features, StoredFeatures) else -1
        if dim != self.manifest.feature_dim:
            raise CacheError(f"{dim}-d, the manifest says {self.manifest.feature_dim}", path=path,
                             field="features", hint="re-run `relidar prepare` into this folder")
        return cached

    @property
    def feature_space(self) -> str:
        """What its rows are comparable with: the teacher, and the projection when there is one."""
        if self.projection is None:
            return f"features of {self.manifest.teacher}"
        return f"features of {self.manifest.teacher} through PCA basis {self.projection.sha256[:12]}"

    def project_vocabulary(self, vocabulary: Any) -> Any:
        """``vocabulary`` in this cache's feature space: through its projection when it has one."""
        if self.projection is None:
            return vocabulary
        return self.projection.project_vocabulary(vocabulary)

    def failures(self) -> list[dict[str, str]]:
        """Failed frames with reasons, from every rank's last report."""
        out: list[dict[str, str]] = []
        for report in sorted((self.root / REPORTS_DIR).glob("rank-*.json")):
            out.extend(json.loads(report.read_text()).get("failed", []))
        return out
