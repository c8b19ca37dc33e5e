"""``relidar compare``: does the paper's ordering of the losses hold on this data -- at which budget, with
each loss at its own best setting?

The plan (:class:`ComparePlan`, ``plan.py``) is fixed before anything runs and written first (``plan.json``,
``plan.md``): losses, paired seeds, budgets, the per-loss grid, the metrics, the claims, the controls. Then,
where the plan selects, every setting of each loss's grid is distilled at the base budget and scored on
the validation street (``data.selection``, never the held-out scans), and the best one per loss is chosen.
Only then is one student per (loss, seed) distilled, at its loss's chosen setting, to the largest budget,
and scored in full on the held-out street at every budget's checkpoint (``jobs.py``); seed s of every
loss starts from the same weights and sees the same scans in the same order, so the losses are compared
pair by pair.

The claims are the paper's (Mahmoud, Harakeh, Waslander, ECCV 2024):

1. relational > contrastive, zero-shot;
2. relational > similarity, few-shot in distribution;
3. relational > similarity, few-shot out of distribution;
4. the 2D-3D structural gap correlates negatively with zero-shot mIoU;
5. ... and with few-shot mIoU.

How they are decided, per budget, and what a verdict means: ``statistics.py``. Whether the learning
curves have flattened at each budget: the last quarter's improvement on the validation street, with its
interval (:func:`flattening`).

Controls: a randomly initialised student per seed (what distillation adds), an oracle student per
loss (one free vector per true class: the ceiling each loss reaches from this teacher,
``relidar.training.oracle``), the main comparison at the config's own setting for every loss (what the
selection changed), relational-term ablations, and switches: the same comparison on a teacher with one
property changed, or with one config setting changed (e.g. class-balanced pair sampling), with the
paper's prediction of how each paired difference should move written in the plan.

Report: ``tables.py`` (Markdown), ``plots.py`` (learning curves, gap against mIoU); the orchestration:
``run.py``; what a plan costs before it runs: ``cost.py``.
"""

from relidar.training.compare.cost import PlanCost, gpu_hours, plan_cost, seconds_per_scan
from relidar.training.compare.jobs import (
    Job,
    base_steps,
    on_validation_street,
    plan_jobs,
    run_job,
    selection_jobs,
    switch_teacher,
    variant,
    with_setting,
)
from relidar.training.compare.plan import (
    Claim,
    CompareError,
    ComparePlan,
    RelationalWeights,
    Selection,
    Setting,
    TeacherSwitch,
    parse_losses,
    switch_losses,
)
from relidar.training.compare.run import CompareResult, compare
from relidar.training.compare.statistics import (
    Findings,
    Verdict,
    aggregate,
    at_budget,
    correlation_interval,
    decide,
    findings,
    flattening,
    mean_interval,
    paired_differences,
    select_settings,
    switch_analysis,
    verdict,
)
from relidar.training.compare.tables import budget_verdict_lines, verdict_lines

__all__ = [
    "Claim", "CompareError", "ComparePlan", "CompareResult", "Findings", "Job", "PlanCost", "RelationalWeights",
    "Selection", "Setting", "TeacherSwitch", "Verdict", "aggregate", "at_budget", "base_steps", "budget_verdict_lines",
    "compare", "correlation_interval", "decide", "findings", "flattening", "gpu_hours", "mean_interval",
    "on_validation_street", "paired_differences", "parse_losses", "plan_cost", "plan_jobs", "run_job",
    "seconds_per_scan", "select_settings", "selection_jobs", "switch_analysis", "switch_losses", "switch_teacher",
    "variant", "verdict", "verdict_lines", "with_setting",
]
