"""Shared fixtures. Tests run from any working directory and change no global settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    override = os.environ.get("RELIDAR_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def kitti_frame_dir() -> Path:
    """The one real KITTI frame (scan, image, calibration, boxes); skipped where ../shared is absent."""
    path = _shared_data_dir() / "kitti" / "000000"
    if not (path / "velodyne.bin").is_file():
        pytest.skip(f"real KITTI frame not found at {path} (../shared/data is absent in this checkout)")
    return path


@pytest.fixture(scope="session")
def kitti_scan_path(kitti_frame_dir: Path) -> Path:
    return kitti_frame_dir / "velodyne.bin"
