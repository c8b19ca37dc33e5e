"""``relidar bench node``: the segmenter node end to end over real DDS (latency, drops, memory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from relidar.bench.output import write_bench_json
from relidar.cli.app import Apps
from relidar.cli.common import FORMULATION_HELP


def register(apps: Apps) -> None:
    apps.bench.command("node")(bench_node)


def bench_node(
    bundle: Path = typer.Option(..., "--bundle", help="Model bundle folder (`relidar export bundle`)."),
    scan: Path = typer.Option(..., "--scan", help="Lidar scan published over and over (.bin KITTI or .npy [N,>=4])."),
    rate: float = typer.Option(10.0, "--rate", min=0.1, help="Publishing rate in Hz (a lidar spins at 10-20 Hz)."),
    seconds: float = typer.Option(30.0, "--seconds", min=1.0, help="How long to publish."),
    backend: str = typer.Option("auto", "--backend", help="Node parameter 'backend'."),
    device: str = typer.Option("cpu", "--device", help="Node parameter 'device'."),
    formulation: str = typer.Option("auto", "--formulation", help="Node parameter 'formulation': " + FORMULATION_HELP),
    lanes: int = typer.Option(2, "--lanes", min=1, max=16, help="Node parameter 'lanes': scans labelled at once, each "
                              "by its own worker thread sharing one Segmenter."),
    network_threads: int = typer.Option(0, "--network-threads", min=0, max=256, help="Node parameter "
                                        "'network_threads': ONNX Runtime threads per network call (0: CPUs / lanes)."),
    domain_id: Optional[int] = typer.Option(None, "--domain-id", help="ROS domain for the run (default: one from the pid)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results here (JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (node log, results; new or empty); default "
                                       "runs/bench_node_YYYYmmdd-HHMMSS."),
) -> None:
    """Publish one scan at --rate through real DDS to the node (a child process) and measure
    publish -> labelled-cloud latency, drops and the node's resident memory."""
    from rich.console import Console
    from rich.table import Table

    from relidar.cli.common import print_written
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import run_dir as new_run_dir
    from relidar.core.scan_io import read_scan
    from relidar_ros.bench import NodeBenchConfig, run_node_bench

    console = Console()
    # errors below are RelidarErrors: the relidar group prints each in one line and exits 1
    if not bundle.is_dir():
        raise RelidarError("no such folder", path=bundle, field="--bundle", hint="write one with `relidar export bundle`")
    points = read_scan(scan)
    run_dir = new_run_dir(out, "bench_node")
    cfg = NodeBenchConfig(bundle=bundle, scan=points[:, :4].astype("float32"), rate_hz=rate, seconds=seconds,
                          backend=backend, device=device, formulation=formulation, lanes=lanes,
                          network_threads=network_threads,
                          domain_id=domain_id if domain_id is not None else 1 + os.getpid() % 200,
                          log_path=run_dir / "node.log")

    def tick(elapsed: float, published: int, labelled: int) -> None:
        console.print(f"{elapsed:5.1f} s  published {published}  labelled {labelled}", highlight=False)

    result = run_node_bench(cfg, on_tick=tick)
    result["scan"] = str(scan)
    write_bench_json(result, run_dir / "bench_node.json", json_out)
    table = Table(title=f"segmenter node at {rate:g} Hz for {seconds:g} s")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("published", "labelled", "lost", "dropped", "rejected", "superseded", "latency_ms_p50", "latency_ms_p90",
                "latency_ms_p99", "latency_ms_p50_first_half", "latency_ms_p50_second_half", "output_rate_hz",
                "rss_mb_start", "rss_mb_after_warmup", "rss_mb_end", "rss_growth_mb_after_warmup", "rss_mb_max",
                "points_per_scan", "backend", "lanes", "network_threads"):
        v = result[key]
        table.add_row(key, f"{v:.1f}" if isinstance(v, float) else str(v))
    console.print(table)
    print_written(console, [*sorted(p for p in run_dir.iterdir() if p.is_file()), *([json_out] if json_out else [])])
