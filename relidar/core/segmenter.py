"""One Segmenter for every consumer (the ROS node, ``relidar segment``, the benchmarks).

Non-finite input is repaired here, visibly, so every consumer gets the same answer and the same
count: a point with a NaN/inf coordinate has no place in the grid and is left unlabelled (-1); a point
with finite coordinates but NaN/inf intensity takes no part in its voxel's features (one such value
would otherwise spread through the sparse convolutions: on the real KITTI scan with 0.1 % of the
intensities NaN, 98 % of the points came out "car") and takes the label of its voxel when other
points fill that voxel, else -1. The network therefore sees exactly the scan without the bad points:
the labels of every finite point equal those of that clean scan. :class:`Segmentation` counts both.

points [N, >=3] -> voxelization + kernel maps (``relidar.core.preprocess``, compiled numba loops, the same object
training and export use; no PyTorch) -> the bundle's student graph on a
backend -> per-point label and score (and, on request, the D-dim per-point feature: the bundle's
linear head applied to the voxel's backbone feature, unit-normalised). The classes are data: the
text embeddings are a graph input, so :meth:`Segmenter.set_classes` re-encodes prompts with the
bundle's text encoder and the next call uses them, with no network reload or engine rebuild.

A backend with a device-resident path (``Backend.pipeline``, the torch backend's) runs the whole of it on its
device instead -- voxelization, kernel maps, network, classification, devoxelisation -- from one copy of the
points in and one copy of the labels and scores out: the Segmenter takes that path on CUDA by default, and
anywhere with ``device_pipeline=True`` (``False``: never). :meth:`Segmenter.preprocess` then returns the
backend's :class:`~relidar.core.backends.base.DeviceScan` instead of numpy :class:`StudentInputs`; the stages
keep their names: "preprocess" is the copy in, voxels and maps (the device synchronised at its end), "network"
the graph, classifier, devoxelisation and the copy out. The repair of non-finite points stays on the host
(masks over the points, and for bad intensities the numpy voxels of the few rows concerned).

Concurrent calls: :meth:`Segmenter.preprocess` and :meth:`Segmenter.label` may be called from several
threads at once (the node's lanes). On a backend whose ``concurrent`` is true (ONNX Runtime, fused)
the network calls overlap; with ``threads=1`` each runs on its caller's thread, which on a small CPU labels
more scans a second than one call on all cores (ONNX Runtime's intra-op threads scale ~1.3x from one
core to two on this graph; README "A 10 Hz lidar on a CPU"). Other backends' calls take turns.
:meth:`Segmenter.set_classes` is not meant to race with calls: pass ``embeddings`` to :meth:`label`.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.backends import BackendError, device_index, make_backend
from relidar.core.backends.base import DeviceScan, ScanPipeline
from relidar.core.bundle import BundleError, load_bundle
from relidar.core.errors import RelidarError
from relidar.core.preprocess import Preprocessor, StudentInputs
from relidar.core.rows import unit_rows
from relidar.core.viz.palette import class_colour
from relidar.core.vocabulary import Vocabulary, VocabularyError, check_class_names, embed_classes

__all__ = ["PreparedPoints", "ScanInputs", "Segmentation", "Segmenter", "SegmenterError", "BundleError", "finite_rows",
           "lane_threads", "non_finite_counts", "repair_text"]


def lane_threads(lanes: int, requested: int = 0) -> int | None:
    """Network threads per call (the fused backend's, ONNX Runtime's intra-op threads) for ``lanes`` concurrent
    callers (module docstring).

    ``requested`` > 0 is used as given; 0 (auto) shares the CPUs this process may run on
    (``os.sched_getaffinity``: a container's or taskset's limit, not the host's) among the lanes, at
    least one each, so lanes x threads does not oversubscribe the cores (two lanes of two threads on
    two cores measured worse than two of one). One lane: None, the backend's own choice (fused: every
    CPU; ONNX Runtime: one thread per physical core).
    """
    if requested > 0:
        return requested
    if lanes <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // lanes)


class SegmenterError(RelidarError, ValueError):
    """Input the segmenter cannot label (wrong points shape) or classes it cannot encode."""


@dataclass(frozen=True)
class Segmentation:
    labels: np.ndarray            # [N] int32 index into vocabulary.class_names; -1 = outside the crop range
    scores: np.ndarray            # [N] float32 softmax probability of the label (0 where label is -1)
    features: np.ndarray | None   # [N, D] float32 unit rows when requested (zeros where label is -1)
    timings_ms: dict[str, float]  # "preprocess", "network", "postprocess", "total"
    non_finite_xyz: int = 0        # points with a NaN/inf coordinate: left unlabelled (-1)
    non_finite_intensity: int = 0  # points with finite x, y, z but NaN/inf intensity: labelled by their voxel

    @property
    def repaired(self) -> int:
        """How many points had non-finite values (both kinds)."""
        return self.non_finite_xyz + self.non_finite_intensity


_NO_ROWS = np.zeros(0, dtype=np.int64)
ScanInputs = StudentInputs | DeviceScan  # what Segmenter.preprocess gives: host (numpy) or device-resident


def finite_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N] finite x, y and z; [N] those and a finite intensity, where there is one): the repair's two masks."""
    xyz_ok = np.isfinite(points[:, :3]).all(axis=1)
    return xyz_ok, (xyz_ok & np.isfinite(points[:, 3]) if points.shape[1] > 3 else xyz_ok)


