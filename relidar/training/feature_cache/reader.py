"""Read-only access to a prepared cache (checksums verified once per process, see the package docstring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from relidar.training.feature_cache.basis import PcaBasis, read_projection
from relidar.training.feature_cache.format import MANIFEST_NAME, PROJECTION_NAME, REPORTS_DIR, CacheError, CacheStorage, load_manifest
from relidar.training.feature_cache.frames import CachedFrame, StoredFeatures, read_cached_frame


class CacheReader:
    """Read-only access to a prepared cache: ``len``, ``[i] -> CachedFrame`` over the frames present.

    Frames the manifest lists but whose file is absent (failed or not yet computed) are left out and
    listed in ``missing_frame_ids``; a present but corrupt file raises CacheError when read.
    ``verify``: "once" hashes a file on its first read in this process (see the module docstring),
    "always" on every read.
    """

    def __init__(self, path: str | Path, verify: Literal["once", "always"] = "once") -> None:
        self.root = Path(path)
        self.manifest = load_manifest(self.root)
        present = [(fid, f) for fid, f in zip(self.manifest.frame_ids, self.manifest.frame_files) if (self.root / f).is_file()]
        self._frame_ids = [fid for fid, _ in present]
        self._files = [self.root / f for _, f in present]
        have = set(self._frame_ids)
        self.missing_frame_ids = [fid for fid in self.manifest.frame_ids if fid not in have]
        self._verified: dict[str, Any] | None = {} if verify == "once" else None
        self.projection: PcaBasis | None = None
        if self.manifest.settings.storage.projection_dim is not None:
            self.projection = read_projection(self.root / PROJECTION_NAME)

    @property
    def frame_ids(self) -> list[str]:
        return list(self._frame_ids)

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def storage(self) -> CacheStorage:
        return self.manifest.settings.storage

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.class_names)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> CachedFrame:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"cache frame {index} out of range: {self.root} has {n} prepared frames")
        path = self._files[index]
        cached, meta = read_cached_frame(path, self._verified)
        if meta["teacher"] != self.manifest.teacher or cached.frame_id != self._frame_ids[index]:
            raise CacheError(f"holds frame {cached.frame_id!r} by teacher {meta['teacher']!r}, but {MANIFEST_NAME} "
                             f"expects {self._frame_ids[index]!r} by {self.manifest.teacher!r}", path=path,
                             hint="re-run `relidar prepare` into this folder")
        expected = self.projection.sha256 if self.projection is not None else None
        if meta.get("projection_sha256") != expected:
            raise CacheError(f"was encoded with another projection than {PROJECTION_NAME}", path=path,
                             hint="re-run `relidar prepare` into this folder")
        dim = cached.features.dim if isinstance(cached.features, StoredFeatures) else -1
        if dim != self.manifest.feature_dim:
            raise CacheError(f"{dim}-d, the manifest says {self.manifest.feature_dim}", path=path,
                             field="features", hint="re-run `relidar prepare` into this folder")
        return cached

    @property
    def feature_space(self) -> str:
        """What its rows are comparable with: the teacher, and the projection when there is one."""
        if self.projection is None:
            return f"features of {self.manifest.teacher}"
        return f"features of {self.manifest.teacher} through PCA basis {self.projection.sha256[:12]}"

    def project_vocabulary(self, vocabulary: Any) -> Any:
        """``vocabulary`` in this cache's feature space: through its projection when it has one."""
        if self.projection is None:
            return vocabulary
        return self.projection.project_vocabulary(vocabulary)

    def failures(self) -> list[dict[str, str]]:
        """Failed frames with reasons, from every rank's last report."""
        out: list[dict[str, str]] = []
        for report in sorted((self.root / REPORTS_DIR).glob("rank-*.json")):
            out.extend(json.loads(report.read_text()).get("failed", []))
        return out
