"""Class names (with synonyms) x prompt templates -> a Vocabulary, through any TextEncoder.

Also what ``relidar vocabulary`` needs that is not CLI: named and YAML class lists, template files,
the teacher whose text tower embeds them, and the most confusable class pairs of a vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator

from relidar.core.config import StrictModel
from relidar.core.vocabulary import (
    DEFAULT_TEMPLATES,
    NUSCENES_CLASSES,
    SEMANTIC_KITTI_CLASSES,
    ClassSpec,
    Vocabulary,
    embed_classes,
)
from relidar.training.teachers.base import TextEncoder


def build_vocabulary(
    class_specs: Sequence[ClassSpec],
    templates: Sequence[str],
    encoder: TextEncoder,
    encoder_name: str = "",
) -> Vocabulary:
    """Average each class's prompt embeddings (synonyms x templates), normalise, and bundle with names
    and colours (``relidar.core.vocabulary.DEFAULT_TEMPLATES`` is a good ``templates``). ``encoder_name`` records
    which text tower made the embeddings (a Teacher's ``name``)."""
    synonyms = [spec.synonyms or (spec.name,) for spec in class_specs]
    embeddings = embed_classes(synonyms, templates, encoder.encode_text)
    if embeddings.shape[1] != encoder.feature_dim:
        raise ValueError(
            f"build_vocabulary: encoder returned {embeddings.shape[1]}-d embeddings but declares feature_dim={encoder.feature_dim}"
        )
    return Vocabulary(
        class_names=tuple(spec.name for spec in class_specs),
        synonyms=tuple(tuple(s) for s in synonyms),
        colors=np.asarray([spec.color for spec in class_specs], dtype=np.uint8).reshape(-1, 3),
        embeddings=embeddings,
        templates=tuple(templates),
        encoder=encoder_name,
    )


# --- what `relidar vocabulary` needs besides the CLI: class lists, template files, teachers, confusions ---

CLASS_LIST_NAMES: tuple[str, ...] = ("nuscenes", "semantickitti", "synthetic")
TEACHER_KINDS: tuple[str, ...] = ("maskclip", "synthetic")


class ClassListError(ValueError):
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


class ClassListFile(StrictModel):
    classes: list[ClassEntry] = Field(..., min_length=1)

    @field_validator("classes")
    @classmethod
    def _unique_names(cls, entries: list[ClassEntry]) -> list[ClassEntry]:
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"class names must be unique; repeated: {dupes}")
        return entries


def load_class_list_file(path: str | Path) -> tuple[ClassSpec, ...]:
    """Classes from a YAML list of ``{name, synonyms, color}`` mappings (also accepted under a ``classes:`` key)."""
    path = Path(path)
    if not path.is_file():
        raise ClassListError(f"{path}: class list file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClassListError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(loaded, dict) and set(loaded) == {"classes"}:
        loaded = loaded["classes"]
    if not isinstance(loaded, list):
        raise ClassListError(
            f"{path}: the top level must be a list of classes like '- name: car\\n  synonyms: [car, automobile]\\n"
            f"  color: [0, 0, 255]', got {type(loaded).__name__}")
    try:
        parsed = ClassListFile.model_validate({"classes": loaded})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"][1:]  # drop the wrapper's "classes"
            where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".") or "(top level)"
            if loc and isinstance(loc[0], int) and loc[0] < len(loaded) and isinstance(loaded[loc[0]], dict):
                where += f" (class {loaded[loc[0]].get('name', '?')!r})"
            lines.append(f"  {where}: {err['msg']}")
        raise ClassListError(f"{path}: invalid class list:\n" + "\n".join(lines)) from exc
    return tuple(ClassSpec(e.name, tuple(e.synonyms) or (e.name,), tuple(e.color)) for e in parsed.classes)


def synthetic_class_specs() -> tuple[ClassSpec, ...]:
    """The synthetic world's classes as vocabulary ClassSpecs (its names, synonyms and display colours)."""
    from relidar.training.synthetic.classes import CLASSES

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
        raise ClassListError(f"classes {key!r}: not one of {list(CLASS_LIST_NAMES)} nor a class-list .yaml file")
    return load_class_list_file(path)


def load_templates_file(path: str | Path) -> tuple[str, ...]:
    """Prompt templates, one a line, each with exactly one ``{}``; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ClassListError(f"{path}: templates file not found") from exc
    except UnicodeDecodeError as exc:
        raise ClassListError(f"{path}: templates file is not UTF-8 text ({exc})") from exc
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise ClassListError(f"{path} line {number}: template {line!r} must contain exactly one '{{}}' "
                                 "where the class word goes")
        templates.append(line)
    if not templates:
        raise ClassListError(f"{path}: no templates (one a line, each with one '{{}}')")
    return tuple(templates)


def default_templates(teacher_kind: str) -> tuple[str, ...]:
    """The templates a teacher's vocabularies are built with unless told otherwise: the synthetic
    world's own three for its simulated teacher (what evaluation uses by default), CLIP's street ensemble otherwise."""
    if teacher_kind == "synthetic":
        from relidar.training.synthetic.teacher import DEFAULT_TEMPLATES as SYNTHETIC_TEMPLATES

        return SYNTHETIC_TEMPLATES
    return DEFAULT_TEMPLATES


def build_text_teacher(kind: str, model: str = "ViT-B-16", pretrained: str | None = "laion2b_s34b_b88k",
                       device: str = "auto", synthetic_options: Mapping[str, Any] | None = None):
    """The teacher whose text tower embeds the vocabulary: MaskCLIP over open_clip (``pretrained`` 'none'
    gives random weights) or the synthetic world's simulated teacher (``synthetic_options`` are
    ``SimulatedTeacherConfig`` fields). Its ``name`` goes into the vocabulary's ``encoder`` field."""
    if kind == "synthetic":
        from relidar.training.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig

        try:
            config = SimulatedTeacherConfig.model_validate(dict(synthetic_options or {}))
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ClassListError(f"synthetic teacher options: {fields}") from exc
        return SimulatedTeacher(config)
    if kind != "maskclip":
        raise ClassListError(f"teacher {kind!r}: must be one of {list(TEACHER_KINDS)}")
    if synthetic_options:
        raise ClassListError("synthetic teacher options were given for the maskclip teacher; drop them")
    import torch

    from relidar.training.teachers.maskclip import MaskCLIPTeacher

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return MaskCLIPTeacher(model, pretrained, device)


def confusable_pairs(vocabulary: Vocabulary, top: int = 5) -> list[tuple[str, str, float]]:
    """The ``top`` most similar class pairs (cosine of their text embeddings), most similar first: the
    classes a zero-shot segmenter with this vocabulary is likeliest to mix up."""
    emb = vocabulary.embeddings.astype(np.float64)
    sim = emb @ emb.T
    i, j = np.triu_indices(vocabulary.num_classes, k=1)
    order = np.argsort(-sim[i, j], kind="stable")[:top]
    names = vocabulary.class_names
    return [(names[i[k]], names[j[k]], float(sim[i[k], j[k]])) for k in order]
