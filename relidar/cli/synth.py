"""``relidar synth``: generate a synthetic driving sequence as a rosbag2 or a SemanticKITTI folder."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


class Format(str, Enum):
    bag = "bag"
    semantickitti = "semantickitti"


class Storage(str, Enum):
    mcap = "mcap"
    sqlite3 = "sqlite3"


def register(apps: Apps) -> None:
    apps.root.command("synth")(synth)


def synth(
    frames: int = typer.Option(100, "--frames", min=1, help="Number of lidar sweeps (10 Hz) to generate."),
    out: Path = typer.Option(..., "--out", help="Folder to write: the rosbag2 itself (--format bag; must not exist yet) "
                             "or the SemanticKITTI root (sequences/00/...; new or empty). synth_config.yaml and "
                             "synth_summary.json go inside."),
    format: Format = typer.Option(Format.bag, "--format", help="bag: rosbag2 (no labels); semantickitti: labelled folders."),
    seed: int = typer.Option(0, "--seed", min=0, help="World seed: same seed, same street and sensor data."),
    beams: int = typer.Option(32, "--beams", min=1, max=256, help="Lidar beams (32 ~ HDL-32E, 64 ~ HDL-64E)."),
    cameras: str = typer.Option("front,front_left,front_right", "--cameras",
                                help="Comma-separated cameras, or 'surround' for all six."),
    storage: Storage = typer.Option(Storage.mcap, "--storage", help="rosbag2 storage plugin (bag format only)."),
    width: int = typer.Option(480, "--width", min=16, help="Camera image width in pixels."),
    height: int = typer.Option(270, "--height", min=16, help="Camera image height in pixels."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML SynthConfig; the options above override it."),
) -> None:
    """Drive an ego vehicle down a procedural street and write its lidar, cameras and labels."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from relidar.core.config import load_config, save_config
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import OutputError, new_output_dir
    from relidar.synthetic.cameras import MOUNTS
    from relidar.synthetic.world import SynthConfig, SyntheticWorld
    from relidar.synthetic.writers import BagWriter, SemanticKittiWriter

    console = Console()
    names = list(MOUNTS) if cameras.strip() == "surround" else [c.strip() for c in cameras.split(",") if c.strip()]
    if format is Format.semantickitti and "front" not in names:
        raise RelidarError("--format semantickitti needs the 'front' camera (it becomes image_2)", field="--cameras",
                           hint="add front to --cameras")
    overrides = [f"seed={seed}", f"lidar.beams={beams}", f"cameras.names=[{','.join(names)}]",
                 f"cameras.width={width}", f"cameras.height={height}"]
    cfg = load_config(config, SynthConfig, overrides)
    if format is Format.bag:
        if out.exists():
            raise OutputError("already exists; a rosbag2 is written as a new folder", path=out, field="--out",
                              hint="choose a new --out or remove the old bag")
        writer = BagWriter(out, storage.value)
    else:
        writer = SemanticKittiWriter(new_output_dir(out))
    world = SyntheticWorld(cfg)
    num_points = 0
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    with writer, progress:
        task = progress.add_task("frames", total=frames, rate="")
        for i, sample in enumerate(world.samples(frames)):
            writer.write(sample)
            num_points += sample.frame.num_points
            progress.update(task, advance=1, rate=f"{(i + 1) / (time.perf_counter() - start):.2f} frames/s")
    elapsed = time.perf_counter() - start
    summary = {
        "format": format.value, "frames": frames, "seed": seed, "beams": beams, "cameras": names,
        "image_size": [width, height], "points_per_frame": num_points / frames,
        "seconds": elapsed, "frames_per_second": frames / elapsed,
        "output": str(out),
    }
    save_config(cfg, out / "synth_config.yaml")
    (out / "synth_summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title="synthetic sequence")
    table.add_column("what")
    table.add_column("value")
    for k, v in summary.items():
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    console.print(table)
    kind = "rosbag2" if format is Format.bag else "SemanticKITTI log (sequences/00)"
    console.print(f"wrote {out} ({kind}; `relidar prepare {out}` and `relidar segment {out}` read it)")
