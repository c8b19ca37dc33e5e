"""``compare()``: run a plan into a folder -- the plan first, then the per-loss grid on the validation
street, the choice, the paired seeds and controls at the chosen settings (jobs in parallel processes),
then the statistics, tables and plots."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import save_config
from relidar.training.compare.cost import plan_cost
from relidar.training.compare.jobs import (
    Job,
    base_steps,
    on_validation_street,
    plan_jobs,
    run_job,
    selection_jobs,
    setting_json,
    switch_teacher,
)
from relidar.training.compare.plan import CompareError, ComparePlan
from relidar.training.compare.plots import plot_gap_scatter, plot_learning_curves
from relidar.training.compare.statistics import Findings, at_budget, findings, select_settings
from relidar.training.compare.tables import plan_markdown, report_markdown
from relidar.training.config import DistillConfig


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    runs: list[dict]
    table: dict[str, dict[str, dict[str, float]]]  # at the largest budget
    claims: list[dict[str, Any]]  # at the largest budget
    markdown: Path
    plots: dict[str, Path]
    findings: Findings


def _job_key(job: Job) -> str:
    """What a job computes: jobs of another group with the same key are the same run."""
    return json.dumps([job.kind, job.config_json, job.budget_steps, job.curve_steps, job.curve_scans, job.oracle_json])


class _Runner:
    """Runs jobs on the plan's workers, each distinct run once (a control at the setting a loss chose is its
    main run), and keeps runs.json current."""

    def __init__(self, plan: ComparePlan, out_dir: Path, event: Callable[[str], None],
                 recorded: dict[str, dict] | None = None) -> None:
        self.plan, self.out_dir, self.event = plan, out_dir, event
        self.rows: list[dict] = []
        self.recorded = recorded or {}  # job key -> the row an earlier, interrupted compare() finished

    def run(self, jobs: list[Job]) -> list[dict]:
        first: dict[str, int] = {}
        for i, job in enumerate(jobs):
            first.setdefault(_job_key(job), i)
        unique = sorted(set(first.values()))
        finished: dict[int, dict] = {i: self.recorded[_job_key(jobs[i])] for i in unique
                                     if _job_key(jobs[i]) in self.recorded}
        if finished:
            self.event(f"{len(finished)}/{len(unique)} taken from the interrupted comparison's runs.json")
        todo = [i for i in unique if i not in finished]
        for i in todo:
            # A run folder without a recorded row is an interrupted job's: start it again from nothing.
            partial = Path(jobs[i].out_dir) / jobs[i].run_name
            if partial.exists():
                shutil.rmtree(partial)

        def done(index: int, row: dict) -> None:
            row["job_key"] = _job_key(jobs[index])
            finished[index] = row
            self.event(f"{len(finished)}/{len(unique)} done: {row['group']} {row['loss']} seed {row['seed']} "
                       f"({row['seconds']:.0f} s)")
            self._save([*self.rows, *(finished[i] for i in sorted(finished))])

        if self.plan.workers == 1:
            for i in todo:
                done(i, run_job(jobs[i]))
        else:
            # spawn, not fork: torch's thread pools do not survive a fork.
            with ProcessPoolExecutor(self.plan.workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_job, jobs[i]): i for i in todo}
                for future in as_completed(futures):
                    done(futures[future], future.result())
        rows = []
        for i, job in enumerate(jobs):
            row = finished[first[_job_key(job)]]
            rows.append(row if first[_job_key(job)] == i else {**row, "group": job.group, "loss": job.loss,
                                                                "setting": setting_json(job.setting),
                                                                "reused_from": row["group"]})
        self.rows += rows
        self._save(self.rows)
        return rows

    def _save(self, rows: list[dict]) -> None:
        atomic_write_bytes(self.out_dir / "runs.json", (json.dumps(rows, indent=2) + "\n").encode())


def _write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, allow_nan=True) + "\n").encode())


def _recorded_runs(config: DistillConfig, plan: ComparePlan, out_dir: Path) -> dict[str, dict]:
    """The finished runs of an interrupted comparison in ``out_dir`` by job key, once its config and plan are
    checked to be this one's (a run of another plan is not this plan's evidence)."""
    plan_file, config_file = out_dir / "plan.json", out_dir / "config.yaml"
    if not plan_file.is_file() or not config_file.is_file():
        raise CompareError("no interrupted comparison to resume here (no plan.json and config.yaml)", path=out_dir,
                           hint="start it without --resume")
    saved_plan = json.loads(plan_file.read_text()).get("plan")
    if saved_plan != plan.model_dump(mode="json"):
        raise CompareError("the interrupted comparison ran another plan", path=plan_file,
                           hint="resume with the same --plan and options, or start a new folder")
    probe = out_dir / ".config.resume.yaml"
    save_config(config, probe)
    same = probe.read_text() == config_file.read_text()
    probe.unlink()
    if not same:
        raise CompareError("the interrupted comparison ran another config", path=config_file,
                           hint="resume with the same --config and overrides, or start a new folder")
    runs_file = out_dir / "runs.json"
    rows = json.loads(runs_file.read_text()) if runs_file.is_file() else []
    return {row["job_key"]: row for row in rows if "job_key" in row and "reused_from" not in row}


def compare(config: DistillConfig, plan: ComparePlan, out_dir: Path,
            on_event: Callable[[str], None] | None = None, resume: bool = False) -> CompareResult:
    """Run the plan into ``out_dir``: plan.json/plan.md first, then runs/ (the grid, then the rest),
    selection.json, compare.json, compare.md and plots. ``resume``: ``out_dir`` holds an interrupted
    comparison of this config and plan; the runs its runs.json records are taken as they are, the others
    run (again, from nothing)."""
    from relidar.training.data import split_data

    event = on_event or (lambda _m: None)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded = _recorded_runs(config, plan, out_dir) if resume else {}
    save_config(config, out_dir / "config.yaml")
    event("preparing data")
    configs = [config, *(switch_teacher(config, n, s) for n, s in plan.teacher_switches.items())]
    if plan.selection is not None:
        configs.append(on_validation_street(config))
    for cfg in configs:
        split_data(cfg.data)
        if cfg.eval.ood is not None:
            split_data(cfg.eval.ood)
    base = base_steps(config)
    grid = selection_jobs(config, plan, out_dir, base)
    later = plan_jobs(config, plan, out_dir, base)  # at the config's settings: the count and cost are the same
    cost = plan_cost([*grid, *later], config, base)
    _write_json(out_dir / "plan.json", {"plan": plan.model_dump(mode="json"), "claims": [c.__dict__ for c in plan.claims()],
                                        "base_steps": base, "jobs": len(grid) + len(later), "cost": cost.__dict__})
    atomic_write_bytes(out_dir / "plan.md", (plan_markdown(config, plan, base, cost) + "\n").encode())
    runner = _Runner(plan, out_dir, event, recorded)
    if grid:
        event("selection on the validation split")
        chosen, table = select_settings(plan, runner.run(grid))
        _write_json(out_dir / "selection.json", {"chosen": {loss: s.label for loss, s in chosen.items()}, "grid": table})
    else:
        chosen = {}
    runner.run(plan_jobs(config, plan, out_dir, base, chosen))
    runs = runner.rows
    found = findings(plan, runs)
    largest = at_budget([r for r in runs if r["group"] != "select"], plan.budgets[-1])
    scans = "validation split" if config.data.selection is not None else "held-out scans"
    plots = {"curves": plot_learning_curves(out_dir / "learning_curves.png", runs, scans,
                                            [b * base for b in plan.budgets] if len(plan.budgets) > 1 else ()),
             "scatter": plot_gap_scatter(out_dir / "gap_vs_miou.png", largest,
                                         [(plan.zero_shot_metric, "zero-shot mIoU (%)"),
                                          (plan.few_shot_metric, "few-shot mIoU (%)")])}
    seconds = time.perf_counter() - start
    last = plan.budgets[-1]
    _write_json(out_dir / "compare.json", {
        "plan": plan.model_dump(mode="json"), "base_steps": base, "table": found.tables[last],
        "claims": found.claims[last], "switches": found.switches[last], "findings": found.__dict__, "runs": runs,
        "seconds": seconds})
    md = report_markdown(config, plan, base, cost, runs, found, seconds)
    atomic_write_bytes(out_dir / "compare.md", (md + "\n").encode())
    return CompareResult(out_dir=out_dir, runs=runs, table=found.tables[last], claims=found.claims[last],
                         markdown=out_dir / "compare.md", plots=plots, findings=found)
