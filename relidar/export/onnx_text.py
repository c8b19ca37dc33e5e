"""open_clip text tower -> ONNX: token ids [P, 77] int64 -> unit text embeddings [P, D] float32.

With the runtime tokenizer (``relidar.core.text.tokenizer``) and the BPE vocabulary file beside it, a
bundle encodes new prompts with ONNX Runtime alone. Works for any open_clip ``CLIP`` /
``CustomTextCLIP`` (anything with ``encode_text(tokens, normalize=True)`` and ``context_length``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from relidar.export.onnx_student import DEFAULT_OPSET

TEXT_INPUT = "tokens"
TEXT_OUTPUT = "embeddings"


class TextTower(nn.Module):
    """The text half of an open_clip model, normalised output."""

    def __init__(self, clip_model: Any) -> None:
        super().__init__()
        self.model = clip_model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens, normalize=True)


def context_length(clip_model: Any) -> int:
    return int(clip_model.context_length)


def embed_dim(clip_model: Any) -> int:
    """The joint embedding size D, read from a forward pass on one empty prompt."""
    with torch.no_grad():
        return int(clip_model.encode_text(torch.zeros(1, context_length(clip_model), dtype=torch.long)).shape[-1])


def export_text_onnx(clip_model: Any, path: str | Path, example_tokens: np.ndarray, opset: int = DEFAULT_OPSET) -> Path:
    """Write the text tower to ``path``; the prompt count is a symbolic dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tower = TextTower(clip_model.eval()).eval()
    tokens = torch.from_numpy(np.ascontiguousarray(example_tokens, dtype=np.int64))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tower, (tokens,), str(path), input_names=[TEXT_INPUT], output_names=[TEXT_OUTPUT],
                          dynamic_axes={TEXT_INPUT: {0: "prompts"}, TEXT_OUTPUT: {0: "prompts"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    return path


def run_torch_text(clip_model: Any, tokens: np.ndarray) -> np.ndarray:
    """The PyTorch reference: unit embeddings of token ids."""
    with torch.no_grad():
        return TextTower(clip_model.eval())(torch.from_numpy(tokens)).float().numpy()
