"""One small random-weight bundle per test session, shared by the export/bundle/segmenter/bench tests
(exporting the student takes several seconds on the 2-core box)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Sequence

import torch

from relidar.core.viz.palette import palette_for
from relidar.core.vocabulary import Vocabulary, embed_classes
from relidar.export.bundle import write_bundle
from relidar.model.network import Student, StudentConfig
from relidar.synthetic.teacher import synthetic_text_encoder


@functools.lru_cache(maxsize=None)
def _shared_bundle(base: Path) -> Path:
    return write_test_bundle(base / "shared_test_bundle", profile="fast", feature_dim=32)


def shared_bundle(tmp_path_factory) -> Path:
    """The session's read-only test bundle (do not modify it; copy it with :func:`bundle_copy`)."""
    return _shared_bundle(tmp_path_factory.getbasetemp())


def bundle_copy(tmp_path_factory, dest: Path) -> Path:
    """A private copy of the shared bundle that a test may corrupt."""
    shutil.copytree(shared_bundle(tmp_path_factory), dest)
    return dest


TEST_CLASSES = ("road", "sidewalk", "building", "vegetation", "car", "person")


def write_test_bundle(out_dir: str | Path, profile: str = "fast", classes: Sequence[str] = TEST_CLASSES,
                      feature_dim: int = 32, seed: int = 0, voxel_size: float = 0.1,
                      crop_min: Sequence[float] = (-51.2, -51.2, -4.0), crop_max: Sequence[float] = (51.2, 51.2, 2.4),
                      include_weights: bool = True) -> Path:
    """A small bundle with a randomly initialised student and the simulated text encoder (no network,
    no trained weights): labels are arbitrary but deterministic. For tests of everything downstream."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        config = StudentConfig(profile=profile, out_dim=feature_dim, voxel_size=voxel_size,
                               crop_min=tuple(crop_min), crop_max=tuple(crop_max))
        student = Student(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    encoder = synthetic_text_encoder(feature_dim, seed)
    synonyms = tuple((c.replace("_", " ").replace("-", " "),) for c in classes)
    templates = ("a photo of a {}.", "a photo of the {} in the street.")
    vocab = Vocabulary(class_names=tuple(classes), synonyms=synonyms,
                       colors=palette_for(classes),
                       embeddings=embed_classes(synonyms, templates, encoder.encode_text), templates=templates,
                       encoder=encoder.spec)
    return write_bundle(out_dir, student, vocab, encoder, include_weights=include_weights)
