"""``relidar evaluate``: zero-shot, few-shot and structural-gap report of a distilled student."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app


def register(apps: Apps) -> None:
    apps.root.command("evaluate")(evaluate)


def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Student weights (.safetensors) written by `relidar distill` (final "
                                                              "or a checkpoint)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Overrides of the run's config, e.g. eval.few_shot.scans=8 "
                                                               "eval.vocabulary=V.json (from `relidar vocabulary build`)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config YAML to use instead of the one stored in the "
                                                                       "weights (its data and eval sections)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder to write (new or empty); default "
                                       "runs/evaluate_YYYYmmdd-HHMMSS."),
    device: str = typer.Option("cpu", "--device", help="'cpu' or 'cuda'."),
) -> None:
    """Evaluate a student: zero-shot mIoU (all and camera-visible points), linear probe and fine-tuning
    (in-distribution and on eval.ood), structural gap; writes report.json, report.md and PNGs."""
    from rich.console import Console
    from rich.table import Table

    from relidar.cli.common import print_written
    from relidar.core.config import ConfigError, load_config, save_config
    from relidar.core.rundir import run_dir as new_run_dir
    from relidar.model.weights import load_student
    from relidar.training.checkpoint import read_run_config
    from relidar.training.config import DistillConfig
    from relidar.training.evaluate import evaluate as run_evaluate
    from relidar.training.report import write_report

    console = Console()
    model = load_student(checkpoint, device).eval()
    if config is not None:
        cfg = load_config(config, DistillConfig, overrides or [])
        if cfg.student != model.config:
            raise ConfigError(f"differs from the student {checkpoint} holds", path=config, field="student",
                              hint="use the config the student was trained with, or leave --config out")
        run_dir = new_run_dir(out, "evaluate")
    else:
        # The run's own config (stored in the weights), with the overrides applied on top.
        stored = read_run_config(checkpoint)
        run_dir = new_run_dir(out, "evaluate")
        cfg = load_config(save_config(stored, run_dir / "checkpoint_config.yaml"), DistillConfig, overrides or [])
    save_config(cfg, run_dir / "config.yaml")
    with console.status("evaluating") as status:
        result = run_evaluate(model, cfg, device, on_phase=lambda p: status.update(f"evaluating: {p}"))
    files = write_report(run_dir, result, extra={"checkpoint": str(checkpoint)})
    table = Table(title=f"relidar evaluate: {checkpoint}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.summary().items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    print_written(console, sorted(run_dir.glob("*.yaml")) + list(files.values()))


def main() -> None:
    """Entry point for ``python -m relidar.cli.evaluate``."""
    single_command_app(evaluate)()


if __name__ == "__main__":
    main()