def non_finite_counts(points: np.ndarray) -> tuple[int, int]:
    """(points with a NaN/inf coordinate, points with finite x, y, z but NaN/inf intensity): what
    :class:`Segmentation` counts, for a caller that labels only part of a scan (the node's range gate)."""
    xyz_ok, clean = finite_rows(np.asarray(points))
    return int((~xyz_ok).sum()), int((xyz_ok & ~clean).sum())


def repair_text(non_finite_xyz: int, non_finite_intensity: int) -> str:
    """The repair in words, as ``relidar segment`` prints it and the node's diagnostics report it ('' when none)."""
    return "; ".join(f"{n} {what}" for n, what in (
        (non_finite_xyz, "point(s) with a NaN/inf coordinate left unknown"),
        (non_finite_intensity, "point(s) with NaN/inf intensity kept out of the features, labelled by their voxel"),
    ) if n)


@dataclass(frozen=True)
class PreparedPoints:
    """A scan after :meth:`Segmenter.prepare`: the voxels of its clean rows and how to put the rest back."""

    inputs: ScanInputs           # voxels + kernel maps of the clean rows
    num_points: int              # rows of the scan
    clean: np.ndarray | None     # [N] bool, the rows the network sees; None: every row
    intensity_rows: np.ndarray   # rows with finite x, y, z but NaN/inf intensity
    intensity_source: np.ndarray  # for each, the clean row (index among the clean) sharing its voxel, or -1
    non_finite_xyz: int
    preprocess_ms: float


