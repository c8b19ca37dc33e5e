"""The batched, torch-side interface a teacher offers to run inside the training step (online mode), and the
patch grid of a ViT teacher; the interface every teacher implements is ``relidar.core.teacher.Teacher``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from relidar.core.teacher import Teacher

__all__ = ["BatchTeacher", "PatchGrid"]


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
