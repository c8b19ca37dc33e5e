"""``relidar compare``: the losses side by side on the same data, several seeds each."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app


def register(apps: Apps) -> None:
    apps.root.command("compare")(compare)


def compare(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides, section.key=value (e.g. train.max_steps=50)."),
    config: Path = typer.Option(..., "--config", "-c", help="Distillation config YAML; its loss section is replaced per run."),
    losses: str = typer.Option("contrastive,similarity,relational", "--losses", help="Comma-separated losses to compare."),
    seeds: int = typer.Option(3, "--seeds", help="Runs per loss (seeds train.seed, train.seed+1, ...)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Parent folder of the timestamped comparison folder."),
) -> None:
    """Distill and evaluate one student per (loss, seed) on the same data; write compare.md/json (zero-shot
    mIoU, few-shot mIoU, structural gap, mean ± std over seeds) and gap_vs_miou.png."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from relidar.core.config import load_config
    from relidar.core.rundir import make_run_dir
    from relidar.training.compare import COLUMNS, parse_losses
    from relidar.training.compare import compare as run_compare
    from relidar.training.config import DistillConfig

    console = Console()
    names = parse_losses(losses)
    cfg = load_config(config, DistillConfig, overrides or [])
    out_dir = make_run_dir(out, "compare")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("compare", total=None)
        result = run_compare(
            cfg, names, seeds, out_dir,
            on_event=lambda m: bar.update(task, description=m, completed=0, total=None),
            on_step=lambda s, n, _l: bar.update(task, completed=s, total=n),
        )
    table = Table(title=f"relidar compare ({seeds} seed(s); mean ± std)")
    table.add_column("loss")
    keys = [(k, h) for k, h in COLUMNS if any(k in row for row in result.table.values())]
    for _, h in keys:
        table.add_column(h, justify="right")
    for loss, row in result.table.items():
        cells = []
        for k, _ in keys:
            if k not in row:
                cells.append("–")
            elif "miou" in k:
                cells.append(f"{100 * row[k][0]:.1f} ± {100 * row[k][1]:.1f}")
            else:
                cells.append(f"{row[k][0]:.3f} ± {row[k][1]:.3f}")
        table.add_row(loss, *cells)
    console.print(table)
    console.print(f"table: {result.markdown}\nscatter: {result.scatter}\nruns: {result.out_dir / 'runs'}")


def main() -> None:
    single_command_app(compare)()


if __name__ == "__main__":
    main()
