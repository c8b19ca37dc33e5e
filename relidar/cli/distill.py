"""``relidar distill``: train the 3D student on teacher features (one process, or several under torchrun).

    relidar distill --config configs/synthetic_relational.yaml train.epochs=5 loss.type=similarity
    relidar distill --resume runs/distill_relational_20250101-120000
    torchrun --nproc_per_node=2 -m relidar.cli.distill --config FILE
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app


def register(apps: Apps) -> None:
    apps.root.command("distill")(distill)


def distill(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides, section.key=value (e.g. loss.type=similarity "
                                                               "train.epochs=3)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Distillation config YAML (see configs/)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to continue from its latest checkpoint (uses the "
                                                                 "config saved there)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder to write (new or empty); default "
                                       "runs/distill_LOSS_YYYYmmdd-HHMMSS."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Distill the teacher's features into the student; writes config, CSV/TensorBoard logs, checkpoints
    and the final weights into a timestamped run folder, and prints where they are. The config's
    eval.vocabulary is a JSON made by `relidar vocabulary build` (synthetic data: built automatically)."""
    from rich.console import Console

    from relidar.core.config import ConfigError, load_config
    from relidar.training.config import DistillConfig
    from relidar.training.distill import CONFIG_NAME
    from relidar.training.distributed import init_from_env, shutdown

    console = Console()
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume continues a run with the config saved in it", field="--resume",
                              hint="drop --config and the overrides")
        cfg = load_config(resume / CONFIG_NAME, DistillConfig)
    else:
        if config is None:
            raise ConfigError("a config is required", field="--config", hint="pass --config FILE (or --resume RUN_DIR)")
        cfg = load_config(config, DistillConfig, overrides or [])

    from relidar.training.distributed import PlacementError

    try:
        ctx = init_from_env(cfg.train.device)
    except PlacementError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    try:
        result = _run(console, cfg, out, resume, ctx, progress and cfg.logging.progress)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        from rich.table import Table

        table = Table(title="relidar distill")
        table.add_column("what")
        table.add_column("where / value")
        table.add_row("run folder", str(result.run_dir))
        table.add_row("final weights", str(result.weights))
        table.add_row("steps", str(result.steps))
        table.add_row("final loss", f"{result.final_loss:.4f}")
        table.add_row("seconds", f"{result.seconds:.1f}")
        table.add_row("evaluate", f"relidar evaluate --checkpoint {result.weights}")
        console.print(table)
        console.print(f"wrote {result.run_dir}\nwrote {result.weights}", highlight=False, soft_wrap=True)


def _run(console, cfg, out, resume, ctx, show_progress):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from relidar.training.distill import distill as run_distill

    if not (show_progress and ctx.is_main):
        return run_distill(cfg, out=out, resume=resume, ctx=ctx)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), console=console) as bar:
        task = bar.add_task(f"distill ({cfg.loss.type})", total=None, loss="")

        def on_step(step: int, total: int, losses: dict[str, float]) -> None:
            loss = f"loss {losses['loss_total']:.4f}" if "loss_total" in losses else ""
            bar.update(task, completed=step, total=total, loss=loss)

        return run_distill(cfg, out=out, resume=resume, ctx=ctx, on_step=on_step)


def main() -> None:
    """Entry point for ``python -m relidar.cli.distill`` (torchrun -m)."""
    single_command_app(distill)()


if __name__ == "__main__":
    main()
