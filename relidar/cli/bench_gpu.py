"""``relidar bench gpu`` (what ``scripts/gpu_check.sh`` runs): the GPU path checked end to end on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps

SECTIONS = ("versions", "student", "kernel_maps", "ddp", "resume", "backends", "segmenter", "maskclip", "train")


def register(apps: Apps) -> None:
    apps.bench.command("gpu")(bench_gpu)


def bench_gpu(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (new or empty): gpu_check.json, summary.md "
                                       "and the check's scratch files (work/); default runs/bench_gpu_YYYYmmdd-HHMMSS."),
    scan: Optional[Path] = typer.Option(None, "--scan", help="Lidar scan (.bin KITTI or .npy); default: the KITTI frame "
                                                             "in ../shared/data, else a synthetic HDL-64E sweep "
                                                             "(relidar.synthetic.lidar_sweep)."),
    repeat: int = typer.Option(10, "--repeat", min=1, help="Timed repetitions per measurement."),
    only: Optional[list[str]] = typer.Option(None, "--only", help=f"Run only these sections (repeatable): {', '.join(SECTIONS)}."),
    quick: bool = typer.Option(False, "--quick", help="fast profile only, amp off and bf16, 3 repetitions (a smoke run)."),
) -> None:
    """Check relidar on this machine's NVIDIA GPU: versions, CUDA training in both sparse-conv formulations
    and three precisions, kernel maps, two-rank distillation, resume, every inference backend against ONNX
    Runtime on the CPU, the GPU-resident Segmenter end to end, and MaskCLIP's cost; writes one JSON and a
    readable summary. Refuses (exit 2) where no GPU is visible."""
    from relidar.bench.gpu_check import GpuCheckError, GpuCheckOptions, require_gpu, run_gpu_check

    try:
        require_gpu()
    except GpuCheckError as exc:
        typer.echo(f"gpu_check: {exc}", err=True)  # plain echo: one line whatever the terminal width
        raise typer.Exit(2) from None
    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        typer.echo(f"gpu_check: --only {unknown}: choose from {', '.join(SECTIONS)}", err=True)
        raise typer.Exit(1)
    from relidar.core.rundir import run_dir

    out = run_dir(out, "bench_gpu")  # after the GPU check: no folder where no GPU is visible
    options = GpuCheckOptions(out=out, scan=scan, repeat=3 if quick else repeat,
                              sections=tuple(s for s in SECTIONS if not only or s in only))
    if quick:
        options.profiles, options.amps = ("fast",), ("off", "bf16")
    report = run_gpu_check(options, on_section=lambda name: typer.echo(f"gpu_check: {name} ..."))
    failed = [name for name, section in report.sections.items() if not section["ok"]]
    typer.echo(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'summary.md'}")
    if failed:
        typer.echo(f"gpu_check: sections that failed: {', '.join(failed)} (their errors are in summary.md)", err=True)
        raise typer.Exit(1)
