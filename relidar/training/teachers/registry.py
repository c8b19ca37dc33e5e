"""The teachers relidar can build, by kind: the one place a ``--teacher`` name becomes a teacher.

``relidar prepare`` (image features for the cache), ``relidar vocabulary build`` (the text tower) and
the online teacher of ``data.online`` all build theirs through :func:`build_teacher`; the prompt
templates a kind's vocabularies use unless told otherwise are :func:`default_templates`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

from relidar.core.config import validate
from relidar.core.teacher import Teacher, TeacherError
from relidar.core.vocabulary import DEFAULT_TEMPLATES
from relidar.synthetic.teacher import DEFAULT_TEMPLATES as SYNTHETIC_TEMPLATES
from relidar.synthetic.teacher import SimulatedTeacher, SimulatedTeacherConfig
from relidar.synthetic.truth import TruthStore
from relidar.training.teachers.maskclip import DEFAULT_IMAGE_SIZE, DEFAULT_MODEL, DEFAULT_PRETRAINED


class TeacherKind(str, Enum):
    """maskclip: an open_clip ViT with MaskCLIP dense features; synthetic: the synthetic world's simulated teacher."""

    maskclip = "maskclip"
    synthetic = "synthetic"


def default_templates(kind: TeacherKind | str) -> tuple[str, ...]:
    """The templates a teacher's vocabularies are built with unless told otherwise: the synthetic world's own
    three for its simulated teacher (what evaluation uses by default), CLIP's street ensemble for MaskCLIP."""
    return SYNTHETIC_TEMPLATES if _kind(kind) is TeacherKind.synthetic else DEFAULT_TEMPLATES


def build_teacher(kind: TeacherKind | str, *, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                  device: str = "auto", image_size: int = DEFAULT_IMAGE_SIZE, batch_size: int = 64,
                  synthetic: SimulatedTeacherConfig | Mapping[str, Any] | None = None,
                  truth: TruthStore | None = None) -> Teacher:
    """A teacher of ``kind``.

    maskclip: ``model`` and ``pretrained`` name the open_clip model and its weights ('none': random),
    ``device`` 'auto' is cuda when there is one, else cpu; ``image_size`` and ``batch_size`` are
    MaskCLIPTeacher's. synthetic: ``synthetic`` holds SimulatedTeacherConfig fields (its ``version``
    picks the class) and ``truth`` the renderer's masks the version-2 teacher reads.
    """
    kind = _kind(kind)
    if kind is TeacherKind.synthetic:
        config = validate(SimulatedTeacherConfig, synthetic if synthetic is not None else {}, error=TeacherError,
                          what="synthetic teacher options", hint="see SimulatedTeacherConfig's fields")
        return SimulatedTeacher(config, truth)
    if synthetic:
        raise TeacherError("synthetic teacher options were given for the maskclip teacher", field="synthetic_option",
                           hint="drop them")
    import torch

    from relidar.training.teachers.maskclip import MaskCLIPTeacher

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return MaskCLIPTeacher(model, pretrained, device, image_size, batch_size=batch_size)


def _kind(kind: TeacherKind | str) -> TeacherKind:
    try:
        return TeacherKind(kind)
    except ValueError:
        raise TeacherError(f"{kind!r} is not a teacher", field="teacher",
                           hint=f"choose one of {', '.join(k.value for k in TeacherKind)}") from None
