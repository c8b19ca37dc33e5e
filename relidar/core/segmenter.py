"""One Segmenter for every consumer (the ROS node, ``relidar segment``, the benchmarks).

points [N, >=3] -> numpy voxelization + kernel maps (``relidar.core.preprocess``, the same object
training and export use; no PyTorch) -> the bundle's student graph on a
backend -> per-point label and score (and, on request, the D-dim per-point feature: the bundle's
linear head applied to the voxel's backbone feature, unit-normalised). The classes are data: the
text embeddings are a graph input, so :meth:`Segmenter.set_classes` re-encodes prompts with the
bundle's text encoder and the next call uses them, with no network reload or engine rebuild.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.backends import BackendError, make_backend
from relidar.core.bundle import BundleError, load_bundle
from relidar.core.errors import RelidarError
from relidar.core.preprocess import Preprocessor, StudentInputs
from relidar.core.vocabulary import Vocabulary, VocabularyError, check_class_names, class_colour, embed_classes

__all__ = ["Segmentation", "Segmenter", "SegmenterError", "BundleError"]


class SegmenterError(RelidarError, ValueError):
    """Input the segmenter cannot label (wrong points shape) or classes it cannot encode."""


@dataclass(frozen=True)
class Segmentation:
    labels: np.ndarray            # [N] int32 index into vocabulary.class_names; -1 = outside the crop range
    scores: np.ndarray            # [N] float32 softmax probability of the label (0 where label is -1)
    features: np.ndarray | None   # [N, D] float32 unit rows when requested (zeros where label is -1)
    timings_ms: dict[str, float]  # "preprocess", "network", "postprocess", "total"


class Segmenter:
    """Labels lidar points with a model bundle. See the module docstring."""

    def __init__(self, bundle: str | Path, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, precision: str | None = None, formulation: str | None = None) -> None:
        self.bundle = load_bundle(bundle)
        self.preprocessor = Preprocessor.of(self.bundle.manifest.student)
        try:
            self._backend = make_backend(self.bundle, backend, device, threads, precision, formulation)
        except BackendError as exc:
            raise BundleError(exc.message, path=exc.path or self.bundle.root, field=exc.field, hint=exc.hint) from exc
        self.backend: str = self._backend.name
        self.formulation: str = self._backend.formulation  # the kernel maps its graph takes (relidar.core.graph)
        self.device = device
        self.vocabulary: Vocabulary = self.bundle.vocabulary()
        self._text_encoder = None  # built on first set_classes: the CLIP tower costs a second to load
        self._head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = self.bundle.text_encoder()
        return self._text_encoder

    def set_classes(self, classes: Sequence[str]) -> None:
        """Use these classes from the next call on. Names already in the bundle's vocabulary keep their
        synonyms and colour; new names are their own single synonym. Prompts are the vocabulary's templates."""
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
            self.vocabulary = Vocabulary(class_names=tuple(names), synonyms=synonyms, colors=colours,
                                         embeddings=embeddings, templates=base.templates, encoder=base.encoder)
        except VocabularyError as exc:
            raise SegmenterError(exc.message, field=exc.field or "classes") from exc

    def preprocess(self, points: np.ndarray) -> StudentInputs:
        """Voxels and kernel maps of one scan (numpy only); ``.feed(embeddings)`` is the graph's input."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise SegmenterError(f"must be [N, >=3] (x, y, z[, intensity]), got shape {pts.shape}", field="points")
        return self.preprocessor(pts)

    def _point_features(self, voxel_features: np.ndarray, point_to_voxel: np.ndarray) -> np.ndarray:
        if self._head is None:
            self._head = self.bundle.head()
        weight, bias = self._head
        emb = voxel_features @ weight + bias
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        out = np.zeros((len(point_to_voxel), emb.shape[1]), dtype=np.float32)
        inside = point_to_voxel >= 0
        out[inside] = emb[point_to_voxel[inside]]
        return out

    def __call__(self, points: np.ndarray, return_features: bool = False) -> Segmentation:
        t0 = time.perf_counter()
        inputs = self.preprocess(points)
        n = inputs.num_points
        feed = inputs.feed(self.vocabulary.embeddings, self.formulation) if inputs.num_voxels else None
        t1 = time.perf_counter()
        if feed is None:  # nothing inside the crop: no network call
            labels = np.full(n, -1, dtype=np.int32)
            scores = np.zeros(n, dtype=np.float32)
            voxel_features = np.zeros((0, 1), np.float32)
        else:
            out = self._backend.run(feed)
            labels, scores, voxel_features = out["labels"], out["scores"], out["voxel_features"]
        t2 = time.perf_counter()
        labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        features = None
        if return_features:
            if feed is None:
                features = np.zeros((n, self.bundle.manifest.student.out_dim), np.float32)
            else:
                features = self._point_features(voxel_features, inputs.point_to_voxel)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return Segmentation(labels=labels, scores=scores, features=features, timings_ms=timings)
