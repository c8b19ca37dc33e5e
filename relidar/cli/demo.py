"""``relidar demo``: the whole pipeline on a synthetic world, offline, in about ten minutes on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app


def register(apps: Apps) -> None:
    apps.root.command("demo")(demo)


def demo(
    overrides: Optional[list[str]] = typer.Argument(None, help="Budget overrides key=value (e.g. frames=12 steps=80); see "
                                                               "relidar.demo.pipeline.DemoConfig."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (new or empty); default "
                                       "runs/demo_YYYYmmdd-HHMMSS."),
) -> None:
    """Generate a synthetic driving log, prepare teacher features, distill a 'fast' student with the
    relational loss, evaluate it zero-shot and few-shot, export a model bundle to OUT/bundle, segment a
    held-out scan with it and draw the pictures; then print where everything is."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from relidar.core.config import load_config
    from relidar.core.rundir import run_dir
    from relidar.demo.pipeline import DemoConfig, run_demo

    console = Console()
    config = load_config(None, DemoConfig, overrides or [])
    out_dir = run_dir(out, "demo")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("demo", total=None)
        result = run_demo(
            out_dir, config,
            on_stage=lambda s: bar.update(task, description=s, completed=0, total=None),
            on_progress=lambda d, n: bar.update(task, completed=d, total=n),
        )
    where = Table(title=f"relidar demo: {result.out_dir}")
    where.add_column("what")
    where.add_column("where", overflow="fold")
    labels = {
        "log": "synthetic log (SemanticKITTI layout: 00 trained on, 08 held out)", "cache": "teacher feature cache",
        "cache_val": "teacher feature cache, held-out street", "vocabulary": "vocabulary",
        "run": "distillation run (config, CSV, TensorBoard, checkpoints)", "weights": "student weights",
        "report": "evaluation report (+ JSON, PNGs beside)", "bundle": "model bundle",
        "picture_segmented": "segmented scan (bundle)", "picture_ground_truth": "ground truth",
        "picture_scores": "label scores", "picture_labelled_ply": "labelled scan (PLY; `relidar view` opens it)",
        "summary": "demo summary (JSON)",
    }
    for key, label in labels.items():
        if key in result.paths:
            where.add_row(label, str(result.paths[key]))
    console.print(where)
    scores = Table(title="results")
    scores.add_column("metric")
    scores.add_column("value", justify="right")
    for k, v in result.summary.items():
        scores.add_row(k, f"{100 * v:.1f}%" if "miou" in k or k == "student_over_teacher_visible" else f"{v:.3f}")
    for k, v in result.seconds.items():
        scores.add_row(f"seconds: {k}", f"{v:.1f}")
    console.print(scores)
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")


def main() -> None:
    single_command_app(demo)()


if __name__ == "__main__":
    main()
