"""Class names (with synonyms) x prompt templates -> a Vocabulary, through any TextEncoder."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from relidar.training.teachers.base import TextEncoder
from relidar.vocabulary import ClassSpec, Vocabulary, embed_classes


def build_vocabulary(
    class_specs: Sequence[ClassSpec],
    templates: Sequence[str],
    encoder: TextEncoder,
    encoder_name: str = "",
) -> Vocabulary:
    """Average each class's prompt embeddings (synonyms x templates), normalise, and bundle with names
    and colours (``relidar.vocabulary.DEFAULT_TEMPLATES`` is a good ``templates``). ``encoder_name`` records which text tower made the embeddings (a Teacher's ``name``)."""
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
