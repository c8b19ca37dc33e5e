"""Where commands write: the one ``--out`` rule, as users of ROS and PyTorch tools expect it.

- ``--out PATH`` is exactly what gets written: the file (a PNG, an ONNX file, a vocabulary JSON) or
  the folder (a segment output, a rosbag2, a SemanticKITTI log, a feature cache, a bundle, a run),
  never a parent of something named by the tool.
- A command that writes a folder creates it and refuses an existing non-empty one (see
  :func:`new_output_dir`), except where it continues or replaces its own kind of folder: ``prepare``
  resumes a cache, ``export bundle`` replaces a bundle, ``distill --resume`` continues a run.
- Training-like runs (``distill``, ``evaluate``, ``compare``, ``demo``, ``bench student``, ``bench
  node``) may leave ``--out`` out: they then write a new timestamped folder under ``runs/``
  (``runs/<command>_<YYYYmmdd-HHMMSS>``, :func:`run_dir`), so runs never overwrite each other.
- Every command prints the exact path of everything it wrote.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from relidar.core.errors import RelidarError

DEFAULT_RUNS = Path("runs")


class OutputError(RelidarError):
    """An ``--out`` that cannot be written as asked (an existing non-empty folder, a file in the way)."""


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


def new_output_dir(path: str | Path) -> Path:
    """``path`` created as a folder (with its parents); an existing empty folder is fine, anything else
    there is refused so that outputs of two runs never mix."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError("exists and is not a folder", path=p, field="--out",
                          hint="this command writes a folder; choose a new --out")
    if p.is_dir() and any(p.iterdir()):
        raise OutputError("exists and is not empty", path=p, field="--out",
                          hint="choose a new --out or remove the folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, read-only or full
        raise OutputError(f"cannot be created ({why_unwritable(p, exc)})", path=p, field="--out",
                          hint="its parent must be a writable folder") from exc
    return p


def why_unwritable(path: Path, exc: OSError) -> str:
    """What stopped a write under ``path``: the ancestor that is a file (mkdir's own words, "File exists"
    or "Not a directory", do not say which), else the system's reason."""
    blocking = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
    return f"{blocking} is a file, not a folder" if blocking is not None else (exc.strerror or str(exc))


def run_dir(out: str | Path | None, name: str) -> Path:
    """A training-like run's folder: exactly ``out`` (new or empty) or, without one, ``runs/<name>_<stamp>``."""
    return new_output_dir(out) if out is not None else make_run_dir(DEFAULT_RUNS, name)
