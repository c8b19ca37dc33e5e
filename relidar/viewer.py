"""``relidar view``: labelled clouds in a web browser, in 3D, without ROS.

Opens what ``relidar segment`` writes -- a labelled PLY, its output folder (every scan, a slider to
step through them) or a labelled rosbag2 (also one recorded from the node) -- and serves it with
viser: class colours from the one palette, a legend with each class's point count, colour by class or
by score (with the colour scale), and a click on a point shows its class, score, coordinates and
intensity.

Why viser (tried against rerun, both from PyPI, on this project's numpy 1.26 and a 2-core box):
viser is a 17 MB wheel whose three.js client rendered a 100k-point cloud in headless Chromium with
software WebGL in a few seconds. The newest rerun-sdk that installs with numpy 1.26 (0.23.1) is a
380 MB wheel, needs a pyarrow that only numpy 2 satisfies (pyarrow 17 broke its annotation contexts,
i.e. the class legend), and its WebAssembly viewer had not finished loading after 30 s in the same
headless browser. Rerun shows per-point values on hover; viser's point clouds take no pointer events,
so the clicked point is found here instead, as the point closest to the click ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.viz.palette import BEV_BACKGROUND, UNKNOWN_COLOUR, UNKNOWN_NAME, label_colours, palette_for, score_colours
from relidar.export.labelled import LABELS_YAML, LabelledScan, read_labelled_bag, read_labelled_ply, read_labels_yaml


class ViewerError(RelidarError):
    """Something ``relidar view`` cannot open."""


@dataclass(frozen=True)
class ViewerData:
    """Labelled scans and their classes (names in label order, [C,3] colours)."""

    source: Path
    scans: list[LabelledScan]
    class_names: tuple[str, ...]
    colours: np.ndarray


def load_view_data(path: str | Path) -> ViewerData:
    """A labelled PLY, a ``relidar segment`` output folder, or a labelled rosbag2 (folder or .mcap/.db3)."""
    p = Path(path)
    if not p.exists():
        raise ViewerError("no such file or folder", path=p)
    is_bag = (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix.lower() in (".mcap", ".db3")
    if not is_bag and p.is_dir() and (p / "bag" / "metadata.yaml").is_file() and not list(p.rglob("*.ply")):
        p, is_bag = p / "bag", True
    if is_bag:
        names, colours, scans = read_labelled_bag(p)
    elif p.is_dir():
        files = sorted(p.rglob("*.ply"))
        if not files:
            raise ViewerError("holds no labelled .ply files and no bag", path=p,
                              hint="give a folder written by `relidar segment`, a .ply or a bag")
        scans = [read_labelled_ply(f) for f in files]
        names, colours = _classes_beside(p, scans)
    elif p.suffix.lower() == ".ply":
        scans = [read_labelled_ply(p)]
        names, colours = _classes_beside(p.parent, scans)
    else:
        raise ViewerError(f"cannot show a {p.suffix or 'suffix-less'} file", path=p,
                          hint="give a labelled .ply, a `relidar segment` output folder or a bag")
    if not scans:
        raise ViewerError("holds no labelled clouds", path=p)
    return ViewerData(p, scans, names, colours)


def _classes_beside(folder: Path, scans: Sequence[LabelledScan]) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names from the labels.yaml that `relidar segment` writes; else numbered classes in palette order."""
    for parent in (folder, *folder.parents):
        if (parent / LABELS_YAML).is_file():
            return read_labels_yaml(parent / LABELS_YAML)
    top = max((int(s.labels.max()) for s in scans if len(s.labels)), default=-1)
    names = tuple(f"class {k}" for k in range(top + 1))
    return names, palette_for(names)


def nearest_to_ray(points: np.ndarray, origin: Sequence[float], direction: Sequence[float],
                   max_distance: float = 0.5) -> int | None:
    """Index of the point closest to the ray (among those within ``max_distance`` m of it, the nearest
    to the camera), or None."""
    d = np.asarray(direction, dtype=np.float64)
    d /= max(np.linalg.norm(d), 1e-12)
    rel = np.asarray(points[:, :3], dtype=np.float64) - np.asarray(origin, dtype=np.float64)
    along = rel @ d
    off = np.linalg.norm(rel - along[:, None] * d, axis=1)
    ok = np.isfinite(off) & (along > 0) & (off <= max_distance)
    if not ok.any():
        return None
    idx = np.flatnonzero(ok)
    return int(idx[np.argmin(along[idx] + 10.0 * off[idx])])


