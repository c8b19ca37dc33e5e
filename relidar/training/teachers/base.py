"""The interface every teacher implements (MaskCLIP over open_clip, the synthetic world's simulated one),
and the batched, torch-side interface a teacher offers to run inside the training step (online mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.text import TextEncoder
from relidar.core.text.spec import TextEncoderSpec

__all__ = ["BatchTeacher", "PatchGrid", "Teacher", "TeacherError", "TextEncoder"]


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


@dataclass(frozen=True)
class PatchGrid:
    """The patch grid a ViT teacher puts over an image: the shorter side is resized to ``short_side``
    pixels and the longer one to the nearest multiple of the patch; one cell per patch."""

    short_side: int
    patch: tuple[int, int]

    def shape(self, height: int, width: int) -> tuple[int, int]:
        """Grid (h, w) for an image of ``height`` x ``width``."""
        scale = self.short_side / min(height, width)
        ph, pw = self.patch
        return max(1, round(height * scale / ph)), max(1, round(width * scale / pw))


@runtime_checkable
class BatchTeacher(Teacher, Protocol):
    """A teacher that runs inside the training step (online mode): several images per call, on its torch device.

    Its grids are those of ``encode_image`` (same preprocessing and network), so a student trained
    online sees the features a cache of this teacher would hold.
    """

    @property
    def patch_grid(self) -> PatchGrid:
        """The grid its features come on (known without running it: batch preparation plans with it)."""
        ...

    @property
    def device(self) -> Any:
        """The torch device it runs on."""
        ...

    def encode_images(self, images: Sequence[Any]) -> list[Any]:
        """Dense features of HxWx3 uint8 RGB images (torch tensors, any device): [h, w, D] float32 torch
        tensors on :attr:`device`, rows unit-norm, images of one size run as one batch."""
        ...
