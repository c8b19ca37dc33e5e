"""A simulated vision-language teacher for the synthetic world, standing in for MaskCLIP on a real one.

Two versions, two classes behind one base (``SimulatedTeacher(config)`` builds the one
``SimulatedTeacherConfig.version`` names):

**Version 2** (default, :class:`MaskTeacher`) models the properties of MaskCLIP that the distillation losses react to, each
behind a switch, with its targets in ``relidar.synthetic.calibration_bands`` (taken from published
measurements, fixed before any loss is compared):

- *recognition from shape, size and context*: evidence comes from the renderer's class and instance masks
  (``relidar.synthetic.truth``) through a confusion model. Each object (or ground tile) is
  detected with a strength that rises with its pixel coverage and falls with its distance; an object may
  be read as its confusable partner (road/sidewalk/terrain, car/truck, pole/traffic-sign,
  person/bicyclist; a draw that persists for the object across frames) and always keeps a little of its
  partner's evidence. What goes undetected takes the class of its surroundings. Evidence is then pooled
  over 16 px patches (thin and distant things fade into their context) and bled between neighbouring
  patches.
- *CLIP's geometry*: every image feature shares one mean direction orthogonal to all text embeddings
  (a narrow cone, and an image-text modality gap: the cosine between a patch and its own class's text
  embedding is far below 1, while zero-shot decisions hardly move: only the prompts' small jitter is not
  orthogonal to it).
- *intra-class structure*: a part lidar can infer (a persistent vector per object, and terms that grow with
  range and with the surface's angle to the viewing ray) and a part it cannot (image-only noise, smooth
  over neighbouring patches, seeded by the image content).

**Version 1** (:class:`ColourTeacher`, the earlier teacher, kept selectable) sees only the image: it weighs how well each pixel's
colour fits each concept's palette under any shading, pools that evidence over patches, lets
neighbouring patches bleed into each other, and emits a mixture of concept text embeddings plus
appearance-driven variation and content-seeded noise.

Both versions share one text side (``relidar.core.text.simulated``): concepts of a confusability group
share part of their direction.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from relidar.core.config import StrictModel
from relidar.core.teacher import TeacherError
from relidar.core.text.simulated import ConceptText, SimulatedTextEncoder
from relidar.core.text.simulated import normalise as _normalise
from relidar.core.text.simulated import unit_from as _unit_from
from relidar.core.text.spec import SimulatedTextSpec
from relidar.core.vocabulary import embed_classes
from relidar.synthetic.classes import CLASSES, SKY_ALBEDOS
from relidar.synthetic.texture import LANE_MARKING_RGB, WINDOW_RGB
from relidar.synthetic.truth import TruthStore, ViewTruth, image_digest

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a blurry photo of a {}.", "a photo of the {} in the street.")


@dataclass(frozen=True)
class Concept:
    name: str
    group: str
    words: tuple[str, ...]
    albedos: tuple[tuple[float, float, float], ...]
    shading: tuple[float, float]
    prior: float  # how often the concept fills a street image: a trained model's learned bias


PRIORS: dict[str, float] = {
    "road": 0.3, "building": 0.3, "sky": 0.2, "vegetation": 0.1, "sidewalk": 0.08, "car": 0.06, "terrain": 0.04,
    "truck": 0.02, "pole": 0.01, "person": 0.005, "bicyclist": 0.003, "traffic-sign": 0.003,
}


def _concepts() -> tuple[Concept, ...]:
    extra = {
        "road": (tuple(LANE_MARKING_RGB),),
        "building": (tuple(WINDOW_RGB),),
        "vegetation": ((95.0, 75.0, 55.0),),
    }
    out = []
    for c in CLASSES:
        flat = c.group == "ground"  # horizontal surfaces are lit evenly: a narrow brightness range
        shading = (0.78, 1.12) if flat else (0.55, 1.12)
        out.append(Concept(c.name, c.group, c.synonyms, tuple(map(tuple, c.albedos)) + extra.get(c.name, ()), shading,
                           PRIORS[c.name]))
    out.append(Concept("sky", "sky", ("sky", "clouds"), SKY_ALBEDOS, (0.85, 1.1), PRIORS["sky"]))
    return tuple(out)


CONCEPTS: tuple[Concept, ...] = _concepts()


@dataclass(frozen=True)
class Recognition:
    """How the version-2 teacher recognises one concept: which concept it mistakes it for, how often,
    and at what size and distance its detection is half strength."""

    partner: str | None  # the confusable concept (CLIP's pairs: road/sidewalk/terrain, car/truck, ...)
    flip: float  # chance an object is read as its partner in a view (each object has its own lasting tendency)
    ambiguity: float  # share of a detected object's evidence that its partner always gets
    half_coverage: float  # image area, in patches, at which detection is half strength
    half_distance: float  # metres at which detection is half strength
    salience: float = 1.0  # weight in its patch against other content: a ViT patch token leans towards objects


# Design choices, not measurements: the pairs are the ones CLIP is known to mix up on street scenes; the
# rates make the larger class of a pair the stronger attractor (trucks read as cars far more often than
# the reverse), as zero-shot CLIP's bias towards frequent words does. Thin and small things are
# detected less by coverage; their weakness after 16 px pooling follows from their size.
RECOGNITION: dict[str, Recognition] = {
    "car": Recognition("truck", 0.06, 0.15, 0.5, 45.0, 1.5),
    "truck": Recognition("car", 0.30, 0.25, 0.5, 50.0, 1.5),
    "person": Recognition("bicyclist", 0.10, 0.15, 0.3, 30.0, 3.0),
    "bicyclist": Recognition("person", 0.35, 0.25, 0.3, 30.0, 3.0),
    "road": Recognition("sidewalk", 0.03, 0.10, 0.5, 60.0),
    "sidewalk": Recognition("road", 0.25, 0.20, 0.5, 45.0),
    "building": Recognition(None, 0.0, 0.0, 0.5, 120.0),
    "vegetation": Recognition("terrain", 0.05, 0.10, 0.5, 100.0),
    "terrain": Recognition("sidewalk", 0.20, 0.20, 0.5, 45.0),
    "pole": Recognition("traffic-sign", 0.10, 0.20, 0.5, 30.0, 2.0),
    "traffic-sign": Recognition("pole", 0.35, 0.25, 0.3, 30.0, 3.0),
    "sky": Recognition(None, 0.0, 0.0, 1e-6, 1e9),
}


class SimulatedTeacherConfig(StrictModel):
    version: Literal[1, 2] = Field(2, description="2: shape/size/context recognition from the renderer's masks, "
                                                  "CLIP's cone and gap, intra-class structure; 1: the colour teacher")
    feature_dim: int = Field(512, ge=8, description="D, like CLIP ViT-B/16's 512")
    patch_size: int = Field(16, ge=1, description="pixels per feature-grid cell, like a ViT patch")
    seed: int = Field(0, ge=0, description="picks the embedding space (text and appearance directions)")
    group_weight: float = Field(0.72, ge=0.0, lt=1.0, description="share of a concept embedding its group holds: confusability")
    text_jitter: float = Field(0.08, ge=0.0, description="how much a prompt's template moves its embedding")
    context: float = Field(0.3, ge=0.0, le=1.0, description="how much each patch takes from its 8 neighbours")
    # version 1 only
    colour_sigma: float = Field(14.0, gt=0.0, description="v1: colour tolerance of the appearance match (0..255 units)")
    prior_strength: float = Field(0.5, ge=0.0, description="v1: weight of the learned class-frequency bias")
    variation: float = Field(0.12, ge=0.0, description="v1: within-class variation driven by patch appearance")
    noise: float = Field(0.2, ge=0.0, description="v1: feature noise, seeded from the image content")
    # version 2 only: each property is a switch (False or 0 turns it off)
    shape_recognition: bool = Field(True, description="v2: detection rises with coverage and falls with distance; "
                                                      "off: every object is seen at full strength")
    confusions: bool = Field(True, description="v2: objects may be read as their confusable partner")
    cone: float = Field(0.45, ge=0.0, lt=1.0, description="v2: share of every feature on one shared image direction "
                                                         "orthogonal to the text embeddings (cone and modality gap)")
    instance_offsets: float = Field(1.0, ge=0.0, description="v2: weight of a persistent vector per object (lidar can "
                                                             "infer it: the object is the same in every frame)")
    geometry_terms: float = Field(0.5, ge=0.0, description="v2: weight of the range and surface-angle dependence")
    image_noise: float = Field(1.4, ge=0.0, description="v2: weight of image-only noise, smooth over neighbouring "
                                                        "patches (lidar cannot infer it)")

    @model_validator(mode="after")
    def _room_for_the_cone(self) -> "SimulatedTeacherConfig":
        if self.version == 2 and self.feature_dim < 16:
            raise ValueError(f"feature_dim {self.feature_dim}: version 2 needs at least 16 (its 12 concepts plus a "
                             "shared image direction orthogonal to them)")
        return self


VARIATION_DIMS = 48  # size of the subspace within-class variation lives in (see SimulatedTeacher.__init__)


def _box(grid: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 neighbourhood of each cell of an [h, w, C] grid (edges replicated)."""
    if radius <= 0:
        return grid
    h, w = grid.shape[:2]
    k = 2 * radius + 1
    padded = np.pad(grid, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    c = padded.cumsum(axis=0).cumsum(axis=1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    return (c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]) / (k * k)


class SimulatedTeacher(ABC):
    """Implements relidar.core.teacher.Teacher for the synthetic world: what both versions share (the text
    side, the embedding space's key, the patch grid, the store of renderer masks).

    ``SimulatedTeacher(config)`` builds the class ``config.version`` names (:data:`TEACHER_VERSIONS`:
    :class:`ColourTeacher` or :class:`MaskTeacher`). Every simulated teacher keeps the masks it is given in
    ``truth`` (a ``TruthStore``; feed it the world's samples with ``remember`` or index a written log's
    sidecar files with ``truth.scan``), so the readers feed either version alike; only version 2 reads them.
    """

    version: int = 0  # set by each subclass: the ``SimulatedTeacherConfig.version`` it implements

    def __new__(cls, config: SimulatedTeacherConfig | None = None, truth: TruthStore | None = None) -> "SimulatedTeacher":
        if cls is SimulatedTeacher:
            cls = TEACHER_VERSIONS[(config or SimulatedTeacherConfig()).version]
        return super().__new__(cls)

    def __init__(self, config: SimulatedTeacherConfig | None = None, truth: TruthStore | None = None) -> None:
        self.config = config or SimulatedTeacherConfig()
        if self.config.version != self.version:
            raise TeacherError(f"{type(self).__name__} is the version-{self.version} simulated teacher, the config "
                               f"asks for version {self.config.version}", field="version",
                               hint="build SimulatedTeacher(config): it picks the class of config.version")
        self.truth = truth if truth is not None else TruthStore()
        cfg = self.config
        self._key = f"synthetic-vlm/{cfg.seed}"
        # The text side lives in the core (relidar.core.text.simulated) so a model bundle can carry it.
        self.text_encoder = SimulatedTextEncoder.from_concepts(
            [ConceptText(c.name, c.group, tuple(c.words)) for c in CONCEPTS], cfg.feature_dim, cfg.seed,
            cfg.group_weight, cfg.text_jitter)
        self._concept_embeddings = self.text_encoder.embeddings

    @property
    def name(self) -> str:
        cfg = self.config
        return f"synthetic-vlm-d{cfg.feature_dim}-p{cfg.patch_size}-s{cfg.seed}"

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    @property
    def text_spec(self) -> SimulatedTextSpec:
        return self.text_encoder.spec

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in CONCEPTS)

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        p = self.config.patch_size
        return max(1, round(height / p)), max(1, round(width / p))

    def remember(self, sample) -> None:
        """Keep the renderer's masks of a ``SyntheticSample``'s cameras for version 2 to read."""
        self.truth.add_sample(sample)

    def _cells(self, H: int, W: int) -> tuple[int, int, np.ndarray]:
        h, w = self.grid_shape(H, W)
        rows = (np.arange(H) * h // H)[:, None]
        cols = (np.arange(W) * w // W)[None, :]
        return h, w, (rows * w + cols).reshape(-1)

    @abstractmethod
    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """[h, w, D] float32 unit rows on the patch grid (each version's class encodes its own way)."""

    def _concept_of(self, prompt: str) -> int | None:
        return self.text_encoder.concept_of(prompt)

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        return self.text_encoder.encode_text(prompts)


class ColourTeacher(SimulatedTeacher):
    """Version 1: sees only the image. It weighs how well each pixel's colour fits each concept's palette
    under any shading, pools that evidence over patches, and emits a mixture of concept text embeddings
    plus appearance-driven variation and content-seeded noise."""

    version = 1

    def __init__(self, config: SimulatedTeacherConfig | None = None, truth: TruthStore | None = None) -> None:
        super().__init__(config or SimulatedTeacherConfig(version=1), truth)
        D = self.config.feature_dim
        self._variation = np.stack([_unit_from(f"{self._key}/variation/{i}", D) for i in range(6)])
        protos, owner, lo, hi = [], [], [], []
        for k, c in enumerate(CONCEPTS):
            for alb in c.albedos:
                protos.append(alb)
                owner.append(k)
                lo.append(c.shading[0])
                hi.append(c.shading[1])
        self._protos = np.array(protos, dtype=np.float64)
        self._owner = np.array(owner)
        self._log_prior = np.log(np.array([c.prior for c in CONCEPTS]))
        self._shade_lo = np.array(lo)
        self._shade_hi = np.array(hi)

    def concept_evidence(self, image: np.ndarray) -> np.ndarray:
        """[h, w, K] soft evidence for each concept from pixel colours (rows sum to 1)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        H, W = image.shape[:2]
        h, w, cell = self._cells(H, W)
        c = image.reshape(-1, 3).astype(np.float64)
        A = self._protos
        s = np.clip((c @ A.T) / (A * A).sum(axis=1)[None], self._shade_lo, self._shade_hi)
        d2 = ((c * c).sum(axis=1)[:, None] - 2 * s * (c @ A.T) + s * s * (A * A).sum(axis=1)[None])
        K = len(CONCEPTS)
        best = np.full((len(c), K), np.inf)
        for k in range(K):
            best[:, k] = d2[:, self._owner == k].min(axis=1)
        logits = -best / (2 * self.config.colour_sigma**2) + self.config.prior_strength * self._log_prior[None]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        counts = np.bincount(cell, minlength=h * w)[:, None]
        # A power mean lets a strong minority (a pedestrian filling a third of a patch) still show.
        q = 2.0
        pooled = np.stack([np.bincount(cell, weights=p[:, k] ** q, minlength=h * w) for k in range(K)], axis=1) / counts
        pooled = pooled ** (1.0 / q)
        grid = pooled.reshape(h, w, K)
        grid = (1 - self.config.context) * grid + self.config.context * _box(grid, 1)
        grid = grid**2  # a trained model is more decisive than raw colour evidence
        return grid / grid.sum(axis=2, keepdims=True)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        evidence = self.concept_evidence(image)
        h, w, _ = evidence.shape
        H, W = image.shape[:2]
        _, _, cell = self._cells(H, W)
        img = image.astype(np.float64)
        counts = np.bincount(cell, minlength=h * w)
        mean = np.stack([np.bincount(cell, weights=img[..., ch].reshape(-1), minlength=h * w) for ch in range(3)], 1) / counts[:, None]
        sq = np.stack([np.bincount(cell, weights=img[..., ch].reshape(-1) ** 2, minlength=h * w) for ch in range(3)], 1) / counts[:, None]
        std = np.sqrt(np.maximum(sq - mean**2, 0.0))
        stats = np.concatenate([mean / 128.0 - 1.0, std / 32.0], axis=1).reshape(h, w, 6)
        digest = hashlib.blake2b(image.tobytes() + repr(image.shape).encode() + self.name.encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        feats = (
            evidence @ self._concept_embeddings
            + cfg.variation * (stats @ self._variation) / np.sqrt(6.0)
            + cfg.noise * rng.standard_normal((h, w, cfg.feature_dim)) / np.sqrt(cfg.feature_dim)
        )
        return _normalise(feats)


class MaskTeacher(SimulatedTeacher):
    """Version 2: recognition by shape, size and context from the renderer's masks through a confusion
    model, CLIP's cone and image-text gap, and intra-class structure (see the module docstring)."""

    version = 2

    def __init__(self, config: SimulatedTeacherConfig | None = None, truth: TruthStore | None = None) -> None:
        super().__init__(config, truth)
        key = self._key
        D = self.config.feature_dim
        # The shared image direction, orthogonal to every concept's text direction, so it moves all
        # image-text cosines alike (up to the prompts' jitter) and no zero-shot decision.
        q, _ = np.linalg.qr(self._concept_embeddings.astype(np.float64).T)
        mean = _unit_from(f"{key}/image-mean", D)
        mean -= q @ (q.T @ mean)
        self._image_mean = mean / np.linalg.norm(mean)
        K = len(CONCEPTS)
        # Within-class variation lives in a subspace of fixed size that contains the text directions, so
        # how often it flips a zero-shot decision does not depend on D (isotropic noise in 512-d would
        # barely touch the 12 concept directions; in 64-d it would touch them 8x more).
        r = min(D - 1, VARIATION_DIMS)
        extra = np.stack([_unit_from(f"{key}/variation-basis/{i}", D) for i in range(r)])
        basis, _ = np.linalg.qr(np.concatenate([q, extra.T - np.outer(self._image_mean, self._image_mean @ extra.T)], axis=1))
        self._basis = basis[:, :r].T  # [r, D] orthonormal rows, orthogonal to the image mean
        self._range_dirs = self._in_basis([f"{key}/range/{k}" for k in range(K)])
        self._angle_dirs = self._in_basis([f"{key}/angle/{k}" for k in range(K)])
        index = {c.name: k for k, c in enumerate(CONCEPTS)}
        rec = [RECOGNITION[c.name] for c in CONCEPTS]
        self._partner = np.array([index[r.partner] if r.partner else k for k, r in enumerate(rec)])
        self._flip = np.array([r.flip for r in rec])
        self._ambiguity = np.array([r.ambiguity for r in rec])
        self._half_coverage = np.array([r.half_coverage for r in rec])
        self._half_distance = np.array([r.half_distance for r in rec])
        self._salience = np.array([r.salience for r in rec])

    def _in_basis(self, keys: Sequence[str]) -> np.ndarray:
        """Unit vectors (one per key) inside the variation subspace."""
        r = self._basis.shape[0]
        return np.stack([_unit_from(k, r) for k in keys]) @ self._basis

    @property
    def name(self) -> str:
        digest = hashlib.blake2b(json.dumps(self.config.model_dump(), sort_keys=True).encode(), digest_size=4).hexdigest()
        return f"{super().name}-v2.{digest}"

    def view_truth(self, image: np.ndarray) -> ViewTruth:
        """The renderer's masks of ``image`` (version 2's input besides the pixels)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TeacherError(f"image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        truth = self.truth.lookup(image)
        if truth is None:
            raise TeacherError(
                f"synthetic teacher v2 ({self.name}): no renderer masks for this {image.shape[1]}x{image.shape[0]} "
                f"image (digest {image_digest(image)[:12]}); it reads them from the world's samples "
                "(SimulatedTeacher.remember) or from the truth_2/ sidecar files `relidar synth` writes; "
                "for images without masks use the version-1 teacher (version: 1)")
        if truth.classes.shape != image.shape[:2]:
            raise TeacherError(f"synthetic teacher v2: masks are {truth.classes.shape}, image is {image.shape[:2]}")
        return truth

    def _objects(self, truth: ViewTruth, digest: str, cell: np.ndarray, num_cells: int):
        """Per object seen in the image: its concept, the concept it is read as, detection strength; and
        the patch-by-object pixel fractions."""
        cfg = self.config
        sky = len(CONCEPTS) - 1
        concept = np.where(truth.classes.reshape(-1) < 0, sky, truth.classes.reshape(-1)).astype(np.int64)
        ids, inv = np.unique(truth.instances.reshape(-1), return_inverse=True)
        n = np.bincount(inv)
        obj_concept = np.zeros(len(ids), dtype=np.int64)
        obj_concept[inv] = concept  # one concept per object (ground tiles are per class)
        depth = truth.depth.reshape(-1).astype(np.float64)
        finite = np.isfinite(depth)
        log_d = np.where(finite, np.log(np.maximum(depth, 0.1)), 0.0)
        mean_log_d = np.bincount(inv, weights=log_d, minlength=len(ids)) / np.maximum(
            np.bincount(inv, weights=finite.astype(np.float64), minlength=len(ids)), 1.0)
        if cfg.shape_recognition:
            patches = n / float(cfg.patch_size**2)
            half_cov = self._half_coverage[obj_concept]
            d = np.exp(mean_log_d)
            half_d = self._half_distance[obj_concept]
            strength = patches**2 / (patches**2 + half_cov**2) * half_d**2 / (d**2 + half_d**2)
            strength[obj_concept == sky] = 1.0
        else:
            strength = np.ones(len(ids))
        read_as = obj_concept.copy()
        if cfg.confusions:
            # Each object has its own lasting tendency to be misread (0..2x the class's rate, drawn once per
            # object), and each view draws against it: the same truck is read as a car in most frames or
            # in few, as an ambiguous-looking object is by a real model.
            tendency = 2.0 * np.array([_unit_draw(f"{self._key}/flip/{i}") for i in ids])
            view = np.array([_unit_draw(f"{digest}/{self._key}/view-flip/{i}") for i in ids])
            flipped = view < tendency * self._flip[obj_concept]
            read_as[flipped] = self._partner[obj_concept[flipped]]
        pair = cell * len(ids) + inv
        counts = np.bincount(pair, minlength=num_cells * len(ids)).reshape(num_cells, len(ids)).astype(np.float64)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        weighted = counts * self._salience[obj_concept][None] if cfg.shape_recognition else counts
        attention = weighted / weighted.sum(axis=1, keepdims=True)
        return ids, obj_concept, read_as, strength, fractions, attention, (log_d, finite, inv)

    def evidence_v2(self, image: np.ndarray) -> np.ndarray:
        """Version 2: [h, w, K] concept evidence on the patch grid (rows sum to 1)."""
        return self._evidence_v2(image)[0]

    def _evidence_v2(self, image: np.ndarray):
        cfg = self.config
        truth = self.view_truth(image)
        H, W = image.shape[:2]
        h, w, cell = self._cells(H, W)
        K = len(CONCEPTS)
        ids, concept, read_as, strength, fractions, attention, extra = self._objects(truth, image_digest(image), cell,
                                                                                    h * w)
        amb = self._ambiguity[concept] if cfg.confusions else np.zeros(len(ids))
        obj_ev = np.zeros((len(ids), K))
        rows = np.arange(len(ids))
        obj_ev[rows, read_as] += strength * (1.0 - amb)
        obj_ev[rows, self._partner[read_as]] += strength * amb
        detected = (attention @ obj_ev).reshape(h, w, K)
        unknown = (attention @ (1.0 - strength)).reshape(h, w, 1)
        # What is not recognised reads as its surroundings (a distant pedestrian as the pavement it is on).
        around = _box(detected, 2)
        around /= np.maximum(around.sum(axis=2, keepdims=True), 1e-9)
        grid = detected + unknown * around
        grid = (1 - cfg.context) * grid + cfg.context * _box(grid, 1)
        grid /= np.maximum(grid.sum(axis=2, keepdims=True), 1e-12)
        return grid, ids, fractions, extra, cell, (h, w), truth

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        D = cfg.feature_dim
        grid, ids, fractions, (log_d, finite, _inv), cell, (h, w), truth = self._evidence_v2(image)
        E = grid.reshape(h * w, -1)
        content = E @ self._concept_embeddings.astype(np.float64)
        if cfg.instance_offsets > 0:
            offsets = self._in_basis([f"{self._key}/instance/{i}" for i in ids])
            content += cfg.instance_offsets * (fractions @ offsets)
        if cfg.geometry_terms > 0:
            counts = np.maximum(np.bincount(cell, weights=finite.astype(np.float64), minlength=h * w), 1.0)
            # Range: standardised log depth around 20 m; angle: |cos| of the surface to the ray around 0.6.
            z = np.clip((np.bincount(cell, weights=log_d, minlength=h * w) / counts - np.log(20.0)), -2.0, 2.0)
            inc = truth.incidence.reshape(-1).astype(np.float64)
            a = np.clip((np.bincount(cell, weights=np.where(finite, inc, 0.0), minlength=h * w) / counts - 0.6) / 0.3,
                        -2.0, 2.0)
            content += cfg.geometry_terms * (z[:, None] * (E @ self._range_dirs) + a[:, None] * (E @ self._angle_dirs)) / np.sqrt(2.0)
        if cfg.image_noise > 0:
            # Seeded by the content and the embedding space only, so a switch changes its own property and
            # not the draw (the teacher-switch controls compare like with like).
            seed = int.from_bytes(hashlib.blake2b(f"{image_digest(image)}/{self._key}/{D}".encode(),
                                                  digest_size=8).digest(), "little")
            g = _box(np.random.default_rng(seed).standard_normal((h, w, self._basis.shape[0])) @ self._basis, 1)
            g /= np.sqrt((g**2).sum(axis=2).mean())
            content += cfg.image_noise * g.reshape(h * w, D)
        content -= np.outer(content @ self._image_mean, self._image_mean)
        content /= np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
        feats = np.sqrt(cfg.cone) * self._image_mean[None] + np.sqrt(1.0 - cfg.cone) * content
        return _normalise(feats.reshape(h, w, D))


# The one place a version number becomes a class (SimulatedTeacher(config) reads it).
TEACHER_VERSIONS: dict[int, type[SimulatedTeacher]] = {1: ColourTeacher, 2: MaskTeacher}


def _unit_draw(key: str) -> float:
    """A uniform [0, 1) number that depends only on ``key``."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2.0**64


def class_text_embeddings(encoder: SimulatedTeacher, class_names: Sequence[str],
                          templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """[C, D]: each class's prompts (templates x name) encoded and averaged, then L2-normalised
    (relidar.core.vocabulary.embed_classes, the one averaging rule, with the class name as its only word)."""
    return embed_classes([(name.replace("-", " "),) for name in class_names], templates, encoder.encode_text)


def zero_shot_pixels(teacher: SimulatedTeacher, image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """HxW class index of highest cosine between the teacher's patch feature and each text row."""
    feats = teacher.encode_image(image)
    h, w, _ = feats.shape
    grid = (feats @ text.T).argmax(axis=2)
    H, W = image.shape[:2]
    return grid[(np.arange(H) * h // H)[:, None], (np.arange(W) * w // W)[None, :]]


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray, ignore_index: int = -1) -> float:
    valid = truth != ignore_index
    return float((pred[valid] == truth[valid]).mean()) if valid.any() else float("nan")


def synthetic_text_encoder(feature_dim: int = 512, seed: int = 0) -> SimulatedTextEncoder:
    """The synthetic world's simulated text encoder (same embeddings as its SimulatedTeacher)."""
    # Both versions share the text side; version 1 has no lower bound on feature_dim.
    cfg = SimulatedTeacherConfig(feature_dim=feature_dim, seed=seed, version=1)
    return SimulatedTextEncoder.from_concepts([ConceptText(c.name, c.group, tuple(c.words)) for c in CONCEPTS],
                                              feature_dim, seed, cfg.group_weight, cfg.text_jitter)
