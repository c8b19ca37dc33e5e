"""One small random-weight bundle per test session, shared by the export/bundle/segmenter/bench tests
(exporting the student takes several seconds on the 2-core box)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path


@functools.lru_cache(maxsize=None)
def _shared_bundle(base: Path) -> Path:
    from relidar.export.bundle import write_test_bundle

    return write_test_bundle(base / "shared_test_bundle", profile="fast", feature_dim=32)


def shared_bundle(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """The session's read-only test bundle (do not modify it; copy it with :func:`bundle_copy`)."""
    return _shared_bundle(tmp_path_factory.getbasetemp())


def bundle_copy(tmp_path_factory, dest: Path) -> Path:  # noqa: ANN001
    """A private copy of the shared bundle that a test may corrupt."""
    shutil.copytree(shared_bundle(tmp_path_factory), dest)
    return dest
