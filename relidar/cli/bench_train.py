"""``relidar bench train``: scans per second of every stage of a distillation step, and which one limits it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.bench.output import write_bench_json
from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.bench.command("train")(bench_train)


def _ints(text: str, option: str) -> tuple[int, ...]:
    from relidar.core.errors import RelidarError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise RelidarError(f"{text!r} is not a comma-separated list of integers", field=option) from exc
    if not values or min(values) < 0:
        raise RelidarError(f"{text!r}: give one or more non-negative integers, e.g. 0,2", field=option)
    return values


def bench_train(
    dataset: Path = typer.Option(..., "--dataset", help="A dataset `relidar prepare` reads; its first frame is the input "
                                                        "(e.g. ../shared/data/kitti/000000)."),
    copies: int = typer.Option(8, "--copies", min=1, help="Frames of the benchmark dataset: copies of that frame."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Scans per training step."),
    steps: int = typer.Option(6, "--steps", min=2, help="Timed steps per measurement."),
    workers: str = typer.Option("0,2", "--workers", help="DataLoader worker counts to compare (0: on the training thread)."),
    device: str = typer.Option("cpu,cuda", "--device", help="Devices to measure the step on; cuda is skipped (and said so) "
                                                            "where there is none."),
    profile: str = typer.Option("fast", "--profile", help="Student profile."),
    voxel_size: float = typer.Option(0.1, "--voxel-size", min=0.01, help="Voxel edge in metres."),
    pairs_per_scan: int = typer.Option(4096, "--pairs", min=2, help="Point-pixel pairs drawn per scan."),
    model: str = typer.Option("ViT-B-16", "--model", help="open_clip model of the MaskCLIP teacher."),
    pretrained: str = typer.Option("none", "--pretrained", help="Its weights ('none': random, the same cost)."),
    image_size: int = typer.Option(448, "--image-size", help="Shorter image side fed to the ViT."),
    projection_dim: int = typer.Option(64, "--projection-dim", min=2, help="PCA dims of the most compact cache mode measured."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads (default: torch's choice)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Reader option key=value (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results here (JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (results; new or empty); default "
                                       "runs/bench_train_YYYYmmdd-HHMMSS."),
) -> None:
    """Scans/s of data loading (cache read, voxelize, kernel maps; serially and in DataLoader workers with
    pinned memory), forward+backward and the online teacher, on the CPU and on CUDA where available;
    the real training loop's wait for data; the bottleneck."""
    from rich.console import Console
    from rich.table import Table

    from relidar.bench.train import TrainBenchConfig, run_train_bench
    from relidar.core.config import validate
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import run_dir as new_run_dir
    from relidar.model.network import StudentConfig
    from relidar.training.feature_cache import CacheStorage
    from relidar.training.readers.base import parse_options
    from relidar.training.teachers.online import OnlineTeacherConfig

    console = Console()
    devices = tuple(d.strip() for d in device.split(",") if d.strip())
    if not devices or any(d not in ("cpu", "cuda") for d in devices):
        raise RelidarError(f"{device!r}: choose from cpu, cuda (comma-separated)", field="--device")
    cfg = TrainBenchConfig(
        dataset=dataset, options=parse_options(option or []), copies=copies, batch_size=batch_size, steps=steps,
        workers=_ints(workers, "--workers"), devices=devices,
        student=validate(StudentConfig, {"profile": profile, "voxel_size": voxel_size}, error=RelidarError,
                         what="student options"),
        teacher=OnlineTeacherConfig(model=model, pretrained=pretrained, image_size=image_size),
        modes=(CacheStorage(), CacheStorage(layout="grid"),
               CacheStorage(layout="grid", dtype="int8", projection_dim=projection_dim)),
        pairs_per_scan=pairs_per_scan)
    with console.status("bench train") as status:
        result = run_train_bench(cfg, threads, on_phase=lambda p: status.update(f"bench train: {p}"))
    run_dir = new_run_dir(out, "bench_train")
    write_bench_json(result, run_dir / "bench_train.json", json_out)

    table = Table(title=f"bench train: {result['input']['points']} points x {batch_size} scans per step")
    table.add_column("stage")
    table.add_column("scans/s", justify="right")
    table.add_column("detail")
    for mode, entry in result["cache"].items():
        table.add_row(f"cache read ({mode})", f"{entry['read_verify_once']['scans_per_s']:.1f}",
                      f"{entry['bytes_per_frame'] / 1e6:.2f} MB/frame; verify every read: "
                      f"{entry['read_verify_always']['scans_per_s']:.1f}/s")
    prep = result["batch_preparation"]
    table.add_row("batch preparation (serial)", f"{prep['scans_per_s']:.1f}",
                  ", ".join(f"{k} {v:.0f} ms" for k, v in prep["phases_ms_p50"].items()))
    for key, entry in result["loader"].items():
        table.add_row(f"loader {key}", f"{entry['scans_per_s']:.1f}", f"{entry['ms_per_batch']:.0f} ms/batch")
    for key, entry in result["forward_backward"].items():
        table.add_row(f"forward+backward {key} ({entry['formulation']})", f"{entry['scans_per_s']:.1f}", f"{entry['ms_p50']:.0f} ms/step")
    for key, entry in result["online_teacher"].items():
        table.add_row(f"online teacher {key}", f"{entry['scans_per_s']:.2f}", f"{entry['images_per_s']:.2f} images/s")
    for key, entry in result["training_loop"].items():
        table.add_row(f"training loop {key}", f"{entry['scans_per_s']:.1f}",
                      f"waits {entry['data_wait_mean_ms']:.0f} ms of {entry['step_mean_ms']:.0f} ms per step")
    console.print(table)
    for key, b in result["bottleneck"].items():
        console.print(f"bottleneck ({key}): {b['stage']}")
    if result["devices_skipped"]:
        console.print(f"not measured (no device): {', '.join(result['devices_skipped'])}")
    console.print(f"results: {run_dir / 'bench_train.json'}")
