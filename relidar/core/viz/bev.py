"""Bird's-eye views of point clouds, coloured per point, with a title and a class legend, to PNG.

Generic on purpose: ground truth, predictions and teacher labels all go through :func:`render_bev`,
either with per-point RGB colours or with labels plus a palette and class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.atomic import atomic_path
from relidar.core.errors import RelidarError


class BevError(RelidarError, ValueError):
    """Inputs that cannot form a bird's-eye view; the message names the argument."""


@dataclass(frozen=True)
class BevView:
    """The window and pixel size of a view: x forward (image up), y left (image left), metres."""

    x_range: tuple[float, float] = (-40.0, 40.0)
    y_range: tuple[float, float] = (-40.0, 40.0)
    resolution: float = 0.1  # metres per pixel
    point_radius: int = 1  # pixels drawn around each point (0: one pixel)

    @property
    def shape(self) -> tuple[int, int]:
        h = int(np.ceil((self.x_range[1] - self.x_range[0]) / self.resolution))
        w = int(np.ceil((self.y_range[1] - self.y_range[0]) / self.resolution))
        return h, w


def label_colours(labels: np.ndarray, palette: np.ndarray, ignore_colour: Sequence[int] = (90, 90, 90)) -> np.ndarray:
    """[N,3] uint8 colours of class indices; labels outside the palette (ignore) get ``ignore_colour``."""
    palette = np.asarray(palette, dtype=np.uint8)
    labels = np.asarray(labels)
    ok = (labels >= 0) & (labels < len(palette))
    out = np.empty((len(labels), 3), dtype=np.uint8)
    out[:] = np.asarray(ignore_colour, dtype=np.uint8)
    out[ok] = palette[labels[ok]]
    return out


def rasterize_bev(xyz: np.ndarray, colours: np.ndarray, view: BevView = BevView(),
                  background: Sequence[int] = (18, 18, 22)) -> np.ndarray:
    """HxWx3 uint8 top-down image; where points overlap the highest one shows, as seen from above."""
    xyz = np.asarray(xyz)
    colours = np.asarray(colours, dtype=np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] < 2:
        raise BevError(f"points must be [N, >=2], got {xyz.shape}")
    if colours.shape != (len(xyz), 3):
        raise BevError(f"colours must be [N,3]={len(xyz)}x3, got {colours.shape}")
    h, w = view.shape
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    row = ((view.x_range[1] - xyz[:, 0]) / view.resolution).astype(np.int64)
    col = ((view.y_range[1] - xyz[:, 1]) / view.resolution).astype(np.int64)
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    z = xyz[:, 2] if xyz.shape[1] > 2 else np.zeros(len(xyz))
    order = np.argsort(z[inside], kind="stable")  # later writes win: the highest point is drawn last
    r, c, col_rgb = row[inside][order], col[inside][order], colours[inside][order]
    rad = view.point_radius
    for dr in range(-rad, rad + 1):
        for dc in range(-rad, rad + 1):
            rr, cc = np.clip(r + dr, 0, h - 1), np.clip(c + dc, 0, w - 1)
            img[rr, cc] = col_rgb
    return img


def render_bev(
    path: str | Path,
    xyz: np.ndarray,
    *,
    colours: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    ignore_label: str = "ignored / not classified",
    palette: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    view: BevView = BevView(),
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Write a PNG of the points from above with a title and, for labels, a legend of the classes present.

    Give either ``colours`` [N,3] uint8, or ``labels`` [N] with ``palette`` [C,3] and ``class_names``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if (colours is None) == (labels is None):
        raise BevError("give exactly one of colours= or labels=")
    handles = []
    if labels is not None:
        if palette is None:
            raise BevError("labels= needs palette= (one RGB row per class)")
        labels = np.asarray(labels)
        if labels.shape != (len(xyz),):
            raise BevError(f"labels must be [N]={len(xyz)}, got {labels.shape}")
        if class_names and len(class_names) != len(palette):
            raise BevError(f"class_names has {len(class_names)} entries, palette {len(palette)}")
        colours = label_colours(labels, palette)
        present = np.unique(labels[(labels >= 0) & (labels < len(palette))])
        names = class_names or [str(i) for i in range(len(palette))]
        handles = [Patch(color=np.asarray(palette[k]) / 255.0, label=names[k]) for k in present]
        if ((labels < 0) | (labels >= len(palette))).any():
            # Ignored / not classified (e.g. outside the student's crop box) must be told apart from a class.
            handles.append(Patch(color=np.full(3, 90 / 255.0), label=ignore_label))
    image = rasterize_bev(xyz, colours, view)
    h, w = image.shape[:2]
    legend_w = 2.0 if handles else 0.0
    fig = Figure(figsize=(w / dpi + legend_w, h / dpi + 0.5), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, (w / dpi) / (w / dpi + legend_w), (h / dpi) / (h / dpi + 0.5)))
    ax.imshow(image, extent=(view.y_range[1], view.y_range[0], view.x_range[0], view.x_range[1]), interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return out
