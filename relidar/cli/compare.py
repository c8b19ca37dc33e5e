"""``relidar compare``: the losses side by side on the same data, paired seeds, claims decided with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.root.command("compare")(compare)


def compare(
    overrides: Optional[list[str]] = typer.Argument(None, help="Distillation config overrides, section.key=value "
                                                               "(e.g. train.max_steps=50)."),
    config: Path = typer.Option(..., "--config", "-c", help="Distillation config YAML; its loss section is replaced per run."),
    plan: Optional[Path] = typer.Option(None, "--plan", "-p", help="Comparison plan YAML (losses, seeds, claims' metrics, "
                                                                   "controls; see configs/compare_synthetic.yaml). "
                                                                   "Default: 3 losses x 5 seeds, random-init and oracle "
                                                                   "controls."),
    losses: Optional[str] = typer.Option(None, "--losses", help="Comma-separated losses (overrides the plan's)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Paired seeds per loss (overrides the plan's; at least 2)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Runs in parallel, one torch thread each (overrides the "
                                                                  "plan's)."),
    controls: bool = typer.Option(True, "--controls/--no-controls", help="Run the plan's controls (random init, oracle, "
                                                                        "ablations, teacher switches)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Parent folder of the timestamped comparison folder."),
) -> None:
    """Distill and evaluate one student per (loss, seed) on the same data, with the plan's controls; write
    plan.md (before any run), compare.md/json (table with 95 % intervals, the paper's claims with paired
    differences and a verdict each), learning_curves.png and gap_vs_miou.png."""
    from rich.console import Console

    from relidar.core.config import ConfigError, load_config
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import make_run_dir
    from relidar.training.checkpoint import CheckpointError
    from relidar.training.compare import CompareError, ComparePlan, parse_losses, verdict_lines
    from relidar.training.compare import compare as run_compare
    from relidar.training.config import DistillConfig
    from relidar.training.data import DataError
    from relidar.training.distill import DistillError
    from relidar.training.evaluate import EvaluationError
    from relidar.training.feature_cache import CacheError

    console = Console()
    try:
        cfg = load_config(config, DistillConfig, overrides or [])
        the_plan = load_config(plan, ComparePlan) if plan is not None else ComparePlan()
        update: dict = {}
        if losses is not None:
            update["losses"] = parse_losses(losses)
        if seeds is not None:
            update["seeds"] = seeds
        if workers is not None:
            update["workers"] = workers
        if not controls:
            update.update({"random_init": False, "oracle": None, "ablations": {}, "teacher_switches": {}})
        the_plan = ComparePlan.model_validate({**the_plan.model_dump(), **update})
        out_dir = make_run_dir(out, "compare")
        with console.status("compare") as status:
            result = run_compare(cfg, the_plan, out_dir, on_event=lambda m: status.update(f"compare: {m}"))
    except (RelidarError, CompareError, ConfigError, DataError, DistillError, EvaluationError, CacheError,
            CheckpointError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(result.markdown.read_text().split("## Claims")[0].split("## Results")[1])
    for line in verdict_lines(result.claims):
        console.print(line)
    console.print(f"report: {result.markdown}\nplots: {', '.join(str(p) for p in result.plots.values())}")


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(compare)
    app()


if __name__ == "__main__":
    main()
