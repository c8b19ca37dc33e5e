"""``relidar bench student``: the student's network as every backend and PyTorch run it, vs spconv, on the same
network, weights and scan, interleaved (relidar.bench.student)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.bench.output import write_bench_json
from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.bench.command("student")(bench_student)


def bench_student(
    profile: str = typer.Option("base", "--profile", help="Student profile: base (MinkUNet18-like) or fast (narrow, CPU real time)."),
    scan: Optional[Path] = typer.Option(None, "--scan", help="Lidar scan (.bin KITTI or .npy [N,>=3]); default: a built-in "
                                                             "synthetic HDL-64E sweep (relidar.synthetic.lidar_sweep)."),
    repeat: int = typer.Option(10, "--repeat", min=1, help="Timed repetitions (each runs ours then spconv)."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed repetitions first."),
    voxel_size: float = typer.Option(0.1, "--voxel-size", min=0.01, help="Voxel edge in metres."),
    out_dim: int = typer.Option(512, "--out-dim", min=1, help="Projection head output size (the teacher's embedding size)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Student safetensors (relidar.model.weights); its stored config "
                                                                   "replaces --profile/--voxel-size/--out-dim. Default: random "
                                                                   "weights from --seed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads of every side for the whole run: torch's "
                                                                         "and ONNX Runtime's intra-op threads (default: one "
                                                                         "per physical core)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results here (JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (results, effective config; new or empty); default "
                                       "runs/bench_student_YYYYmmdd-HHMMSS."),
) -> None:
    """Time our student (kernel maps + forward), its PyTorch forward, the exported graph on every backend here
    and the same network in spconv, interleaved at one thread count, and check they give the same output."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from relidar.bench.spconv_reference import spconv_available
    from relidar.cli.common import print_written
    from relidar.core.config import save_config
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import run_dir as new_run_dir
    from relidar.core.scan_io import read_scan
    from relidar.model.network import PROFILES, StudentConfig
    from relidar.model.weights import read_student_config

    console = Console()
    if profile not in PROFILES:
        raise RelidarError(f"{profile!r} is not a student profile", field="--profile",
                           hint=f"choose one of {sorted(PROFILES)}")
    if not spconv_available():
        raise RelidarError("spconv is not installed (the reference this benchmark compares with)",
                           hint="pip install spconv")
    if scan is None:
        from relidar.synthetic import lidar_sweep

        points = lidar_sweep().points
        scan_name = "synthetic"
    else:
        points = read_scan(scan)
        scan_name = str(scan)
    from relidar.bench.student import run_student_bench

    # a weights file carries its own config (profile, voxel size, ...): it wins over the options
    config = (read_student_config(weights) if weights is not None
              else StudentConfig(profile=profile, voxel_size=voxel_size, out_dim=out_dim))  # type: ignore[arg-type]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"bench student ({profile})", total=warmup + repeat)
        result = run_student_bench(config, points, repeat=repeat, warmup=warmup, weights=weights, seed=seed,
                                   threads=threads, on_step=lambda done, total: progress.update(task, completed=done))
    result.scan = scan_name
    run_dir = new_run_dir(out, "bench_student")
    save_config(config, run_dir / "student.yaml")
    write_bench_json(result.to_json(), run_dir / "bench_student.json", json_out)
    table = Table(title=f"student {result.profile} vs spconv: {result.points} points, {result.voxels} voxels, "
                        f"{result.threads} threads, {result.machine.get('cpu_model')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("params", f"{result.params:,}"),
        ("ours (maps + forward) ms p50", f"{result.ours_ms_p50:.1f}"),
        ("ours forward only ms p50", f"{result.ours_forward_ms_p50:.1f}"),
        ("spconv ms p50", f"{result.spconv_ms_p50:.1f}"),
        ("ratio ours/spconv", f"{result.ratio:.3f}"),
        ("max abs diff", f"{result.max_abs_diff:.2e}"),
        ("voxelize ms (numpy)", f"{result.voxelize_ms:.1f}"),
        ("kernel maps ms (numpy)", f"{result.kernel_maps_numpy_ms:.1f}"),
        ("kernel maps ms (torch)", f"{result.kernel_maps_torch_ms:.1f}"),
        ("voxels per level", ", ".join(map(str, result.voxels_per_level))),
    ]
    rows += [(f"{name} ({entry['kind']}) ms p50, / PyTorch, max abs diff",
              f"{entry['ms_p50']:.1f}, {entry['vs_pytorch']:.2f}, {entry['max_abs_diff']:.1e}")
             for name, entry in result.entries.items()]
    rows += [(f"{name}: not loaded", error[:60]) for name, error in result.load_errors.items()]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    print_written(console, [*sorted(p for p in run_dir.iterdir() if p.is_file()), *([json_out] if json_out else [])])
