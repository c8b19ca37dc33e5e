"""Reading single lidar scans from files: KITTI ``.bin`` and numpy ``.npy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ScanFormatError(ValueError):
    """A scan file that cannot be read as points; the message names the file and the problem."""


def read_scan(path: str | Path) -> np.ndarray:
    """[N,4] float32 (x, y, z, intensity); intensity is 0 where the file has none."""
    p = Path(path)
    if not p.is_file():
        raise ScanFormatError(f"{p}: scan file not found")
    suffix = p.suffix.lower()
    if suffix == ".bin":
        raw = np.fromfile(p, dtype=np.float32)
        if raw.size % 4:
            raise ScanFormatError(
                f"{p}: {raw.size * 4} bytes is not a whole number of KITTI points (16 bytes: x, y, z, intensity)"
            )
        pts = raw.reshape(-1, 4)
    elif suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise ScanFormatError(f"{p}: not a plain numpy array file ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise ScanFormatError(f"{p}: expected an [N, >=3] array, got shape {arr.shape}")
        pts = np.zeros((arr.shape[0], 4), dtype=np.float32)
        pts[:, : min(4, arr.shape[1])] = arr[:, :4]
    else:
        raise ScanFormatError(f"{p}: unknown scan format {suffix!r} (supported: .bin, .npy)")
    return np.ascontiguousarray(pts, dtype=np.float32)
