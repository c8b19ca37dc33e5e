"""What every relidar artifact on disk shares: checksums, file entries, the format-version check, typed
JSON manifests and atomic writes.

Each artifact format has one module that owns its layout, reader and writer side by side, built on
these helpers: student weights (``relidar.model.weights``), training checkpoints
(``relidar.training.checkpoint``), the teacher feature cache (``relidar.training.feature_cache``),
vocabularies (``relidar.core.vocabulary``) and model bundles (``relidar.core.bundle`` reads,
``relidar.export.bundle`` writes). numpy and pydantic only.

Every failure is raised as the artifact's own error class (a :class:`relidar.core.errors.RelidarError`)
with ``path`` = the file and ``field`` = the entry at fault, so the reader that called a helper
decides what its user is told to do (``hint``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import StrictModel, validate
from relidar.core.errors import RelidarError

M = TypeVar("M", bound=BaseModel)

FORMAT_VERSION_FIELD = "format_version"


class FileEntry(StrictModel):
    """A file as a manifest lists it: its sha256 and size in bytes."""

    sha256: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """One sha256 over named arrays: each one's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_entry(path: str | Path) -> FileEntry:
    p = Path(path)
    return FileEntry(sha256=sha256_file(p), size=p.stat().st_size)


def member_path(root: Path, name: str, error: type[RelidarError], *, manifest: Path, field: str, hint: str,
                folders: bool = True) -> Path:
    """``root / name`` for a file a manifest names, refused unless it stays inside ``root``: relative, no
    ``..`` part, not empty (and, with ``folders=False``, a plain file name). A manifest is data a user
    may have been sent: it must not make relidar read (or check the sha256 of) a file outside its folder."""
    parts = PurePosixPath(name).parts
    windows = PureWindowsPath(name)
    if (not parts or PurePosixPath(name).is_absolute() or windows.drive or windows.root or "\\" in name
            or any(part in (".", "..") for part in name.split("/")) or (not folders and len(parts) != 1)):
        what = "a file name" if not folders else "a path inside the folder"
        raise error(f"{name!r} is not {what}: a manifest names only files beside it", path=manifest, field=field,
                    hint=hint)
    return root / name


def verify_file(path: Path, entry: FileEntry, error: type[RelidarError], *, hint: str) -> None:
    """``path`` exists with ``entry``'s size and sha256, else ``error`` naming the file."""
    if not path.is_file():
        raise error("listed in the manifest but missing", path=path, hint=hint)
    size = path.stat().st_size
    if size != entry.size:
        what = "truncated" if size < entry.size else "larger than written"
        raise error(f"{size} bytes, the manifest says {entry.size} ({what})", path=path, hint=hint)
    if sha256_file(path) != entry.sha256:
        raise error("contents differ from the manifest's sha256 (file altered)", path=path, hint=hint)


def check_format_version(found: Any, expected: int, *, path: Path, error: type[RelidarError], what: str,
                         hint: str, field: str = FORMAT_VERSION_FIELD) -> None:
    """A file of another format version is refused before anything else is read from it."""
    if found != expected:
        raise error(f"{what} format version {found!r}; this relidar reads version {expected}", path=path,
                    field=field, hint=hint)


def read_json(path: Path, error: type[RelidarError], *, what: str, missing_hint: str, hint: str) -> dict[str, Any]:
    """A JSON object from ``path``; ``error`` if the file is missing, not JSON or not an object."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{what} not found", path=path, hint=missing_hint) from exc
    except IsADirectoryError as exc:
        raise error(f"is a directory, not a {what}", path=path, hint=missing_hint) from exc
    except OSError as exc:  # permissions, I/O errors
        raise error(f"{what} cannot be read ({exc.strerror or exc})", path=path, hint=hint) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({exc})", path=path, hint=hint) from exc
    if not isinstance(raw, dict):
        raise error(f"{what}: the top level must be a JSON object, got {type(raw).__name__}", path=path, hint=hint)
    return raw


def read_manifest(path: Path, model: type[M], error: type[RelidarError], *, version: int, what: str,
                  missing_hint: str, hint: str, version_hint: str | None = None, format_name: str | None = None) -> M:
    """Read a JSON manifest: the object, its ``format`` (where ``format_name`` is given) and
    ``format_version`` (checked first, so a file of another kind or version gets that message rather
    than a list of unknown fields), then every field, typed."""
    raw = read_json(path, error, what=what, missing_hint=missing_hint, hint=hint)
    if format_name is not None and raw.get("format") != format_name:
        raise error(f"is {raw.get('format')!r}, expected {format_name!r}: not a {what}", path=path, field="format",
                    hint=missing_hint)
    check_format_version(raw.get(FORMAT_VERSION_FIELD), version, path=path, error=error, what=what,
                         hint=version_hint or hint)
    return validate(model, raw, error=error, path=path, hint=hint, what=what)


def write_json(path: str | Path, content: BaseModel | Mapping[str, Any]) -> Path:
    """Write a model or mapping as indented JSON, atomically."""
    p = Path(path)
    text = content.model_dump_json(indent=2) if isinstance(content, BaseModel) else json.dumps(content, indent=2)
    atomic_write_bytes(p, (text + "\n").encode())
    return p
