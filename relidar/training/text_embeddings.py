"""Class names (with synonyms) x prompt templates -> a Vocabulary, through any TextEncoder.

Also what ``relidar vocabulary`` needs that is not CLI: named and YAML class lists, template files,
the teacher whose text tower embeds them, and the most confusable class pairs of a vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from pydantic import Field, field_validator

from relidar.core.config import StrictModel, validate
from relidar.core.errors import RelidarError
from relidar.core.text import TextEncoder
from relidar.core.text.simulated import SimulatedTextEncoder
from relidar.core.text.spec import SimulatedTextSpec, TextEncoderSpec
from relidar.core.vocabulary import (
    NUSCENES_CLASSES,
    SEMANTIC_KITTI_CLASSES,
    ClassSpec,
    Vocabulary,
    check_class_names,
    embed_classes,
)


def build_vocabulary(
    class_specs: Sequence[ClassSpec],
    templates: Sequence[str],
    encoder: TextEncoder,
    encoder_spec: TextEncoderSpec,
) -> Vocabulary:
    """Average each class's prompt embeddings (synonyms x templates), normalise, and bundle with names
    and colours (``relidar.core.vocabulary.DEFAULT_TEMPLATES`` is a good ``templates``). ``encoder_spec``
    records which text tower made the embeddings (a Teacher's ``text_spec``)."""
    synonyms = [spec.synonyms or (spec.name,) for spec in class_specs]
    embeddings = embed_classes(synonyms, templates, encoder.encode_text)
    if embeddings.shape[1] != encoder.feature_dim:
        raise ClassListError(f"the text encoder returned {embeddings.shape[1]}-d embeddings but declares "
                             f"feature_dim={encoder.feature_dim}", field="encoder")
    return Vocabulary(
        class_names=tuple(spec.name for spec in class_specs),
        synonyms=tuple(tuple(s) for s in synonyms),
        colors=np.asarray([spec.color for spec in class_specs], dtype=np.uint8).reshape(-1, 3),
        embeddings=embeddings,
        templates=tuple(templates),
        encoder=encoder_spec,
    )


def simulated_text_encoder(spec: SimulatedTextSpec) -> SimulatedTextEncoder:
    """The synthetic world's simulated text encoder that ``spec`` describes (what a bundle ships for it):
    the world's concepts, embedded with the spec's dimension, seed, group weight and text jitter."""
    from relidar.core.text.simulated import ConceptText
    from relidar.synthetic.teacher import CONCEPTS

    return SimulatedTextEncoder.from_concepts([ConceptText(c.name, c.group, tuple(c.words)) for c in CONCEPTS],
                                              spec.feature_dim, spec.seed, spec.group_weight, spec.text_jitter)


# --- what `relidar vocabulary` needs besides the CLI: class lists, template files, teachers, confusions ---

CLASS_LIST_NAMES: tuple[str, ...] = ("nuscenes", "semantickitti", "synthetic")


class ClassListError(RelidarError, ValueError):
    """A class list or template file that cannot be used; the message names the file, the field and the fix."""


class ClassEntry(StrictModel):
    """One class of a custom class-list YAML."""

    name: str = Field(..., min_length=1, description="the class name, as in the dataset's label list")
    synonyms: list[str] = Field(default_factory=list, description="words prompts use for the class; default: [name]")
    color: tuple[int, int, int] = Field((128, 128, 128), description="display colour, RGB 0..255")

    @field_validator("synonyms")
    @classmethod
    def _words_not_blank(cls, words: list[str]) -> list[str]:
        if any(not w.strip() for w in words):
            raise ValueError("synonyms must not be empty strings")
        return words

    @field_validator("color")
    @classmethod
    def _rgb_range(cls, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in rgb):
            raise ValueError(f"each colour channel must be in 0..255, got {list(rgb)}")
        return rgb


CLASS_LIST_HINT = "write one '- name: car' per class, with optional 'synonyms: [car, automobile]' and 'color: [0, 0, 255]'"


class ClassListFile(StrictModel):
    classes: list[ClassEntry] = Field(..., min_length=1)

    @field_validator("classes")
    @classmethod
    def _unique_names(cls, entries: list[ClassEntry]) -> list[ClassEntry]:
        check_class_names([e.name for e in entries])  # a VocabularyError is a ValueError: pydantic reports it
        return entries


def load_class_list_file(path: str | Path) -> tuple[ClassSpec, ...]:
    """Classes from a YAML list of ``{name, synonyms, color}`` mappings (also accepted under a ``classes:`` key)."""
    path = Path(path)
    if not path.is_file():
        raise ClassListError("class list file not found", path=path, hint="check --classes")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClassListError(f"not valid YAML ({exc})", path=path) from exc
    if isinstance(loaded, dict) and set(loaded) == {"classes"}:
        loaded = loaded["classes"]
    if not isinstance(loaded, list):
        raise ClassListError(f"the top level must be a list of classes, got {type(loaded).__name__}", path=path,
                             hint=CLASS_LIST_HINT)
    parsed = validate(ClassListFile, {"classes": loaded}, error=ClassListError, path=path, what="class list",
                      hint=CLASS_LIST_HINT)
    return tuple(ClassSpec(e.name, tuple(e.synonyms) or (e.name,), tuple(e.color)) for e in parsed.classes)


def synthetic_class_specs() -> tuple[ClassSpec, ...]:
    """The synthetic world's classes as vocabulary ClassSpecs (its names, synonyms and display colours)."""
    from relidar.synthetic.classes import CLASSES

    return tuple(ClassSpec(c.name, c.synonyms, c.colour) for c in CLASSES)


def resolve_class_list(spec: str | Path) -> tuple[ClassSpec, ...]:
    """``nuscenes``, ``semantickitti``, ``synthetic`` or the path of a class-list YAML."""
    key = str(spec)
    if key == "nuscenes":
        return NUSCENES_CLASSES
    if key in ("semantickitti", "semantic_kitti"):
        return SEMANTIC_KITTI_CLASSES
    if key == "synthetic":
        return synthetic_class_specs()
    path = Path(key)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise ClassListError(f"{key!r} is not one of {list(CLASS_LIST_NAMES)} nor a class-list .yaml file",
                             field="classes")
    return load_class_list_file(path)


def load_templates_file(path: str | Path) -> tuple[str, ...]:
    """Prompt templates, one a line, each with exactly one ``{}``; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ClassListError("templates file not found", path=path, hint="check --templates") from exc
    except UnicodeDecodeError as exc:
        raise ClassListError(f"templates file is not UTF-8 text ({exc})", path=path) from exc
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise ClassListError(f"template {line!r} must contain exactly one '{{}}' where the class word goes",
                                 path=path, field=f"line {number}")
        templates.append(line)
    if not templates:
        raise ClassListError("no templates", path=path, hint="write one template a line, each with one '{}'")
    return tuple(templates)


def confusable_pairs(vocabulary: Vocabulary, top: int = 5) -> list[tuple[str, str, float]]:
    """The ``top`` most similar class pairs (cosine of their text embeddings), most similar first: the
    classes a zero-shot segmenter with this vocabulary is likeliest to mix up."""
    emb = vocabulary.embeddings.astype(np.float64)
    sim = emb @ emb.T
    i, j = np.triu_indices(vocabulary.num_classes, k=1)
    order = np.argsort(-sim[i, j], kind="stable")[:top]
    names = vocabulary.class_names
    return [(names[i[k]], names[j[k]], float(sim[i[k], j[k]])) for k in order]
