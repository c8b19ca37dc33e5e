"""CLIP's text tower at run time: the runtime BPE tokenizer + the exported ONNX graph (ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.rows import unit_rows
from relidar.core.text.tokenizer import ClipTokenizer

TEXT_INPUT = "tokens"


class ClipOnnxTextEncoder:
    """Implements the runtime text-encoder interface with ``text_encoder.onnx`` and the BPE vocabulary."""

    kind = "clip"

    def __init__(self, onnx_path: str | Path, bpe_path: str | Path, context_length: int, feature_dim: int,
                 batch_size: int = 64, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        self.tokenizer = ClipTokenizer(bpe_path, context_length)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=list(providers))
        self._feature_dim = int(feature_dim)
        self._batch_size = int(batch_size)

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32 unit rows."""
        if not prompts:
            return np.zeros((0, self._feature_dim), np.float32)
        out = []
        for i in range(0, len(prompts), self._batch_size):
            tokens = self.tokenizer(list(prompts[i : i + self._batch_size]))
            out.append(self._session.run(None, {TEXT_INPUT: tokens})[0])
        emb = np.concatenate(out, axis=0).astype(np.float32)
        return unit_rows(emb)
