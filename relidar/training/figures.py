"""The figures of training's reports (``relidar evaluate``'s and ``relidar compare``'s): one way to make a
matplotlib figure off-screen and one way to write it as a PNG.

matplotlib is imported when a figure is made, not with the module: the training layer imports reports
on paths that draw nothing, and the Agg backend (no display) is selected only if no backend was chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relidar.core.atomic import atomic_path


def new_figure(width: float, height: float) -> Any:
    """An off-screen matplotlib ``Figure`` of ``width`` x ``height`` inches at 100 dpi."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG on white, cropped to its content (atomically); returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white", bbox_inches="tight")
    return path
