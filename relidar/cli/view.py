"""``relidar view INPUT``: labelled clouds in 3D in a web browser (``relidar.viewer``), without ROS."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.root.command("view")(view)


def view(
    input: Path = typer.Argument(..., help="A labelled .ply, a `relidar segment` output folder, or a labelled rosbag2 "
                                 "(`relidar segment`'s OUT/bag, or one recorded from the node)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port of the web viewer."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0: reachable from other machines)."),
    point_size: float = typer.Option(0.1, "--point-size", min=0.001, help="Point size in metres."),
    seconds: Optional[float] = typer.Option(None, "--seconds", min=0.0, help="Stop after this many seconds "
                                            "(default: until Ctrl-C)."),
) -> None:
    """Serve labelled clouds in a browser: class colours and legend, colour by score, click a point for
    its class and score; a slider steps through the scans of a folder or bag."""
    import time

    from rich.console import Console

    from relidar.viewer import load_view_data, serve

    console = Console()
    data = load_view_data(input)
    server = serve(data, host=host, port=port, point_size=point_size)
    console.print(f"{data.source}: {len(data.scans)} scan(s), {len(data.class_names)} classes; "
                  f"open http://{host}:{server.get_port()} (Ctrl-C stops)", highlight=False, soft_wrap=True)
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
