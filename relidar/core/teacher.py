"""The interface every teacher implements (MaskCLIP over open_clip, the synthetic world's simulated ones), and its error.

It lives in the core, not in training, because the synthetic world (a layer below training, with no torch)
implements it; the torch-side batched interface a teacher offers inside the training step stays in
``relidar.training.teachers.base``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.text import TextEncoder
from relidar.core.text.spec import TextEncoderSpec

__all__ = ["Teacher", "TeacherError"]


@runtime_checkable
class Teacher(TextEncoder, Protocol):
    """A dense image encoder whose features live in the same space as its text embeddings."""

    @property
    def name(self) -> str:
        """Identifies model and weights; part of the feature cache's key."""
        ...

    @property
    def text_spec(self) -> TextEncoderSpec:
        """Its text tower as a typed spec: what a vocabulary records and a bundle rebuilds."""
        ...

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """Dense features of one HxWx3 uint8 RGB image: [h, w, D] float32 on the teacher's patch grid,
        rows L2-normalised. Grid cell (i, j) covers pixels v in [i*H/h, (i+1)*H/h), u likewise."""
        ...


class TeacherError(RelidarError, RuntimeError):
    """A teacher cannot be built or cannot encode its input; the message names the model and the fix."""