class Segmenter:
    """Labels lidar points with a model bundle. See the module docstring."""

    def __init__(self, bundle: str | Path, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, precision: str | None = None, formulation: str | None = None,
                 device_pipeline: bool | None = None) -> None:
        """``device_pipeline``: run the backend's device-resident path (module docstring); None: where the
        device is CUDA and the backend has one, True: required (refused where the backend has none)."""
        device_index(device)  # a malformed device is the caller's error, not the bundle's (refused first)
        self.bundle = load_bundle(bundle)
        self.preprocessor = Preprocessor.of(self.bundle.manifest.student)
        try:
            self._backend = make_backend(self.bundle, backend, device, threads, precision, formulation)
        except BackendError as exc:
            raise BundleError(exc.message, path=exc.path or self.bundle.root, field=exc.field, hint=exc.hint) from exc
        self.backend: str = self._backend.name
        self.formulation: str = self._backend.formulation  # the kernel maps its graph takes (relidar.core.graph)
        self._pipeline = self._choose_pipeline(device_pipeline, device)
        self.device_pipeline: bool = self._pipeline is not None
        # calls on a backend that cannot run them at once take turns (module docstring)
        self._run_lock = nullcontext() if self._backend.concurrent else threading.Lock()
        self.device = device
        self.vocabulary: Vocabulary = self.bundle.vocabulary()
        self._text_encoder = None  # built on first set_classes: the CLIP tower costs a second to load
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        from relidar.core import voxel_loops

        voxel_loops.warm_up()  # the compiled voxelization loops: loaded (or compiled) here, not on the first scan

    def _choose_pipeline(self, wanted: bool | None, device: str) -> ScanPipeline | None:
        pipeline = self._backend.pipeline
        if wanted is None:
            return pipeline if device.startswith("cuda") else None
        if wanted and pipeline is None:
            raise SegmenterError(f"backend {self.backend!r} has no device-resident pipeline", field="device_pipeline",
                                 hint="use backend torch, or leave device_pipeline unset")
        return pipeline if wanted else None

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = self.bundle.text_encoder()
        return self._text_encoder

    def set_classes(self, classes: Sequence[str]) -> None:
        """Use these classes from the next call on (:meth:`build_vocabulary`, then installed)."""
        self.vocabulary = self.build_vocabulary(classes)

    def build_vocabulary(self, classes: Sequence[str]) -> Vocabulary:
        """The vocabulary of these classes, encoded but not installed: a caller that labels meanwhile (the
        node's lanes) encodes with this outside its lock and swaps the result in under it. Names already in
        the bundle's vocabulary keep their synonyms and colour; new names are their own single synonym.
        Prompts are the vocabulary's templates."""
        try:
            names = check_class_names(classes)
        except VocabularyError as exc:
            raise SegmenterError(exc.message, field="classes") from exc
        base = self.bundle.vocabulary()
        known = {n: i for i, n in enumerate(base.class_names)}
        synonyms = tuple(base.synonyms[known[n]] if n in known else (n.replace("_", " ").replace("-", " "),)
                         for n in names)
        colours = np.array([base.colors[known[n]] if n in known else class_colour(n) for n in names], dtype=np.uint8)
        try:
            embeddings = embed_classes(synonyms, base.templates, self.text_encoder.encode_text)
            return Vocabulary(class_names=tuple(names), synonyms=synonyms, colors=colours,
                              embeddings=embeddings, templates=base.templates, encoder=base.encoder)
        except VocabularyError as exc:
            raise SegmenterError(exc.message, field=exc.field or "classes") from exc

    def preprocess(self, points: np.ndarray) -> ScanInputs:
        """Voxels and kernel maps of one scan: numpy :class:`StudentInputs` (``.feed(embeddings)`` is the graph's
        input), or on the device-resident path the backend's own (module docstring)."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise SegmenterError(f"must be [N, >=3] (x, y, z[, intensity]), got shape {pts.shape}", field="points")
        if self._pipeline is not None:
            return self._pipeline.prepare(pts)
        return self.preprocessor(pts)

    def _point_features(self, voxel_features: np.ndarray, point_to_voxel: np.ndarray) -> np.ndarray:
        if self._head is None:
            self._head = self.bundle.head()
        weight, bias = self._head
        emb = voxel_features @ weight + bias
        unit_rows(emb)
        out = np.zeros((len(point_to_voxel), emb.shape[1]), dtype=np.float32)
        inside = point_to_voxel >= 0
        out[inside] = emb[point_to_voxel[inside]]
        return out

    def __call__(self, points: np.ndarray, return_features: bool = False) -> Segmentation:
        return self.finish(self.prepare(points), return_features=return_features)

    def prepare(self, points: np.ndarray) -> PreparedPoints:
        """The repair (module docstring) and the voxels of the clean points: the first half of :meth:`__call__`,
        split so that a caller (the node's lanes) can prepare one scan while another is in the network."""
        t0 = time.perf_counter()
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise SegmenterError(f"must be [N, >=3] (x, y, z[, intensity]), got shape {pts.shape}", field="points")
        xyz_ok, clean = finite_rows(pts)
        if clean.all():
            return PreparedPoints(self.preprocess(pts), len(pts), None, _NO_ROWS, _NO_ROWS, 0,
                                  (time.perf_counter() - t0) * 1e3)
        inputs = self.preprocess(pts[clean])
        bad_intensity = np.flatnonzero(xyz_ok & ~clean)
        # The clean point that stands for each of these points' voxels (-1: the voxel has no clean point).
        source = self._voxel_mates(pts[clean], pts[bad_intensity]) if len(bad_intensity) else _NO_ROWS
        return PreparedPoints(inputs, len(pts), clean, bad_intensity, source, int((~xyz_ok).sum()),
                              (time.perf_counter() - t0) * 1e3)

    def finish(self, prepared: PreparedPoints, embeddings: np.ndarray | None = None,
               return_features: bool = False) -> Segmentation:
        """The network on a :meth:`prepare`'d scan, against ``embeddings`` (default: the current vocabulary's),
        with every input row's label: the repaired rows as the module docstring says."""
        result = self.label(prepared.inputs, embeddings, return_features=return_features,
                            preprocess_ms=prepared.preprocess_ms)
        if prepared.clean is None:
            return result
        n, clean = prepared.num_points, prepared.clean
        labels = np.full(n, -1, dtype=np.int32)
        scores = np.zeros(n, dtype=np.float32)
        labels[clean], scores[clean] = result.labels, result.scores
        features = None
        if result.features is not None:
            features = np.zeros((n, result.features.shape[1]), np.float32)
            features[clean] = result.features
        source = prepared.intensity_source
        ok = source >= 0
        rows = prepared.intensity_rows[ok]
        labels[rows] = result.labels[source[ok]]
        scores[rows] = result.scores[source[ok]]
        if features is not None:
            features[rows] = result.features[source[ok]]
        return Segmentation(labels=labels, scores=scores, features=features, timings_ms=result.timings_ms,
                            non_finite_xyz=prepared.non_finite_xyz,
                            non_finite_intensity=len(prepared.intensity_rows))

    def _voxel_mates(self, clean: np.ndarray, others: np.ndarray) -> np.ndarray:
        """For each of ``others`` (finite x, y, z), the index of a ``clean`` point in the same voxel, or -1."""
        from relidar.core.voxelize import pack_keys

        xyz_only = np.zeros((len(others), 4), np.float32)
        xyz_only[:, :3] = others[:, :3]
        grid = self.preprocessor.grid.shape
        mine = self.preprocessor.voxelize(clean)
        theirs = self.preprocessor.voxelize(xyz_only)
        keys = pack_keys(mine.coords, grid)  # sorted: voxels come out in key order
        wanted = pack_keys(theirs.coords, grid)
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = (at < len(keys)) & (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool)
        representative = np.full(mine.num_voxels, -1, dtype=np.int64)
        inside = np.flatnonzero(mine.point_to_voxel >= 0)
        representative[mine.point_to_voxel[inside]] = inside
        voxel_source = np.where(found, representative[at], -1) if len(keys) else np.full(len(wanted), -1)
        out = np.full(len(others), -1, dtype=np.int64)
        placed = theirs.point_to_voxel >= 0
        out[placed] = voxel_source[theirs.point_to_voxel[placed]]
        return out

    def label(self, inputs: ScanInputs, embeddings: np.ndarray | None = None, return_features: bool = False,
              preprocess_ms: float = 0.0) -> Segmentation:
        """The network and per-point outputs for :meth:`preprocess`'s result, classified against
        ``embeddings`` [C, D] (default: the current vocabulary's).

        Split from :meth:`preprocess` so that a caller can preprocess the next scan while this one runs:
        both release the GIL (numba's compiled loops, ONNX Runtime)."""
        n = inputs.num_points
        if embeddings is None:
            embeddings = self.vocabulary.embeddings
        on_host = isinstance(inputs, StudentInputs)
        if not on_host and self._pipeline is None:
            raise SegmenterError("these inputs were prepared on a device; this Segmenter prepares them on the host",
                                 field="inputs", hint="pass what this Segmenter's preprocess returned")
        feed = inputs.feed(embeddings, self.formulation) if on_host and inputs.num_voxels else None
        t1 = time.perf_counter()
        if not inputs.num_voxels:  # nothing inside the crop: no network call
            labels = np.full(n, -1, dtype=np.int32)
            scores = np.zeros(n, dtype=np.float32)
            voxel_features = np.zeros((0, 1), np.float32)
        else:
            with self._run_lock:  # "network" includes any wait for a turn (non-concurrent backends)
                if on_host:
                    out = self._backend.run(feed)
                else:
                    out = self._pipeline.label(inputs, embeddings, return_features)
            labels, scores = out["labels"], out["scores"]
            voxel_features = out.get("voxel_features")
            point_to_voxel = inputs.point_to_voxel if on_host else out.get("point_to_voxel")
        t2 = time.perf_counter()
        labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        features = None
        if return_features:
            if not inputs.num_voxels:
                features = np.zeros((n, self.bundle.manifest.student.out_dim), np.float32)
            else:
                features = self._point_features(voxel_features, point_to_voxel)
        t3 = time.perf_counter()
        timings = {"preprocess": preprocess_ms, "network": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                   "total": preprocess_ms + (t3 - t1) * 1e3}
        return Segmentation(labels=labels, scores=scores, features=features, timings_ms=timings)
