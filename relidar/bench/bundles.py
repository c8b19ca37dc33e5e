"""A bundle of a given student with a few driving classes embedded by the simulated text tower, for benchmarks
that need the exported graph of a network they did not get as a bundle (``bench student``, ``bench gpu``).

No network and no CLIP weights: what is measured is the student's graph, exported exactly as
``relidar export bundle`` does; the classes only fill the classifier (any feature size works).
"""

from __future__ import annotations

from pathlib import Path

from relidar.model.network import Student

CLASSES = ("car", "truck", "pedestrian", "cyclist", "road", "sidewalk", "building", "vegetation", "pole", "sign")
TEMPLATES = ("a photo of a {}.", "a photo of the {} in the street.")


def student_bundle(root: Path, student: Student) -> Path:
    """Export ``student`` (both graph formulations, weights included) into the bundle folder ``root``."""
    from relidar.core.viz.palette import palette_for
    from relidar.core.vocabulary import Vocabulary, embed_classes
    from relidar.export.bundle import write_bundle
    from relidar.synthetic.teacher import synthetic_text_encoder

    encoder = synthetic_text_encoder(student.config.out_dim, 0)
    synonyms = tuple((name,) for name in CLASSES)
    vocabulary = Vocabulary(class_names=CLASSES, synonyms=synonyms, colors=palette_for(CLASSES),
                            embeddings=embed_classes(synonyms, TEMPLATES, encoder.encode_text), templates=TEMPLATES,
                            encoder=encoder.spec)
    return write_bundle(root, student.eval(), vocabulary, encoder)
