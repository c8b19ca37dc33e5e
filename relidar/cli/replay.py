"""``relidar replay``: publish a rosbag2 on ROS 2 with its recorded timing (for the node, RViz, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.root.command("replay")(replay)


def replay(
    bag: Path = typer.Argument(..., help="rosbag2 folder (sqlite3 or MCAP storage)."),
    rate: float = typer.Option(1.0, "--rate", "-r", help="Playback speed as a multiple of the recorded pace."),
    loop: bool = typer.Option(False, "--loop", "-l", help="Start over at the end, until Ctrl-C."),
    topics: Optional[list[str]] = typer.Option(None, "--topics", "-t", help="Only these topics (repeatable); default all."),
    delay: float = typer.Option(0.5, "--delay", help="Seconds between creating the publishers and the first message (discovery)."),
    wait_for_subscribers: float = typer.Option(0.0, "--wait-for-subscribers", help="Wait up to this many seconds for every topic "
                                                                                   "to have a subscriber."),
    domain_id: Optional[int] = typer.Option(None, "--domain-id", help="ROS domain id (default: ROS_DOMAIN_ID or 0)."),
    clock: bool = typer.Option(False, "--clock", help="Publish the bag time on /clock, so nodes with use_sim_time run on it."),
    clock_hz: float = typer.Option(40.0, "--clock-hz", min=0.1, help="How often /clock is published (with --clock)."),
    start_paused: bool = typer.Option(False, "--start-paused", help="Start paused; resume with "
                                                                    "`ros2 param set /relidar_replay paused false`."),
) -> None:
    """Publish a rosbag2 on ROS 2 with its recorded timing (serialized, never deserialised).

    /tf_static and topics recorded transient-local are published transient-local. Uses the shipped
    Fast DDS profile (large shared-memory segment) unless FASTDDS_DEFAULT_PROFILES_FILE is set.
    The replay node (/relidar_replay) has a `paused` parameter: set it to pause or resume.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from relidar_ros.environment import use_default_fastdds_profile
    from relidar_ros.replay import NODE_NAME, bag_topics, replay_bag

    console = Console()
    use_default_fastdds_profile()
    listing = bag_topics(bag)  # a ReplayError is a RelidarError: the relidar group prints it in one line
    table = Table(title=f"{bag}")
    for col in ("topic", "type", "messages", "latched"):
        table.add_column(col)
    for t in listing:
        table.add_row(t.name, t.msgtype, str(t.count), "yes" if t.latched else "")
    console.print(table)
    if start_paused:
        console.print(f"paused: resume with `ros2 param set /{NODE_NAME} paused false`")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("replaying", total=None)

        def on_progress(done: int, total: int, topic: str) -> None:
            progress.update(task, completed=done, total=total, description=f"replaying {topic}")

        try:
            stats = replay_bag(bag, rate=rate, loop=loop, topics=topics, delay_s=delay,
                               wait_for_subscribers_s=wait_for_subscribers, on_progress=on_progress,
                               domain_id=domain_id, clock_hz=clock_hz if clock else 0.0, start_paused=start_paused)
        except KeyboardInterrupt:
            console.print("stopped")
            return
    for topic, why in stats.skipped_topics.items():
        console.print(f"[yellow]skipped {topic}: {why}[/yellow]")
    console.print(f"published {stats.published} messages in {stats.loops} pass(es): "
                  + ", ".join(f"{k} {v}" for k, v in stats.per_topic.items())
                  + (f"; /clock {stats.clock_messages}" if clock else ""))
