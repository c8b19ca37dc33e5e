"""Bird's-eye views of point clouds to PNG: metre axes, a scale bar, the ego vehicle, and a class legend
or a colour bar.

Generic on purpose: ground truth, predictions, teacher labels, scores and intensity all go through
:func:`render_bev`, with labels plus a palette (``relidar.core.viz.palette``), values plus a colour
map, or per-point RGB colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.atomic import atomic_path
from relidar.core.errors import RelidarError
from relidar.core.viz.palette import BEV_BACKGROUND


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


def rasterize_bev(xyz: np.ndarray, colours: np.ndarray, view: BevView = BevView(),
                  background: Sequence[int] = BEV_BACKGROUND) -> np.ndarray:
    """HxWx3 uint8 top-down image; where points overlap the highest one shows, as seen from above.
    Points with a non-finite coordinate are left out."""
    xyz = np.asarray(xyz)
    colours = np.asarray(colours, dtype=np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] < 2:
        raise BevError(f"points must be [N, >=2], got {xyz.shape}")
    if colours.shape != (len(xyz), 3):
        raise BevError(f"colours must be [N,3]={len(xyz)}x3, got {colours.shape}")
    h, w = view.shape
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    finite = np.isfinite(xyz[:, : min(3, xyz.shape[1])]).all(axis=1)  # non-finite points have no place
    xyz, colours = xyz[finite], colours[finite]
    row_f = (view.x_range[1] - xyz[:, 0].astype(np.float64)) / view.resolution
    col_f = (view.y_range[1] - xyz[:, 1].astype(np.float64)) / view.resolution
    inside = (row_f >= 0) & (row_f < h) & (col_f >= 0) & (col_f < w)  # before the cast: no overflow
    row, col = np.zeros(len(xyz), np.int64), np.zeros(len(xyz), np.int64)
    row[inside], col[inside] = row_f[inside].astype(np.int64), col_f[inside].astype(np.int64)
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
    values: np.ndarray | None = None,
    palette: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    ignore_label: str = "unknown / outside the crop box",
    value_label: str = "score",
    value_range: tuple[float, float] = (0.0, 1.0),
    cmap: str = "viridis",
    view: BevView = BevView(),
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Write a PNG of the points from above: metre axes (x forward, up; y left), a scale bar, the ego
    vehicle at the origin (a triangle pointing forward) and a title; then, by what colours the points,

    - ``labels`` [N] with ``palette`` [C,3] and ``class_names``: a legend of the classes present
      (unknown labels, outside ``0..C-1``, grey);
    - ``values`` [N] (scores, intensity): a colour bar from ``value_range`` in ``cmap``;
    - ``colours`` [N,3] uint8: drawn as given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Polygon
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from relidar.core.viz.palette import UNKNOWN_COLOUR, label_colours

    if sum(x is not None for x in (colours, labels, values)) != 1:
        raise BevError("give exactly one of colours=, labels= or values=")
    xyz = np.asarray(xyz)
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
            # Unknown (e.g. outside the student's crop box) must be told apart from a class.
            handles.append(Patch(color=np.asarray(UNKNOWN_COLOUR) / 255.0, label=ignore_label))
    norm = None
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(xyz),):
            raise BevError(f"values must be [N]={len(xyz)}, got {values.shape}")
        norm = Normalize(*value_range)
        clipped = np.clip(np.nan_to_num(values, nan=value_range[0]), *value_range)  # inf and huge values too
        colours = (matplotlib.colormaps[cmap](norm(clipped))[:, :3] * 255).astype(np.uint8)
    image = rasterize_bev(xyz, colours, view)
    h, w = image.shape[:2]
    side = 2.2 if handles else 1.2 if norm is not None else 0.0
    fig = Figure(figsize=(w / dpi + 0.9 + side, h / dpi + 0.9), dpi=dpi, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    # extent (left, right, bottom, top): y left is image left, so the horizontal axis runs from +y to -y.
    ax.imshow(image, extent=(view.y_range[1], view.y_range[0], view.x_range[0], view.x_range[1]),
              interpolation="nearest")
    ax.set_xlabel("y (m, left +)", fontsize=8)
    ax.set_ylabel("x (m, forward +)", fontsize=8)
    ax.tick_params(labelsize=7)
    span = view.y_range[1] - view.y_range[0]
    size = _nice_length(span / 5)
    ego = max(span / 60, 0.8)  # about 1/60 of the view, at least 0.8 m
    ax.add_patch(Polygon([(0.0, 1.5 * ego), (ego * 0.8, -ego), (-ego * 0.8, -ego)], closed=True,
                         facecolor="white", edgecolor="black", linewidth=0.8, zorder=3))
    ax.add_artist(AnchoredSizeBar(ax.transData, size, f"{size:g} m", "lower right", pad=0.4, color="white",
                                  frameon=False, size_vertical=span / 300, fontproperties={"size": 8}))
    if title:
        ax.set_title(title, fontsize=9)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  borderaxespad=0.0)
    if norm is not None:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
        bar.set_label(value_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return out


def _nice_length(x: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``x`` (a scale bar's length)."""
    k = 10 ** np.floor(np.log10(max(x, 1e-9)))
    return float(max(m for m in (1, 2, 5) if m * k <= x) * k)
