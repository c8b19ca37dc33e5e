"""The error the training data raises: data that cannot feed a run."""

from __future__ import annotations

from relidar.core.errors import RelidarError


class DataError(RelidarError, ValueError):
    """Data that cannot feed a run (too few frames, mismatched dims); names the setting to change."""
