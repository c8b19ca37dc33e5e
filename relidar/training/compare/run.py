"""``compare()``: run a plan into a folder -- plan first, then the jobs (in parallel processes), then the
statistics, tables and plots."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import save_config
from relidar.training.compare.jobs import plan_jobs, run_job, switch_teacher
from relidar.training.compare.plan import ComparePlan
from relidar.training.compare.plots import plot_gap_scatter, plot_learning_curves
from relidar.training.compare.statistics import aggregate, decide, switch_analysis
from relidar.training.compare.tables import plan_markdown, report_markdown
from relidar.training.config import DistillConfig


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    runs: list[dict]
    table: dict[str, dict[str, dict[str, float]]]
    claims: list[dict[str, Any]]
    markdown: Path
    plots: dict[str, Path]


def compare(config: DistillConfig, plan: ComparePlan, out_dir: Path,
            on_event: Callable[[str], None] | None = None) -> CompareResult:
    """Run the plan into ``out_dir``: plan.json/plan.md first, then runs/, compare.json, compare.md and plots."""
    from relidar.training.data import split_data

    event = on_event or (lambda _m: None)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    event("preparing data")
    configs = [config, *(switch_teacher(config, n, s) for n, s in plan.teacher_switches.items())]
    for cfg in configs:
        split_data(cfg.data)
        if cfg.eval.ood is not None:
            split_data(cfg.eval.ood)
    jobs = plan_jobs(config, plan, out_dir)
    atomic_write_bytes(out_dir / "plan.json", (json.dumps({"plan": plan.model_dump(mode="json"),
                                                           "claims": [c.__dict__ for c in plan.claims()],
                                                           "jobs": len(jobs)}, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "plan.md", (plan_markdown(config, plan, jobs) + "\n").encode())
    finished: dict[int, dict] = {}

    def done(index: int, row: dict) -> None:
        finished[index] = row
        event(f"{len(finished)}/{len(jobs)} done: {row['group']} {row['loss']} seed {row['seed']} ({row['seconds']:.0f} s)")
        atomic_write_bytes(out_dir / "runs.json", (json.dumps([finished[i] for i in sorted(finished)], indent=2)
                                                   + "\n").encode())

    if plan.workers == 1:
        for i, job in enumerate(jobs):
            done(i, run_job(job))
    else:
        # spawn, not fork: torch's thread pools do not survive a fork.
        with ProcessPoolExecutor(plan.workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    runs = [finished[i] for i in sorted(finished)]
    table = aggregate(runs, plan.confidence)
    claims = decide(plan, runs)
    switches = switch_analysis(plan, runs)
    plots = {"curves": plot_learning_curves(out_dir / "learning_curves.png", runs),
             "scatter": plot_gap_scatter(out_dir / "gap_vs_miou.png", runs,
                                         [(plan.zero_shot_metric, "zero-shot mIoU (%)"),
                                          (plan.few_shot_metric, "few-shot mIoU (%)")])}
    seconds = time.perf_counter() - start
    atomic_write_bytes(out_dir / "compare.json", (json.dumps(
        {"plan": plan.model_dump(mode="json"), "table": table, "claims": claims, "switches": switches, "runs": runs,
         "seconds": seconds}, indent=2, allow_nan=True) + "\n").encode())
    md = report_markdown(config, plan, jobs, runs, table, claims, switches, seconds)
    atomic_write_bytes(out_dir / "compare.md", (md + "\n").encode())
    return CompareResult(out_dir=out_dir, runs=runs, table=table, claims=claims, markdown=out_dir / "compare.md",
                         plots=plots)
