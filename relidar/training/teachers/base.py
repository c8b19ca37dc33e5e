"""The interface every teacher implements (MaskCLIP over open_clip, the synthetic world's simulated one)."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class TextEncoder(Protocol):
    """Maps prompts into the teacher's joint image-text space."""

    @property
    def feature_dim(self) -> int: ...

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32, rows L2-normalised."""
        ...


@runtime_checkable
class Teacher(TextEncoder, Protocol):
    """A dense image encoder whose features live in the same space as its text embeddings."""

    @property
    def name(self) -> str:
        """Identifies model and weights; part of the feature cache's key."""
        ...

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """Dense features of one HxWx3 uint8 RGB image: [h, w, D] float32 on the teacher's patch grid,
        rows L2-normalised. Grid cell (i, j) covers pixels v in [i*H/h, (i+1)*H/h), u likewise."""
        ...


class TeacherError(RuntimeError):
    """A teacher cannot be built or cannot encode its input; the message names the model and the fix."""
