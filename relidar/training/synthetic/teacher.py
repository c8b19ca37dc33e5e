"""A simulated vision-language teacher for the synthetic world, behaving like MaskCLIP on a real one.

It sees only the image. Per pixel it weighs how well the colour fits each concept's known appearance
(the world's palettes under any shading: the distance from the colour to the segment s*albedo,
s in the concept's brightness range), pools that evidence over 16 px patches like a ViT, lets
neighbouring patches bleed into each other (context), and emits a mixture of concept text embeddings
plus appearance-driven within-class variation plus content-seeded noise. Confusable concepts share a
group direction in the embedding space, and appearance palettes overlap, so it errs where a real
model would: black cars read as road, poles as sidewalk, trucks as cars, cyclists as people.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydantic import Field

from relidar.core.config import StrictModel
from relidar.core.text.simulated import ConceptText, SimulatedTextEncoder
from relidar.core.text.simulated import normalise as _normalise
from relidar.core.text.simulated import unit_from as _unit_from
from relidar.core.text.spec import SimulatedTextSpec
from relidar.core.vocabulary import embed_classes
from relidar.training.synthetic.classes import CLASSES, SKY_ALBEDOS
from relidar.training.synthetic.texture import LANE_MARKING_RGB, WINDOW_RGB

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


class SimulatedTeacherConfig(StrictModel):
    feature_dim: int = Field(512, ge=8, description="D, like CLIP ViT-B/16's 512")
    patch_size: int = Field(16, ge=1, description="pixels per feature-grid cell, like a ViT patch")
    seed: int = Field(0, ge=0, description="picks the embedding space (text and appearance directions)")
    colour_sigma: float = Field(14.0, gt=0.0, description="colour tolerance of the appearance match (0..255 units)")
    group_weight: float = Field(0.72, ge=0.0, lt=1.0, description="share of a concept embedding its group holds: confusability")
    prior_strength: float = Field(0.5, ge=0.0, description="weight of the learned class-frequency bias")
    context: float = Field(0.3, ge=0.0, le=1.0, description="how much each patch takes from its 8 neighbours")
    variation: float = Field(0.12, ge=0.0, description="within-class variation driven by patch appearance")
    noise: float = Field(0.2, ge=0.0, description="feature noise, seeded from the image content")
    text_jitter: float = Field(0.08, ge=0.0, description="how much a prompt's template moves its embedding")


class SimulatedTeacher:
    """Implements relidar.training.teachers.base.Teacher for the synthetic world."""

    def __init__(self, config: SimulatedTeacherConfig | None = None) -> None:
        self.config = config or SimulatedTeacherConfig()
        cfg = self.config
        D = cfg.feature_dim
        key = f"synthetic-vlm/{cfg.seed}"
        # The text side lives in the core (relidar.core.text.simulated) so a model bundle can carry it.
        self.text_encoder = SimulatedTextEncoder.from_concepts(
            [ConceptText(c.name, c.group, tuple(c.words)) for c in CONCEPTS], D, cfg.seed, cfg.group_weight,
            cfg.text_jitter)
        self._concept_embeddings = self.text_encoder.embeddings
        self._variation = np.stack([_unit_from(f"{key}/variation/{i}", D) for i in range(6)])
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

    def concept_evidence(self, image: np.ndarray) -> np.ndarray:
        """[h, w, K] soft evidence for each concept on the patch grid (rows sum to 1)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        H, W = image.shape[:2]
        h, w = self.grid_shape(H, W)
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
        rows = (np.arange(H) * h // H)[:, None]
        cols = (np.arange(W) * w // W)[None, :]
        cell = (rows * w + cols).reshape(-1)
        counts = np.bincount(cell, minlength=h * w)[:, None]
        # A power mean lets a strong minority (a pedestrian filling a third of a patch) still show.
        q = 2.0
        pooled = np.stack([np.bincount(cell, weights=p[:, k] ** q, minlength=h * w) for k in range(K)], axis=1) / counts
        pooled = pooled ** (1.0 / q)
        grid = pooled.reshape(h, w, K)
        padded = np.pad(grid, ((1, 1), (1, 1), (0, 0)), mode="edge")
        neighbours = sum(padded[1 + di : 1 + di + h, 1 + dj : 1 + dj + w] for di in (-1, 0, 1) for dj in (-1, 0, 1)) / 9.0
        grid = (1 - self.config.context) * grid + self.config.context * neighbours
        grid = grid**2  # a trained model is more decisive than raw colour evidence
        return grid / grid.sum(axis=2, keepdims=True)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        evidence = self.concept_evidence(image)
        h, w, _ = evidence.shape
        H, W = image.shape[:2]
        rows = np.arange(H) * h // H
        cols = np.arange(W) * w // W
        img = image.astype(np.float64)
        cell = (rows[:, None] * w + cols[None, :]).reshape(-1)
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

    def _concept_of(self, prompt: str) -> int | None:
        return self.text_encoder.concept_of(prompt)

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        return self.text_encoder.encode_text(prompts)


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
    cfg = SimulatedTeacherConfig(feature_dim=feature_dim, seed=seed)
    return SimulatedTextEncoder.from_concepts([ConceptText(c.name, c.group, tuple(c.words)) for c in CONCEPTS],
                                              feature_dim, seed, cfg.group_weight, cfg.text_jitter)
