"""What a plan costs before it runs: optimizer steps and evaluations over all its jobs, and the GPU-hours
they take at a measured step time (``relidar bench train``'s training loop).

The estimate counts the student's forward+backward passes: the distillation steps (``batch_size`` scans
each) and the fine-tuning steps inside every full evaluation (one scan each, in and out of distribution).
It leaves out the forward-only work (zero-shot scoring, the linear probe's features, the learning curves),
a few per cent of a run on real data (a nuScenes evaluation scores ~6,000 validation scans and probes on
~28,000 training scans, against the 1.4 M scans of one 50-epoch distillation), and data preparation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from relidar.training.compare.jobs import Job
from relidar.training.compare.plan import CompareError
from relidar.training.config import DistillConfig


@dataclass(frozen=True)
class PlanCost:
    """The work of a plan's jobs; ``base_steps`` is one run of the config (the 1x budget)."""

    jobs: int
    distill_steps: int
    evaluations: int  # full: zero-shot, structure, probe, fine-tuning (in and out of distribution)
    zero_shot_evaluations: int  # learning-curve points and the grid's scores
    finetune_steps: int  # one scan each, inside the full evaluations
    batch_size: int
    base_steps: int

    @property
    def run_equivalents(self) -> float:
        """Distillation in units of one 1x run."""
        return self.distill_steps / max(1, self.base_steps)

    @property
    def trained_scans(self) -> int:
        return self.distill_steps * self.batch_size + self.finetune_steps


def plan_cost(jobs: Sequence[Job], config: DistillConfig, base_steps: int) -> PlanCost:
    """Count the work of ``jobs`` (as :func:`~relidar.training.compare.jobs.plan_jobs` and
    :func:`~relidar.training.compare.jobs.selection_jobs` list them) for a config whose 1x run is
    ``base_steps`` optimizer steps."""
    few = config.eval.few_shot
    per_evaluation = few.finetune_steps * len(few.finetune_fractions) * (2 if config.eval.ood is not None else 1)
    steps = evaluations = zero_shot = 0
    for job in jobs:
        if job.kind in ("distill", "select"):
            steps += job.budget_steps[-1][1]
        if job.kind == "distill":
            evaluations += len(job.budget_steps)
        elif job.kind == "random":
            evaluations += 1
        zero_shot += (len(job.curve_steps) + 1 if job.curve_steps else 0) + (job.kind in ("select", "oracle"))
    return PlanCost(jobs=len(jobs), distill_steps=steps, evaluations=evaluations, zero_shot_evaluations=zero_shot,
                    finetune_steps=evaluations * per_evaluation, batch_size=config.train.batch_size,
                    base_steps=base_steps)


def seconds_per_scan(bench_json: Path | str, loop: str | None = None) -> tuple[float, str]:
    """Seconds per trained scan of a ``relidar bench train`` JSON's training loop ``loop`` (e.g.
    ``cuda/workers=4``; default: the fastest one measured): its mean step time over its batch size. A
    ``scripts/gpu_check.sh`` JSON is read through its ``train`` section, which is that benchmark's result."""
    path = Path(bench_json)
    try:
        bench = json.loads(path.read_text())
        if "sections" in bench:
            bench = bench["sections"]["train"]["result"]
        loops = bench["training_loop"]
        batch = int(bench["input"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CompareError(f"{path}: not a `relidar bench train` JSON ({exc})") from exc
    if not loops:
        raise CompareError(f"{path}: the benchmark measured no training loop")
    key = loop or min(loops, key=lambda k: loops[k]["step_mean_ms"])
    if key not in loops:
        raise CompareError(f"{path}: no training loop {key!r}; measured: {', '.join(loops)}")
    return loops[key]["step_mean_ms"] / 1e3 / batch, key


def gpu_hours(cost: PlanCost, scan_seconds: float) -> float:
    """Hours of forward+backward the plan's trained scans take at ``scan_seconds`` each."""
    return cost.trained_scans * scan_seconds / 3600.0
