"""Lidar points drawn over a camera image, coloured by depth or by label: the first check of a calibration.

Points are splatted as small squares with a z-buffer, so a near point is never hidden by a far one
behind it. A legend (depth colour bar, or class swatches) is drawn in the top-left corner.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.atomic import atomic_write_bytes
from relidar.core.errors import RelidarError
from relidar.core.frame import Camera, Frame


class OverlayError(RelidarError, ValueError):
    """An overlay that cannot be drawn (unknown camera, labels asked of unlabelled data...)."""


@dataclass(frozen=True)
class Overlay:
    image: np.ndarray  # HxWx3 uint8
    camera: str
    num_points: int  # points of the sweep
    num_drawn: int  # of them, in front of the camera and inside the image


def depth_colors(depth: np.ndarray, max_depth: float, cmap: str = "turbo_r") -> np.ndarray:
    """[N,3] uint8 colours of depths: with the default map, near points red, far ones (>= max_depth) blue."""
    from matplotlib import colormaps

    t = np.clip(np.asarray(depth, dtype=np.float64) / max(max_depth, 1e-6), 0.0, 1.0)
    return (colormaps[cmap](t)[:, :3] * 255).astype(np.uint8)


def splat(image: np.ndarray, uv: np.ndarray, depth: np.ndarray, colors: np.ndarray, radius: int = 1) -> np.ndarray:
    """A copy of ``image`` with each point a (2r+1)^2 square of its colour; nearer points win."""
    out = image.copy()
    h, w = out.shape[:2]
    if len(uv) == 0:
        return out
    u0 = np.floor(uv[:, 0]).astype(np.int64)
    v0 = np.floor(uv[:, 1]).astype(np.int64)
    offsets = np.arange(-radius, radius + 1)
    du, dv = np.meshgrid(offsets, offsets)
    u = (u0[:, None] + du.ravel()[None]).ravel()
    v = (v0[:, None] + dv.ravel()[None]).ravel()
    src = np.repeat(np.arange(len(uv)), du.size)
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix, src = v[ok] * w + u[ok], src[ok]
    order = np.lexsort((depth[src], pix))  # by pixel, then nearest first
    pix, src = pix[order], src[order]
    first = np.r_[True, pix[1:] != pix[:-1]]
    out.reshape(-1, 3)[pix[first]] = colors[src[first]]
    return out


def _legend(image: np.ndarray, entries: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    from PIL import Image, ImageDraw

    if not entries:
        return image
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    line = 12
    width = 12 + 7 * max(len(name) for name, _ in entries)
    draw.rectangle([2, 2, 6 + width, 6 + line * len(entries)], fill=(0, 0, 0))
    for k, (name, rgb) in enumerate(entries):
        y = 4 + k * line
        draw.rectangle([5, y + 1, 13, y + 9], fill=tuple(int(c) for c in rgb))
        draw.text((17, y), name, fill=(255, 255, 255))
    return np.asarray(im)


def find_camera(frame: Frame, name: str | None) -> Camera:
    if not frame.cameras:
        raise OverlayError(f"frame {frame.frame_id} has no camera image to draw on")
    if name is None:
        return frame.cameras[0]
    for cam in frame.cameras:
        if cam.name == name:
            return cam
    raise OverlayError(
        f"frame {frame.frame_id} has no camera {name!r} (cameras: {', '.join(c.name for c in frame.cameras)})"
    )


def auto_radius(camera: Camera) -> int:
    """1 (3x3 px squares) on KITTI-sized images, larger on large images so the points stay visible."""
    return max(1, int(round(min(camera.height, camera.width) / 500)))


def overlay_depth(camera: Camera, points: np.ndarray, max_depth: float | None = None, radius: int | None = None) -> Overlay:
    """Points coloured by their depth in the camera (legend: a colour bar from 0 to ``max_depth`` m)."""
    proj = camera.project(points[:, :3])
    m = proj.mask
    depth = proj.depth[m]
    top = float(max_depth) if max_depth is not None else float(np.percentile(depth, 95)) if len(depth) else 1.0
    colors = depth_colors(depth, top)
    image = splat(camera.image, proj.uv[m], depth, colors, auto_radius(camera) if radius is None else radius)
    stops = np.linspace(0, top, 5)
    legend = [(f"{d:.0f} m", c) for d, c in zip(stops, depth_colors(stops, top))]
    return Overlay(_legend(image, legend), camera.name, len(points), int(m.sum()))


def overlay_labels(
    camera: Camera,
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = -1,
    palette: np.ndarray | None = None,
    radius: int | None = None,
) -> Overlay:
    """Points coloured by class in the one palette (relidar.core.viz.palette; unknown points grey); the
    legend lists the classes present in the image."""
    from relidar.core.viz.palette import UNKNOWN_COLOUR, UNKNOWN_NAME, palette_for

    if palette is None:
        palette = palette_for(class_names)
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.shape != (len(class_names), 3):
        raise OverlayError(f"palette must be [{len(class_names)}, 3] RGB, got {palette.shape}")
    proj = camera.project(points[:, :3])
    m = proj.mask
    lab = np.asarray(labels)[m]
    valid = (lab >= 0) & (lab < len(class_names)) & (lab != ignore_index)
    colors = np.empty((len(lab), 3), dtype=np.uint8)
    colors[:] = UNKNOWN_COLOUR
    colors[valid] = palette[lab[valid]]
    image = splat(camera.image, proj.uv[m], proj.depth[m], colors, auto_radius(camera) if radius is None else radius)
    present = np.unique(lab[valid])
    legend = [(class_names[c], palette[c]) for c in present]
    if (~valid).any():
        legend.append((UNKNOWN_NAME, np.array(UNKNOWN_COLOUR, np.uint8)))
    return Overlay(_legend(image, legend), camera.name, len(points), int(m.sum()))


def overlay_frame(frame: Frame, camera: str | None = None, color: str = "depth", max_depth: float | None = None,
                  radius: int | None = None) -> Overlay:
    """The overlay of one of a frame's cameras, by ``color`` = ``depth`` or ``label``."""
    cam = find_camera(frame, camera)
    if color == "depth":
        return overlay_depth(cam, frame.points, max_depth, radius)
    if color == "label":
        if frame.labels is None:
            raise OverlayError(f"frame {frame.frame_id} has no per-point labels; colour by depth instead")
        return overlay_labels(cam, frame.points, frame.labels, frame.class_names, frame.ignore_index, radius=radius)
    raise OverlayError(f"unknown colouring {color!r}; use depth or label")


def save_png(image: np.ndarray, path: str | Path, max_width: int | None = None) -> Path:
    """Write ``image`` as PNG (atomically), optionally downscaled to ``max_width`` pixels wide."""
    from PIL import Image

    im = Image.fromarray(image)
    if max_width is not None and im.width > max_width:
        im = im.resize((max_width, round(im.height * max_width / im.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
