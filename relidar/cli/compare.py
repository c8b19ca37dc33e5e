"""``relidar compare``: the losses side by side on the same data, paired seeds, claims decided with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app


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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Comparison folder to write (new or empty); default "
                                       "runs/compare_YYYYmmdd-HHMMSS."),
    resume: bool = typer.Option(False, "--resume", help="--out holds a comparison of the same config and plan "
                                "that was interrupted: keep the runs its runs.json records and run the rest "
                                "(a long plan can span sessions)."),
    estimate: Optional[Path] = typer.Option(None, "--estimate", help="Run nothing: print the plan's cost and its "
                                            "GPU-hours at the step time of this `relidar bench train` JSON (its "
                                            "fastest training loop) and exit."),
) -> None:
    """Distill and evaluate one student per (loss, seed) on the same data, each loss at the setting its grid
    chose on the validation street, at every budget, with the plan's controls; write plan.md (before any
    run), compare.md/json (tables with 95 % intervals, the paper's claims with paired differences and a
    verdict per budget, the curves' flattening, the grid), learning_curves.png and gap_vs_miou.png."""
    from rich.console import Console

    from relidar.cli.common import print_written
    from relidar.core.config import load_config
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import run_dir
    from relidar.training.compare import ComparePlan, budget_verdict_lines, parse_losses
    from relidar.training.compare import compare as run_compare
    from relidar.training.config import DistillConfig

    console = Console()
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
        update.update({"random_init": False, "oracle": None, "fixed_setting": False, "ablations": {},
                       "teacher_switches": {}})
    the_plan = ComparePlan.model_validate({**the_plan.model_dump(), **update})
    if estimate is not None:
        _print_estimate(console, cfg, the_plan, estimate)
        return
    if resume:
        if out is None:
            raise RelidarError("--resume needs --out, the interrupted comparison's folder", field="--out")
        out_dir = out
    else:
        out_dir = run_dir(out, "compare")
    with console.status("compare") as status:
        result = run_compare(cfg, the_plan, out_dir, on_event=lambda m: status.update(f"compare: {m}"),
                             resume=resume)
    console.print(result.markdown.read_text().split("## Claims")[0].split("## Results")[1])
    for line in budget_verdict_lines(result.findings.claims):
        console.print(line)
    print_written(console, [result.markdown, *result.plots.values(), *sorted(result.out_dir.glob("*.json"))])


def _print_estimate(console, config, plan, bench: Path) -> None:
    """The plan's jobs, steps and evaluations, and the GPU-hours of its trained scans at the benchmark's rate."""
    from relidar.training.compare import base_steps, gpu_hours, plan_cost, plan_jobs, seconds_per_scan, selection_jobs

    base = base_steps(config)
    out = Path("runs/compare_estimate")
    cost = plan_cost([*selection_jobs(config, plan, out, base), *plan_jobs(config, plan, out, base)], config, base)
    scan, loop = seconds_per_scan(bench)
    console.print(f"{cost.jobs} jobs; distillation worth {cost.run_equivalents:.1f} 1x runs ({cost.distill_steps} steps "
                  f"of {cost.batch_size} scans), {cost.evaluations} full evaluations ({cost.finetune_steps} fine-tuning "
                  f"steps), {cost.zero_shot_evaluations} zero-shot scorings")
    console.print(f"{gpu_hours(cost, scan):.1f} GPU-hours of forward+backward at {1e3 * scan:.1f} ms a scan "
                  f"({bench}, training loop {loop}); zero-shot scoring, probes and data preparation not included")


def main() -> None:
    single_command_app(compare)()


if __name__ == "__main__":
    main()
