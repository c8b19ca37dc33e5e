"""Row-wise helpers on numpy feature matrices (one home for them: the core, training and the node share it)."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` [N, D] with each row divided by its L2 norm (rows of norm below 1e-12 by 1e-12), **in place**;
    returns ``x``. Pass a copy (``np.array(x, dtype=...)``) to keep the input."""
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x
