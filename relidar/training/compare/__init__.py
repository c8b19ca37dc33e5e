"""``relidar compare``: does the paper's ordering of the losses hold on this data, at this budget?

The plan (:class:`ComparePlan`) is fixed before anything runs and written first (``plan.json``,
``plan.md``): losses, paired seeds, the budget, the metrics and the claims. Then one student per
(loss, seed) is distilled and evaluated on the same data; seed s of every loss starts from the same
weights and sees the same scans in the same order, so the losses are compared pair by pair.

The claims are the paper's (Mahmoud, Harakeh, Waslander, ECCV 2024):

1. relational > contrastive, zero-shot;
2. relational > similarity, few-shot in distribution;
3. relational > similarity, few-shot out of distribution;
4. the 2D-3D structural gap correlates negatively with zero-shot mIoU;
5. ... and with few-shot mIoU.

For 1-3 the statistic is the paired difference over seeds, mean with a Student-t 95 % interval;
for 4-5 the Pearson correlation over all runs with a Fisher-z 95 % interval. A claim *holds* when
its interval lies on the claimed side of zero, is *reversed* when it lies on the other side, and is
*undecided at this budget* otherwise.

Controls: a randomly initialised student per seed (what distillation adds), an oracle student per
loss (one free vector per true class: the ceiling each loss reaches from this teacher,
``relidar.training.oracle``), relational-term ablations, and teacher switches (the same comparison
on a teacher with one property changed, with the paper's prediction of how each paired difference
should move written in the plan).

Learning curves: each distilled run keeps ``curve_points`` checkpoints, scored zero-shot on the first
``curve_scans`` held-out scans, plus its training loss per step.
"""

from relidar.training.compare.jobs import Job, plan_jobs, run_job, switch_teacher, variant
from relidar.training.compare.plan import (
    Claim,
    CompareError,
    ComparePlan,
    RelationalWeights,
    TeacherSwitch,
    parse_losses,
    switch_losses,
)
from relidar.training.compare.run import CompareResult, compare
from relidar.training.compare.statistics import (
    Verdict,
    aggregate,
    correlation_interval,
    decide,
    mean_interval,
    paired_differences,
    switch_analysis,
    verdict,
)
from relidar.training.compare.tables import verdict_lines

__all__ = [
    "Claim", "CompareError", "ComparePlan", "CompareResult", "Job", "RelationalWeights", "TeacherSwitch", "Verdict",
    "aggregate", "compare", "correlation_interval", "decide", "mean_interval", "paired_differences", "parse_losses",
    "plan_jobs", "run_job", "switch_analysis", "switch_losses", "switch_teacher", "variant", "verdict", "verdict_lines",
]