def legend_html(names: Sequence[str], colours: np.ndarray, counts: np.ndarray) -> str:
    """Class swatches with point counts (unknown last)."""
    rows = []
    for name, rgb, count in zip([*names, UNKNOWN_NAME], [*np.asarray(colours).tolist(), list(UNKNOWN_COLOUR)], counts):
        r, g, b = (int(c) for c in rgb)
        rows.append(f'<div style="display:flex;align-items:center;gap:6px;font-size:13px">'
                    f'<span style="display:inline-block;width:14px;height:14px;background:rgb({r},{g},{b})"></span>'
                    f"{name} <span style='color:#888'>({int(count)})</span></div>")
    return "".join(rows)


def serve(data: ViewerData, host: str = "127.0.0.1", port: int = 8080, point_size: float = 0.1) -> Any:
    """Start the viser server with ``data`` (it serves from its own threads) and return it; ``.stop()`` ends it."""
    import viser

    server = viser.ViserServer(host=host, port=port, label=f"relidar view: {data.source.name}", verbose=False)
    server.initial_camera.position = (-30.0, 0.0, 25.0)
    server.initial_camera.look_at = (8.0, 0.0, 0.0)
    server.initial_camera.up_direction = (0.0, 0.0, 1.0)
    server.scene.set_up_direction("+z")
    state: dict[str, Any] = {"frame": 0}
    names, colours = data.class_names, data.colours

    # A dark background, as in the BEV pictures: class colours read better on it than on white.
    server.scene.set_background_image(np.full((8, 8, 3), BEV_BACKGROUND, dtype=np.uint8), format="png")
    title = server.gui.add_markdown("")
    frame_slider = server.gui.add_slider("scan", 0, max(len(data.scans) - 1, 1), 1, 0, disabled=len(data.scans) < 2)
    colour_by = server.gui.add_dropdown("colour by", ("class", "score"), initial_value="class")
    legend = server.gui.add_html("")
    picked = server.gui.add_markdown("_click a point to see its class and score_")

    def show() -> None:
        scan = data.scans[state["frame"]]
        finite = np.isfinite(scan.points[:, :3]).all(axis=1)
        xyz = scan.points[finite, :3].astype(np.float32)
        labels = np.asarray(scan.labels)[finite]
        if colour_by.value == "score":
            rgb = score_colours(np.asarray(scan.scores)[finite])
            legend.content = ('<div style="font-size:13px">score 0 '
                              '<span style="display:inline-block;width:120px;height:10px;background:linear-gradient('
                              'to right,#440154,#3b528b,#21918c,#5ec962,#fde725)"></span> 1</div>')
        else:
            rgb = label_colours(labels, colours)
            known = (labels >= 0) & (labels < len(names))
            counts = np.r_[np.bincount(labels[known], minlength=len(names)), (~known).sum()]
            legend.content = legend_html(names, colours, counts)
        server.scene.add_point_cloud("/scan", points=xyz, colors=rgb, point_size=point_size, point_shape="square")
        title.content = f"**{scan.name}**: {len(scan.points)} points"
        state["xyz"], state["rows"] = xyz, np.flatnonzero(finite)

    @frame_slider.on_update
    def _(_event: Any) -> None:
        state["frame"] = int(frame_slider.value)
        show()

    @colour_by.on_update
    def _(_event: Any) -> None:
        show()

    @server.scene.on_click()
    def _(event: Any) -> None:
        k = nearest_to_ray(state["xyz"], event.ray_origin, event.ray_direction)
        if k is None:
            picked.content = "_no point near the click_"
            return
        scan = data.scans[state["frame"]]
        row = int(state["rows"][k])
        label = int(scan.labels[row])
        name = names[label] if 0 <= label < len(names) else UNKNOWN_NAME
        x, y, z, i = (float(v) for v in scan.points[row])
        picked.content = (f"point {row}: **{name}**, score {float(scan.scores[row]):.3f}  \n"
                          f"x {x:.2f} y {y:.2f} z {z:.2f} m, intensity {i:.3f}")

    show()
    return server
