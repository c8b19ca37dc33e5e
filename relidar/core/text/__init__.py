"""Run-time text encoders (numpy + onnxruntime, no PyTorch) behind one interface.

Every encoder has ``feature_dim`` and ``encode_text(prompts) -> [P, D] float32 unit rows`` (the same
contract as ``relidar.training.teachers.base.TextEncoder``), so vocabularies are built the same way
offline and in the node (``relidar.core.vocabulary.embed_classes``).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class RuntimeTextEncoder(Protocol):
    @property
    def feature_dim(self) -> int: ...

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray: ...


TEXT_ENCODER_KINDS = ("clip", "simulated")
