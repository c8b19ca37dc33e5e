"""Text encoders (numpy + onnxruntime at run time, no PyTorch) behind the one interface they share.

Every encoder -- CLIP through ONNX Runtime, the simulated one, and the teachers' own text towers
(``relidar.core.teacher.Teacher`` extends this protocol) -- has ``feature_dim`` and
``encode_text(prompts) -> [P, D] float32 unit rows``, so vocabularies are built the same way offline
and in the node (``relidar.core.vocabulary.embed_classes``). Which encoder made a vocabulary is
recorded as a typed spec (``relidar.core.text.spec``).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class TextEncoder(Protocol):
    """Maps prompts into a vision-language model's joint image-text space."""

    @property
    def feature_dim(self) -> int: ...

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32, rows L2-normalised."""
        ...
