"""Row codecs: how feature rows are stored (float32, float16, or int8 with a float16 scale per row)."""

from __future__ import annotations

import numpy as np


def encode_rows(rows: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows [K, D] as stored: values in ``dtype`` and, for int8, one float16 scale per row
    (``max |row| / 127``, so each row uses the full int8 range)."""
    x = np.asarray(rows, dtype=np.float32)
    if dtype == "int8":
        peak = np.abs(x).max(axis=1) if x.size else np.zeros(len(x), np.float32)
        scales = (np.maximum(peak, 1e-12) / 127.0).astype(np.float16)
        # Divide by the float16 scale that is stored, so the rounding error is the only error.
        q = np.clip(np.rint(x / scales.astype(np.float32)[:, None]), -127, 127).astype(np.int8)
        return q, scales
    return x.astype(dtype), None


def decode_rows(values: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """float32 rows from :func:`encode_rows`' output."""
    x = values.astype(np.float32)
    if scales is not None:
        x *= scales.astype(np.float32)[:, None]
    return x
