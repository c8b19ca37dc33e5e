"""``relidar render bev`` (a scan from above, coloured by label) and ``relidar render teacher``
(a synthetic camera image with the simulated teacher's zero-shot labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.render.command("bev")(render_bev_command)
    apps.render.command("teacher")(render_teacher_command)


def render_bev_command(
    out: Path = typer.Option(Path("bev.png"), "--out", help="PNG to write."),
    scan: Optional[Path] = typer.Option(None, "--scan", help="A .bin/.npy scan to draw (coloured by intensity); "
                                        "without it a synthetic scan is drawn, coloured by its labels."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="SemanticKITTI .label file for --scan (colours by class)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Synthetic world seed (when no --scan)."),
    frame: int = typer.Option(0, "--frame", min=0, help="Synthetic frame index (when no --scan)."),
    beams: int = typer.Option(32, "--beams", min=1, max=256, help="Synthetic lidar beams (when no --scan)."),
    extent: float = typer.Option(40.0, "--range", min=1.0, help="Half-width of the square view, metres."),
    resolution: float = typer.Option(0.1, "--resolution", min=0.01, help="Metres per pixel."),
    title: str = typer.Option("", "--title", help="Title above the picture (a default describes the source)."),
) -> None:
    """Draw a lidar scan from above to PNG, with a legend of the classes."""
    import numpy as np
    from rich.console import Console

    from relidar.core.scan_io import ScanFormatError, read_label_file, read_scan
    from relidar.core.viz.bev import BevView, render_bev
    from relidar.core.viz.palette import palette_for

    console = Console()
    view = BevView((-extent, extent), (-extent, extent), resolution)
    if scan is not None:
        points = read_scan(scan)
        if not np.isfinite(points[:, :3]).all(axis=1).any():
            raise ScanFormatError(f"no finite points to draw ({len(points)} points)", path=scan,
                                  hint="the scan is empty or all NaN/inf")
        if labels is not None:
            from relidar.training.readers.semantickitti import CLASS_NAMES as KITTI_CLASSES
            from relidar.training.readers.semantickitti import learning_map

            raw = read_label_file(labels, len(points))
            render_bev(out, points[:, :3], labels=learning_map(-1)[raw & 0xFFFF], palette=palette_for(KITTI_CLASSES),
                       class_names=KITTI_CLASSES, view=view, title=title or f"{scan.name}: {labels.name}")
        else:
            inten = points[:, 3]
            top = max(float(np.percentile(inten[np.isfinite(inten)], 99)) if np.isfinite(inten).any() else 1.0, 1e-6)
            render_bev(out, points[:, :3], values=inten, value_range=(0.0, top), value_label="intensity", view=view,
                       title=title or f"{scan.name} (intensity)")
    else:
        from relidar.synthetic.classes import CLASS_NAMES
        from relidar.synthetic.world import SynthConfig, SyntheticWorld

        cfg = SynthConfig(seed=seed, lidar={"beams": beams}, cameras={"names": ["front"], "width": 32, "height": 32})
        sample = SyntheticWorld(cfg).sample(frame)
        render_bev(out, sample.frame.points[:, :3], labels=sample.frame.labels, palette=palette_for(CLASS_NAMES),
                   class_names=CLASS_NAMES, view=view,
                   title=title or f"synthetic scan: seed {seed}, frame {frame}, {beams} beams, ground truth")
    console.print(f"wrote {out}", highlight=False, soft_wrap=True)


def render_teacher_command(
    out: Path = typer.Option(Path("teacher.png"), "--out", help="PNG to write."),
    seed: int = typer.Option(0, "--seed", min=0, help="Synthetic world seed."),
    frame: int = typer.Option(0, "--frame", min=0, help="Frame index."),
    camera: str = typer.Option("front", "--camera", help="Which camera (front, front_left, front_right, back, ...)."),
    width: int = typer.Option(480, "--width", min=16, help="Image width."),
    height: int = typer.Option(270, "--height", min=16, help="Image height."),
) -> None:
    """A synthetic camera image, the simulated teacher's zero-shot labels and the truth, side by side."""
    from rich.console import Console

    from relidar.core.config import validate
    from relidar.synthetic.pictures import teacher_picture
    from relidar.synthetic.teacher import SimulatedTeacher
    from relidar.synthetic.world import SynthConfig, SyntheticWorld

    console = Console()
    cfg = validate(SynthConfig, {"seed": seed, "cameras": {"names": [camera], "width": width, "height": height}},
                   what="synthetic world options")
    sample = SyntheticWorld(cfg).sample(frame)
    teacher = SimulatedTeacher()
    teacher.remember(sample)
    acc = teacher_picture(out, sample.frame.cameras[0].image, sample.camera_truth[0].classes, teacher,
                          title=f"simulated teacher, seed {seed}, frame {frame}, camera {camera}")
    console.print(f"wrote {out} (teacher pixel accuracy {acc:.3f})")
