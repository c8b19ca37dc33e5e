"""One Segmenter for every consumer (the ROS node, ``relidar segment``, the benchmarks).

points [N, >=3] -> numpy voxelization + kernel maps (no PyTorch) -> the bundle's student graph on a
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
from relidar.core.graph import graph_feed
from relidar.core.kernel_maps import build_kernel_maps_numpy
from relidar.core.vocabulary import Vocabulary, VocabularyError, embed_classes
from relidar.core.voxelize import VoxelGrid, voxelize

__all__ = ["Segmentation", "Segmenter", "SegmenterError", "BundleError"]


class SegmenterError(ValueError):
    """Input the segmenter cannot label (wrong points shape) or classes it cannot encode."""


@dataclass(frozen=True)
class Segmentation:
    labels: np.ndarray            # [N] int32 index into vocabulary.class_names; -1 = outside the crop range
    scores: np.ndarray            # [N] float32 softmax probability of the label (0 where label is -1)
    features: np.ndarray | None   # [N, D] float32 unit rows when requested (zeros where label is -1)
    timings_ms: dict[str, float]  # "preprocess", "network", "postprocess", "total"


def _colour_for(name: str) -> tuple[int, int, int]:
    """A stable, fairly saturated colour for a class the vocabulary had none for."""
    import hashlib

    h = hashlib.blake2b(name.encode(), digest_size=3).digest()
    return tuple(int(60 + (b * 195) // 255) for b in h)  # type: ignore[return-value]


class Segmenter:
    """Labels lidar points with a model bundle. See the module docstring."""

    def __init__(self, bundle: str | Path, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, precision: str | None = None) -> None:
        self.bundle = load_bundle(bundle)
        spec = self.bundle.manifest.student
        self.grid = VoxelGrid(spec.voxel_size, spec.crop_min, spec.crop_max)
        self._input_features = tuple(spec.input_features)
        self._num_levels = spec.num_levels
        try:
            self._backend = make_backend(self.bundle, backend, device, threads, precision)
        except BackendError as exc:
            raise BundleError(f"{self.bundle.root}: {exc}") from exc
        self.backend: str = self._backend.name
        self.device = device
        self.vocabulary: Vocabulary = self.bundle.vocabulary()
        self._text_encoder = None  # built on first set_classes: the CLIP tower costs a second to load
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        from relidar.core import compiled

        compiled.warm_up()  # the compiled voxelization loops: loaded (or compiled) here, not on the first scan

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = self.bundle.text_encoder()
        return self._text_encoder

    def set_classes(self, classes: Sequence[str]) -> None:
        """Use these classes from the next call on. Names already in the bundle's vocabulary keep their
        synonyms and colour; new names are their own single synonym. Prompts are the vocabulary's templates."""
        names = [str(c).strip() for c in classes]
        if not names or any(not n for n in names):
            raise SegmenterError(f"classes must be a non-empty list of non-empty names, got {list(classes)}")
        if len(set(names)) != len(names):
            raise SegmenterError(f"classes has duplicates: {names}")
        base = self.bundle.vocabulary()
        known = {n: i for i, n in enumerate(base.class_names)}
        synonyms = tuple(base.synonyms[known[n]] if n in known else (n.replace("_", " ").replace("-", " "),)
                         for n in names)
        colours = np.array([base.colors[known[n]] if n in known else _colour_for(n) for n in names], dtype=np.uint8)
        try:
            embeddings = embed_classes(synonyms, base.templates, self.text_encoder.encode_text)
            self.vocabulary = Vocabulary(class_names=tuple(names), synonyms=synonyms, colors=colours,
                                         embeddings=embeddings, templates=base.templates, encoder=base.encoder)
        except VocabularyError as exc:
            raise SegmenterError(f"set_classes: {exc}") from exc

    def preprocess(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """The graph feed for one scan (numpy only)."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise SegmenterError(f"points must be [N, >=3] (x, y, z[, intensity]), got shape {pts.shape}")
        vox = voxelize(pts, self.grid, self._input_features)
        if vox.num_voxels == 0:  # nothing inside the crop: no maps, no network call
            return {"features": np.zeros((0, len(self._input_features)), np.float32),
                    "point_to_voxel": np.full(len(pts), -1, np.int64)}
        maps = build_kernel_maps_numpy(vox.coords, vox.grid_shape, self._num_levels)
        return graph_feed(vox.features, vox.point_to_voxel, self.vocabulary.embeddings, maps)

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
        n = int(np.asarray(points).shape[0]) if np.ndim(points) == 2 else -1
        feed = self.preprocess(points)
        return self.label(feed, n, return_features, preprocess_ms=(time.perf_counter() - t0) * 1e3)

    def label(self, feed: dict[str, np.ndarray], num_points: int, return_features: bool = False,
              preprocess_ms: float = 0.0) -> Segmentation:
        """The network and per-point outputs for a feed from :meth:`preprocess` of ``num_points`` points.

        Split from :meth:`preprocess` so that a caller can preprocess the next scan while this one runs:
        both release the GIL (numba's compiled loops, ONNX Runtime)."""
        n = num_points
        t1 = time.perf_counter()
        if feed["features"].shape[0] == 0:  # nothing inside the crop: no network call
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
            if feed["features"].shape[0] == 0:
                features = np.zeros((n, self.bundle.manifest.student.out_dim), np.float32)
            else:
                features = self._point_features(voxel_features, feed["point_to_voxel"])
        t3 = time.perf_counter()
        timings = {"preprocess": preprocess_ms, "network": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                   "total": preprocess_ms + (t3 - t1) * 1e3}
        return Segmentation(labels=labels, scores=scores, features=features, timings_ms=timings)
