"""Timestamped output folders, so runs never overwrite each other."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path


def make_run_dir(base: str | Path, name: str) -> Path:
    """``base/<name>_YYYYmmdd-HHMMSS[_k]``, created; ``_k`` added if two runs start in the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    candidate = base / f"{name}_{stamp}"
    k = 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate = base / f"{name}_{stamp}_{k}"
            k += 1
