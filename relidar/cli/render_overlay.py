"""``relidar render overlay``: lidar points over a camera image, to PNG (a first check of calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.render.command("overlay")(render_overlay)


def render_overlay(
    input: Path = typer.Argument(
        ..., help="Dataset path: nuScenes root, SemanticKITTI root or sequence, KITTI object folder or frame, rosbag2 folder or .mcap/.db3."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    frame: int = typer.Option(0, "--frame", "-f", help="Frame index (negative counts from the end)."),
    camera: Optional[str] = typer.Option(None, "--camera", "-c", help="Camera name (default: the frame's first camera)."),
    color: str = typer.Option("depth", "--color", help="Colour points by 'depth' (camera z) or 'label' (the dataset's classes)."),
    max_depth: Optional[float] = typer.Option(None, "--max-depth", help="Depth (m) at the far end of the colour map; default the "
                                                                        "95th percentile."),
    radius: Optional[int] = typer.Option(None, "--radius", help="Point square half-size in pixels (default: by image size)."),
    max_width: Optional[int] = typer.Option(None, "--max-width", help="Downscale the PNG to at most this many pixels wide."),
    option: Optional[list[str]] = typer.Option(
        None, "--option", help="Reader option key=value, repeatable (e.g. sequences=[\"08\"], lidar_topic=/points, calibration=rig.yaml)."
    ),
) -> None:
    """Draw a frame's lidar points over one of its camera images, coloured by depth or label, to PNG."""
    from rich.console import Console
    from rich.table import Table

    from relidar.core.viz.overlay import OverlayError, overlay_frame, save_png
    from relidar.training.readers import open_dataset
    from relidar.training.readers.base import parse_options

    console = Console()
    if color not in ("depth", "label"):
        raise OverlayError(f"{color!r} is not a colouring", field="--color", hint="use depth or label")
    reader = open_dataset(input, **parse_options(option or []))
    fr = reader[frame]
    ov = overlay_frame(fr, camera, color, max_depth, radius)
    save_png(ov.image, out, max_width)
    table = Table(title=f"overlay of {input}")
    for col in ("format", "frame", "camera", "points", "in image", "image"):
        table.add_column(col)
    h, w = ov.image.shape[:2]
    table.add_row(reader.name, fr.frame_id, ov.camera, str(ov.num_points), str(ov.num_drawn), f"{w}x{h}")
    console.print(table)
    console.print(f"{len(reader)} frames; cameras of this frame: {', '.join(c.name for c in fr.cameras)}")
    for note in reader.notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(f"wrote {out}", highlight=False, soft_wrap=True)
